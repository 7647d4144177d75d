// The core worker: per delivery, the flow of reference/worker.py.
//
// Decode (poison -> Fail record when the request id is readable, then dead-letter), check
// deadline, version, action and params (a refusal is the final record), claim the request and
// write Running (or: final already -> ack; held by a live worker -> wait for it; started too
// often -> dead-letter), run the action with progress while renewing the claim, write exactly
// one final record, and only then ack. Every delivery is settled on every path.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "actions.hpp"
#include "amqp_link.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "message.hpp"
#include "record.hpp"
#include "result_store.hpp"
#include "roles_policy.hpp"
#include "user_store.hpp"

// Set by SIGTERM/SIGINT (see main.cpp).
bool stop_requested();

class Worker {
public:
    Worker(const Config& config, const RolesPolicy& policy, AmqpLink& amqp, ResultStore& results,
           UserStore& users, std::string worker_id);

    // Consume until stop_requested(), reconnecting to RabbitMQ with backoff.
    void run();
    std::uint64_t processed() const { return processed_; }
    const std::string& worker_id() const { return worker_id_; }

private:
    enum class WaitMode {
        Work,          // the whole time; past the shutdown bound, throws Cancelled
        Interruptible  // returns early once stopping
    };
    struct FinalOutcome {
        std::optional<Outcome> success;
        std::optional<DomainError> error;  // neither: internal error
    };

    void handle(const Delivery& delivery);
    void handle_through_outages(const Delivery& delivery, const std::function<void()>& step);
    void handle_message(const Delivery& delivery, const RequestMessage& message);
    const Action& check(const RequestMessage& message, double now, Json& params) const;
    std::string begin(const std::string& rid, const ResultRecord& running);
    std::string wait_for_holder(const std::string& rid, const ResultRecord& running);
    void run_action(const RequestMessage& message, const Action& action, const Json& params,
                    const ResultRecord& base);
    void finish(const std::string& rid, const ResultRecord& base, const FinalOutcome& outcome,
                bool as_holder);
    void dead_letter(const Delivery& delivery, const std::string& why, const std::string& reason,
                     const std::string& rid, const std::string& code, const ResultRecord* base,
                     bool record_first);
    void hand_back(const Delivery& delivery);
    void ack(const Delivery& delivery);

    void wait(double seconds, WaitMode mode);
    void notice_stop();
    void renew_claim_if_due();

    const Config& config_;
    const RolesPolicy& policy_;
    AmqpLink& amqp_;
    ResultStore& results_;
    UserStore& users_;
    std::string worker_id_;

    bool stopping_ = false;
    double stop_seen_at_ = 0;
    bool in_delivery_ = false;
    std::string claimed_;  // the request this worker holds the claim on now, if any
    double next_renewal_ = 0;
    std::uint64_t processed_ = 0;  // final records this worker wrote
    std::string note_;             // how the current delivery ended, for its log line

    static constexpr double kStoreHoldS = 30.0;    // a delivery is held this long through a store outage
    static constexpr double kRetryDelayS = 0.5;    // first pause before trying again
    static constexpr double kWaitSliceS = 0.1;     // granularity of waits (stop, claim renewal)
};
