#include "config.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "errors.hpp"

namespace {

std::string quoted(const std::string& text) { return "'" + text + "'"; }

std::string env(const char* name) {
    const char* value = std::getenv(name);
    return value == nullptr ? std::string() : std::string(value);
}

std::string trim(const std::string& text) {
    size_t first = 0;
    size_t last = text.size();
    while (first < last && std::isspace(static_cast<unsigned char>(text[first]))) ++first;
    while (last > first && std::isspace(static_cast<unsigned char>(text[last - 1]))) --last;
    return text.substr(first, last - first);
}

bool parse_long(const std::string& raw, long long& out) {
    std::string text = trim(raw);
    if (text.empty()) return false;
    errno = 0;
    char* end = nullptr;
    out = std::strtoll(text.c_str(), &end, 10);
    return errno == 0 && end != nullptr && *end == '\0';
}

bool parse_double(const std::string& raw, double& out) {
    std::string text = trim(raw);
    if (text.empty()) return false;
    errno = 0;
    char* end = nullptr;
    out = std::strtod(text.c_str(), &end);
    return errno == 0 && end != nullptr && *end == '\0' && std::isfinite(out);
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string percent_decode(const std::string& text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
            hex_value(text[i + 2]) >= 0) {
            out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
            i += 2;
        } else {
            out += text[i];
        }
    }
    return out;
}

// A URL split as Python's urllib.parse.urlsplit does, with the parts a client needs.
struct UrlParts {
    std::string scheme;
    bool has_credentials = false;
    std::string user;
    std::string password;
    std::string host;  // lower-cased, brackets of an IPv6 literal removed
    int port = -1;     // -1: none given
    std::string path;
    std::string query;
};

UrlParts split_url(const std::string& url, const std::string& what) {
    UrlParts parts;
    auto bad = [&](const std::string& why) {
        return ConfigError("bad " + what + " URL " + quoted(url) + ": " + why);
    };
    size_t colon = url.find(':');
    if (colon == std::string::npos || colon == 0) throw bad("no scheme");
    for (size_t i = 0; i < colon; ++i) {
        char c = url[i];
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
            throw bad("no scheme");
        }
        parts.scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::string rest = url.substr(colon + 1);
    size_t hash = rest.find('#');
    if (hash != std::string::npos) rest.erase(hash);
    size_t question = rest.find('?');
    if (question != std::string::npos) {
        parts.query = rest.substr(question + 1);
        rest.erase(question);
    }
    std::string netloc;
    if (rest.rfind("//", 0) == 0) {
        size_t slash = rest.find('/', 2);
        netloc = rest.substr(2, slash == std::string::npos ? std::string::npos : slash - 2);
        parts.path = slash == std::string::npos ? "" : rest.substr(slash);
    } else {
        parts.path = rest;
    }
    std::string hostport = netloc;
    size_t at = netloc.rfind('@');
    if (at != std::string::npos) {
        parts.has_credentials = true;
        std::string userinfo = netloc.substr(0, at);
        hostport = netloc.substr(at + 1);
        size_t sep = userinfo.find(':');
        parts.user = percent_decode(userinfo.substr(0, sep));
        if (sep != std::string::npos) parts.password = percent_decode(userinfo.substr(sep + 1));
    }
    std::string port_text;
    if (!hostport.empty() && hostport[0] == '[') {
        size_t close = hostport.find(']');
        if (close == std::string::npos) throw bad("Invalid IPv6 URL");
        parts.host = hostport.substr(1, close - 1);
        std::string after = hostport.substr(close + 1);
        if (!after.empty() && after[0] == ':') port_text = after.substr(1);
    } else {
        size_t sep = hostport.find(':');
        parts.host = hostport.substr(0, sep);
        if (sep != std::string::npos) port_text = hostport.substr(sep + 1);
    }
    for (char& c : parts.host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!port_text.empty()) {
        for (char c : port_text) {
            if (!std::isdigit(static_cast<unsigned char>(c))) {
                throw bad("Port could not be cast to integer value as " + quoted(port_text));
            }
        }
        if (port_text.size() > 5 || std::stol(port_text) > 65535) {
            throw bad("Port out of range 0-65535");
        }
        parts.port = static_cast<int>(std::stol(port_text));
    }
    return parts;
}

