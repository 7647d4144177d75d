// Time: wall clock in epoch milliseconds (the unit on the wire), monotonic seconds for waits.
#pragma once

#include <chrono>

// Epoch milliseconds with microseconds as the fraction, as the Python core writes them.
inline double now_ms() {
    using namespace std::chrono;
    auto us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
    return static_cast<double>(us) / 1000.0;
}

inline double monotonic_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Pauses that double from `initial` up to `maximum` (reference/backoff.py's Backoff).
class Backoff {
public:
    Backoff(double initial, double maximum) : initial_(initial), maximum_(maximum), next_(initial) {}
    double next() {
        double pause = next_;
        next_ = next_ * 2 < maximum_ ? next_ * 2 : maximum_;
        return pause;
    }
    void reset() { next_ = initial_; }

private:
    double initial_;
    double maximum_;
    double next_;
};
