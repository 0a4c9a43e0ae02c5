// Why this file exists: a SentencePiece vocabulary reaches bora from two places (a tokenizer.model
// protobuf and the tokenizer.ggml.* keys of a GGUF file); both readers live in io/ and both produce
// this one struct, so the tokenizer (text/) never cares where its pieces came from.
#ifndef BORA_IO_VOCABULARY_HPP
#define BORA_IO_VOCABULARY_HPP

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/io/gguf.hpp"

namespace bora {

// Token types, numbered as GGUF's tokenizer.ggml.token_type and SentencePiece's
// ModelProto.SentencePiece.Type (the two agree).
namespace token_type {
constexpr int32_t kNormal = 1;
constexpr int32_t kUnknown = 2;
constexpr int32_t kControl = 3;       // <s>, </s>, [INST]: never produced from text, decoded as ""
constexpr int32_t kUserDefined = 4;   // matched inside raw text as one token ([REFERENCE_DOC_3])
constexpr int32_t kUnused = 5;        // may appear while merging, re-split in the output
constexpr int32_t kByte = 6;          // <0x00>..<0xFF>, the byte fallback
inline bool is_valid(int32_t type) { return type >= kNormal && type <= kByte; }
}  // namespace token_type

struct Vocabulary {
  std::vector<std::string> pieces;  // "▁the", "<0x0A>", "<s>" ... (U+2581 stands for a space)
  std::vector<float> scores;        // BPE merge priority: the merge giving the higher score goes first
  std::vector<int32_t> types;       // token_type::k*

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;

  bool add_bos = true;    // what a caller adds by default (SentencePiece itself never adds it)
  bool add_eos = false;

  // Normalizer flags (SentencePiece NormalizerSpec). Mistral: dummy prefix on, no collapsing.
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;

  // Trainer flags that matter (or are reported) at encode time.
  bool byte_fallback = true;
  bool split_digits = false;  // informational: with BPE it only shaped training; the pieces encode it

  std::string normalizer_name = "identity";
  std::string unk_surface = " \xE2\x81\x87 ";  // what an <unk> decodes to (" ⁇ ")
  std::string source;                          // file the vocabulary was read from, for messages

  size_t size() const { return pieces.size(); }
};

// Checks the invariants the tokenizer relies on: parallel arrays of equal length, valid types,
// special ids inside the vocabulary (or -1), non-empty pieces of sane length, no NaN scores.
inline Status validate_vocabulary(const Vocabulary& vocab) {
  const char* name = vocab.source.empty() ? "vocabulary" : vocab.source.c_str();
  const size_t n = vocab.pieces.size();
  if (n == 0) return make_error(ErrorCode::kFormat, "%s: the vocabulary is empty", name);
  if (n > static_cast<size_t>(INT32_MAX / 2)) return make_error(ErrorCode::kFormat, "%s: vocabulary too large", name);
  if (vocab.scores.size() != n || vocab.types.size() != n) {
    return make_error(ErrorCode::kFormat, "%s: %zu pieces but %zu scores and %zu types", name, n, vocab.scores.size(),
                      vocab.types.size());
  }
  constexpr size_t kMaxPieceBytes = size_t{1} << 16;  // real pieces are a few dozen bytes at most
  size_t total_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    if (vocab.pieces[i].empty()) return make_error(ErrorCode::kFormat, "%s: piece %zu is empty", name, i);
    if (vocab.pieces[i].size() > kMaxPieceBytes) {
      return make_error(ErrorCode::kFormat, "%s: piece %zu is %zu bytes long", name, i, vocab.pieces[i].size());
    }
    total_bytes += vocab.pieces[i].size();
    if (total_bytes > (size_t{1} << 30)) return make_error(ErrorCode::kFormat, "%s: pieces exceed 1 GiB", name);
    if (!token_type::is_valid(vocab.types[i])) {
      return make_error(ErrorCode::kFormat, "%s: piece %zu has unknown type %d", name, i, vocab.types[i]);
    }
    if (std::isnan(vocab.scores[i])) return make_error(ErrorCode::kFormat, "%s: piece %zu has a NaN score", name, i);
  }
  const std::pair<const char*, int32_t> specials[] = {
      {"bos", vocab.bos_id}, {"eos", vocab.eos_id}, {"unk", vocab.unk_id}, {"pad", vocab.pad_id}};
  for (const auto& special : specials) {
    if (special.second < -1 || special.second >= static_cast<int64_t>(n)) {
      return make_error(ErrorCode::kFormat, "%s: %s id %d is outside the vocabulary of %zu", name, special.first,
                        special.second, n);
    }
  }
  return {};
}

