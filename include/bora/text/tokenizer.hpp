// Why this file exists: a prompt must become exactly the ids Mistral's own SentencePiece tokenizer
// produces (and ids must become text again, also one token at a time while generating), from either
// a tokenizer.model file or a GGUF vocabulary, fast enough that tokenizing never shows up in a profile.
// This is the face users include; the parts live beside it:
//   text/normalizer.hpp   text -> "▁"-escaped text before encoding, and back for each decoded piece;
//   text/bpe_model.hpp    the vocabulary's merge tables and SentencePiece's BPE merge loop;
//   text/piece_index.hpp  the flat hash tables both of those look pieces up in.
// Encoding is const and keeps no state between calls: one Tokenizer serves many threads.
#ifndef BORA_TEXT_TOKENIZER_HPP
#define BORA_TEXT_TOKENIZER_HPP

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/sentencepiece_model.hpp"
#include "bora/io/vocabulary.hpp"
#include "bora/text/bpe_model.hpp"
#include "bora/text/normalizer.hpp"
#include "bora/text/utf8.hpp"

namespace bora {

class StreamingDecoder;

class Tokenizer {
 public:
  // Checks the vocabulary and builds the lookup tables (tens of milliseconds for 32k pieces).
  static Expected<Tokenizer> create(Vocabulary vocab) {
    BORA_RETURN_IF_ERROR(validate_vocabulary(vocab));
    Tokenizer tokenizer;
    tokenizer.bpe_.build(std::move(vocab));
    return tokenizer;
  }

  // The vocabulary llama.cpp stores in a GGUF file's tokenizer.ggml.* metadata.
  static Expected<Tokenizer> from_gguf(const GgufFile& gguf) {
    Expected<Vocabulary> vocab = vocabulary_from_gguf(gguf);
    if (!vocab) return vocab.error();
    return create(std::move(*vocab));
  }

  // A GGUF file (recognised by its magic) or a SentencePiece tokenizer.model.
  static Expected<Tokenizer> from_file(const std::string& path) {
    char magic[4] = {0, 0, 0, 0};
    if (std::FILE* file = std::fopen(path.c_str(), "rb")) {
      const size_t got = std::fread(magic, 1, 4, file);
      std::fclose(file);
      if (got == 4 && std::memcmp(magic, "GGUF", 4) == 0) {
        Expected<GgufFile> gguf = GgufFile::open(path);
        if (!gguf) return gguf.error();
        return from_gguf(*gguf);
      }
    }
    Expected<Vocabulary> vocab = load_sentencepiece_model(path);
    if (!vocab) return vocab.error();
    return create(std::move(*vocab));
  }

  // Text -> ids exactly as SentencePiece's EncodeAsIds, with BOS in front when asked.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const {
    std::vector<int32_t> ids;
    if (add_bos && vocabulary().bos_id >= 0) ids.push_back(vocabulary().bos_id);
    encode_append(text, &ids);
    return ids;
  }

  // Appends the ids of `text` (no BOS) to `out`.
  void encode_append(std::string_view text, std::vector<int32_t>* out) const;

  // Ids -> text exactly as SentencePiece's DecodeIds: control tokens vanish, byte pieces are joined
  // into UTF-8 (malformed bytes become U+FFFD), the dummy-prefix space of the first piece is dropped.
  // Ids outside the vocabulary are skipped.
  std::string decode(const int32_t* ids, size_t count) const;
  std::string decode(const std::vector<int32_t>& ids) const { return decode(ids.data(), ids.size()); }

  // The raw piece ("▁the", "<0x0A>", "<s>"); empty for an id outside the vocabulary.
  const std::string& piece(int32_t id) const {
    static const std::string kNone;
    return valid_id(id) ? vocabulary().pieces[static_cast<size_t>(id)] : kNone;
  }

  // What one token contributes to text in the middle of a sequence: "▁" shown as ' ', a byte piece
  // as its raw byte (possibly half a character), control tokens as "", <unk> as " ⁇ ".
  std::string piece_text(int32_t id) const {
    std::string out;
    if (!valid_id(id)) return out;
    if (bpe_.byte_value(id) >= 0) {
      out.push_back(static_cast<char>(bpe_.byte_value(id)));
      return out;
    }
    tokenizer_detail::append_piece_surface(vocabulary(), out, id, false);
    return out;
  }

  int32_t token_to_id(std::string_view piece) const {  // -1 when absent
    return bpe_.piece_to_id(piece.data(), piece.size(), -1);
  }

