// Text as the Python core's validators treat it: pydantic's strip_whitespace (Unicode
// White_Space, as Rust's str::trim), length in code points, and Python's str.lower().
// Input is valid UTF-8 (it comes out of the JSON parser). Tables: unicode_tables.inc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// General categories, grouped as the validators look at them.
enum class CharClass {
    Safe,     // letters, numbers, punctuation, symbols (L, N, P, S)
    Mark,     // combining marks (M)
    Control,  // control, format, surrogate (Cc, Cf, Cs)
    Other     // separators, private use, unassigned (Z, Co, Cn)
};

CharClass char_class(std::uint32_t cp);

// The code points of UTF-8 text, and back.
std::vector<std::uint32_t> code_points(const std::string& text);
std::string utf8(const std::vector<std::uint32_t>& cps);

// True when the NFC quick check answers Yes: the text is in NFC for sure. (Maybe and No, where
// only a full normalization could tell, answer false.)
bool is_nfc_for_sure(const std::vector<std::uint32_t>& cps);

// pydantic's strip_whitespace: Unicode White_Space off both ends.
std::string py_strip(const std::string& text);

// len(str): code points.
std::size_t py_len(const std::string& text);

// str.lower(): full Unicode lower case, Greek final sigma included.
std::string py_lower(const std::string& text);
