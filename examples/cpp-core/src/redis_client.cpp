#include "redis_client.hpp"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include "errors.hpp"

namespace {

timeval to_timeval(double seconds) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(seconds);
    tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
    return tv;
}

RedisReply convert(const redisReply* raw) {
    RedisReply out;
    switch (raw->type) {
        case REDIS_REPLY_STRING:
            out.type = RedisReply::Type::String;
            out.text.assign(raw->str, raw->len);
            break;
        case REDIS_REPLY_STATUS:
            out.type = RedisReply::Type::Status;
            out.text.assign(raw->str, raw->len);
            break;
        case REDIS_REPLY_INTEGER:
            out.type = RedisReply::Type::Integer;
            out.integer = raw->integer;
            break;
        case REDIS_REPLY_ARRAY:
            out.type = RedisReply::Type::Array;
            for (size_t i = 0; i < raw->elements; ++i) out.elements.push_back(convert(raw->element[i]));
            break;
        default:
            out.type = RedisReply::Type::Nil;
    }
    return out;
}

struct ErrorReply {
    std::string text;
};

}  // namespace

RedisClient::RedisClient(StoreUrl url) : url_(std::move(url)) {}

RedisClient::~RedisClient() { disconnect(); }

void RedisClient::disconnect() {
    if (context_ != nullptr) {
        redisFree(context_);
        context_ = nullptr;
    }
}

void RedisClient::fail(const std::string& what, const std::string& why) {
    disconnect();
    throw StoreUnavailable("redis " + what + " failed: " + why);
}

RedisReply RedisClient::take(void* raw, const char* what) {
    if (raw == nullptr) {
        std::string why = context_ != nullptr && context_->err ? context_->errstr : "no reply";
        fail(what, why);
    }
    auto* reply = static_cast<redisReply*>(raw);
    if (reply->type == REDIS_REPLY_ERROR) {
        std::string text(reply->str, reply->len);
        freeReplyObject(reply);
        throw ErrorReply{text};
    }
    RedisReply out = convert(reply);
    freeReplyObject(reply);
    return out;
}

void RedisClient::ensure_connected() {
    if (context_ != nullptr) return;
    timeval tv = to_timeval(kSocketTimeoutS);
    context_ = url_.unix_socket ? redisConnectUnixWithTimeout(url_.host.c_str(), tv)
                                : redisConnectWithTimeout(url_.host.c_str(), url_.port, tv);
    if (context_ == nullptr) throw StoreUnavailable("redis connect failed: out of memory");
    if (context_->err) fail("connect", context_->errstr);
    if (redisSetTimeout(context_, tv) != REDIS_OK) fail("connect", "cannot set the socket timeout");
    try {
        if (!url_.password.empty()) {
            std::vector<std::string> auth = {"AUTH"};
            if (!url_.user.empty()) auth.push_back(url_.user);
            auth.push_back(url_.password);
            command(auth);
        }
        if (url_.db != 0) command({"SELECT", std::to_string(url_.db)});
    } catch (const StoreUnavailable&) {
        disconnect();
        throw;
    }
}

RedisReply RedisClient::command(const std::vector<std::string>& args) {
    ensure_connected();
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& arg : args) {
        argv.push_back(arg.data());
        lens.push_back(arg.size());
    }
    void* raw = redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lens.data());
    try {
        return take(raw, args.empty() ? "command" : args[0].c_str());
    } catch (const ErrorReply& error) {
        throw StoreUnavailable("redis " + args[0] + " failed: " + error.text);
    }
}

std::vector<RedisReply> RedisClient::pipeline(const std::vector<std::vector<std::string>>& commands) {
    ensure_connected();
    for (const auto& args : commands) {
        std::vector<const char*> argv;
        std::vector<size_t> lens;
        for (const std::string& arg : args) {
            argv.push_back(arg.data());
            lens.push_back(arg.size());
        }
        if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(),
                                   lens.data()) != REDIS_OK) {
            fail("pipeline", "cannot queue a command");
        }
    }
    std::vector<RedisReply> replies;
    std::string error;
    for (size_t i = 0; i < commands.size(); ++i) {
        void* raw = nullptr;
        if (redisGetReply(context_, &raw) != REDIS_OK) raw = nullptr;
        try {
            replies.push_back(take(raw, "pipeline"));
        } catch (const ErrorReply& reply) {
            error = reply.text;  // read the other replies first: the connection stays in step
        }
    }
    if (!error.empty()) throw StoreUnavailable("redis pipeline failed: " + error);
    return replies;
}

RedisReply RedisClient::eval(const char* script, const std::vector<std::string>& keys,
                             const std::vector<std::string>& args) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto known = shas_.find(script);
        if (known == shas_.end()) {
            RedisReply loaded = command({"SCRIPT", "LOAD", script});
            known = shas_.emplace(script, loaded.text).first;
        }
        std::vector<std::string> argv = {"EVALSHA", known->second, std::to_string(keys.size())};
        argv.insert(argv.end(), keys.begin(), keys.end());
        argv.insert(argv.end(), args.begin(), args.end());
        ensure_connected();
        std::vector<const char*> raw_argv;
        std::vector<size_t> lens;
        for (const std::string& arg : argv) {
            raw_argv.push_back(arg.data());
            lens.push_back(arg.size());
        }
        void* raw = redisCommandArgv(context_, static_cast<int>(raw_argv.size()), raw_argv.data(),
                                     lens.data());
        try {
            return take(raw, "EVALSHA");
        } catch (const ErrorReply& error) {
            if (error.text.rfind("NOSCRIPT", 0) == 0 && attempt == 0) {
                shas_.erase(script);  // flushed or a new server: load it again
                continue;
            }
            throw StoreUnavailable("redis script failed: " + error.text);
        }
    }
    throw StoreUnavailable("redis script failed: NOSCRIPT after loading it");
}

void RedisClient::ping() { command({"PING"}); }
