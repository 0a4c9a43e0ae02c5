// Why this file exists: every example reads options and numbers from its command line; this reads
// them one way, checked (the whole text must be a number, inside the option's range), so a typo such
// as `--temp 0,7` or `-t x` stops the program with a message naming the option instead of becoming 0.
#ifndef BORA_EXAMPLES_ARGS_HPP
#define BORA_EXAMPLES_ARGS_HPP

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace example_args {

// Whole-text conversions: false for empty text, trailing characters, or a value out of range.
inline bool parse_integer(const std::string& text, long long* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (end != text.c_str() + text.size() || errno != 0) return false;
  *out = value;
  return true;
}

inline bool parse_unsigned(const std::string& text, uint64_t* out) {
  if (text.empty() || text[0] == '-' || text[0] == '+') return false;  // strtoull would wrap "-1"
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (end != text.c_str() + text.size() || errno != 0) return false;
  *out = value;
  return true;
}

inline bool parse_real(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno != 0 || !std::isfinite(value)) return false;
  *out = value;
  return true;
}

// Integers in [low, high] separated by any of `separators` (runs of them count as one). On failure
// returns false with `*bad` set to the piece that is not such a number.
inline bool parse_integer_list(const std::string& text, long long low, long long high, const char* separators,
                               std::vector<long long>* out, std::string* bad) {
  out->clear();
  size_t begin = text.find_first_not_of(separators);
  while (begin != std::string::npos) {
    const size_t end = text.find_first_of(separators, begin);
    const std::string piece = text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    long long value = 0;
    if (!parse_integer(piece, &value) || value < low || value > high) {
      *bad = piece;
      return false;
    }
    out->push_back(value);
    begin = end == std::string::npos ? end : text.find_first_not_of(separators, end);
  }
  return true;
}

// Walks argv: `while (args.next()) { if (args.is("-t", "--threads")) threads = args.integer(1, 1024); ... }`.
// Every mistake prints the usage (when one is given) and "program: what is wrong", then exits with 2.
class Parser {
 public:
  Parser(int argc, char** argv, const char* program, void (*usage)() = nullptr)
      : argc_(argc), argv_(argv), program_(program), usage_(usage) {}

  bool next() {
    if (index_ + 1 >= argc_) return false;
    option_ = argv_[++index_];
    return true;
  }
  const std::string& option() const { return option_; }
  bool is(const char* spelling) const { return option_ == spelling; }
  bool is(const char* spelling, const char* other_spelling) const { return is(spelling) || is(other_spelling); }

  // The value after the current option.
  std::string text() {
    if (index_ + 1 >= argc_) fail(option_ + " needs a value");
    return argv_[++index_];
  }
  long long integer(long long low, long long high) {
    const std::string value = text();
    long long out = 0;
    if (!parse_integer(value, &out) || out < low || out > high) fail_range(value, "a whole number", low, high);
    return out;
  }
  uint64_t unsigned_integer() {
    const std::string value = text();
    uint64_t out = 0;
    if (!parse_unsigned(value, &out)) fail(option_ + " needs a whole number from 0 to 2^64-1, not '" + value + "'");
    return out;
  }
  double real(double low, double high) {
    const std::string value = text();
    double out = 0;
    if (!parse_real(value, &out) || out < low || out > high) fail_range(value, "a number", low, high);
    return out;
  }
  // `word` (say "none") gives `word_value`; anything else must be a whole number in [low, high].
  long long integer_or(const char* word, long long word_value, long long low, long long high) {
    const std::string value = text();
    if (value == word) return word_value;
    long long out = 0;
    if (!parse_integer(value, &out) || out < low || out > high)
      fail(option_ + " needs '" + word + "' or a whole number from " + std::to_string(low) + " to " +
           std::to_string(high) + ", not '" + value + "'");
    return out;
  }
  // A comma-separated list of whole numbers in [low, high], at least one.
  std::vector<long long> integer_list(long long low, long long high) {
    const std::string value = text();
    std::vector<long long> out;
    std::string bad;
    if (!parse_integer_list(value, low, high, ",", &out, &bad) || out.empty())
      fail(option_ + " needs whole numbers from " + std::to_string(low) + " to " + std::to_string(high) +
           " separated by commas, not '" + (out.empty() && bad.empty() ? value : bad) + "'");
    return out;
  }

  [[noreturn]] void unknown() const { fail("unknown argument '" + option_ + "'"); }
  [[noreturn]] void fail(const std::string& message) const {
    if (usage_ != nullptr) usage_();
    std::fprintf(stderr, "%s: %s\n", program_, message.c_str());
    std::exit(2);
  }

 private:
  template <class Number>
  [[noreturn]] void fail_range(const std::string& value, const char* kind, Number low, Number high) const {
    fail(option_ + " needs " + kind + " from " + number_text(low) + " to " + number_text(high) + ", not '" + value + "'");
  }
  static std::string number_text(long long v) { return std::to_string(v); }
  static std::string number_text(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%g", v);
    return buffer;
  }

  int argc_;
  char** argv_;
  const char* program_;
  void (*usage_)();
  int index_ = 0;
  std::string option_;
};

}  // namespace example_args

#endif  // BORA_EXAMPLES_ARGS_HPP
