// Why this file exists: the KV cache policy. A rolling cache keeps exactly `capacity` positions per
// layer (the sliding window, or the whole context when there is none): position p lives in slot
// p % capacity, so memory stays bounded however long the stream runs.
#ifndef BORA_MODEL_KV_CACHE_HPP
#define BORA_MODEL_KV_CACHE_HPP

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bora/base/bytes.hpp"
#include "bora/base/page_aligned.hpp"
#include "bora/ops/ops.hpp"

namespace bora {

// Storage element tags for the cache policy.
struct f32 {
  using storage = float;
  static constexpr const char* name = "f32";
};
struct f16 {
  using storage = uint16_t;
  static constexpr const char* name = "f16";
};

template <class Element>
class RollingKvCache {
  static_assert(std::is_same<Element, f32>::value || std::is_same<Element, f16>::value,
                "RollingKvCache<Element>: Element must be bora::f32 or bora::f16");

 public:
  using element = Element;
  using storage = typename Element::storage;

  // Allocates the zeroed cache; false when its size overflows or the memory is not there.
  bool init(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity) {
    n_layers_ = n_layers;
    kv_dim_ = n_kv_heads * head_dim;
    capacity_ = capacity;
    uint64_t count = 0;
    if (n_layers < 0 || capacity < 0 || kv_dim_ < 0 ||
        !bytes_detail::checked_mul(static_cast<uint64_t>(n_layers), static_cast<uint64_t>(capacity), &count) ||
        !bytes_detail::checked_mul(count, static_cast<uint64_t>(kv_dim_), &count)) {
      return false;
    }
    return keys_.reset(count) && values_.reset(count);
  }

  int64_t capacity() const { return capacity_; }
  int64_t slot_of(int64_t position) const { return position % capacity_; }
  uint64_t bytes() const { return (keys_.size() + values_.size()) * sizeof(storage); }

  // Writes the rotated key and the value (kv_dim floats each) of `position`.
  void store(int64_t layer, int64_t position, const float* key, const float* value) {
    storage* k = key_slot(layer, slot_of(position));
    storage* v = value_slot(layer, slot_of(position));
    copy_in(key, k);
    copy_in(value, v);
  }

  // Reads `count` floats of a stored key/value starting at `offset` within the slot. For f32 the
  // returned pointer is the cache itself; for f16 the values are widened into `buffer`.
  const float* key(int64_t layer, int64_t position, int64_t offset, int64_t count, float* buffer) const {
    return read(key_slot(layer, slot_of(position)) + offset, count, buffer);
  }
  const float* value(int64_t layer, int64_t position, int64_t offset, int64_t count, float* buffer) const {
    return read(value_slot(layer, slot_of(position)) + offset, count, buffer);
  }

  // A cache of the same shape (for a fork); false when the memory is not there.
  bool init_like(const RollingKvCache& other) {
    return init(other.n_layers_, 1, other.kv_dim_, other.capacity_) && (kv_dim_ = other.kv_dim_, true);
  }
  // Copies every slot of a cache of the same shape.
  void copy_from(const RollingKvCache& other) {
    if (keys_.empty()) return;
    std::memcpy(keys_.data(), other.keys_.data(), keys_.size() * sizeof(storage));
    std::memcpy(values_.data(), other.values_.data(), values_.size() * sizeof(storage));
  }
  // The cache as bytes() bytes (keys, then values), for saving a session, and back.
  void save_to(uint8_t* out) const {
    if (keys_.empty()) return;
    std::memcpy(out, keys_.data(), keys_.size() * sizeof(storage));
    std::memcpy(out + keys_.size() * sizeof(storage), values_.data(), values_.size() * sizeof(storage));
  }
  void load_from(const uint8_t* in) {
    if (keys_.empty()) return;
    std::memcpy(keys_.data(), in, keys_.size() * sizeof(storage));
    std::memcpy(values_.data(), in + keys_.size() * sizeof(storage), values_.size() * sizeof(storage));
  }

 private:
  storage* key_slot(int64_t layer, int64_t slot) { return keys_.data() + (layer * capacity_ + slot) * kv_dim_; }
  storage* value_slot(int64_t layer, int64_t slot) { return values_.data() + (layer * capacity_ + slot) * kv_dim_; }
  const storage* key_slot(int64_t layer, int64_t slot) const {
    return keys_.data() + (layer * capacity_ + slot) * kv_dim_;
  }
  const storage* value_slot(int64_t layer, int64_t slot) const {
    return values_.data() + (layer * capacity_ + slot) * kv_dim_;
  }

  void copy_in(const float* from, storage* to) const {
    if constexpr (std::is_same<Element, f32>::value) {
      for (int64_t i = 0; i < kv_dim_; ++i) to[i] = from[i];
    } else {
      ops::f32_to_f16(from, to, kv_dim_);
    }
  }
  const float* read(const storage* from, int64_t count, float* buffer) const {
    if constexpr (std::is_same<Element, f32>::value) {
      (void)count;
      (void)buffer;
      return from;
    } else {
      ops::f16_to_f32(from, buffer, count);
      return buffer;
    }
  }

  int64_t n_layers_ = 0, kv_dim_ = 0, capacity_ = 0;
  PageBuffer<storage> keys_, values_;
};

}  // namespace bora

#endif  // BORA_MODEL_KV_CACHE_HPP
