#include "roles_policy.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "actions.hpp"
#include "errors.hpp"
#include "json.hpp"

RolesPolicy RolesPolicy::load(const std::string& source) {
    RolesPolicy policy;
    for (const char* action : {"createUser", "updateUser", "deleteUser"}) {
        policy.required_[action] = {"users:write"};
    }
    if (source.empty()) return policy;

    std::string text = source;
    std::size_t first = source.find_first_not_of(" \t\r\n\f\v");
    if (first == std::string::npos || (source[first] != '{' && source[first] != '[')) {
        std::ifstream file(source);
        if (!file) {
            throw ConfigError("REFERENCE_ROLES_POLICY: cannot read " + source + ": " +
                              std::strerror(errno));
        }
        std::ostringstream content;
        content << file.rdbuf();
        text = content.str();
    }
    Json data;
    try {
        data = Json::parse(text);
    } catch (const Json::parse_error&) {
        throw ConfigError("REFERENCE_ROLES_POLICY is not JSON");
    }
    if (!data.is_object()) {
        throw ConfigError("REFERENCE_ROLES_POLICY must be {\"action\": [\"role\", ...]}");
    }
    for (auto it = data.begin(); it != data.end(); ++it) {
        const std::string& action = it.key();
        try {
            lookup_action(action);
        } catch (const DomainError&) {
            throw ConfigError("REFERENCE_ROLES_POLICY names an unknown action: " + action);
        }
        bool ok = it->is_array();
        std::set<std::string> roles;
        if (ok) {
            for (const Json& role : *it) {
                ok = ok && role.is_string() && !role.get<std::string>().empty();
                if (ok) roles.insert(role.get<std::string>());
            }
        }
        if (!ok) {
            throw ConfigError("REFERENCE_ROLES_POLICY: the roles of " + action +
                              " must be a list of non-empty strings");
        }
        policy.required_[action] = roles;
    }
    return policy;
}

void RolesPolicy::check(const std::string& action, const std::optional<Principal>& principal) const {
    if (!principal) return;
    auto needed = required_.find(action);
    if (needed == required_.end()) return;
    std::set<std::string> held(principal->roles.begin(), principal->roles.end());
    std::set<std::string> missing;  // sorted, as Python's sorted()
    for (const std::string& role : needed->second) {
        if (held.count(role) == 0) missing.insert(role);
    }
    if (missing.empty()) return;
    std::string list;
    for (const std::string& role : missing) list += (list.empty() ? "" : ", ") + role;
    throw DomainError("forbidden", action + " needs the role" + (missing.size() > 1 ? "s " : " ") + list);
}
