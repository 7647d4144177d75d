// Configuration from the environment, with the names and defaults of reference/settings.py.
#pragma once

#include <string>

struct BrokerUrl {
    std::string host;
    int port = 5672;
    std::string user = "guest";
    std::string password = "guest";
    std::string vhost = "/";
    int heartbeat_s = 10;  // `?heartbeat=N` in the URL overrides it (0: none)
};

struct StoreUrl {
    bool unix_socket = false;
    std::string host;  // or the socket path
    int port = 6379;
    int db = 0;
    std::string user;      // empty: none (AUTH with the password only)
    std::string password;  // empty: no AUTH
};

struct Config {
    BrokerUrl broker;
    StoreUrl store;
    std::string broker_text;  // the URLs as given, for log lines (password hidden)
    std::string store_text;
    std::string queue = "request_message";
    std::string queue_type = "classic";  // or "quorum"
    int delivery_limit = 5;
    std::string key_prefix;
    double result_ttl_s = 3600.0;
    double running_ttl_s = 600.0;
    double claim_ttl_s = 10.0;
    double connect_timeout_s = 10.0;
    double shutdown_timeout_s = 10.0;
    std::string roles_policy;  // REFERENCE_ROLES_POLICY: inline JSON or a file's path

    // A quorum queue's x-delivery-limit: a backstop above the worker's own bound
    // (Settings.quorum_delivery_limit, QUORUM_LIMIT_FACTOR = 4).
    int quorum_delivery_limit() const { return 4 * delivery_limit; }
};

// Reads REFERENCE_* variables; throws ConfigError with one readable line.
Config load_config();

// Exposed for checks: parse one URL of each kind.
BrokerUrl parse_broker_url(const std::string& url);
StoreUrl parse_store_url(const std::string& url);
