// Result records and work claims in Redis, with the key layout of adapters/redis_keys.py:
//   <prefix><request_id>                     the record (JSON)
//   <prefix>final:{<prefix><request_id>}     the finality marker, set with the final record
//   <prefix>claim:{<prefix><request_id>}     the claim: the holder's worker id, short expiry
//   <prefix>starts:{<prefix><request_id>}    how often the request was claimed afresh
// (the hash tag, the record's key, keeps every key of one request in one Redis Cluster slot)
// with each Running write (BEGIN's start, PROGRESS) announced on <prefix>reference:updates
// and each final record on <prefix>reference:finals (the payload: the request id).
#pragma once

#include <string>

#include "record.hpp"
#include "redis_client.hpp"

class ResultStore {
public:
    ResultStore(RedisClient& redis, std::string key_prefix);

    // Claim the request and write Running: "started", or "final", "held", "exhausted".
    std::string begin(const std::string& rid, const std::string& holder, const ResultRecord& running,
                      double claim_ttl_s, double running_ttl_s, int start_limit,
                      double starts_ttl_s);
    // A final record goes through the finish script (never overwriting a final one), any
    // other through the progress script (never over a final one). True when written.
    bool put(const std::string& rid, const ResultRecord& record, double ttl_s);
    // The holder's final record; releases its claim.
    bool finish(const std::string& rid, const std::string& holder, const ResultRecord& final_record,
                double ttl_s);
    bool renew_claim(const std::string& rid, const std::string& holder, double ttl_s);
    void release_claim(const std::string& rid, const std::string& holder);

private:
    bool write_final(const std::string& rid, const ResultRecord& final_record, double ttl_s,
                     bool release_claim);
    std::string key(const std::string& rid) const { return prefix_ + rid; }
    std::string tagged(const char* family, const std::string& rid) const {
        return prefix_ + family + "{" + key(rid) + "}";
    }
    std::string marker_key(const std::string& rid) const { return tagged("final:", rid); }
    std::string claim_key(const std::string& rid) const { return tagged("claim:", rid); }
    std::string starts_key(const std::string& rid) const { return tagged("starts:", rid); }
    std::string finals_channel() const { return prefix_ + "reference:finals"; }
    std::string updates_channel() const { return prefix_ + "reference:updates"; }

    RedisClient& redis_;
    std::string prefix_;
};

// Seconds as the scripts' milliseconds: max(1, int(seconds * 1000)), as the Python core.
std::string ttl_ms(double seconds);
