#include "result_store.hpp"

#include <stdexcept>

#include "lua_scripts.hpp"

std::string ttl_ms(double seconds) {
    auto ms = static_cast<long long>(seconds * 1000);
    return std::to_string(ms < 1 ? 1 : ms);
}

ResultStore::ResultStore(RedisClient& redis, std::string key_prefix)
    : redis_(redis), prefix_(std::move(key_prefix)) {}

std::string ResultStore::begin(const std::string& rid, const std::string& holder,
                               const ResultRecord& running, double claim_ttl_s,
                               double running_ttl_s, int start_limit, double starts_ttl_s) {
    RedisReply state = redis_.eval(
        kBeginScript, {key(rid), marker_key(rid), claim_key(rid), starts_key(rid)},
        {holder, ttl_ms(claim_ttl_s), running.to_json(), ttl_ms(running_ttl_s),
         std::to_string(start_limit), ttl_ms(starts_ttl_s), updates_channel(), rid});
    return state.text;
}

bool ResultStore::put(const std::string& rid, const ResultRecord& record, double ttl_s) {
    if (record.is_final()) return write_final(rid, record, ttl_s, false);
    RedisReply written = redis_.eval(kProgressScript, {key(rid), marker_key(rid)},
                                     {record.to_json(), ttl_ms(ttl_s), updates_channel(), rid});
    return written.integer != 0;
}

bool ResultStore::finish(const std::string& rid, const std::string& /*holder*/,
                         const ResultRecord& final_record, double ttl_s) {
    return write_final(rid, final_record, ttl_s, true);
}

bool ResultStore::write_final(const std::string& rid, const ResultRecord& final_record,
                              double ttl_s, bool release_claim) {
    if (!final_record.is_final()) throw std::logic_error("not a final record: " + final_record.status);
    RedisReply written = redis_.eval(
        kFinishScript, {key(rid), marker_key(rid), claim_key(rid)},
        {final_record.to_json(), ttl_ms(ttl_s), finals_channel(), rid, release_claim ? "1" : ""});
    return written.integer != 0;
}

bool ResultStore::renew_claim(const std::string& rid, const std::string& holder, double ttl_s) {
    RedisReply ours = redis_.eval(kRenewClaimScript, {claim_key(rid)}, {holder, ttl_ms(ttl_s)});
    return ours.integer != 0;
}

void ResultStore::release_claim(const std::string& rid, const std::string& holder) {
    redis_.eval(kReleaseClaimScript, {claim_key(rid), starts_key(rid)}, {holder});
}
