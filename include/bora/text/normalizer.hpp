// Why this file exists: SentencePiece rewrites text before encoding (a dummy-prefix space, ' ' as "▁",
// malformed UTF-8 as U+FFFD, optionally collapsed whitespace) and decoding undoes it piece by piece;
// both directions follow the same vocabulary flags, so they live together here.
#ifndef BORA_TEXT_NORMALIZER_HPP
#define BORA_TEXT_NORMALIZER_HPP

#include <cstdint>
#include <string>
#include <string_view>

#include "bora/io/vocabulary.hpp"
#include "bora/text/utf8.hpp"

namespace bora {

namespace tokenizer_detail {

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space
constexpr size_t kSpaceSymbolSize = 3;

// Text -> what the BPE merges run over, as SentencePiece's normalizer does without a precompiled
// charsmap (bora refuses those): the vocabulary's dummy-prefix, escaping and collapsing flags only.
inline void normalize(const Vocabulary& vocab, std::string_view text, std::string* out) {
  out->clear();
  const uint8_t* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  if (n == 0) return;
  const bool collapse = vocab.remove_extra_whitespaces;
  if (collapse) {
    while (i < n && p[i] == ' ') ++i;
    if (i == n) return;
  }
  out->reserve(n + n / 2 + 8);
  const char* space = vocab.escape_whitespaces ? kSpaceSymbol : " ";
  const size_t space_size = vocab.escape_whitespaces ? kSpaceSymbolSize : 1;
  if (vocab.add_dummy_prefix) out->append(space, space_size);
  bool previous_space = collapse;
  while (i < n) {
    const uint8_t c = p[i];
    if (c < 0x80) {
      if (c == ' ') {
        if (!previous_space) out->append(space, space_size);
        previous_space = collapse;
      } else {
        out->push_back(static_cast<char>(c));
        previous_space = false;
      }
      ++i;
      continue;
    }
    size_t length = 1;
    if (utf8::decode_one(p + i, n - i, &length)) {
      out->append(reinterpret_cast<const char*>(p + i), length);
    } else {
      out->append(utf8::kReplacementCharacter, 3);
    }
    previous_space = false;
    i += length;
  }
  if (collapse) {
    while (out->size() >= space_size && out->compare(out->size() - space_size, space_size, space) == 0) {
      out->resize(out->size() - space_size);
    }
  }
}

// The inverse, for decoding: appends the text of a non-byte piece ("▁" back to ' ', the dummy-prefix
// space dropped at the start); returns true when it consumed that space. `id` must be in the vocabulary.
inline bool append_piece_surface(const Vocabulary& vocab, std::string& out, int32_t id, bool at_start) {
  const int32_t type = vocab.types[static_cast<size_t>(id)];
  if (type == token_type::kControl || type == token_type::kByte) return false;
  if (type == token_type::kUnknown) {
    out += vocab.unk_surface;
    return false;
  }
  const std::string& piece = vocab.pieces[static_cast<size_t>(id)];
  size_t start = 0;
  bool consumed = false;
  if (at_start && (vocab.add_dummy_prefix || vocab.remove_extra_whitespaces) &&
      piece.compare(0, kSpaceSymbolSize, kSpaceSymbol) == 0) {
    start = kSpaceSymbolSize;
    consumed = !vocab.remove_extra_whitespaces;
  }
  while (start < piece.size()) {
    const size_t found = piece.find(kSpaceSymbol, start, kSpaceSymbolSize);
    if (found == std::string::npos) {
      out.append(piece, start, std::string::npos);
      break;
    }
    out.append(piece, start, found - start);
    out.push_back(' ');
    start = found + kSpaceSymbolSize;
  }
  return consumed;
}

}  // namespace tokenizer_detail

}  // namespace bora

#endif  // BORA_TEXT_NORMALIZER_HPP
