// Why this file exists: building the tokenizer's tables does hundreds of thousands of lookups and
// encoding one per character pair, so the tokenizer has its own flat hash tables (64-bit key -> id,
// piece string -> id) tuned for that, instead of std::unordered_map.
#ifndef BORA_TEXT_PIECE_INDEX_HPP
#define BORA_TEXT_PIECE_INDEX_HPP

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace bora {

namespace tokenizer_detail {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(const char* data, size_t size) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (size * 0x100000001B3ull);
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    h = (h ^ word) * 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
    data += 8;
    size -= 8;
  }
  if (size > 0) {
    uint64_t word = 0;
    std::memcpy(&word, data, size);
    h = (h ^ word) * 0x9FB21C651E98DF25ull;
  }
  return mix64(h);
}

inline size_t table_capacity_for(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2 + 1) capacity *= 2;
  return capacity;
}

// Open-addressing map from 64-bit keys to non-negative int32 values; grows itself. Key and value
// share a slot so a lookup touches one cache line.
class U64Map {
 public:
  int32_t find(uint64_t key) const {
    if (slots_.empty()) return -1;
    size_t index = static_cast<size_t>(mix64(key)) & mask_;
    while (slots_[index].value >= 0) {
      if (slots_[index].key == key) return slots_[index].value;
      index = (index + 1) & mask_;
    }
    return -1;
  }

  // Keeps the existing value when the key is present; returns the value stored.
  int32_t insert(uint64_t key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(table_capacity_for(size_ + 1 > 8 ? size_ * 2 : 8));
    size_t index = static_cast<size_t>(mix64(key)) & mask_;
    while (slots_[index].value >= 0) {
      if (slots_[index].key == key) return slots_[index].value;
      index = (index + 1) & mask_;
    }
    slots_[index].key = key;
    slots_[index].value = value;
    ++size_;
    return value;
  }

  void reserve(size_t count) {
    if (table_capacity_for(count) > slots_.size()) rehash(table_capacity_for(count));
  }

  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key = 0;
    int32_t value = -1;
  };

  void rehash(size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    size_ = 0;
    for (const Slot& slot : old) {
      if (slot.value >= 0) insert(slot.key, slot.value);
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Piece string -> id, over ids chosen by the caller. The index keeps its own contiguous copy of
// the strings, so a lookup touches one slot and a few bytes nearby (building the merge table does
// hundreds of thousands of lookups), and copying or moving the owner never leaves a dangling view.
class PieceIndex {
 public:
  // Indexes the accepted ids; `indexed[id]` says whether id went in (the first of equal strings wins).
  template <class Accept>
  void build(const std::vector<std::string>& pieces, Accept accept, std::vector<uint8_t>* indexed) {
    indexed->assign(pieces.size(), 0);
    size_t count = 0;
    size_t bytes = 0;
    for (size_t id = 0; id < pieces.size(); ++id) {
      if (!accept(static_cast<int32_t>(id))) continue;
      ++count;
      bytes += pieces[id].size();
    }
    const size_t capacity = table_capacity_for(count);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    arena_.clear();
    arena_.reserve(bytes);
    for (size_t id = 0; id < pieces.size(); ++id) {
      if (!accept(static_cast<int32_t>(id))) continue;
      const std::string& piece = pieces[id];
      const uint64_t hash = hash_bytes(piece.data(), piece.size());
      size_t slot = static_cast<size_t>(hash) & mask_;
      bool duplicate = false;
      while (slots_[slot].id >= 0) {
        if (matches(slots_[slot], static_cast<uint32_t>(hash >> 32), piece.data(), piece.size())) {
          duplicate = true;  // the first id with a given string wins
          break;
        }
        slot = (slot + 1) & mask_;
      }
      if (duplicate) continue;
      slots_[slot] = Slot{static_cast<int32_t>(id), static_cast<uint32_t>(hash >> 32),
                          static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(piece.size())};
      arena_.insert(arena_.end(), piece.begin(), piece.end());
      (*indexed)[id] = 1;
    }
  }

  int32_t find(const char* data, size_t size) const {
    if (slots_.empty()) return -1;
    const uint64_t hash = hash_bytes(data, size);
    const uint32_t tag = static_cast<uint32_t>(hash >> 32);
    size_t slot = static_cast<size_t>(hash) & mask_;
    while (slots_[slot].id >= 0) {
      if (matches(slots_[slot], tag, data, size)) return slots_[slot].id;
      slot = (slot + 1) & mask_;
    }
    return -1;
  }

 private:
  struct Slot {
    int32_t id = -1;
    uint32_t tag = 0;
    uint32_t offset = 0;  // of the string in arena_
    uint32_t length = 0;
  };

  bool matches(const Slot& slot, uint32_t tag, const char* data, size_t size) const {
    return slot.tag == tag && slot.length == size && std::memcmp(arena_.data() + slot.offset, data, size) == 0;
  }

  std::vector<Slot> slots_;
  std::vector<char> arena_;
  size_t mask_ = 0;
};

}  // namespace tokenizer_detail

}  // namespace bora

#endif  // BORA_TEXT_PIECE_INDEX_HPP
