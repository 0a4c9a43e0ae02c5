// Why this file exists: the heart of encoding, SentencePiece's BPE (bpe_model.cc) step for step over
// normalized text: split into characters, except that user-defined pieces ([REFERENCE_DOC_3]) are
// matched whole (longest first) and never merged further; repeatedly merge the adjacent pair whose
// concatenation is a piece with the highest score (ties: leftmost), using a priority queue over a
// linked list of symbols; pieces not in the vocabulary fall back to their UTF-8 bytes as <0xXX> pieces.
// Two things make it faster than SentencePiece while giving the same ids: the merge step looks pairs
// up by integer keys (left symbol, right symbol) -> merged piece, a table built once from the
// vocabulary, instead of hashing concatenated strings; and the text is cut into independent
// segments wherever no piece could ever span the cut (see encode_normalized), so the priority queue
// stays small. Encoding is const and keeps no state between calls.
#ifndef BORA_TEXT_BPE_MODEL_HPP
#define BORA_TEXT_BPE_MODEL_HPP

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bora/io/vocabulary.hpp"
#include "bora/text/piece_index.hpp"
#include "bora/text/utf8.hpp"

namespace bora {

namespace tokenizer_detail {

// A character's bytes packed with its length: distinct characters get distinct keys.
inline uint64_t char_key(const uint8_t* data, size_t size) {
  uint64_t key = static_cast<uint64_t>(size) << 32;
  for (size_t i = 0; i < size; ++i) key |= static_cast<uint64_t>(data[i]) << (8 * (size - 1 - i));
  return key;
}

// What the encoder knows about one character before any merge.
struct CharInfo {
  int32_t merge_key = -1;  // id of the piece it is (or a pseudo key >= vocab size), -1: never merges
  int32_t output_id = -1;  // id emitted when it stays alone; -1: unknown -> byte fallback
};

inline int parse_byte_piece(const std::string& piece) {  // "<0x0A>" -> 10, anything else -> -1
  if (piece.size() != 6 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[static_cast<size_t>(i)];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

// The vocabulary plus the tables its BPE merges are looked up in. Tokenizer owns one; moving it
// moves the tables with the vocabulary they were built from.
class BpeModel {
 public:
  // Takes a vocabulary that passed validate_vocabulary() and builds the tables (tens of
  // milliseconds for 32k pieces).
  void build(Vocabulary vocab) {
    vocab_ = std::move(vocab);
    build_tables();
  }

  const Vocabulary& vocabulary() const { return vocab_; }

  // Appends the ids of already normalized text.
  void encode_normalized(const uint8_t* text, size_t size, std::vector<int32_t>* out) const;

  // SentencePiece's PieceToId: reserved pieces (control, unknown, byte) first, then the others.
  int32_t piece_to_id(const char* data, size_t size, int32_t absent) const {
    int32_t id = reserved_index_.find(data, size);
    if (id >= 0) return id;
    id = mergeable_index_.find(data, size);
    return id >= 0 ? id : absent;
  }

  // The byte a byte piece stands for, else -1; `id` must be in the vocabulary.
  int byte_value(int32_t id) const { return byte_value_[static_cast<size_t>(id)]; }

 private:
  struct Symbol {
    int32_t prev;
    int32_t next;
    uint32_t begin;   // byte offset in the normalized text, from the start of the segment
    uint32_t length;  // 0 once merged into its left neighbour
    int32_t merge_key;
    int32_t output_id;
  };

  // A proposed merge of symbol `left` with its right neighbour. The neighbour is not stored: while
  // `left` is unchanged its neighbour is the same symbol, and once `left` has grown the lengths no
  // longer add up (symbols only ever grow), which is how stale proposals are recognised.
  struct Candidate {
    float score;
    int32_t left;
    int32_t merged;
    uint32_t length;  // bytes of the merged piece
  };

  // Max-heap order: higher score first, then the leftmost pair (SentencePiece's tie rule).
  struct CandidateLess {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  static bool is_mergeable_type(int32_t type) {
    return type == token_type::kNormal || type == token_type::kUserDefined || type == token_type::kUnused;
  }
  static bool is_reserved_type(int32_t type) { return !is_mergeable_type(type); }

  void build_tables();
  int32_t merge_of(const Symbol& left, const Symbol& right) const {
    if (left.merge_key < 0 || right.merge_key < 0) return -1;
    return pair_to_merged_.find(pair_key(left.merge_key, right.merge_key));
  }
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_segment(std::vector<Symbol>& symbols, std::vector<Candidate>& heap,
                     std::unordered_map<int32_t, uint32_t>& unused_splits) const;
  size_t match_user_defined(const uint8_t* text, size_t size, int32_t* id) const;
  void emit(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length,
            const std::unordered_map<int32_t, uint32_t>& unused_splits, bool* previous_unknown,
            std::vector<int32_t>* out) const;
  void emit_one(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length, bool* previous_unknown,
                std::vector<int32_t>* out) const;
  CharInfo* char_info_for_build(const char* data, size_t size);
  CharInfo char_info(const uint8_t* data, size_t size) const {
    if (size == 1 && data[0] < 0x80) return ascii_[data[0]];
    const int32_t slot = char_slots_.find(char_key(data, size));
    return slot >= 0 ? char_infos_[static_cast<size_t>(slot)] : CharInfo{};
  }

  Vocabulary vocab_;
  PieceIndex reserved_index_;     // control, unknown and byte pieces
  PieceIndex mergeable_index_;    // normal, user-defined and unused pieces
  U64Map pair_to_merged_;         // (left key << 32 | right key) -> merged piece id
  U64Map bigrams_;                // adjacent character keys seen inside some piece
  bool split_segments_ = true;    // false when unused pieces make segments interact
  U64Map char_slots_;             // non-ASCII character -> index into char_infos_
  std::vector<CharInfo> char_infos_;
  CharInfo ascii_[128];
  int32_t byte_ids_[256];                  // <0xXX> piece ids (-1 when the vocabulary lacks one)
  std::vector<int16_t> byte_value_;        // per id: the byte a byte piece stands for, else -1
  std::vector<int32_t> user_defined_ids_;  // grouped by first byte, longest first within a group
  uint32_t user_defined_begin_[257];       // group of first byte b: [begin[b], begin[b+1])
  bool has_unused_ = false;
  int32_t next_pseudo_key_ = 0;
};

inline CharInfo* BpeModel::char_info_for_build(const char* data, size_t size) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data);
  CharInfo* info = nullptr;
  if (size == 1 && bytes[0] < 0x80) {
    info = &ascii_[bytes[0]];
  } else {
    const uint64_t key = char_key(bytes, size);
    int32_t slot = char_slots_.find(key);
    if (slot < 0) {
      slot = char_slots_.insert(key, static_cast<int32_t>(char_infos_.size()));
      CharInfo fresh;
      fresh.merge_key = mergeable_index_.find(data, size);
      const int32_t id = piece_to_id(data, size, -1);
      fresh.output_id = (id >= 0 && vocab_.types[static_cast<size_t>(id)] != token_type::kUnknown) ? id : -1;
      char_infos_.push_back(fresh);
    }
    info = &char_infos_[static_cast<size_t>(slot)];
  }
  return info;
}

inline void BpeModel::build_tables() {
  const std::vector<std::string>& pieces = vocab_.pieces;
  const std::vector<int32_t>& types = vocab_.types;
  const size_t n = pieces.size();
  std::vector<uint8_t> reserved_first;   // per id: indexed (the first reserved piece with its string)
  std::vector<uint8_t> mergeable_first;  // per id: indexed (the first mergeable piece with its string)
  reserved_index_.build(pieces, [&](int32_t id) { return is_reserved_type(types[static_cast<size_t>(id)]); },
                        &reserved_first);
  mergeable_index_.build(pieces, [&](int32_t id) { return is_mergeable_type(types[static_cast<size_t>(id)]); },
                         &mergeable_first);

  byte_value_.assign(n, -1);
  for (size_t id = 0; id < n; ++id) {
    if (types[id] == token_type::kByte) byte_value_[id] = static_cast<int16_t>(parse_byte_piece(pieces[id]));
    if (types[id] == token_type::kUnused) has_unused_ = true;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_ids_[b] = piece_to_id(name, 6, -1);
  }

  for (int c = 0; c < 128; ++c) {
    const char ch = static_cast<char>(c);
    ascii_[c].merge_key = mergeable_index_.find(&ch, 1);
    const int32_t id = piece_to_id(&ch, 1, -1);
    ascii_[c].output_id = (id >= 0 && types[static_cast<size_t>(id)] != token_type::kUnknown) ? id : -1;
  }
  for (size_t id = 0; id < n; ++id) {  // every piece that is a single character
    const std::string& p = pieces[id];
    if (utf8::length_from_lead_byte(static_cast<uint8_t>(p[0])) == p.size()) char_info_for_build(p.data(), p.size());
  }

  // A merge joins two adjacent symbols, each either a mergeable piece or a single character; so
  // every way to cut a piece at a character boundary into two such halves is one merge rule.
  // Characters that appear inside pieces without being pieces themselves get pseudo keys above the
  // vocabulary so they can take part in merges too.
  next_pseudo_key_ = static_cast<int32_t>(n);
  pair_to_merged_.reserve(2 * n);
  std::vector<size_t> cuts;        // character boundaries of the current piece
  std::vector<int32_t> char_keys;  // merge key of each of its characters
  for (size_t id = 0; id < n; ++id) {
    if (!mergeable_first[id]) continue;  // not mergeable, or a duplicate string
    const std::string& p = pieces[id];
    cuts.clear();
    char_keys.clear();
    for (size_t begin = 0; begin < p.size();) {
      const size_t length = std::min(utf8::length_from_lead_byte(static_cast<uint8_t>(p[begin])), p.size() - begin);
      CharInfo* info = char_info_for_build(p.data() + begin, length);
      if (info->merge_key < 0) info->merge_key = next_pseudo_key_++;
      cuts.push_back(begin);
      char_keys.push_back(info->merge_key);
      begin += length;
    }
    cuts.push_back(p.size());
    const size_t chars = char_keys.size();
    // Text positions between two characters that never stand side by side inside a piece can
    // never be merged across; the encoder cuts its work into segments there.
    for (size_t i = 1; i < chars; ++i) bigrams_.insert(pair_key(char_keys[i - 1], char_keys[i]), 1);
    for (size_t k = 1; k < chars; ++k) {
      const int32_t left = k == 1 ? char_keys[0] : mergeable_index_.find(p.data(), cuts[k]);
      if (left < 0) continue;
      const int32_t right =
          k + 1 == chars ? char_keys[chars - 1] : mergeable_index_.find(p.data() + cuts[k], p.size() - cuts[k]);
      if (right < 0) continue;
      pair_to_merged_.insert(pair_key(left, right), static_cast<int32_t>(id));
    }
  }
  split_segments_ = !has_unused_;

  // User-defined pieces, matched whole in the text before any merging.
  for (size_t id = 0; id < n; ++id) {
    if (types[id] != token_type::kUserDefined || !mergeable_first[id]) continue;
    user_defined_ids_.push_back(static_cast<int32_t>(id));
  }
  std::sort(user_defined_ids_.begin(), user_defined_ids_.end(), [&](int32_t a, int32_t b) {
    const std::string& pa = pieces[static_cast<size_t>(a)];
    const std::string& pb = pieces[static_cast<size_t>(b)];
    if (pa[0] != pb[0]) return static_cast<uint8_t>(pa[0]) < static_cast<uint8_t>(pb[0]);
    if (pa.size() != pb.size()) return pa.size() > pb.size();
    return a < b;
  });
  size_t next = 0;
  for (int b = 0; b < 256; ++b) {
    user_defined_begin_[b] = static_cast<uint32_t>(next);
    while (next < user_defined_ids_.size() &&
           static_cast<uint8_t>(pieces[static_cast<size_t>(user_defined_ids_[next])][0]) == b) {
      ++next;
    }
  }
  user_defined_begin_[256] = static_cast<uint32_t>(next);
}

inline size_t BpeModel::match_user_defined(const uint8_t* text, size_t size, int32_t* id) const {
  const uint8_t first = text[0];
  for (uint32_t i = user_defined_begin_[first]; i < user_defined_begin_[first + 1]; ++i) {
    const std::string& piece = vocab_.pieces[static_cast<size_t>(user_defined_ids_[i])];
    if (piece.size() <= size && std::memcmp(piece.data(), text, piece.size()) == 0) {
      *id = user_defined_ids_[i];
      return piece.size();
    }
  }
  return 0;
}

// Splits the normalized text into symbols and cuts it into segments wherever no merge can ever
// cross (between two characters that never stand side by side inside a piece, or next to a
// character no piece contains). SentencePiece merges the whole text at once; merging each segment
// alone gives the same result, because a merge only ever looks at its own neighbours and the
// leftmost-first tie rule orders pairs within a segment the same way. Small segments keep the
// priority queue tiny and in cache.
inline void BpeModel::encode_normalized(const uint8_t* text, size_t size, std::vector<int32_t>* out) const {
  if (size == 0) return;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::unordered_map<int32_t, uint32_t> unused_splits;  // merged unused piece -> length of its left part
  bool previous_unknown = false;
  size_t segment_begin = 0;
  // Symbol offsets are 32-bit and relative to the segment; a segment is cut at 1 GiB regardless.
  constexpr size_t kMaxSegmentBytes = size_t{1} << 30;

  auto finish_segment = [&]() {
    if (symbols.size() > 1) {
      std::make_heap(heap.begin(), heap.end(), CandidateLess());
      merge_segment(symbols, heap, unused_splits);
    }
    const uint8_t* base = text + segment_begin;
    for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
      const Symbol& symbol = symbols[static_cast<size_t>(i)];
      emit(symbol.output_id, base, symbol.begin, symbol.length, unused_splits, &previous_unknown, out);
    }
    symbols.clear();
    heap.clear();
  };

  size_t position = 0;
  while (position < size) {
    Symbol symbol;
    const uint8_t lead = text[position];
    int32_t user_id = -1;
    size_t length = 0;
    if (user_defined_begin_[lead] != user_defined_begin_[lead + 1]) {
      length = match_user_defined(text + position, size - position, &user_id);
    }
    if (length > 0) {
      symbol.merge_key = -1;  // frozen: a user-defined piece never merges
      symbol.output_id = user_id;
    } else {
      length = std::min(utf8::length_from_lead_byte(lead), size - position);
      const CharInfo info = char_info(text + position, length);
      symbol.merge_key = info.merge_key;
      symbol.output_id = info.output_id;
    }
    if (!symbols.empty()) {
      const Symbol& previous = symbols.back();
      const int32_t merged = merge_of(previous, symbol);
      bool boundary = false;
      if (merged >= 0) {
        const int32_t left = static_cast<int32_t>(symbols.size()) - 1;
        heap.push_back(Candidate{vocab_.scores[static_cast<size_t>(merged)], left, merged,
                                 previous.length + static_cast<uint32_t>(length)});
        if (has_unused_ && vocab_.types[static_cast<size_t>(merged)] == token_type::kUnused) {
          unused_splits[merged] = previous.length;  // SentencePiece keeps the last pair proposed
        }
      } else if (split_segments_) {
        boundary = previous.merge_key < 0 || symbol.merge_key < 0 ||
                   bigrams_.find(pair_key(previous.merge_key, symbol.merge_key)) < 0;
      }
      if (boundary || position - segment_begin >= kMaxSegmentBytes) {
        finish_segment();
        segment_begin = position;
      }
    }
    symbol.begin = static_cast<uint32_t>(position - segment_begin);
    symbol.length = static_cast<uint32_t>(length);
    symbol.prev = static_cast<int32_t>(symbols.size()) - 1;
    symbol.next = -1;
    if (!symbols.empty()) symbols.back().next = static_cast<int32_t>(symbols.size());
    symbols.push_back(symbol);
    position += length;
  }
  finish_segment();
}

// SentencePiece's merge loop over one segment: take the best proposal, skip it if stale, merge the
// pair, propose the two new pairs around the merged symbol.
inline void BpeModel::merge_segment(std::vector<Symbol>& symbols, std::vector<Candidate>& heap,
                                     std::unordered_map<int32_t, uint32_t>& unused_splits) const {
  auto propose = [&](int32_t left) {
    if (left < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    if (l.next < 0) return;
    const Symbol& r = symbols[static_cast<size_t>(l.next)];
    const int32_t merged = merge_of(l, r);
    if (merged < 0) return;
    heap.push_back(Candidate{vocab_.scores[static_cast<size_t>(merged)], left, merged, l.length + r.length});
    std::push_heap(heap.begin(), heap.end(), CandidateLess());
    if (has_unused_ && vocab_.types[static_cast<size_t>(merged)] == token_type::kUnused) {
      unused_splits[merged] = l.length;
    }
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), CandidateLess());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[static_cast<size_t>(top.left)];
    if (left.length == 0 || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (left.length + right.length != top.length) continue;  // stale
    left.length += right.length;
    left.merge_key = top.merged;
    left.output_id = top.merged;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.left;
    right.length = 0;
    propose(left.prev);
    propose(top.left);
  }
}

inline void BpeModel::emit(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length,
                            const std::unordered_map<int32_t, uint32_t>& unused_splits, bool* previous_unknown,
                            std::vector<int32_t>* out) const {
  auto is_unused = [this](int32_t piece_id) {
    return piece_id >= 0 && vocab_.types[static_cast<size_t>(piece_id)] == token_type::kUnused;
  };
  if (has_unused_ && is_unused(id)) {
    // An unused piece is split back into the two parts that formed it, recursively; an explicit
    // stack (rightmost part at the bottom) keeps a long chain from exhausting the call stack.
    struct Part {
      int32_t id;
      uint32_t begin;
      uint32_t length;
    };
    std::vector<Part> parts = {{id, begin, length}};
    while (!parts.empty()) {
      const Part part = parts.back();
      parts.pop_back();
      const auto split = is_unused(part.id) ? unused_splits.find(part.id) : unused_splits.end();
      if (split != unused_splits.end() && split->second > 0 && split->second < part.length) {
        const char* piece = reinterpret_cast<const char*>(text + part.begin);
        const uint32_t left = split->second;
        parts.push_back({piece_to_id(piece + left, part.length - left, -1), part.begin + left, part.length - left});
        parts.push_back({piece_to_id(piece, left, -1), part.begin, left});
      } else {
        emit_one(part.id, text, part.begin, part.length, previous_unknown, out);
      }
    }
    return;
  }
  emit_one(id, text, begin, length, previous_unknown, out);
}

inline void BpeModel::emit_one(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length,
                                bool* previous_unknown, std::vector<int32_t>* out) const {
  const bool unknown = id < 0 || vocab_.types[static_cast<size_t>(id)] == token_type::kUnknown;
  if (!unknown) {
    out->push_back(id);
  } else if (vocab_.byte_fallback) {
    for (uint32_t i = 0; i < length; ++i) {
      const int32_t byte_id = byte_ids_[text[begin + i]];
      if (byte_id >= 0) out->push_back(byte_id);
      else if (vocab_.unk_id >= 0) out->push_back(vocab_.unk_id);
    }
  } else if (!*previous_unknown && vocab_.unk_id >= 0) {
    out->push_back(vocab_.unk_id);  // a run of unknown characters becomes one <unk>
  }
  *previous_unknown = unknown;
}

}  // namespace tokenizer_detail

}  // namespace bora

#endif  // BORA_TEXT_BPE_MODEL_HPP
