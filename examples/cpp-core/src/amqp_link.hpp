// The worker's one connection to RabbitMQ (rabbitmq-c, blocking): declare the queue as the
// Python core does, consume with prefetch 1 and manual ack, settle deliveries.
//
// rabbitmq-c services heartbeats only inside its own calls; so every wait of the worker goes
// through pump(), which waits on the socket (sending and checking heartbeats) instead of
// sleeping.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config.hpp"

struct amqp_connection_state_t_;

struct Delivery {
    std::string body;
    std::uint64_t tag = 0;
    bool redelivered = false;
    std::uint64_t generation = 0;  // which connection it came on: its tag is only good there
};

class AmqpLink {
public:
    explicit AmqpLink(const Config& config);
    ~AmqpLink();
    AmqpLink(const AmqpLink&) = delete;
    AmqpLink& operator=(const AmqpLink&) = delete;

    // Connect, declare `<queue>.dlq` and `<queue>`, and consume. BrokerUnavailable, or
    // ConfigError when the queue exists with other arguments.
    void connect();
    bool connected() const { return conn_ != nullptr; }

    // The next delivery within `timeout_s`, or nothing; BrokerUnavailable when the
    // connection is lost (it is dropped, connect() again).
    std::optional<Delivery> next_delivery(double timeout_s);
    void ack(const Delivery& delivery);
    void reject(const Delivery& delivery, bool requeue);

    // Wait `seconds` while keeping the connection alive (heartbeats); never throws.
    void pump(double seconds);
    // Ask the broker for no more deliveries (at shutdown); best effort.
    void stop_consuming();
    // Close cleanly; best effort.
    void close();

    static constexpr double kOperationTimeoutS = 5.0;

private:
    void declare_queues();
    void settle(const Delivery& delivery, bool ack, bool requeue);
    void handle_frame(const void* frame);
    void drop(const std::string& why);

    const Config& config_;
    amqp_connection_state_t_* conn_ = nullptr;
    std::uint64_t generation_ = 0;
    bool consuming_ = false;
    std::string consumer_tag_;
};
