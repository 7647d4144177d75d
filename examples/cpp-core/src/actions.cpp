#include "actions.hpp"

#include <cstdint>

#include "errors.hpp"
#include "validation.hpp"

namespace {

constexpr std::int64_t kMaxUserId = (1LL << 53) - 1;  // ids stay exact in every JSON client
constexpr std::int64_t kMaxPage = 100;
constexpr std::int64_t kDefaultPage = 20;
constexpr std::size_t kMaxName = 200;

Json optional_text(const std::optional<std::string>& text) {
    return text.has_value() ? Json(*text) : Json(nullptr);
}

std::optional<std::string> text_or_none(const Json& value) {
    if (value.is_null()) return std::nullopt;
    return value.get<std::string>();
}

// --- createUser -------------------------------------------------------------------------

Json validate_create(const Json& params) {
    Json out = Json::object();
    out["name"] = *read_name(params, "name", kMaxName);
    out["email"] = *read_email(params, "email");
    check_known(params, {"name", "email"});
    return out;
}

Outcome create_user(ActionContext& ctx, const Json& p) {
    User user = ctx.users.create(p["name"].get<std::string>(), p["email"].get<std::string>(),
                                 ctx.request_id);
    return {"user created (ID: " + std::to_string(user.id) + ")", user.to_json()};
}

// --- getUser / deleteUser ---------------------------------------------------------------

Json validate_id_only(const Json& params) {
    Json out = Json{{"id", read_int(params, "id", 1, kMaxUserId)}};
    check_known(params, {"id"});
    return out;
}

Outcome get_user(ActionContext& ctx, const Json& p) {
    User user = ctx.users.get(p["id"].get<std::int64_t>());
    return {"user found (ID: " + std::to_string(user.id) + ")", user.to_json()};
}

Outcome delete_user(ActionContext& ctx, const Json& p) {
    std::int64_t id = p["id"].get<std::int64_t>();
    ctx.users.remove(id);
    return {"user deleted (ID: " + std::to_string(id) + ")", nullptr};
}

// --- listUsers --------------------------------------------------------------------------

Json validate_list(const Json& params) {
    std::int64_t limit = read_int(params, "limit", 1, kMaxPage, kDefaultPage);
    Json cursor = nullptr;
    auto raw = params.find("cursor");
    if (raw != params.end() && !raw->is_null()) {
        if (!raw->is_string()) throw validation_failed("cursor must be a string", "cursor");
        std::string text = raw->get<std::string>();
        bool ok = !text.empty() && text.size() <= 16;
        for (char c : text) ok = ok && c >= '0' && c <= '9';
        if (!ok) throw validation_failed("cursor is not a cursor this service gave out", "cursor");
        cursor = std::to_string(std::stoll(text));  // "007" -> "7", as int() then str()
    }
    check_known(params, {"limit", "cursor"});
    return Json{{"limit", limit}, {"cursor", cursor}};
}

Outcome list_users(ActionContext& ctx, const Json& p) {
    std::optional<std::int64_t> after;
    if (!p["cursor"].is_null()) after = std::stoll(p["cursor"].get<std::string>());
    auto [users, next_after] = ctx.users.list(static_cast<int>(p["limit"].get<std::int64_t>()), after);
    Json items = Json::array();
    for (const User& user : users) items.push_back(user.to_json());
    Json result = Json::object();
    result["items"] = items;
    result["next_cursor"] = next_after.has_value() ? Json(std::to_string(*next_after)) : Json(nullptr);
    return {std::to_string(users.size()) + " users", result};
}

// --- updateUser -------------------------------------------------------------------------

Json validate_update(const Json& params) {
    Json out = Json::object();
    out["id"] = read_int(params, "id", 1, kMaxUserId);
    out["name"] = optional_text(read_name(params, "name", kMaxName, false));
    out["email"] = optional_text(read_email(params, "email", false));
    check_known(params, {"id", "name", "email"});
    if (out["name"].is_null() && out["email"].is_null()) {
        throw validation_failed("give name or email to change", "name");
    }
    return out;
}

Outcome update_user(ActionContext& ctx, const Json& p) {
    User user = ctx.users.update(p["id"].get<std::int64_t>(), text_or_none(p["name"]),
                                 text_or_none(p["email"]));
    return {"user updated (ID: " + std::to_string(user.id) + ")", user.to_json()};
}

// --- runJob -----------------------------------------------------------------------------

Json validate_job(const Json& params) {
    Json out = Json::object();
    out["duration_ms"] = read_int(params, "duration_ms", 0, 600000);
    out["steps"] = read_int(params, "steps", 1, 1000, 10);
    out["fail"] = read_bool(params, "fail", false);
    check_known(params, {"duration_ms", "steps", "fail"});
    return out;
}

Outcome run_job(ActionContext& ctx, const Json& p) {
    std::int64_t steps = p["steps"].get<std::int64_t>();
    std::int64_t duration_ms = p["duration_ms"].get<std::int64_t>();
    double pause = static_cast<double>(duration_ms) / 1000.0 / static_cast<double>(steps);
    for (std::int64_t step = 1; step <= steps; ++step) {
        if (pause > 0) ctx.pause(pause);
        ctx.report_progress(static_cast<int>(100 * step / steps),
                            "step " + std::to_string(step) + " of " + std::to_string(steps));
    }
    if (p["fail"].get<bool>()) {
        throw DomainError("job_failed",
                          "job failed after " + std::to_string(steps) + " steps, as asked");
    }
    Json result = Json::object();
    result["duration_ms"] = duration_ms;
    result["steps"] = steps;
    return {"job done in " + std::to_string(steps) + " steps", result};
}

const Action kActions[] = {
    {"createUser", validate_create, create_user},
    {"getUser", validate_id_only, get_user},
    {"listUsers", validate_list, list_users},
    {"updateUser", validate_update, update_user},
    {"deleteUser", validate_id_only, delete_user},
    {"runJob", validate_job, run_job},
};

}  // namespace

const Action& lookup_action(const std::string& name) {
    for (const Action& action : kActions) {
        if (name == action.name) return action;
    }
    throw DomainError("unknown_action", "unknown action: " + name);
}
