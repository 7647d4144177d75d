// The result record of docs/contract.md §4, written as reference/records.py writes it: absent fields are
// left out, and the fields come in the Python core's order.
#pragma once

#include <optional>
#include <string>

#include "json.hpp"

inline const char* const kRunning = "Running";
inline const char* const kSuccess = "Success";
inline const char* const kFail = "Fail";

struct ResultRecord {
    std::string status;
    std::string detail;
    std::optional<int> progress;
    std::optional<Json> result;  // nullopt: no result field
    std::optional<Json> error;   // {"code", "message"[, "field"]}
    std::optional<std::string> owner;
    std::optional<Json> queued_at;  // copied from the message as it came (int or float)
    std::optional<double> started_at;
    std::optional<double> updated_at;
    std::optional<double> finished_at;

    bool is_final() const { return status == kSuccess || status == kFail; }
    std::string to_json() const;
};
