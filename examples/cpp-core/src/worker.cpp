#include "worker.hpp"

#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <typeinfo>

#include "clock.hpp"
#include "errors.hpp"
#include "log.hpp"

namespace {

std::string type_name(const std::exception& exc) {
    int status = 0;
    const char* mangled = typeid(exc).name();
    std::unique_ptr<char, void (*)(void*)> readable(
        abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
    return status == 0 && readable ? readable.get() : mangled;
}

double as_double(const Json& number) {
    if (number.is_number_unsigned()) return static_cast<double>(number.get<std::uint64_t>());
    if (number.is_number_integer()) return static_cast<double>(number.get<std::int64_t>());
    return number.get<double>();
}

Json error_json(const std::string& code, const std::string& message, const std::string& field = "") {
    Json error = Json::object();
    error["code"] = code;
    error["message"] = message;
    if (!field.empty()) error["field"] = field;
    return error;
}

// The request id of a message that failed in an unexpected way, if it has a usable one.
std::string request_id_of(const std::string& body) {
    try {
        return decode_message(body).request_id;
    } catch (...) {
        return "";
    }
}

}  // namespace

Worker::Worker(const Config& config, const RolesPolicy& policy, AmqpLink& amqp, ResultStore& results,
               UserStore& users, std::string worker_id)
    : config_(config),
      policy_(policy),
      amqp_(amqp),
      results_(results),
      users_(users),
      worker_id_(std::move(worker_id)) {}

// --- the loop -----------------------------------------------------------------------------

void Worker::run() {
    Backoff backoff(0.1, 5.0);
    while (!stop_requested()) {
        if (!amqp_.connected()) {
            try {
                amqp_.connect();
                log_info("rabbitmq connected; consuming " + config_.queue);
                backoff.reset();
            } catch (const std::exception& exc) {  // BrokerUnavailable, or a queue mismatch
                double pause = backoff.next();
                log_warning(std::string(exc.what()) + "; trying again in " +
                            std::to_string(pause).substr(0, 4) + " s");
                wait(pause, WaitMode::Interruptible);
                continue;
            }
        }
        try {
            std::optional<Delivery> delivery = amqp_.next_delivery(0.2);
            if (delivery) handle(*delivery);
        } catch (const BrokerUnavailable&) {
            // Already logged where the connection was dropped; connect again above.
        }
    }
    notice_stop();
    amqp_.close();
}

void Worker::notice_stop() {
    if (stopping_ || !stop_requested()) return;
    stopping_ = true;
    stop_seen_at_ = monotonic_s();
    if (in_delivery_) {
        log_info("stopping: finishing in-flight work");
        amqp_.stop_consuming();
    } else {
        log_info("stopping");
    }
}

void Worker::wait(double seconds, WaitMode mode) {
    double end = monotonic_s() + seconds;
    for (;;) {
        notice_stop();
        if (stopping_) {
            if (mode == WaitMode::Interruptible) return;
            if (monotonic_s() > stop_seen_at_ + config_.shutdown_timeout_s) throw Cancelled{};
        }
        renew_claim_if_due();
        double left = end - monotonic_s();
        if (left <= 0) return;
        amqp_.pump(left < kWaitSliceS ? left : kWaitSliceS);
    }
}

void Worker::renew_claim_if_due() {
    if (claimed_.empty() || monotonic_s() < next_renewal_) return;
    next_renewal_ = monotonic_s() + config_.claim_ttl_s / 3;
    try {
        if (!results_.renew_claim(claimed_, worker_id_, config_.claim_ttl_s)) {
            log_warning("the claim on " + claimed_ + " expired while this worker ran it");
        }
    } catch (const StoreUnavailable& exc) {
        log_warning("could not renew the claim on " + claimed_ + ": " + exc.what());
    }
}

// --- one delivery ---------------------------------------------------------------------------

void Worker::handle(const Delivery& delivery) {
    in_delivery_ = true;
    note_.clear();
    double started = monotonic_s();
    std::optional<RequestMessage> message;
    std::string poison_rid;
    try {
        std::function<void()> step;
        try {
            message = decode_message(delivery.body);
            step = [&] { handle_message(delivery, *message); };
        } catch (const PoisonMessage& poison) {
            std::string reason = poison.what();
            std::string rid = poison.request_id;
            poison_rid = rid;
            step = [this, &delivery, reason, rid] {
                dead_letter(delivery, "poison", reason, rid, "validation", nullptr, true);
            };
        }
        handle_through_outages(delivery, step);
    } catch (const Cancelled&) {
        hand_back(delivery);
        note_ = "handed back at shutdown";
    } catch (const BrokerUnavailable& exc) {
        // The settle could not be sent: the broker hands the message out again, and the
        // record tells the next worker what is left to do.
        log_warning(std::string("broker unavailable while settling a delivery: ") + exc.what());
        note_ += note_.empty() ? "not settled (broker lost)" : ", not settled (broker lost)";
    } catch (const std::exception& exc) {
        log_error("unexpected error on a delivery; dead-lettering it: " + type_name(exc) + ": " +
                  exc.what());
        dead_letter(delivery, "internal", "internal error: " + type_name(exc),
                    request_id_of(delivery.body), "internal", nullptr, false);
    }
    in_delivery_ = false;
    char took[32];
    std::snprintf(took, sizeof took, "%.1f", (monotonic_s() - started) * 1000);
    std::string rid = message ? message->request_id : request_id_of(delivery.body);
    if (rid.empty()) rid = poison_rid;
    std::string action = message ? message->action : "-";
    std::string line = "request " + (rid.empty() ? std::string("?") : rid) + " " + action + ": " +
                       note_ + " (" + took + " ms" + (delivery.redelivered ? ", redelivered" : "") + ")";
    if (note_.rfind("dead-lettered", 0) == 0 || note_.rfind("handed back", 0) == 0) {
        log_warning(line);
    } else {
        log_info(line);
    }
}

void Worker::handle_through_outages(const Delivery& delivery, const std::function<void()>& step) {
    // Through a store outage the delivery is held (not handed back at once): the prefetch slot
    // stays busy, so no new work is taken while Redis is away. Handed back at shutdown, or
    // after kStoreHoldS.
    double give_up_at = monotonic_s() + kStoreHoldS;
    Backoff backoff(kRetryDelayS, 5.0);
    for (;;) {
        try {
            step();
            return;
        } catch (const StoreUnavailable& exc) {
            double pause = backoff.next();
            notice_stop();
            if (stopping_ || monotonic_s() + pause > give_up_at) {
                log_warning(std::string("store unavailable, handing the message back: ") + exc.what());
                hand_back(delivery);
                note_ = "handed back (store unavailable)";
                return;
            }
            log_warning(std::string("store unavailable, trying again in ") +
                        std::to_string(pause).substr(0, 4) + " s: " + exc.what());
            wait(pause, WaitMode::Interruptible);
        }
    }
}

void Worker::handle_message(const Delivery& delivery, const RequestMessage& message) {
    const std::string& rid = message.request_id;
    double started = now_ms();
    ResultRecord running;
    running.status = kRunning;
    running.detail = "running";
    running.progress = 0;
    if (message.principal) running.owner = message.principal->sub;
    running.queued_at = message.queued_at;
    running.started_at = started;
    running.updated_at = started;

    const Action* action = nullptr;
    Json params;
    try {
        action = &check(message, started, params);
    } catch (const DomainError& refusal) {
        // Refused before any work: the final record, written once whoever gets here first.
        FinalOutcome outcome;
        outcome.error = refusal;
        finish(rid, running, outcome, false);
        ack(delivery);
        return;
    }
    std::string state = begin(rid, running);
    if (state == "held") state = wait_for_holder(rid, running);
    if (state == "final") {
        ack(delivery);
        note_ = "already final, acked without running";
        return;
    }
    if (state == "stopping") {  // someone else will take it
        hand_back(delivery);
        note_ = "held by another worker; handed back at shutdown";
        return;
    }
    if (state == "exhausted") {
        std::string reason = "given up: started " + std::to_string(config_.delivery_limit) +
                             " times without finishing (the delivery limit)";
        dead_letter(delivery, "delivery_limit", reason, rid, "internal", &running, true);
        return;
    }
    if (state != "started") throw std::runtime_error("begin script answered " + state);
    claimed_ = rid;
    next_renewal_ = monotonic_s() + config_.claim_ttl_s / 3;
    try {
        run_action(message, *action, params, running);
    } catch (...) {
        // Handed back (shutdown or outage): let the next worker take it without waiting for
        // the claim to expire.
        claimed_.clear();
        try {
            results_.release_claim(rid, worker_id_);
        } catch (...) {
        }
        throw;
    }
    claimed_.clear();
    ack(delivery);
}

const Action& Worker::check(const RequestMessage& message, double now, Json& params) const {
    if (message.deadline && now > as_double(*message.deadline)) {
        char text[96];
        std::snprintf(text, sizeof text, "deadline passed %.0f ms before the work could start",
                      now - as_double(*message.deadline));
        throw DomainError("deadline_exceeded", text);
    }
    if (message.version != 1) {
        throw validation_failed("unsupported message version " + message.version.dump(), "version");
    }
    const Action& action = lookup_action(message.action);
    policy_.check(action.name, message.principal);
    params = action.validate(message.params);
    return action;
}

std::string Worker::begin(const std::string& rid, const ResultRecord& running) {
    return results_.begin(rid, worker_id_, running, config_.claim_ttl_s, config_.running_ttl_s,
                          config_.delivery_limit, config_.result_ttl_s);
}

std::string Worker::wait_for_holder(const std::string& rid, const ResultRecord& running) {
    // Another live worker runs this request: wait until it is final, or its claim expires
    // and this worker takes over, or this worker is stopping.
    double pause = config_.claim_ttl_s / 4;
    while (!stopping_) {
        wait(pause, WaitMode::Interruptible);
        double now = now_ms();
        ResultRecord again = running;
        again.started_at = now;
        again.updated_at = now;
        std::string state = begin(rid, again);
        if (state != "held") return state;
    }
    return "stopping";
}

void Worker::run_action(const RequestMessage& message, const Action& action, const Json& params,
                        const ResultRecord& base) {
    const std::string& rid = message.request_id;
    ActionContext context{
        rid,
        users_,
        [&](int percent, const std::string& detail) {
            ResultRecord update = base;
            update.progress = percent;
            update.detail = detail;
            update.updated_at = now_ms();
            results_.put(rid, update, config_.running_ttl_s);
            renew_claim_if_due();
        },
        [&](double seconds) { wait(seconds, WaitMode::Work); },
    };
    FinalOutcome outcome;
    try {
        outcome.success = action.run(context, params);
    } catch (const DomainError& exc) {
        outcome.error = exc;
    } catch (const StoreUnavailable&) {
        throw;
    } catch (const std::exception& exc) {
        log_error("action " + message.action + " failed for request " + rid + ": " +
                  type_name(exc) + ": " + exc.what());
    }
    finish(rid, base, outcome, true);
}

void Worker::finish(const std::string& rid, const ResultRecord& base, const FinalOutcome& outcome,
                    bool as_holder) {
    double now = now_ms();
    ResultRecord final_record = base;
    final_record.updated_at = now;
    final_record.finished_at = now;
    if (outcome.success) {
        final_record.status = kSuccess;
        final_record.detail = outcome.success->detail;
        if (!outcome.success->result.is_null()) final_record.result = outcome.success->result;
        final_record.progress = 100;
        note_ = "Success";
    } else if (outcome.error) {
        final_record.status = kFail;
        final_record.detail = outcome.error->message;
        final_record.error = error_json(outcome.error->code, outcome.error->message, outcome.error->field);
        final_record.progress.reset();
        note_ = "Fail " + outcome.error->code;
    } else {
        final_record.status = kFail;
        final_record.detail = "internal error";
        final_record.error = error_json("internal", "internal error");
        final_record.progress.reset();
        note_ = "Fail internal";
    }
    bool written = as_holder ? results_.finish(rid, worker_id_, final_record, config_.result_ttl_s)
                             : results_.put(rid, final_record, config_.result_ttl_s);
    if (written) {
        ++processed_;
    } else {
        note_ += " (a final record was there already)";
    }
}

void Worker::dead_letter(const Delivery& delivery, const std::string& why, const std::string& reason,
                         const std::string& rid, const std::string& code, const ResultRecord* base,
                         bool record_first) {
    if (!rid.empty()) {
        double now = now_ms();
        ResultRecord record;
        if (base != nullptr) record = *base;
        record.status = kFail;
        record.detail = reason;
        record.error = error_json(code, reason);
        record.progress.reset();
        record.updated_at = now;
        record.finished_at = now;
        try {
            results_.put(rid, record, config_.result_ttl_s);
        } catch (const StoreUnavailable& exc) {
            if (record_first) throw;
            log_warning("could not write the Fail record of " + rid + ": store unavailable");
        } catch (const std::exception& exc) {
            log_warning("could not write the Fail record of " + rid + ": " + exc.what());
        }
    }
    note_ = "dead-lettered (" + why + "): " + reason;
    try {
        amqp_.reject(delivery, false);
    } catch (const std::exception& exc) {
        log_warning("could not dead-letter " + (rid.empty() ? std::string("a message") : rid) +
                    " (the broker will hand it out again): " + exc.what());
    }
}

void Worker::hand_back(const Delivery& delivery) {
    try {
        amqp_.reject(delivery, true);
    } catch (const std::exception& exc) {
        log_warning(std::string("could not hand a message back (the broker will anyway): ") + exc.what());
    }
}

void Worker::ack(const Delivery& delivery) { amqp_.ack(delivery); }
