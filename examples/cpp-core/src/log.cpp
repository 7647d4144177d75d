#include "log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace {

void emit(const char* level, const std::string& line) {
    using namespace std::chrono;
    auto now = system_clock::now();
    std::time_t secs = system_clock::to_time_t(now);
    auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::fprintf(stderr, "%s.%03dZ %s reference-core: %s\n", stamp, static_cast<int>(ms), level,
                 line.c_str());
    std::fflush(stderr);
}

}  // namespace

void log_info(const std::string& line) { emit("INFO", line); }
void log_warning(const std::string& line) { emit("WARNING", line); }
void log_error(const std::string& line) { emit("ERROR", line); }
