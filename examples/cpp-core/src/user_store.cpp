#include "user_store.hpp"

#include "errors.hpp"
#include "lua_scripts.hpp"

namespace {

std::int64_t as_id(const RedisReply& reply) {
    if (reply.type == RedisReply::Type::Integer) return reply.integer;
    return std::stoll(reply.text);
}

DomainError no_user(std::int64_t id) {
    return not_found("no user with ID " + std::to_string(id), "id");
}

}  // namespace

UserStore::UserStore(RedisClient& redis, const std::string& key_prefix) : redis_(redis) {
    const std::string ns = key_prefix + "{reference:users}:";  // one Redis Cluster slot
    next_id_ = ns + "next_id";
    ids_ = ns + "ids";
    user_prefix_ = ns + "u:";
    email_prefix_ = ns + "email:";
    request_prefix_ = ns + "req:";
}

User UserStore::create(const std::string& name, const std::string& email,
                       const std::string& request_id) {
    RedisReply reply = redis_.eval(
        kCreateUserScript, {next_id_, ids_, request_prefix_ + request_id, email_prefix_ + email},
        {name, email, user_prefix_, std::to_string(kDedupeTtlMs)});
    long long outcome = reply.elements.at(0).integer;
    if (outcome == 0) throw conflict("email already in use: " + email, "email");
    std::int64_t id = as_id(reply.elements.at(1));
    if (outcome == 1) {
        // Done before under this request id (a redelivery): answer what was created then.
        RedisReply stored = redis_.command({"HMGET", user_prefix_ + std::to_string(id), "name", "email"});
        if (!stored.elements.at(0).is_nil()) {
            return User{id, stored.elements.at(0).text, stored.elements.at(1).text};
        }
    }
    return User{id, name, email};
}

User UserStore::get(std::int64_t id) {
    RedisReply stored = redis_.command({"HMGET", user_prefix_ + std::to_string(id), "name", "email"});
    if (stored.elements.at(0).is_nil()) throw no_user(id);
    return User{id, stored.elements.at(0).text, stored.elements.at(1).text};
}

std::pair<std::vector<User>, std::optional<std::int64_t>> UserStore::list(
    int limit, std::optional<std::int64_t> after) {
    std::string low = after.has_value() ? "(" + std::to_string(*after) : "-inf";
    RedisReply ids = redis_.command(
        {"ZRANGEBYSCORE", ids_, low, "+inf", "LIMIT", "0", std::to_string(limit + 1)});
    std::vector<std::int64_t> page;
    for (size_t i = 0; i < ids.elements.size() && i < static_cast<size_t>(limit); ++i) {
        page.push_back(std::stoll(ids.elements[i].text));
    }
    std::vector<std::vector<std::string>> reads;
    for (std::int64_t id : page) {
        reads.push_back({"HMGET", user_prefix_ + std::to_string(id), "name", "email"});
    }
    std::vector<RedisReply> rows;
    if (!reads.empty()) rows = redis_.pipeline(reads);
    std::vector<User> users;
    for (size_t i = 0; i < page.size(); ++i) {
        const RedisReply& row = rows.at(i);
        if (row.elements.at(0).is_nil()) continue;  // deleted meanwhile
        users.push_back(User{page[i], row.elements.at(0).text, row.elements.at(1).text});
    }
    std::optional<std::int64_t> next_after;
    if (ids.elements.size() > static_cast<size_t>(limit)) next_after = page.back();
    return {users, next_after};
}

User UserStore::update(std::int64_t id, const std::optional<std::string>& name,
                       const std::optional<std::string>& email) {
    RedisReply reply = redis_.eval(kUpdateUserScript, {user_prefix_ + std::to_string(id)},
                                   {name.value_or(""), email.value_or(""), email_prefix_,
                                    std::to_string(id)});
    long long outcome = reply.elements.at(0).integer;
    if (outcome == 0) throw no_user(id);
    if (outcome == -1) throw conflict("email already in use: " + email.value_or(""), "email");
    return User{id, reply.elements.at(1).text, reply.elements.at(2).text};
}

void UserStore::remove(std::int64_t id) {
    RedisReply done = redis_.eval(kDeleteUserScript, {user_prefix_ + std::to_string(id), ids_},
                                  {email_prefix_, std::to_string(id)});
    if (done.integer == 0) throw no_user(id);
}
