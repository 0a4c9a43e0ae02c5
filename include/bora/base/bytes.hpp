// Why this file exists: every reader (GGUF, safetensors, session files) turns sizes and offsets read
// from untrusted bytes into numbers; the overflow-checked arithmetic and explicit little-endian loads
// (and stores, for the GGUF writer) they all need live here once, below every layer that reads a file.
#ifndef BORA_BASE_BYTES_HPP
#define BORA_BASE_BYTES_HPP

#include <cstdint>
#include <cstring>
#include <limits>

namespace bora {
namespace bytes_detail {

inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

inline bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  if (b > std::numeric_limits<uint64_t>::max() - a) return false;
  *out = a + b;
  return true;
}

// Element count of a shape, refusing anything that does not fit a signed 64-bit count.
inline bool checked_elements(const int64_t* ne, int n_dims, uint64_t* out) {
  uint64_t total = 1;
  for (int i = 0; i < n_dims; ++i) {
    if (ne[i] < 0 || !checked_mul(total, static_cast<uint64_t>(ne[i]), &total)) return false;
  }
  if (total > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = total;
  return true;
}

// Explicit little-endian loads: GGUF, safetensors and protobuf fixed-width fields are little-endian
// on every host.
inline uint64_t load_le(const uint8_t* p, int n_bytes) {
  uint64_t v = 0;
  for (int i = n_bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint32_t load_le_u32(const uint8_t* p) { return static_cast<uint32_t>(load_le(p, 4)); }
inline uint64_t load_le_u64(const uint8_t* p) { return load_le(p, 8); }
inline float load_le_f32(const uint8_t* p) {
  const uint32_t bits = load_le_u32(p);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
inline double load_le_f64(const uint8_t* p) {
  const uint64_t bits = load_le_u64(p);
  double value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// The matching store, for the writers (io/gguf_writer.hpp).
inline void store_le(uint8_t* p, uint64_t v, int n_bytes) {
  for (int i = 0; i < n_bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace bytes_detail
}  // namespace bora

#endif  // BORA_BASE_BYTES_HPP
