// Why this file exists: every reply of examples/serve is JSON a client parses, with text the model
// produced or a user sent; one writer escapes it (quotes, backslashes, control characters) and keeps
// it valid UTF-8 (non-ASCII passes through as is, a malformed byte becomes U+FFFD), so no reply can
// break a client's parser.
#ifndef BORA_EXAMPLES_SERVE_JSON_WRITER_HPP
#define BORA_EXAMPLES_SERVE_JSON_WRITER_HPP

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "bora/text/utf8.hpp"

namespace serve {

// Appends `text` as a JSON string literal, quotes included.
inline void append_json_string(std::string& out, std::string_view text) {
  static const char kHex[] = "0123456789abcdef";
  out.push_back('"');
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t byte = bytes[i];
    if (byte >= 0x80) {
      size_t length = 1;
      if (bora::utf8::decode_one(bytes + i, text.size() - i, &length)) {
        out.append(text.data() + i, length);
      } else {
        out.append(bora::utf8::kReplacementCharacter);
      }
      i += length;
      continue;
    }
    switch (byte) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default:
        if (byte < 0x20) {
          out.append("\\u00");
          out.push_back(kHex[byte >> 4]);
          out.push_back(kHex[byte & 0xF]);
        } else {
          out.push_back(static_cast<char>(byte));
        }
    }
    ++i;
  }
  out.push_back('"');
}

// Builds one JSON value in order: `w.object().key("id").string(id).end()`. Commas are placed by
// the writer; the caller only keeps keys and values alternating inside objects.
class JsonWriter {
 public:
  JsonWriter& object() { return open('{'); }
  JsonWriter& array() { return open('['); }
  JsonWriter& end() {
    out_.push_back(open_.back() ? '}' : ']');
    open_.pop_back();
    first_.pop_back();
    after_key_ = false;
    return *this;
  }
  JsonWriter& key(std::string_view name) {
    separate();
    append_json_string(out_, name);
    out_.push_back(':');
    after_key_ = true;
    return *this;
  }
  JsonWriter& string(std::string_view text) {
    separate();
    append_json_string(out_, text);
    return *this;
  }
  JsonWriter& integer(int64_t value) {
    separate();
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%" PRId64, value);
    out_.append(buffer);
    return *this;
  }
  JsonWriter& boolean(bool value) {
    separate();
    out_.append(value ? "true" : "false");
    return *this;
  }
  JsonWriter& null() {
    separate();
    out_.append("null");
    return *this;
  }
  // JSON has no NaN or infinity; they are written as null.
  JsonWriter& number(double value) {
    if (!std::isfinite(value)) return null();
    separate();
    char buffer[40];
    std::snprintf(buffer, sizeof(buffer), "%.17g", value);
    out_.append(buffer);
    return *this;
  }

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  JsonWriter& open(char bracket) {
    separate();
    out_.push_back(bracket);
    open_.push_back(bracket == '{');
    first_.push_back(true);
    return *this;
  }
  // A value right after its key needs nothing; any other item after the first needs a comma.
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (first_.empty()) return;
    if (!first_.back()) out_.push_back(',');
    first_.back() = false;
  }

  std::string out_;
  std::vector<bool> open_;   // per open bracket: an object (true) or an array
  std::vector<bool> first_;  // per open bracket: nothing written in it yet
  bool after_key_ = false;
};

}  // namespace serve

#endif  // BORA_EXAMPLES_SERVE_JSON_WRITER_HPP
