#include "amqp_link.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <thread>
#include <vector>

#include "clock.hpp"
#include "errors.hpp"
#include "log.hpp"

namespace {

constexpr amqp_channel_t kConsumeChannel = 1;
constexpr amqp_channel_t kDeclareChannel = 2;  // a failed declare closes its channel
constexpr int kFrameMax = 131072;

timeval to_timeval(double seconds) {
    if (seconds < 0) seconds = 0;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(seconds);
    tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
    return tv;
}

std::string text_of(amqp_bytes_t bytes) {
    return std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

// Why an RPC failed, in words.
std::string describe(const amqp_rpc_reply_t& reply) {
    switch (reply.reply_type) {
        case AMQP_RESPONSE_NORMAL:
            return "ok";
        case AMQP_RESPONSE_NONE:
            return "no reply";
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return amqp_error_string2(reply.library_error);
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
                auto* close = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
                return text_of(close->reply_text);
            }
            if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
                auto* close = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
                return text_of(close->reply_text);
            }
            return "server exception";
    }
    return "unknown reply";
}

bool is_channel_close(const amqp_rpc_reply_t& reply, int code) {
    if (reply.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
        reply.reply.id != AMQP_CHANNEL_CLOSE_METHOD) {
        return false;
    }
    return static_cast<amqp_channel_close_t*>(reply.reply.decoded)->reply_code == code;
}

amqp_table_entry_t text_entry(const char* key, const std::string& value) {
    amqp_table_entry_t entry{};
    entry.key = amqp_cstring_bytes(key);
    entry.value.kind = AMQP_FIELD_KIND_UTF8;
    entry.value.value.bytes = amqp_cstring_bytes(value.c_str());
    return entry;
}

amqp_table_entry_t int_entry(const char* key, int value) {
    amqp_table_entry_t entry{};
    entry.key = amqp_cstring_bytes(key);
    entry.value.kind = AMQP_FIELD_KIND_I32;
    entry.value.value.i32 = value;
    return entry;
}

BrokerUnavailable unavailable(const std::string& why) {
    return BrokerUnavailable("rabbitmq unavailable: " + why);
}

}  // namespace

AmqpLink::AmqpLink(const Config& config) : config_(config) {}

AmqpLink::~AmqpLink() {
    if (conn_ != nullptr) amqp_destroy_connection(conn_);
}

void AmqpLink::drop(const std::string& why) {
    if (conn_ == nullptr) return;
    log_warning("rabbitmq connection lost: " + why);
    amqp_destroy_connection(conn_);  // closes the socket; unacked deliveries go back
    conn_ = nullptr;
    consuming_ = false;
}

void AmqpLink::connect() {
    if (conn_ != nullptr) return;
    const BrokerUrl& url = config_.broker;
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn);
    if (socket == nullptr) {
        amqp_destroy_connection(conn);
        throw unavailable("cannot make a socket");
    }
    timeval timeout = to_timeval(kOperationTimeoutS);
    int status = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &timeout);
    if (status != AMQP_STATUS_OK) {
        std::string why = amqp_error_string2(status);
        amqp_destroy_connection(conn);
        throw unavailable("connect to " + url.host + ":" + std::to_string(url.port) + ": " + why);
    }
    amqp_set_handshake_timeout(conn, &timeout);
    amqp_set_rpc_timeout(conn, &timeout);
    amqp_rpc_reply_t login = amqp_login(conn, url.vhost.c_str(), 0, kFrameMax, url.heartbeat_s,
                                        AMQP_SASL_METHOD_PLAIN, url.user.c_str(),
                                        url.password.c_str());
    if (login.reply_type != AMQP_RESPONSE_NORMAL) {
        std::string why = describe(login);  // before the connection (and the reply) is freed
        amqp_destroy_connection(conn);
        throw unavailable("login to vhost " + url.vhost + " failed: " + why);
    }
    conn_ = conn;
    ++generation_;
    try {
        declare_queues();
        amqp_channel_open(conn_, kConsumeChannel);
        amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn_);
        if (reply.reply_type != AMQP_RESPONSE_NORMAL) throw unavailable("channel.open: " + describe(reply));
        amqp_basic_qos(conn_, kConsumeChannel, 0, 1, 0);  // prefetch 1: one delivery at a time
        reply = amqp_get_rpc_reply(conn_);
        if (reply.reply_type != AMQP_RESPONSE_NORMAL) throw unavailable("basic.qos: " + describe(reply));
        amqp_basic_consume_ok_t* ok =
            amqp_basic_consume(conn_, kConsumeChannel, amqp_cstring_bytes(config_.queue.c_str()),
                               amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0,
                               amqp_empty_table);
        reply = amqp_get_rpc_reply(conn_);
        if (ok == nullptr || reply.reply_type != AMQP_RESPONSE_NORMAL) {
            throw unavailable("basic.consume: " + describe(reply));
        }
        consumer_tag_ = text_of(ok->consumer_tag);
        consuming_ = true;
    } catch (...) {
        amqp_destroy_connection(conn_);
        conn_ = nullptr;
        throw;
    }
}

