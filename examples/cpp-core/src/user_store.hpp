// The example domain's users in Redis, with the layout of adapters/redis_users.py under
// <prefix>{reference:users}:  next_id, ids (sorted set), u:<id> (hash name, email),
// email:<email> (-> id), req:<request_id> (-> id created for that request).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "json.hpp"
#include "redis_client.hpp"

struct User {
    std::int64_t id = 0;
    std::string name;
    std::string email;

    Json to_json() const { return Json{{"id", id}, {"name", name}, {"email", email}}; }
};

class UserStore {
public:
    UserStore(RedisClient& redis, const std::string& key_prefix);

    // Creates once per request id: a redelivered createUser answers what was created then.
    User create(const std::string& name, const std::string& email, const std::string& request_id);
    User get(std::int64_t id);
    // One page after `after` (exclusive), and the id to continue after, if there is more.
    std::pair<std::vector<User>, std::optional<std::int64_t>> list(
        int limit, std::optional<std::int64_t> after);
    User update(std::int64_t id, const std::optional<std::string>& name,
                const std::optional<std::string>& email);
    void remove(std::int64_t id);

    static constexpr long long kDedupeTtlMs = 7LL * 24 * 3600 * 1000;

private:
    RedisClient& redis_;
    std::string next_id_;
    std::string ids_;
    std::string user_prefix_;
    std::string email_prefix_;
    std::string request_prefix_;
};
