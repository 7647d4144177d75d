// Roles per action (reference/policy.py): which roles of the caller's token an action needs.
// Defaults: createUser, updateUser and deleteUser need users:write; the others nothing.
// REFERENCE_ROLES_POLICY replaces them per action: inline JSON or the path of a JSON file,
// {"action": ["role", ...]}. A message without a principal comes from a trusted producer.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "message.hpp"

class RolesPolicy {
public:
    // The defaults, with `source` on top (empty: none); ConfigError when it cannot work.
    static RolesPolicy load(const std::string& source);

    // DomainError `forbidden` when `principal` lacks a role `action` needs.
    void check(const std::string& action, const std::optional<Principal>& principal) const;

private:
    std::map<std::string, std::set<std::string>> required_;
};