void AmqpLink::declare_queues() {
    amqp_channel_open(conn_, kDeclareChannel);
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn_);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) throw unavailable("channel.open: " + describe(reply));

    const std::string dlq = config_.queue + ".dlq";
    std::vector<amqp_table_entry_t> entries = {
        text_entry("x-dead-letter-exchange", ""),
        text_entry("x-dead-letter-routing-key", dlq),
    };
    const std::string quorum = "quorum";
    if (config_.queue_type == "quorum") {
        entries.push_back(text_entry("x-queue-type", quorum));
        entries.push_back(int_entry("x-delivery-limit", config_.quorum_delivery_limit()));
    }
    amqp_table_t arguments{static_cast<int>(entries.size()), entries.data()};

    struct Declare {
        const std::string& name;
        amqp_table_t args;
    };
    for (const Declare& declare : {Declare{dlq, amqp_empty_table}, Declare{config_.queue, arguments}}) {
        amqp_queue_declare(conn_, kDeclareChannel, amqp_cstring_bytes(declare.name.c_str()),
                           /*passive=*/0, /*durable=*/1, /*exclusive=*/0, /*auto_delete=*/0,
                           declare.args);
        reply = amqp_get_rpc_reply(conn_);
        if (reply.reply_type == AMQP_RESPONSE_NORMAL) continue;
        std::string why = describe(reply);
        if (is_channel_close(reply, AMQP_PRECONDITION_FAILED)) {
            throw ConfigError("queue '" + declare.name + "' already exists with other arguments (" +
                              why + "); delete it or use the same REFERENCE_QUEUE_TYPE and "
                              "REFERENCE_DELIVERY_LIMIT");
        }
        throw unavailable("queue.declare " + declare.name + ": " + why);
    }
    amqp_channel_close(conn_, kDeclareChannel, AMQP_REPLY_SUCCESS);
}

std::optional<Delivery> AmqpLink::next_delivery(double timeout_s) {
    if (conn_ == nullptr) throw unavailable("not connected");
    amqp_maybe_release_buffers(conn_);
    amqp_envelope_t envelope;
    timeval timeout = to_timeval(timeout_s);
    amqp_rpc_reply_t reply = amqp_consume_message(conn_, &envelope, &timeout, 0);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
        Delivery delivery;
        delivery.body = text_of(envelope.message.body);
        delivery.tag = envelope.delivery_tag;
        delivery.redelivered = envelope.redelivered != 0;
        delivery.generation = generation_;
        amqp_destroy_envelope(&envelope);
        return delivery;
    }
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        if (reply.library_error == AMQP_STATUS_TIMEOUT) return std::nullopt;
        if (reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            // Not a delivery: a frame such as channel.close, put back for us to read.
            amqp_frame_t frame;
            int status = amqp_simple_wait_frame(conn_, &frame);
            if (status != AMQP_STATUS_OK) {
                drop(amqp_error_string2(status));
            } else {
                handle_frame(&frame);
            }
            if (conn_ == nullptr) throw unavailable("connection closed");
            return std::nullopt;
        }
    }
    std::string why = describe(reply);
    drop(why);
    throw unavailable(why);
}

