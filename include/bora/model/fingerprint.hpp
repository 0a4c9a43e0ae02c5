// Why this file exists: a saved session (tokens + KV cache) is only meaningful with the exact weights
// that computed it. Shapes alone do not tell a Q4_0 file from a Q8_0 one, or a fine-tune from its base,
// so this digest covers the tensor table (names, types, shapes, sizes) and samples of every tensor's bytes.
#ifndef BORA_MODEL_FINGERPRINT_HPP
#define BORA_MODEL_FINGERPRINT_HPP

#include <algorithm>
#include <cstdint>
#include <string>

#include "bora/io/model_files.hpp"
#include "bora/io/tensor_view.hpp"

namespace bora {

namespace fingerprint_detail {

// FNV-1a, 64-bit: stable across platforms and library versions, which std::hash is not.
struct Fnv1a {
  uint64_t state = 0xcbf29ce484222325ull;
  void add(const void* data, uint64_t size) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    for (uint64_t i = 0; i < size; ++i) state = (state ^ p[i]) * 0x100000001b3ull;
  }
  void add_u64(uint64_t value) {
    uint8_t bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
    add(bytes, 8);
  }
};

}  // namespace fingerprint_detail

// Digest of the tensor table and of three 64-byte samples (start, middle, end) of every tensor's data:
// reads a few pages per tensor, so it costs microseconds per file instead of a pass over gigabytes.
inline uint64_t weights_fingerprint(const ModelFiles& files) {
  constexpr uint64_t kSample = 64;
  fingerprint_detail::Fnv1a digest;
  for (const std::string& name : files.tensor_names()) {
    const TensorView* t = files.find_tensor(name);
    if (t == nullptr) continue;
    digest.add(name.data(), name.size());
    digest.add_u64(static_cast<uint64_t>(t->type));
    for (int64_t extent : t->ne) digest.add_u64(static_cast<uint64_t>(extent));
    digest.add_u64(t->bytes);
    if (t->data == nullptr) continue;
    for (uint64_t start : {uint64_t{0}, t->bytes / 2, t->bytes > kSample ? t->bytes - kSample : 0}) {
      digest.add(t->data + start, std::min(kSample, t->bytes - start));
    }
  }
  return digest.state;
}

}  // namespace bora

#endif  // BORA_MODEL_FINGERPRINT_HPP
