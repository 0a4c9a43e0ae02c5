// Why this file exists: a GGUF metadata value is a typed, little-endian encoding; its type tags and the
// loads that turn raw bytes into numbers are separate from the file reader (io/gguf.hpp) that finds them.
#ifndef BORA_IO_GGUF_VALUE_HPP
#define BORA_IO_GGUF_VALUE_HPP

#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "bora/base/bytes.hpp"

namespace bora {

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

inline bool gguf_type_is_known(uint32_t id) { return id <= 12; }

inline const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kU8: return "u8";
    case GgufType::kI8: return "i8";
    case GgufType::kU16: return "u16";
    case GgufType::kI16: return "i16";
    case GgufType::kU32: return "u32";
    case GgufType::kI32: return "i32";
    case GgufType::kF32: return "f32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kU64: return "u64";
    case GgufType::kI64: return "i64";
    case GgufType::kF64: return "f64";
  }
  return "unknown";
}

// Bytes of one value of a fixed-size type; 0 for strings and arrays (variable length).
inline uint64_t gguf_scalar_bytes(GgufType type) {
  switch (type) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    case GgufType::kU64: case GgufType::kI64: case GgufType::kF64: return 8;
    case GgufType::kString: case GgufType::kArray: return 0;
  }
  return 0;
}

inline bool gguf_type_is_integer(GgufType type) {
  switch (type) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kU16: case GgufType::kI16:
    case GgufType::kU32: case GgufType::kI32: case GgufType::kU64: case GgufType::kI64: return true;
    default: return false;
  }
}

inline bool gguf_type_is_signed(GgufType type) {
  return type == GgufType::kI8 || type == GgufType::kI16 || type == GgufType::kI32 ||
         type == GgufType::kI64;
}

// One metadata value. Scalars: `raw` points at the little-endian bytes. Strings: `raw` points at the
// UTF-8 bytes (raw_bytes = length, no terminator). Arrays: element type and count, and `raw` spans
// all encoded elements (strings inside are u64-length-prefixed, nested arrays are fully encoded).
// `raw` points into the file's bytes, which the GgufFile keeps alive.
struct GgufValue {
  GgufType type = GgufType::kU8;
  GgufType array_type = GgufType::kU8;  // meaningful only when type == kArray
  uint64_t array_count = 0;
  const uint8_t* raw = nullptr;
  uint64_t raw_bytes = 0;

  bool is_array() const { return type == GgufType::kArray; }
  std::string_view string_view() const {  // only for type == kString
    return std::string_view(reinterpret_cast<const char*>(raw), static_cast<size_t>(raw_bytes));
  }
};

namespace gguf_detail {

inline double load_scalar_as_double(GgufType type, const uint8_t* p) {
  switch (type) {
    case GgufType::kF32: return bytes_detail::load_le_f32(p);
    case GgufType::kF64: return bytes_detail::load_le_f64(p);
    default: return 0.0;
  }
}

// Integer scalar of any width, as a sign flag plus magnitude-preserving 64-bit pieces.
struct IntegerValue {
  bool negative = false;
  uint64_t as_unsigned = 0;  // valid when !negative
  int64_t as_signed = 0;     // valid when negative, or when as_unsigned fits
};

inline IntegerValue load_integer(GgufType type, const uint8_t* p) {
  IntegerValue v;
  const uint64_t width = gguf_scalar_bytes(type);
  uint64_t bits = bytes_detail::load_le(p, static_cast<int>(width));
  if (gguf_type_is_signed(type)) {
    const uint64_t sign_bit = uint64_t{1} << (width * 8 - 1);
    int64_t value;
    if (width < 8 && (bits & sign_bit)) bits |= ~((sign_bit << 1) - 1);  // sign-extend
    std::memcpy(&value, &bits, 8);
    v.negative = value < 0;
    v.as_signed = value;
    v.as_unsigned = v.negative ? 0 : static_cast<uint64_t>(value);
  } else {
    v.as_unsigned = bits;
    v.as_signed = bits <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(bits) : 0;
  }
  return v;
}

}  // namespace gguf_detail

}  // namespace bora

#endif  // BORA_IO_GGUF_VALUE_HPP