// The value of `name` in a query string ("a=1&b=2"), or "" when absent.
bool query_value(const std::string& query, const std::string& name, std::string& value) {
    size_t start = 0;
    while (start <= query.size()) {
        size_t end = query.find('&', start);
        std::string item = query.substr(start, end == std::string::npos ? std::string::npos
                                                                          : end - start);
        size_t eq = item.find('=');
        if (item.substr(0, eq) == name) {
            value = eq == std::string::npos ? "" : percent_decode(item.substr(eq + 1));
            return true;
        }
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return false;
}

std::string without_password(const std::string& url) {
    size_t scheme_end = url.find("://");
    size_t at = url.rfind('@');
    if (scheme_end == std::string::npos || at == std::string::npos || at < scheme_end) return url;
    size_t colon = url.find(':', scheme_end + 3);
    if (colon == std::string::npos || colon > at) return url;
    return url.substr(0, colon + 1) + "***" + url.substr(at);
}

}  // namespace

BrokerUrl parse_broker_url(const std::string& url) {
    UrlParts parts = split_url(url, "broker");
    if (parts.scheme == "memory") {
        throw ConfigError("memory:// lives inside one Python process; this core needs an "
                          "amqp:// broker URL");
    }
    if (parts.scheme == "amqps") {
        throw ConfigError("amqps:// is not supported by this core (built without TLS); use "
                          "amqp:// or a TLS-terminating proxy");
    }
    if (parts.scheme != "amqp") {
        throw ConfigError("unknown broker URL scheme in " + quoted(url) + ": use amqp://");
    }
    if (parts.host.empty()) throw ConfigError("bad broker URL " + quoted(url) + ": no host");
    BrokerUrl out;
    out.host = parts.host;
    if (parts.port >= 0) out.port = parts.port;
    if (parts.has_credentials) {
        out.user = parts.user.empty() ? "guest" : parts.user;
        out.password = parts.password.empty() ? "guest" : parts.password;
    }
    std::string vhost = parts.path.empty() ? "" : percent_decode(parts.path.substr(1));
    out.vhost = vhost.empty() ? "/" : vhost;
    std::string heartbeat;
    if (query_value(parts.query, "heartbeat", heartbeat)) {
        long long value = 0;
        if (!parse_long(heartbeat, value) || value < 0 || value > 65535) {
            throw ConfigError("bad broker URL " + quoted(url) +
                              ": heartbeat must be a whole number of seconds");
        }
        out.heartbeat_s = static_cast<int>(value);
    }
    return out;
}

StoreUrl parse_store_url(const std::string& url) {
    UrlParts parts = split_url(url, "store");
    if (parts.scheme == "memory") {
        throw ConfigError("memory:// lives inside one Python process; this core needs a "
                          "redis:// or unix:// store URL");
    }
    if (parts.scheme == "rediss" || parts.scheme == "rediss+cluster" ||
        parts.scheme == "redis+cluster") {
        throw ConfigError(parts.scheme + ":// is not supported by this core; use redis:// or "
                          "unix://");
    }
    if (parts.scheme != "redis" && parts.scheme != "unix") {
        throw ConfigError("unknown store URL scheme in " + quoted(url) +
                          ": use redis:// or unix://");
    }
    StoreUrl out;
    out.unix_socket = parts.scheme == "unix";
    if (out.unix_socket) {
        out.host = percent_decode(parts.path);
        if (out.host.empty()) throw ConfigError("bad store URL " + quoted(url) + ": no path");
    } else {
        if (parts.host.empty()) throw ConfigError("bad store URL " + quoted(url) + ": no host");
        out.host = parts.host;
        if (parts.port >= 0) out.port = parts.port;
    }
    if (parts.has_credentials) {
        out.user = parts.user;
        out.password = parts.password;
    }
    std::string db;
    bool has_db = query_value(parts.query, "db", db);
    if (!has_db && !out.unix_socket && !parts.path.empty() && parts.path != "/") {
        db = percent_decode(parts.path.substr(1));
        has_db = true;
    }
    if (has_db) {
        long long value = 0;
        if (!parse_long(db, value) || value < 0 || value > 1000000) {
            throw ConfigError("bad store URL " + quoted(url) + ": the database must be a number");
        }
        out.db = static_cast<int>(value);
    }
    return out;
}

