// Command-line helpers shared by the examples: numbers parsed whole, with errors that name the
// flag and the text that was given.
#pragma once

#include <cstdint>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace examples {

/// A whole-string non-negative integer, or std::invalid_argument naming the flag.
inline unsigned long long parse_count(const std::string& flag, const std::string& text) {
  std::size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || text[0] == '-') {
    throw std::invalid_argument(flag + " expects a non-negative integer, got '" + text + "'");
  }
  return v;
}

/// As parse_count, and at least 1.
inline unsigned long long parse_positive(const std::string& flag, const std::string& text) {
  const unsigned long long v = parse_count(flag, text);
  if (v == 0) throw std::invalid_argument(flag + " must be at least 1, got '" + text + "'");
  return v;
}

/// A comma-separated list of positive integers, such as "2,8,32".
inline std::vector<int> parse_list(const std::string& flag, const std::string& text) {
  std::vector<int> v;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');)
    v.push_back(static_cast<int>(parse_positive(flag, item)));
  if (v.empty()) throw std::invalid_argument(flag + " expects a list such as 2,8,32, got nothing");
  return v;
}

}  // namespace examples
