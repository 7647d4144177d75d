// The exceptions of the core, as the Python core has them (reference/errors.py).
#pragma once

#include <stdexcept>
#include <string>

// A failure of an action, reported in the Fail record with `code` (docs/contract.md §4).
struct DomainError : std::runtime_error {
    DomainError(std::string code_, std::string message_, std::string field_ = "")
        : std::runtime_error(message_),
          code(std::move(code_)),
          message(std::move(message_)),
          field(std::move(field_)) {}
    std::string code;
    std::string message;
    std::string field;  // empty: no field
};

inline DomainError validation_failed(const std::string& message, const std::string& field = "") {
    return DomainError("validation", message, field);
}
inline DomainError not_found(const std::string& message, const std::string& field = "") {
    return DomainError("not_found", message, field);
}
inline DomainError conflict(const std::string& message, const std::string& field = "") {
    return DomainError("conflict", message, field);
}

// The configuration cannot work: one line on stderr, exit 2.
struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Redis did not do what was asked (unreachable, timed out, or an error reply).
struct StoreUnavailable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// RabbitMQ cannot be reached, or a call on it failed.
struct BrokerUnavailable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The work on a delivery must stop now (shutdown ran out of time): hand it back. Not a
// std::exception on purpose, so that no "unexpected error" handler swallows it; it plays
// the part of asyncio's CancelledError in the Python core.
struct Cancelled {};
