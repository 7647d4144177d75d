// Strict readers for action parameters, with the rules and words of the Python core's params
// models (reference/schemas.py, reference/builtin_actions.py: pydantic, strict JSON types,
// unknown fields refused, null for a field with a default counts as absent). Each failure is
// a `validation` DomainError naming its field, with the Python core's exact message.
//
// Order matters, as it does in pydantic: an action reads its fields in the model's order
// (the first failing one is reported), then calls check_known (the first unknown field in the
// order it came), then checks across fields.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "json.hpp"

// Any field of `params` outside `allowed` is refused (the first in input order).
void check_known(const Json& params, const std::set<std::string>& allowed);

// An integer from low to high; `fallback` stands for a missing (or null) value when given;
// without one, a missing value "is required" and null "must be an integer".
std::int64_t read_int(const Json& params, const std::string& name, std::int64_t low,
                      std::int64_t high, std::optional<std::int64_t> fallback = std::nullopt);

bool read_bool(const Json& params, const std::string& name, bool fallback);

// A string, white space stripped, not empty, at most max_len characters; nullopt when not
// required and missing or null (a required one: missing "is required", null "must be a string").
std::optional<std::string> read_str(const Json& params, const std::string& name,
                                    std::size_t max_len, bool required = true);

// read_str, then no control or format characters (general categories Cc, Cf, Cs).
std::optional<std::string> read_name(const Json& params, const std::string& name,
                                     std::size_t max_len, bool required = true);

// read_str (at most 254), then an e-mail address as email-validator takes it, normalized and
// lower-cased (see email_address.hpp).
std::optional<std::string> read_email(const Json& params, const std::string& name,
                                      bool required = true);
