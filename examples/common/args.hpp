// Command-line helpers shared by the examples: numbers parsed whole, with errors that name the
// flag and the text that was given.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

/// Walks a command line of "--flag value" pairs: on --help or -h prints `usage` and exits;
/// otherwise calls on_flag(flag, value) for each pair, and throws std::invalid_argument when
/// the last flag has no value. on_flag rejects the flags it does not know.
template <class F>
void for_each_flag(int argc, char** argv, const char* usage, F&& on_flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("%s", usage);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + flag);
    on_flag(flag, std::string(argv[++i]));
  }
}

}  // namespace examples
