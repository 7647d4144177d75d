// A blocking Redis connection (hiredis) that reconnects by itself on the next call.
//
// Every failure of a call (no connection, a timeout, an error reply such as READONLY) is
// StoreUnavailable, as adapters/redis_errors.py maps them: the store did not do what was asked.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config.hpp"

struct redisContext;

// A reply, copied out of hiredis.
struct RedisReply {
    enum class Type { Nil, String, Integer, Array, Status };
    Type type = Type::Nil;
    std::string text;
    long long integer = 0;
    std::vector<RedisReply> elements;

    bool is_nil() const { return type == Type::Nil; }
};

class RedisClient {
public:
    explicit RedisClient(StoreUrl url);
    ~RedisClient();
    RedisClient(const RedisClient&) = delete;
    RedisClient& operator=(const RedisClient&) = delete;

    RedisReply command(const std::vector<std::string>& args);
    // Several commands in one round trip; all their replies, or StoreUnavailable.
    std::vector<RedisReply> pipeline(const std::vector<std::vector<std::string>>& commands);
    // EVALSHA of `script` (loaded on first use, and again after NOSCRIPT).
    RedisReply eval(const char* script, const std::vector<std::string>& keys,
                    const std::vector<std::string>& args);
    void ping();
    void disconnect();

    static constexpr double kSocketTimeoutS = 2.0;  // as adapters/redis_wiring.py

private:
    void ensure_connected();
    RedisReply take(void* raw, const char* what);
    [[noreturn]] void fail(const std::string& what, const std::string& why);

    StoreUrl url_;
    redisContext* context_ = nullptr;
    std::map<const char*, std::string> shas_;  // script text -> SHA1 Redis gave for it
};
