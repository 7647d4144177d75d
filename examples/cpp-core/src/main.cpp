// reference-core: a core worker for the reference service, interchangeable with the Python
// one (`reference worker`) on the same queue and Redis. See ../README.md.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <random>
#include <string>

#include "amqp_link.hpp"
#include "clock.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "log.hpp"
#include "redis_client.hpp"
#include "result_store.hpp"
#include "roles_policy.hpp"
#include "user_store.hpp"
#include "worker.hpp"

namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

void install_signal_handlers() {
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: a blocking wait ends early
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a write to a dropped socket is an error, not a death
}

// hostname:pid:8 hex digits, as the Python worker names itself.
std::string make_worker_id() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
    std::random_device random;
    char suffix[9];
    std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(random()));
    return std::string(host) + ":" + std::to_string(getpid()) + ":" + suffix;
}

int fail(int code, const std::string& line) {
    std::fprintf(stderr, "reference-core: error: %s\n", line.c_str());
    return code;
}

}  // namespace

bool stop_requested() { return g_stop != 0; }

int main() {
    install_signal_handlers();
    Config config;
    RolesPolicy policy;
    try {
        config = load_config();
        policy = RolesPolicy::load(config.roles_policy);
    } catch (const ConfigError& exc) {
        return fail(2, exc.what());
    }

    AmqpLink amqp(config);
    RedisClient redis(config.store);
    ResultStore results(redis, config.key_prefix);
    UserStore users(redis, config.key_prefix);

    // Reach broker and store (and declare the queue) within the connect timeout.
    double deadline = monotonic_s() + config.connect_timeout_s;
    Backoff backoff(0.1, 2.0);
    for (;;) {
        try {
            amqp.connect();
            redis.ping();
            break;
        } catch (const ConfigError& exc) {
            return fail(2, exc.what());
        } catch (const std::exception& exc) {  // BrokerUnavailable or StoreUnavailable
            double pause = backoff.next();
            if (monotonic_s() + pause > deadline) {
                char limit[32];
                std::snprintf(limit, sizeof limit, "%g", config.connect_timeout_s);
                return fail(1, std::string("could not reach the broker or store within ") + limit +
                                   " s: " + exc.what());
            }
            log_warning(std::string("waiting for broker and store: ") + exc.what());
            amqp.pump(pause);
            if (stop_requested()) return 0;
        }
    }

    Worker worker(config, policy, amqp, results, users, make_worker_id());
    log_info("worker " + worker.worker_id() + " consuming " + config.queue + " (" +
             config.queue_type + " queue; broker " + config.broker_text + ", store " +
             config.store_text + (config.key_prefix.empty() ? "" : ", key prefix " + config.key_prefix) +
             ")");
    worker.run();
    log_info("worker stopped after " + std::to_string(worker.processed()) + " requests");
    return 0;
}
