#include "record.hpp"

std::string ResultRecord::to_json() const {
    Json out = Json::object();
    out["status"] = status;
    out["detail"] = detail;
    if (progress) out["progress"] = *progress;
    if (result && !result->is_null()) out["result"] = *result;
    if (error) out["error"] = *error;
    if (owner) out["owner"] = *owner;
    if (queued_at) out["queued_at"] = *queued_at;
    if (started_at) out["started_at"] = *started_at;
    if (updated_at) out["updated_at"] = *updated_at;
    if (finished_at) out["finished_at"] = *finished_at;
    return dump_json(out);
}
