#include "unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

struct CodePointPair {
    std::uint32_t from;
    std::uint32_t to;
};

struct CodePointRange {
    std::uint32_t first;
    std::uint32_t last;
};

struct CodePointValue {
    std::uint32_t first;
    std::uint32_t last;
    int value;
};

#include "unicode_tables.inc"

constexpr std::uint32_t kCapitalSigma = 0x3A3;
constexpr std::uint32_t kSmallSigma = 0x3C3;
constexpr std::uint32_t kFinalSigma = 0x3C2;
constexpr std::uint32_t kCapitalIWithDot = 0x130;

template <std::size_t N>
bool in_ranges(const CodePointRange (&table)[N], std::uint32_t cp) {
    const CodePointRange* end = table + N;
    const CodePointRange* it = std::upper_bound(
        table, end, cp, [](std::uint32_t value, const CodePointRange& r) { return value < r.first; });
    return it != table && (it - 1)->last >= cp;
}

template <std::size_t N>
int range_value(const CodePointValue (&table)[N], std::uint32_t cp, int fallback) {
    const CodePointValue* end = table + N;
    const CodePointValue* it = std::upper_bound(
        table, end, cp, [](std::uint32_t value, const CodePointValue& r) { return value < r.first; });
    return it != table && (it - 1)->last >= cp ? (it - 1)->value : fallback;
}

std::vector<std::uint32_t> decode(const std::string& text) {
    std::vector<std::uint32_t> out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        auto byte = static_cast<unsigned char>(text[i]);
        std::uint32_t cp = 0;
        std::size_t extra = 0;
        if (byte < 0x80) {
            cp = byte;
        } else if ((byte & 0xE0) == 0xC0) {
            cp = byte & 0x1F;
            extra = 1;
        } else if ((byte & 0xF0) == 0xE0) {
            cp = byte & 0x0F;
            extra = 2;
        } else {
            cp = byte & 0x07;
            extra = 3;
        }
        for (std::size_t k = 1; k <= extra && i + k < text.size(); ++k) {
            cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
        }
        out.push_back(cp);
        i += extra + 1;
    }
    return out;
}

void encode(std::uint32_t cp, std::string& out) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

bool is_space(std::uint32_t cp) { return in_ranges(kWhiteSpace, cp); }
bool is_case_ignorable(std::uint32_t cp) { return in_ranges(kCaseIgnorable, cp); }
bool is_cased(std::uint32_t cp) { return in_ranges(kCasedNotIgnorable, cp); }

std::uint32_t simple_lower(std::uint32_t cp) {
    const CodePointPair* end = kLowerCase + sizeof kLowerCase / sizeof kLowerCase[0];
    const CodePointPair* it = std::lower_bound(
        kLowerCase, end, cp, [](const CodePointPair& p, std::uint32_t value) { return p.from < value; });
    return it != end && it->from == cp ? it->to : cp;
}

// CPython's handle_capital_sigma: final when preceded by a cased letter and not followed by
// one, case-ignorable characters skipped on both sides.
std::uint32_t lower_sigma(const std::vector<std::uint32_t>& cps, std::size_t i) {
    std::size_t j = i;
    bool found = false;
    while (j > 0) {
        --j;
        if (!is_case_ignorable(cps[j])) {
            found = true;
            break;
        }
    }
    bool final_sigma = found && is_cased(cps[j]);
    if (final_sigma) {
        for (std::size_t k = i + 1; k < cps.size(); ++k) {
            if (!is_case_ignorable(cps[k])) {
                final_sigma = !is_cased(cps[k]);
                break;
            }
        }
    }
    return final_sigma ? kFinalSigma : kSmallSigma;
}

}  // namespace

CharClass char_class(std::uint32_t cp) {
    return static_cast<CharClass>(range_value(kCharClasses, cp, static_cast<int>(CharClass::Safe)));
}

std::vector<std::uint32_t> code_points(const std::string& text) { return decode(text); }

std::string utf8(const std::vector<std::uint32_t>& cps) {
    std::string out;
    for (std::uint32_t cp : cps) encode(cp, out);
    return out;
}

bool is_nfc_for_sure(const std::vector<std::uint32_t>& cps) {
    int last_class = 0;
    for (std::uint32_t cp : cps) {
        int combining = range_value(kCombiningClasses, cp, 0);
        if (combining != 0 && last_class > combining) return false;
        if (in_ranges(kNfcNo, cp) || in_ranges(kNfcMaybe, cp)) return false;
        last_class = combining;
    }
    return true;
}

std::string py_strip(const std::string& text) {
    std::vector<std::uint32_t> cps = decode(text);
    std::size_t first = 0;
    std::size_t last = cps.size();
    while (first < last && is_space(cps[first])) ++first;
    while (last > first && is_space(cps[last - 1])) --last;
    std::string out;
    for (std::size_t i = first; i < last; ++i) encode(cps[i], out);
    return out;
}

std::size_t py_len(const std::string& text) {
    std::size_t count = 0;
    for (char c : text) {
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
    }
    return count;
}

std::string py_lower(const std::string& text) {
    std::vector<std::uint32_t> cps = decode(text);
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < cps.size(); ++i) {
        std::uint32_t cp = cps[i];
        if (cp == kCapitalSigma) {
            encode(lower_sigma(cps, i), out);
        } else if (cp == kCapitalIWithDot) {
            encode(0x69, out);   // i
            encode(0x307, out);  // combining dot above
        } else {
            encode(simple_lower(cp), out);
        }
    }
    return out;
}