void AmqpLink::handle_frame(const void* raw) {
    const auto* frame = static_cast<const amqp_frame_t*>(raw);
    if (frame->frame_type != AMQP_FRAME_METHOD) return;  // stray content: nothing to do
    switch (frame->payload.method.id) {
        case AMQP_CHANNEL_CLOSE_METHOD: {
            auto* close = static_cast<amqp_channel_close_t*>(frame->payload.method.decoded);
            std::string why = "channel closed by the broker: " + text_of(close->reply_text);
            amqp_channel_close_ok_t ok{};
            amqp_send_method(conn_, frame->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            drop(why);  // a new connection gets a new channel and consumer
            return;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
            auto* close = static_cast<amqp_connection_close_t*>(frame->payload.method.decoded);
            std::string why = "closed by the broker: " + text_of(close->reply_text);
            amqp_connection_close_ok_t ok{};
            amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            drop(why);
            return;
        }
        case AMQP_BASIC_CANCEL_METHOD:
            drop("the broker cancelled the consumer (queue deleted?)");
            return;
        case AMQP_BASIC_DELIVER_METHOD:
            // Cannot happen with prefetch 1 while a delivery is unsettled; if it does, the
            // connection is out of step: drop it and the broker hands everything out again.
            drop("unexpected delivery while one was in progress");
            return;
        default:
            return;
    }
}

void AmqpLink::pump(double seconds) {
    double end = monotonic_s() + seconds;
    for (;;) {
        double left = end - monotonic_s();
        if (left <= 0) return;
        if (conn_ == nullptr) {
            std::this_thread::sleep_for(std::chrono::duration<double>(left));
            return;
        }
        amqp_frame_t frame;
        timeval timeout = to_timeval(left);
        int status = amqp_simple_wait_frame_noblock(conn_, &frame, &timeout);
        if (status == AMQP_STATUS_TIMEOUT) continue;
        if (status != AMQP_STATUS_OK) {
            drop(amqp_error_string2(status));
            continue;
        }
        handle_frame(&frame);
    }
}

void AmqpLink::settle(const Delivery& delivery, bool ack, bool requeue) {
    if (conn_ == nullptr || delivery.generation != generation_) {
        throw unavailable("the connection of this delivery is gone; the broker hands it out again");
    }
    int status = ack ? amqp_basic_ack(conn_, kConsumeChannel, delivery.tag, 0)
                     : amqp_basic_reject(conn_, kConsumeChannel, delivery.tag, requeue ? 1 : 0);
    if (status != AMQP_STATUS_OK) {
        std::string why = amqp_error_string2(status);
        drop(why);
        throw unavailable(why);
    }
}

void AmqpLink::ack(const Delivery& delivery) { settle(delivery, true, false); }

void AmqpLink::reject(const Delivery& delivery, bool requeue) { settle(delivery, false, requeue); }

void AmqpLink::stop_consuming() {
    if (conn_ == nullptr || !consuming_) return;
    consuming_ = false;
    // Cancel the consumer, not the channel: closing the channel would hand back the delivery
    // in progress, which this worker still means to finish and ack.
    amqp_basic_cancel(conn_, kConsumeChannel, amqp_cstring_bytes(consumer_tag_.c_str()));
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn_);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) drop("basic.cancel: " + describe(reply));
}

void AmqpLink::close() {
    if (conn_ == nullptr) return;
    amqp_channel_close(conn_, kConsumeChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    consuming_ = false;
}
