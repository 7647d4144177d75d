#include "validation.hpp"

#include <vector>

#include "email_address.hpp"
#include "errors.hpp"
#include "unicode.hpp"

namespace {

const Json* field_of(const Json& params, const std::string& name) {
    auto it = params.find(name);
    return it == params.end() ? nullptr : &*it;
}

}  // namespace

void check_known(const Json& params, const std::set<std::string>& allowed) {
    for (auto it = params.begin(); it != params.end(); ++it) {  // input order (ordered_json)
        if (allowed.count(it.key()) == 0) throw validation_failed("unknown field: " + it.key(), it.key());
    }
}

std::int64_t read_int(const Json& params, const std::string& name, std::int64_t low,
                      std::int64_t high, std::optional<std::int64_t> fallback) {
    const Json* value = field_of(params, name);
    if (value == nullptr || (value->is_null() && fallback.has_value())) {
        if (!fallback.has_value()) throw validation_failed(name + " is required", name);
        return *fallback;
    }
    if (!value->is_number_integer()) throw validation_failed(name + " must be an integer", name);
    bool in_range = false;
    std::int64_t number = 0;
    if (value->is_number_unsigned()) {
        auto big = value->get<std::uint64_t>();
        in_range = high >= 0 && big <= static_cast<std::uint64_t>(high) &&
                   (low < 0 || big >= static_cast<std::uint64_t>(low));
        number = static_cast<std::int64_t>(big);
    } else {
        number = value->get<std::int64_t>();
        in_range = low <= number && number <= high;
    }
    if (!in_range) {
        throw validation_failed(
            name + " must be between " + std::to_string(low) + " and " + std::to_string(high),
            name);
    }
    return number;
}

bool read_bool(const Json& params, const std::string& name, bool fallback) {
    const Json* value = field_of(params, name);
    if (value == nullptr || value->is_null()) return fallback;
    if (!value->is_boolean()) throw validation_failed(name + " must be a boolean", name);
    return value->get<bool>();
}

std::optional<std::string> read_str(const Json& params, const std::string& name,
                                    std::size_t max_len, bool required) {
    const Json* value = field_of(params, name);
    if (value == nullptr) {
        if (required) throw validation_failed(name + " is required", name);
        return std::nullopt;
    }
    if (value->is_null() && !required) return std::nullopt;
    if (!value->is_string()) throw validation_failed(name + " must be a string", name);
    std::string text = py_strip(value->get<std::string>());
    if (text.empty()) throw validation_failed(name + " must not be empty", name);
    if (py_len(text) > max_len) {
        throw validation_failed(
            name + " must be at most " + std::to_string(max_len) + " characters", name);
    }
    return text;
}

std::optional<std::string> read_name(const Json& params, const std::string& name,
                                     std::size_t max_len, bool required) {
    std::optional<std::string> value = read_str(params, name, max_len, required);
    if (!value.has_value()) return std::nullopt;
    for (std::uint32_t cp : code_points(*value)) {
        if (char_class(cp) == CharClass::Control) {
            throw validation_failed(name + " must not contain control or format characters", name);
        }
    }
    return value;
}

std::optional<std::string> read_email(const Json& params, const std::string& name,
                                      bool required) {
    std::optional<std::string> value = read_str(params, name, 254, required);
    if (!value.has_value()) return std::nullopt;
    std::optional<std::string> address = normalize_email(*value);
    if (!address) throw validation_failed(name + " must be an email address", name);
    return address;
}