Config load_config() {
    Config config;
    config.broker_text = env("REFERENCE_BROKER_URL");
    config.store_text = env("REFERENCE_STORE_URL");
    if (config.broker_text.empty()) {
        throw ConfigError("REFERENCE_BROKER_URL is not set (amqp://user:pass@host:port/vhost)");
    }
    if (config.store_text.empty()) {
        throw ConfigError("REFERENCE_STORE_URL is not set (redis://host:port/db)");
    }
    config.broker = parse_broker_url(config.broker_text);
    config.store = parse_store_url(config.store_text);
    config.broker_text = without_password(config.broker_text);
    config.store_text = without_password(config.store_text);

    auto text = [](const char* name, std::string& field) {
        std::string raw = env(name);
        if (!raw.empty()) field = raw;
    };
    auto integer = [](const char* name, int& field) {
        std::string raw = env(name);
        if (raw.empty()) return;
        long long value = 0;
        if (!parse_long(raw, value) || value < -2147483647LL || value > 2147483647LL) {
            throw ConfigError(std::string(name) + "=" + quoted(raw) + " is not an integer");
        }
        field = static_cast<int>(value);
    };
    auto number = [](const char* name, const char* field_name, double& field) {
        std::string raw = env(name);
        if (raw.empty()) return;
        double value = 0;
        if (!parse_double(raw, value)) {
            throw ConfigError(std::string(name) + "=" + quoted(raw) + " is not a number");
        }
        if (value <= 0) throw ConfigError(std::string(field_name) + " must be positive");
        field = value;
    };
    text("REFERENCE_QUEUE", config.queue);
    text("REFERENCE_QUEUE_TYPE", config.queue_type);
    text("REFERENCE_KEY_PREFIX", config.key_prefix);
    if (config.key_prefix.find_first_of("{}") != std::string::npos) {
        throw ConfigError("REFERENCE_KEY_PREFIX=" + quoted(config.key_prefix) +
                          " must not contain '{' or '}': braces mark a Redis Cluster hash tag "
                          "in the keys built from it");
    }
    text("REFERENCE_ROLES_POLICY", config.roles_policy);
    integer("REFERENCE_DELIVERY_LIMIT", config.delivery_limit);
    number("REFERENCE_RESULT_TTL_S", "result_ttl_s", config.result_ttl_s);
    number("REFERENCE_RUNNING_TTL_S", "running_ttl_s", config.running_ttl_s);
    number("REFERENCE_CLAIM_TTL_S", "claim_ttl_s", config.claim_ttl_s);
    number("REFERENCE_CONNECT_TIMEOUT_S", "connect_timeout_s", config.connect_timeout_s);
    number("REFERENCE_SHUTDOWN_TIMEOUT_S", "shutdown_timeout_s", config.shutdown_timeout_s);
    if (config.queue_type != "classic" && config.queue_type != "quorum") {
        throw ConfigError("REFERENCE_QUEUE_TYPE must be one of classic, quorum, not " +
                          quoted(config.queue_type));
    }
    if (config.delivery_limit < 1) throw ConfigError("delivery_limit must be at least 1");
    if (!env("REFERENCE_ACTIONS").empty()) {
        throw ConfigError("REFERENCE_ACTIONS loads Python actions; this core runs the six built-in "
                          "actions only (unset it for this core)");
    }
    return config;
}
