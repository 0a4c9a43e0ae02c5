// Why this file exists: the tokenizer and the streaming decoder must agree with SentencePiece on what
// counts as one UTF-8 character and what is malformed, byte for byte; these few rules live here once.
#ifndef BORA_TEXT_UTF8_HPP
#define BORA_TEXT_UTF8_HPP

#include <cstddef>
#include <cstdint>
#include <string>

namespace bora {
namespace utf8 {

// U+FFFD, what SentencePiece substitutes for every malformed byte (when encoding and decoding).
constexpr const char kReplacementCharacter[] = "\xEF\xBF\xBD";

// Length a character claims from its first byte alone (SentencePiece's OneCharLen): continuation
// bytes and 0xF8..0xFF claim 1, so a walk over arbitrary bytes always advances.
inline size_t length_from_lead_byte(uint8_t lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 1;
}

inline bool is_continuation_byte(uint8_t byte) { return (byte & 0xC0) == 0x80; }

inline bool is_valid_code_point(uint32_t code_point) {
  return code_point < 0xD800 || (code_point >= 0xE000 && code_point <= 0x10FFFF);
}

// Strict decoding of the character at `data` (no overlong forms, no surrogates, nothing above
// U+10FFFF). Returns true and sets `length` for a valid character; false with `length` = 1 otherwise.
inline bool decode_one(const uint8_t* data, size_t size, size_t* length, uint32_t* code_point = nullptr) {
  *length = 1;
  if (size == 0) return false;
  const uint8_t lead = data[0];
  uint32_t value = 0;
  size_t needed = 0;
  uint32_t minimum = 0;
  if (lead < 0x80) {
    if (code_point) *code_point = lead;
    return true;
  } else if ((lead & 0xE0) == 0xC0) {
    value = lead & 0x1F;
    needed = 2;
    minimum = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    value = lead & 0x0F;
    needed = 3;
    minimum = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    value = lead & 0x07;
    needed = 4;
    minimum = 0x10000;
  } else {
    return false;
  }
  if (size < needed) return false;
  for (size_t i = 1; i < needed; ++i) {
    if (!is_continuation_byte(data[i])) return false;
    value = (value << 6) | (data[i] & 0x3F);
  }
  if (value < minimum || !is_valid_code_point(value)) return false;
  *length = needed;
  if (code_point) *code_point = value;
  return true;
}

// For a stream that may still grow: true when `data[0..size)` is the proper beginning of some valid
// character, so a decoder must wait for more bytes before deciding. The completions of a prefix form
// one interval of code points; the valid set is hit by that interval iff its lowest or highest
// completion is valid (checked on the actual intervals of 2-, 3- and 4-byte forms).
inline bool is_incomplete_prefix(const uint8_t* data, size_t size) {
  if (size == 0) return false;
  const size_t needed = length_from_lead_byte(data[0]);
  if (needed <= 1 || size >= needed || data[0] < 0xC0) return false;
  uint8_t low[4];
  uint8_t high[4];
  for (size_t i = 0; i < needed; ++i) {
    low[i] = i < size ? data[i] : 0x80;
    high[i] = i < size ? data[i] : 0xBF;
  }
  size_t length = 0;
  return decode_one(low, needed, &length) || decode_one(high, needed, &length);
}

// Appends the UTF-8 form of a code point (callers pass valid code points).
inline void append_code_point(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

// Appends bytes as text the way SentencePiece turns a run of byte pieces into a string: valid
// characters are copied, every malformed byte becomes U+FFFD.
inline void append_bytes_as_text(std::string& out, const uint8_t* data, size_t size) {
  size_t offset = 0;
  while (offset < size) {
    size_t length = 0;
    if (decode_one(data + offset, size - offset, &length)) {
      out.append(reinterpret_cast<const char*>(data + offset), length);
    } else {
      out.append(kReplacementCharacter);
    }
    offset += length;
  }
}

inline bool is_valid(const char* data, size_t size) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data);
  size_t offset = 0;
  while (offset < size) {
    size_t length = 0;
    if (!decode_one(bytes + offset, size - offset, &length)) return false;
    offset += length;
  }
  return true;
}

}  // namespace utf8
}  // namespace bora

#endif  // BORA_TEXT_UTF8_HPP