  int32_t bos_id() const { return vocabulary().bos_id; }
  int32_t eos_id() const { return vocabulary().eos_id; }
  int32_t unk_id() const { return vocabulary().unk_id; }
  int32_t pad_id() const { return vocabulary().pad_id; }
  size_t vocab_size() const { return vocabulary().pieces.size(); }
  bool add_bos_by_default() const { return vocabulary().add_bos; }
  int32_t token_type(int32_t id) const {
    return valid_id(id) ? vocabulary().types[static_cast<size_t>(id)] : 0;
  }
  bool is_control(int32_t id) const { return token_type(id) == token_type::kControl; }
  int byte_value(int32_t id) const { return valid_id(id) ? bpe_.byte_value(id) : -1; }
  const Vocabulary& vocabulary() const { return bpe_.vocabulary(); }

 private:
  friend class StreamingDecoder;

  Tokenizer() = default;

  bool valid_id(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < vocabulary().pieces.size(); }

  tokenizer_detail::BpeModel bpe_;
};

inline void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>* out) const {
  std::string normalized;
  tokenizer_detail::normalize(vocabulary(), text, &normalized);
  bpe_.encode_normalized(reinterpret_cast<const uint8_t*>(normalized.data()), normalized.size(), out);
}

inline std::string Tokenizer::decode(const int32_t* ids, size_t count) const {
  std::string text;
  std::string bytes;
  bool at_start = true;
  bool start_space_consumed = false;
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = ids[i];
    if (!valid_id(id)) continue;
    if (vocabulary().types[static_cast<size_t>(id)] == token_type::kByte) {
      const int value = bpe_.byte_value(id);
      if (value >= 0) bytes.push_back(static_cast<char>(value));
      continue;
    }
    if (!bytes.empty()) {
      utf8::append_bytes_as_text(text, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      bytes.clear();
    }
    if (start_space_consumed || !text.empty()) at_start = false;
    start_space_consumed = tokenizer_detail::append_piece_surface(vocabulary(), text, id, at_start);
  }
  utf8::append_bytes_as_text(text, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return text;
}

// Decodes one id at a time for streaming output: push() returns the text that became final,
// never half a UTF-8 character (byte pieces wait until their character is complete or provably
// malformed); the concatenation of every push() and a final flush() equals Tokenizer::decode.
class StreamingDecoder {
 public:
  // `at_start_of_text`: the first piece begins the text, so its dummy-prefix space is dropped (as
  // decode() does). Pass false to continue a text already shown, e.g. a plain completion after its
  // prompt, where "▁Paris" must keep its space.
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool at_start_of_text = true)
      : tokenizer_(&tokenizer), at_start_(at_start_of_text) {}

  std::string push(int32_t id) {
    std::string out;
    if (!tokenizer_->valid_id(id)) return out;
    if (tokenizer_->vocabulary().types[static_cast<size_t>(id)] == token_type::kByte) {
      const int value = tokenizer_->bpe_.byte_value(id);
      if (value < 0) return out;
      pending_[pending_size_++] = static_cast<uint8_t>(value);
      drain(out, false);
      return out;
    }
    drain(out, true);
    if (start_space_consumed_ || emitted_any_) at_start_ = false;
    const size_t before = out.size();
    start_space_consumed_ =
        tokenizer_detail::append_piece_surface(tokenizer_->vocabulary(), out, id, at_start_);
    if (out.size() > before) emitted_any_ = true;
    return out;
  }

  // Emits bytes still waiting for the rest of their character (as U+FFFD, as decode() would).
  std::string flush() {
    std::string out;
    drain(out, true);
    return out;
  }

  // Starts a new sequence (pending bytes are dropped): with at_start_of_text, the next piece's
  // leading space is dropped again.
  void reset(bool at_start_of_text = true) {
    pending_size_ = 0;
    at_start_ = at_start_of_text;
    start_space_consumed_ = false;
    emitted_any_ = false;
  }

 private:
  void drain(std::string& out, bool final) {
    const size_t before = out.size();
    size_t offset = 0;
    while (offset < pending_size_) {
      size_t length = 1;
      if (utf8::decode_one(pending_ + offset, pending_size_ - offset, &length)) {
        out.append(reinterpret_cast<const char*>(pending_ + offset), length);
      } else if (!final && utf8::is_incomplete_prefix(pending_ + offset, pending_size_ - offset)) {
        break;
      } else {
        out.append(utf8::kReplacementCharacter, 3);
        length = 1;
      }
      offset += length;
    }
    std::memmove(pending_, pending_ + offset, pending_size_ - offset);
    pending_size_ -= offset;
    if (out.size() > before) emitted_any_ = true;
  }

  const Tokenizer* tokenizer_;
  uint8_t pending_[8] = {};  // an incomplete character is at most 3 bytes, plus the one just pushed
  size_t pending_size_ = 0;
  bool at_start_ = true;
  bool start_space_consumed_ = false;
  bool emitted_any_ = false;
};

}  // namespace bora

#endif  // BORA_TEXT_TOKENIZER_HPP
