#include "email_address.hpp"

#include <cstdint>
#include <vector>

#include "unicode.hpp"

namespace {

constexpr std::size_t kEmailMaxBytes = 254;
constexpr std::size_t kDomainMaxLength = 253;
constexpr std::size_t kLabelMaxLength = 63;
const char* const kSpecialUseDomains[] = {"arpa", "invalid", "local", "localhost", "onion", "test"};

bool is_ascii_alnum(std::uint32_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// RFC 5322 atext (email-validator's ATEXT), ASCII only.
bool is_atext(std::uint32_t c) {
    if (is_ascii_alnum(c)) return true;
    for (char special : std::string("_!#$%&'*+-/=?^`{|}~")) {
        if (c == static_cast<unsigned char>(special)) return true;
    }
    return false;
}

// dot-atom: runs of allowed characters separated by single dots, none at either end.
template <typename Allowed>
bool is_dot_atom(const std::vector<std::uint32_t>& cps, Allowed allowed) {
    if (cps.empty()) return false;
    bool after_dot = true;
    for (std::uint32_t c : cps) {
        if (c == '.') {
            if (after_dot) return false;
            after_dot = true;
        } else if (allowed(c)) {
            after_dot = false;
        } else {
            return false;
        }
    }
    return !after_dot;
}

// email-validator's check_unsafe_chars (without allow_space).
bool has_unsafe_chars(const std::vector<std::uint32_t>& cps) {
    for (std::size_t i = 0; i < cps.size(); ++i) {
        CharClass kind = char_class(cps[i]);
        if (kind == CharClass::Safe) continue;
        if (kind == CharClass::Mark && i > 0) continue;
        return true;
    }
    return false;
}

// The local part as email-validator returns it, or nullopt.
std::optional<std::string> check_local_part(const std::string& local) {
    std::vector<std::uint32_t> cps = code_points(local);
    if (cps.empty()) return std::nullopt;
    if (is_dot_atom(cps, is_atext)) return local;  // plain ASCII: valid as it is
    bool intl = is_dot_atom(cps, [](std::uint32_t c) { return is_atext(c) || c >= 0x80; });
    if (!intl || has_unsafe_chars(cps)) return std::nullopt;
    // email-validator returns the NFC form; refuse what might change under it.
    if (!is_nfc_for_sure(cps)) return std::nullopt;
    return local;
}

bool ends_with(const std::string& text, const std::string& tail) {
    return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// The domain as email-validator returns it (ASCII domains only), or nullopt.
std::optional<std::string> check_domain(const std::string& domain) {
    if (domain.empty() || domain.size() > kDomainMaxLength) return std::nullopt;
    if (domain.front() == '[' && domain.back() == ']') return std::nullopt;  // domain literal
    std::string lower;
    for (char c : domain) {
        auto u = static_cast<unsigned char>(c);
        if (u >= 0x80) return std::nullopt;  // internationalized: IDNA would decide
        if (!is_ascii_alnum(u) && c != '-' && c != '.') return std::nullopt;
        lower += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;  // UTS-46 maps case
    }
    // Dots and hyphens (check_dot_atom for hostnames).
    if (lower.front() == '.' || lower.back() == '.' || lower.find("..") != std::string::npos) {
        return std::nullopt;
    }
    if (lower.front() == '-' || lower.back() == '-' || lower.find(".-") != std::string::npos ||
        lower.find("-.") != std::string::npos) {
        return std::nullopt;
    }
    std::vector<std::string> labels;
    std::size_t start = 0;
    for (;;) {
        std::size_t dot = lower.find('.', start);
        labels.push_back(lower.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    for (const std::string& label : labels) {
        // RFC 5890 R-LDH labels: two characters and "--", unless Punycode's "xn--".
        if (label.size() >= 4 && label.compare(2, 2, "--") == 0 && label.compare(0, 2, "xn") != 0) {
            return std::nullopt;
        }
        if (label.size() > kLabelMaxLength) return std::nullopt;
    }
    if (labels.size() < 2) return std::nullopt;  // globally deliverable: a period
    char last = lower.back();
    if (!(last >= 'a' && last <= 'z')) return std::nullopt;  // a TLD ends with a letter
    for (const char* special : kSpecialUseDomains) {
        if (lower == special || ends_with(lower, std::string(".") + special)) return std::nullopt;
    }
    // Punycode labels come back from email-validator in Unicode: IDNA would decide.
    if (lower.find("xn--") != std::string::npos) return std::nullopt;
    return lower;
}

}  // namespace

std::optional<std::string> normalize_email(const std::string& address) {
    // email-validator treats '"' (quoted local parts, not allowed here) and '<' (a display
    // name, not allowed here) specially; both end in a refusal wherever they stand.
    if (address.find('"') != std::string::npos || address.find('<') != std::string::npos) {
        return std::nullopt;
    }
    std::size_t at = address.find('@');
    if (at == std::string::npos) return std::nullopt;
    std::optional<std::string> local = check_local_part(address.substr(0, at));
    if (!local) return std::nullopt;
    std::optional<std::string> domain = check_domain(address.substr(at + 1));
    if (!domain) return std::nullopt;
    std::string normalized = *local + "@" + *domain;
    if (normalized.size() > kEmailMaxBytes) return std::nullopt;  // UTF-8 bytes
    return py_lower(normalized);
}
