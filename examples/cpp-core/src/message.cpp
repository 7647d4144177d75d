#include "message.hpp"

namespace {

// The model's fields in the order pydantic checks them (reference/messages.py MessageModel):
// the first failing one is the reason, worded as pydantic words it ("where: what").
const char* const kRequired = "Field required";
const char* const kNotString = "Input should be a valid string";
const char* const kNotInteger = "Input should be a valid integer";

}  // namespace

bool is_request_id(const std::string& text) {
    if (text.empty() || text.size() > 128) return false;
    for (char c : text) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

RequestMessage decode_message(const std::string& body) {
    // orjson refuses a byte order mark; nlohmann would skip it.
    if (body.rfind("\xEF\xBB\xBF", 0) == 0) {
        throw PoisonMessage("body is not JSON: UTF-8 byte order mark (BOM) is not supported");
    }
    Json data;
    try {
        data = Json::parse(body);
    } catch (const Json::parse_error& exc) {
        throw PoisonMessage(std::string("body is not JSON: ") + exc.what());
    }
    if (!data.is_object()) throw PoisonMessage("body is not a JSON object");

    // The request id, if usable, goes with any refusal: the Fail record is written under it.
    std::string rid;
    auto raw_id = data.find("request_id");
    if (raw_id != data.end() && raw_id->is_string() && is_request_id(raw_id->get<std::string>())) {
        rid = raw_id->get<std::string>();
    }
    auto poison = [&rid](const std::string& where, const std::string& what) {
        return PoisonMessage(where + ": " + what, rid);
    };
    auto field = [&data](const char* name) -> const Json* {
        auto it = data.find(name);
        return it == data.end() ? nullptr : &*it;
    };

    RequestMessage message;
    const Json* action = field("action");
    if (action == nullptr) throw poison("action", kRequired);
    if (!action->is_string()) throw poison("action", kNotString);
    if (action->get<std::string>().empty()) {
        throw poison("action", "String should have at least 1 character");
    }
    message.action = action->get<std::string>();

    const Json* params = field("params");
    if (params == nullptr) throw poison("params", kRequired);
    if (!params->is_object()) throw poison("params", "Input should be a valid dictionary");
    message.params = *params;

    const Json* request_id = field("request_id");
    if (request_id == nullptr) throw poison("request_id", kRequired);
    if (!request_id->is_string()) throw poison("request_id", kNotString);
    if (rid.empty()) {
        throw poison("request_id", "String should match pattern '^[A-Za-z0-9_.\\-]{1,128}$'");
    }
    message.request_id = rid;

    const Json* version = field("version");  // absent or null: 1
    if (version != nullptr && !version->is_null()) {
        if (!version->is_number_integer()) throw poison("version", kNotInteger);
        message.version = *version;
    }

    const Json* principal = field("principal");
    if (principal != nullptr && !principal->is_null()) {
        if (!principal->is_object()) {
            throw poison("principal", "Input should be a valid dictionary or instance of PrincipalModel");
        }
        Principal who;
        auto sub = principal->find("sub");
        if (sub == principal->end()) throw poison("principal.sub", kRequired);
        if (!sub->is_string()) throw poison("principal.sub", kNotString);
        who.sub = sub->get<std::string>();
        auto roles = principal->find("roles");
        if (roles != principal->end()) {
            if (!roles->is_array()) throw poison("principal.roles", "Input should be a valid list");
            for (std::size_t i = 0; i < roles->size(); ++i) {
                const Json& role = (*roles)[i];
                if (!role.is_string()) throw poison("principal.roles." + std::to_string(i), kNotString);
                who.roles.push_back(role.get<std::string>());
            }
        }
        message.principal = who;
    }

    const Json* deadline = field("deadline");
    if (deadline != nullptr && !deadline->is_null()) {
        if (!deadline->is_number_integer()) throw poison("deadline", kNotInteger);
        message.deadline = *deadline;
    }

    const Json* queued_at = field("queued_at");  // int | float: pydantic names the first branch
    if (queued_at != nullptr && !queued_at->is_null()) {
        if (!queued_at->is_number()) throw poison("queued_at.int", kNotInteger);
        message.queued_at = *queued_at;
    }
    return message;
}
