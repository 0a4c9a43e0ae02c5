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
#include "bora/quant/q8_0.hpp"

namespace bora {

// Storage element tags for the cache policy: how one key or value row is kept.
struct f32 {
  static constexpr const char* name = "f32";
  static constexpr ops::KvElement kind = ops::KvElement::kF32;
  static int64_t row_bytes(int64_t n) { return n * 4; }
};
struct f16 {
  static constexpr const char* name = "f16";
  static constexpr ops::KvElement kind = ops::KvElement::kF16;
  static int64_t row_bytes(int64_t n) { return n * 2; }
};
// ggml's q8_0 blocks (32 int8 sharing an f16 scale): half the bytes of f16, so a long context costs
// half the reads; each value moves by at most half its block's step (max|x| / 254).
struct q8_0 {
  static constexpr const char* name = "q8_0";
  static constexpr ops::KvElement kind = ops::KvElement::kQ8_0;
  static int64_t row_bytes(int64_t n) { return n / 32 * quant::Q8_0Block::kBytes; }
};

template <class Element>
class RollingKvCache {
  static_assert(std::is_same<Element, f32>::value || std::is_same<Element, f16>::value ||
                    std::is_same<Element, q8_0>::value,
                "RollingKvCache<Element>: Element must be bora::f32, bora::f16 or bora::q8_0");

 public:
  using element = Element;

  // Whether rows of kv_dim values made of heads of head_dim can be stored (q8_0 needs whole blocks
  // in each head, so that a head's row starts at a block).
  static bool supports(int64_t head_dim) { return element::kind != ops::KvElement::kQ8_0 || head_dim % 32 == 0; }

  // Allocates the zeroed cache; false when its size overflows or the memory is not there.
  bool init(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity) {
    n_layers_ = n_layers;
    head_dim_ = head_dim;
    kv_dim_ = n_kv_heads * head_dim;
    row_bytes_ = Element::row_bytes(kv_dim_);
    capacity_ = capacity;
    uint64_t count = 0;
    if (n_layers < 0 || capacity < 0 || kv_dim_ < 0 || !supports(head_dim) ||
        !bytes_detail::checked_mul(static_cast<uint64_t>(n_layers), static_cast<uint64_t>(capacity), &count) ||
        !bytes_detail::checked_mul(count, static_cast<uint64_t>(row_bytes_), &count)) {
      return false;
    }
    return keys_.reset(count) && values_.reset(count);
  }

  int64_t capacity() const { return capacity_; }
  int64_t slot_of(int64_t position) const { return position % capacity_; }
  uint64_t bytes() const { return keys_.size() + values_.size(); }
  // Bytes of a cache of this element for the given shape (for error messages).
  static double bytes_for(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity) {
    return 2.0 * static_cast<double>(n_layers) * static_cast<double>(capacity) *
           static_cast<double>(Element::row_bytes(n_kv_heads * head_dim));
  }

  // Writes the rotated key and the value (kv_dim floats each) of `position`.
  void store(int64_t layer, int64_t position, const float* key, const float* value) {
    copy_in(key, key_slot(layer, slot_of(position)));
    copy_in(value, value_slot(layer, slot_of(position)));
  }

  // Positions from `position` on whose slots follow each other in memory: up to the end of the
  // cache, where the rolling window wraps to slot 0.
  int64_t contiguous_from(int64_t position) const { return capacity_ - slot_of(position); }
  // The keys / values of KV head `head` from `position` on, as rows attention reads in place (valid
  // for contiguous_from(position) positions).
  ops::KvRows key_rows(int64_t layer, int64_t position, int64_t head) const {
    return ops::KvRows{key_slot(layer, slot_of(position)) + head_offset(head), row_bytes_, Element::kind};
  }
  ops::KvRows value_rows(int64_t layer, int64_t position, int64_t head) const {
    return ops::KvRows{value_slot(layer, slot_of(position)) + head_offset(head), row_bytes_, Element::kind};
  }

  // A cache of the same shape (for a fork); false when the memory is not there.
  bool init_like(const RollingKvCache& other) {
    return init(other.n_layers_, other.kv_dim_ / (other.head_dim_ > 0 ? other.head_dim_ : 1), other.head_dim_,
                other.capacity_);
  }
  // Copies every slot of a cache of the same shape.
  void copy_from(const RollingKvCache& other) {
    if (keys_.empty()) return;
    std::memcpy(keys_.data(), other.keys_.data(), keys_.size());
    std::memcpy(values_.data(), other.values_.data(), values_.size());
  }
  // The cache as bytes() bytes (keys, then values), for saving a session, and back.
  void save_to(uint8_t* out) const {
    if (keys_.empty()) return;
    std::memcpy(out, keys_.data(), keys_.size());
    std::memcpy(out + keys_.size(), values_.data(), values_.size());
  }
  void load_from(const uint8_t* in) {
    if (keys_.empty()) return;
    std::memcpy(keys_.data(), in, keys_.size());
    std::memcpy(values_.data(), in + keys_.size(), values_.size());
  }

 private:
  uint8_t* key_slot(int64_t layer, int64_t slot) { return keys_.data() + (layer * capacity_ + slot) * row_bytes_; }
  uint8_t* value_slot(int64_t layer, int64_t slot) { return values_.data() + (layer * capacity_ + slot) * row_bytes_; }
  const uint8_t* key_slot(int64_t layer, int64_t slot) const {
    return keys_.data() + (layer * capacity_ + slot) * row_bytes_;
  }
  const uint8_t* value_slot(int64_t layer, int64_t slot) const {
    return values_.data() + (layer * capacity_ + slot) * row_bytes_;
  }
  int64_t head_offset(int64_t head) const { return Element::row_bytes(head * head_dim_); }

  void copy_in(const float* from, uint8_t* to) const {
    if constexpr (std::is_same<Element, f32>::value) {
      std::memcpy(to, from, static_cast<size_t>(kv_dim_) * sizeof(float));
    } else if constexpr (std::is_same<Element, f16>::value) {
      // The slot is 2-byte aligned: row_bytes is even and the buffer page-aligned.
      ops::f32_to_f16(from, reinterpret_cast<uint16_t*>(to), kv_dim_);
    } else {
      quant::quantize_row_q8_0(from, to, kv_dim_);
    }
  }

  int64_t n_layers_ = 0, head_dim_ = 0, kv_dim_ = 0, row_bytes_ = 0, capacity_ = 0;
  PageBuffer<uint8_t> keys_, values_;
};

}  // namespace bora

#endif  // BORA_MODEL_KV_CACHE_HPP
