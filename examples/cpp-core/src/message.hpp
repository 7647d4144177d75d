// The request message of docs/contract.md §2 and its decoding, with the rules (and the words) of
// reference/messages.py: a pydantic model, strict JSON types, unknown fields ignored.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "json.hpp"

struct Principal {
    std::string sub;
    std::vector<std::string> roles;
};

struct RequestMessage {
    std::string action;
    Json params;  // an object
    std::string request_id;
    Json version = 1;      // an integer; only 1 is served
    std::optional<Principal> principal;
    std::optional<Json> deadline;   // integer epoch ms after which the work must not start
    std::optional<Json> queued_at;  // number, epoch ms: when the API queued it
};

// A message that can never be processed: it is dead-lettered; `request_id` is empty when no
// usable one could be read.
struct PoisonMessage : std::runtime_error {
    PoisonMessage(const std::string& reason, std::string rid = "")
        : std::runtime_error(reason), request_id(std::move(rid)) {}
    std::string request_id;
};

// A request id is a store key: 1 to 128 of [A-Za-z0-9_.-].
bool is_request_id(const std::string& text);

RequestMessage decode_message(const std::string& body);