namespace vocabulary_detail {

inline Expected<int32_t> optional_token_id(const GgufFile& gguf, const char* key, int32_t absent, size_t n) {
  if (gguf.find(key) == nullptr) return absent;
  Expected<uint64_t> value = gguf.get_uint(key);
  if (!value) return value.error();
  if (*value >= n) {
    return make_error(ErrorCode::kFormat, "%s: %s = %llu is outside the vocabulary of %zu", gguf.name().c_str(), key,
                      static_cast<unsigned long long>(*value), n);
  }
  return static_cast<int32_t>(*value);
}

inline Expected<bool> optional_bool(const GgufFile& gguf, const char* key, bool absent) {
  if (gguf.find(key) == nullptr) return absent;
  return gguf.get_bool(key);
}

}  // namespace vocabulary_detail

// Reads the vocabulary llama.cpp stores in GGUF metadata. Only tokenizer.ggml.model == "llama"
// (SentencePiece BPE, what Mistral and Mixtral use) is accepted.
inline Expected<Vocabulary> vocabulary_from_gguf(const GgufFile& gguf) {
  const char* name = gguf.name().c_str();
  Expected<std::string> model = gguf.get_string("tokenizer.ggml.model");
  if (!model) return model.error();
  if (*model != "llama") {
    return make_error(ErrorCode::kUnsupported,
                      "%s: tokenizer.ggml.model is '%s'; bora reads SentencePiece ('llama') vocabularies only", name,
                      model->c_str());
  }
  Vocabulary vocab;
  vocab.source = gguf.name();
  Expected<std::vector<std::string>> tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return tokens.error();
  vocab.pieces = std::move(*tokens);
  const size_t n = vocab.pieces.size();

  if (gguf.find("tokenizer.ggml.scores") != nullptr) {
    Expected<std::vector<float>> scores = gguf.get_f32_array("tokenizer.ggml.scores");
    if (!scores) return scores.error();
    vocab.scores = std::move(*scores);
  } else {
    vocab.scores.assign(n, 0.0f);
  }
  if (gguf.find("tokenizer.ggml.token_type") != nullptr) {
    Expected<std::vector<int32_t>> types = gguf.get_i32_array("tokenizer.ggml.token_type");
    if (!types) return types.error();
    vocab.types = std::move(*types);
    for (int32_t& type : vocab.types) {
      if (type == 0) type = token_type::kNormal;  // llama.cpp's "undefined" type, written by old converters
    }
  } else {
    vocab.types.assign(n, token_type::kNormal);
  }
  if (vocab.scores.size() != n || vocab.types.size() != n) {
    return make_error(ErrorCode::kFormat, "%s: %zu tokens but %zu scores and %zu token types", name, n,
                      vocab.scores.size(), vocab.types.size());
  }

  Expected<int32_t> bos = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.bos_token_id", -1, n);
  if (!bos) return bos.error();
  Expected<int32_t> eos = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.eos_token_id", -1, n);
  if (!eos) return eos.error();
  Expected<int32_t> unk = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.unknown_token_id", -1, n);
  if (!unk) return unk.error();
  Expected<int32_t> pad = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.padding_token_id", -1, n);
  if (!pad) return pad.error();
  vocab.bos_id = *bos;
  vocab.eos_id = *eos;
  vocab.unk_id = *unk;
  vocab.pad_id = *pad;
  if (vocab.unk_id < 0) {  // older converters omit the key; SentencePiece files always type <unk>
    for (size_t i = 0; i < n; ++i) {
      if (vocab.types[i] == token_type::kUnknown) {
        vocab.unk_id = static_cast<int32_t>(i);
        break;
      }
    }
  }

  Expected<bool> add_bos = vocabulary_detail::optional_bool(gguf, "tokenizer.ggml.add_bos_token", true);
  if (!add_bos) return add_bos.error();
  Expected<bool> add_eos = vocabulary_detail::optional_bool(gguf, "tokenizer.ggml.add_eos_token", false);
  if (!add_eos) return add_eos.error();
  Expected<bool> add_space = vocabulary_detail::optional_bool(gguf, "tokenizer.ggml.add_space_prefix", true);
  if (!add_space) return add_space.error();
  vocab.add_bos = *add_bos;
  vocab.add_eos = *add_eos;
  vocab.add_dummy_prefix = *add_space;
  vocab.remove_extra_whitespaces = false;
  vocab.escape_whitespaces = true;

  vocab.byte_fallback = false;  // GGUF has no flag: byte pieces present means fallback is on
  for (size_t i = 0; i < n; ++i) {
    if (vocab.types[i] == token_type::kByte) {
      vocab.byte_fallback = true;
      break;
    }
  }
  BORA_RETURN_IF_ERROR(validate_vocabulary(vocab));
  return vocab;
}

}  // namespace bora

#endif  // BORA_IO_VOCABULARY_HPP
