// The six built-in actions (reference/builtin_actions.py): their parameter checks and
// their work, with the Python core's result shapes and detail strings.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "json.hpp"
#include "user_store.hpp"

struct Outcome {
    std::string detail;
    Json result;  // null: no result field
};

struct ActionContext {
    std::string request_id;
    UserStore& users;
    std::function<void(int percent, const std::string& detail)> report_progress;
    // Pauses the work for `seconds` while the worker keeps its connections and claim alive.
    std::function<void(double seconds)> pause;
};

struct Action {
    const char* name;
    Json (*validate)(const Json& params);  // the checked, normalised params
    Outcome (*run)(ActionContext& context, const Json& params);
};

// The action called `name`, or DomainError `unknown_action`.
const Action& lookup_action(const std::string& name);
