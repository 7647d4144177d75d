// E-mail addresses as the Python core takes them: email-validator's syntax rules (its default
// options: no quoted local part, no domain literal, no display name, a globally deliverable
// domain, no DNS), then the normalized address lower-cased whole.
//
// Where only a full Unicode normalization or IDNA processing could tell what email-validator
// makes of an address (a local part not surely in NFC, a non-ASCII or Punycode domain), this
// core refuses it rather than risk storing the same mailbox under another key.
#pragma once

#include <optional>
#include <string>

// The address to store (normalized, lower-cased), or nullopt when it is refused. `address` is
// the value already stripped of white space.
std::optional<std::string> normalize_email(const std::string& address);
