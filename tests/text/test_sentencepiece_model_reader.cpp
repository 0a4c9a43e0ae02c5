// Why this file exists: the tokenizer.model reader parses untrusted protobuf bytes and the GGUF
// vocabulary reader trusts nothing in the metadata either; these tests feed both truncated, inflated
// and malformed inputs (errors, never crashes) and check, on small hand-built vocabularies, the
// corners of SentencePiece's BPE that Mistral's files never reach (ties, unused pieces, no byte
// fallback, whitespace collapsing). Expected ids there were produced by SentencePiece 0.1.97 from the
// very same serialized models.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../support/gguf_writer.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/sentencepiece_model.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/io/vocabulary.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

const std::string kModelV1 = std::string(BORA_TEST_DATA_DIR) + "/tokenizer/tokenizer.model.v1";
const std::string kModelV3 = std::string(BORA_TEST_DATA_DIR) + "/tokenizer/mistral_instruct_tokenizer_240323.model.v3";
const char* const kSpace = "\xE2\x96\x81";  // "▁"

// Protobuf wire format, written by hand so tests can also write what no protobuf library would.
class ProtoWriter {
 public:
  void varint(uint64_t value) {
    while (value >= 0x80) {
      bytes.push_back(static_cast<uint8_t>(value | 0x80));
      value >>= 7;
    }
    bytes.push_back(static_cast<uint8_t>(value));
  }
  void key(uint32_t field, uint32_t wire_type) { varint((static_cast<uint64_t>(field) << 3) | wire_type); }
  void varint_field(uint32_t field, uint64_t value) {
    key(field, 0);
    varint(value);
  }
  void float_field(uint32_t field, float value) {
    key(field, 5);
    uint32_t bits = 0;
    std::memcpy(&bits, &value, 4);
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
  void bytes_field(uint32_t field, const std::string& value) {
    key(field, 2);
    varint(value.size());
    bytes.insert(bytes.end(), value.begin(), value.end());
  }
  void message_field(uint32_t field, const ProtoWriter& message) {
    bytes_field(field, std::string(message.bytes.begin(), message.bytes.end()));
  }
  std::vector<uint8_t> bytes;
};

struct Piece {
  std::string piece;
  float score;
  int type;
};

struct Flags {
  int model_type = 2;
  bool byte_fallback = true;
  bool split_digits = true;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool write_normalizer = true;
  std::string normalizer_name = "identity";
};

std::vector<uint8_t> build_model(const std::vector<Piece>& pieces, const Flags& flags) {
  ProtoWriter model;
  for (const Piece& p : pieces) {
    ProtoWriter piece;
    piece.bytes_field(1, p.piece);
    piece.float_field(2, p.score);
    if (p.type != 1) piece.varint_field(3, static_cast<uint64_t>(p.type));
    model.message_field(1, piece);
  }
  ProtoWriter trainer;
  trainer.varint_field(3, static_cast<uint64_t>(flags.model_type));
  trainer.varint_field(4, pieces.size());
  trainer.varint_field(25, flags.split_digits);
  trainer.varint_field(35, flags.byte_fallback);
  trainer.varint_field(40, 0);
  trainer.varint_field(41, 1);
  trainer.varint_field(42, 2);
  trainer.varint_field(43, static_cast<uint64_t>(int64_t{-1}));  // pad_id = -1: a 10-byte varint
  model.message_field(2, trainer);
  if (flags.write_normalizer) {
    ProtoWriter normalizer;
    normalizer.bytes_field(1, flags.normalizer_name);
    normalizer.varint_field(3, flags.add_dummy_prefix);
    normalizer.varint_field(4, flags.remove_extra_whitespaces);
    model.message_field(3, normalizer);
  }
  return model.bytes;
}

// ids: 0 <unk>, 1 <s>, 2 </s>, then (with bytes) 3..258 <0x00>..<0xFF>, then `extra` from 259.
std::vector<Piece> small_vocab(const std::vector<Piece>& extra, bool with_bytes = true) {
  std::vector<Piece> pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}};
  if (with_bytes) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      pieces.push_back({name, 0, 6});
    }
  }
  pieces.insert(pieces.end(), extra.begin(), extra.end());
  return pieces;
}

bora::Expected<bora::Vocabulary> parse(const std::vector<uint8_t>& bytes) {
  // An exact-size heap copy, so any read past the end is an overflow ASan reports.
  std::vector<uint8_t> copy(bytes);
  return bora::parse_sentencepiece_model(copy.empty() ? nullptr : copy.data(), copy.size(), "test.model");
}

bora::Tokenizer make_tokenizer(const std::vector<Piece>& pieces, const Flags& flags) {
  bora::Expected<bora::Vocabulary> vocab = parse(build_model(pieces, flags));
  REQUIRE_MESSAGE(vocab.has_value(), vocab.error().str());
  bora::Expected<bora::Tokenizer> tokenizer = bora::Tokenizer::create(std::move(*vocab));
  REQUIRE_MESSAGE(tokenizer.has_value(), tokenizer.error().str());
  return std::move(*tokenizer);
}

std::vector<uint8_t> read_mapped_bytes(const std::string& path) {
  bora::Expected<bora::MappedFile> file = bora::MappedFile::open(path);
  REQUIRE_MESSAGE(file.has_value(), file.error().str());
  return std::vector<uint8_t>(file->data(), file->data() + file->size());
}

using Ids = std::vector<int32_t>;

}  // namespace

TEST_CASE("sentencepiece reader: the real files") {
  for (const std::string& path : {kModelV1, kModelV3}) {
    bora::Expected<bora::Vocabulary> vocab = bora::load_sentencepiece_model(path);
    REQUIRE_MESSAGE(vocab.has_value(), vocab.error().str());
    CHECK(vocab->size() == (path == kModelV1 ? 32000u : 32768u));
    CHECK(vocab->bos_id == 1);
    CHECK(vocab->eos_id == 2);
    CHECK(vocab->unk_id == 0);
    CHECK(vocab->pad_id == -1);
    CHECK(vocab->add_dummy_prefix);
    CHECK_FALSE(vocab->remove_extra_whitespaces);
    CHECK(vocab->byte_fallback);
    CHECK(vocab->split_digits);
    CHECK(vocab->pieces[0] == "<unk>");
    CHECK(vocab->types[0] == bora::token_type::kUnknown);
    CHECK(vocab->types[1] == bora::token_type::kControl);
  }
  bora::Expected<bora::Vocabulary> v1 = bora::load_sentencepiece_model(kModelV1);
  REQUIRE(v1.has_value());
  CHECK(v1->pieces[259] == std::string(kSpace) + kSpace);
  CHECK(v1->scores[259] == -1e9f);
  CHECK(v1->pieces[261] == std::string(kSpace) + "t");
  CHECK(v1->scores[261] == -2.0f);
  CHECK(v1->types[3] == bora::token_type::kByte);
  CHECK(v1->pieces[3] == "<0x00>");
}

TEST_CASE("sentencepiece reader: flags and proto2 defaults") {
  const std::vector<Piece> pieces = small_vocab({{kSpace, -1, 1}, {"a", -2, 1}});
  Flags flags;
  flags.add_dummy_prefix = false;
  flags.remove_extra_whitespaces = true;
  flags.split_digits = false;
  bora::Expected<bora::Vocabulary> vocab = parse(build_model(pieces, flags));
  REQUIRE_MESSAGE(vocab.has_value(), vocab.error().str());
  CHECK_FALSE(vocab->add_dummy_prefix);
  CHECK(vocab->remove_extra_whitespaces);
  CHECK_FALSE(vocab->split_digits);
  CHECK(vocab->byte_fallback);

  // No normalizer_spec at all: SentencePiece's defaults (dummy prefix on, collapsing on).
  flags.write_normalizer = false;
  vocab = parse(build_model(pieces, flags));
  REQUIRE(vocab.has_value());
  CHECK(vocab->add_dummy_prefix);
  CHECK(vocab->remove_extra_whitespaces);
  CHECK(vocab->escape_whitespaces);

  // Unigram (also the default model_type) is refused, not silently mis-tokenized.
  flags.model_type = 1;
  vocab = parse(build_model(pieces, flags));
  REQUIRE_FALSE(vocab.has_value());
  CHECK(vocab.error().code() == bora::ErrorCode::kUnsupported);

  // A precompiled normalization rule (nmt_nfkc) is refused too.
  flags = Flags();
  std::vector<uint8_t> bytes = build_model(pieces, flags);
  ProtoWriter normalizer;
  normalizer.bytes_field(1, "nmt_nfkc");
  normalizer.bytes_field(2, std::string("\x01\x02\x03\x04", 4));
  ProtoWriter extra;
  extra.message_field(3, normalizer);
  bytes.insert(bytes.end(), extra.bytes.begin(), extra.bytes.end());
  vocab = parse(bytes);
  REQUIRE_FALSE(vocab.has_value());
  CHECK(vocab.error().code() == bora::ErrorCode::kUnsupported);

  // Byte pieces without byte_fallback, or no <unk>, are format errors (as SentencePiece says).
  flags.byte_fallback = false;
  CHECK_FALSE(parse(build_model(pieces, flags)).has_value());
  std::vector<Piece> no_unk = pieces;
  no_unk[0].type = 1;
  CHECK_FALSE(parse(build_model(no_unk, Flags())).has_value());
}

TEST_CASE("sentencepiece reader: hostile bytes give errors") {
  CHECK_FALSE(parse({}).has_value());
  CHECK_FALSE(bora::parse_sentencepiece_model(nullptr, 0, "null").has_value());
  CHECK_FALSE(bora::load_sentencepiece_model(std::string(BORA_TEST_DATA_DIR) + "/no/such.model").has_value());

  const std::vector<Piece> pieces = small_vocab({{kSpace, -1, 1}, {"a", -2, 1}});
  const std::vector<uint8_t> good = build_model(pieces, Flags());
  REQUIRE(parse(good).has_value());

  auto expect_error = [](const std::vector<uint8_t>& bytes, const char* what) {
    INFO(what);
    bora::Expected<bora::Vocabulary> vocab = parse(bytes);
    REQUIRE_FALSE(vocab.has_value());
    CHECK(vocab.error().code() == bora::ErrorCode::kFormat);
  };
  {
    ProtoWriter w;  // a piece message claiming 2^62 bytes
    w.key(1, 2);
    w.varint(uint64_t{1} << 62);
    std::vector<uint8_t> bytes = good;
    bytes.insert(bytes.begin(), w.bytes.begin(), w.bytes.end());
    expect_error(bytes, "huge length");
  }
  {
    std::vector<uint8_t> bytes = {0x0A};  // tag of field 1, length varint never ends
    for (int i = 0; i < 12; ++i) bytes.push_back(0xFF);
    expect_error(bytes, "11-byte varint");
  }
  expect_error({0x0A, 0x80}, "varint cut off");
  expect_error({0x0B, 0x00}, "group wire type");
  expect_error({0x00, 0x00}, "field number 0");
  {
    ProtoWriter piece;  // score written as a varint
    piece.bytes_field(1, "x");
    piece.varint_field(2, 7);
    ProtoWriter model;
    model.message_field(1, piece);
    std::vector<uint8_t> bytes = model.bytes;
    bytes.insert(bytes.end(), good.begin(), good.end());
    expect_error(bytes, "wrong wire type for score");
  }
  {
    ProtoWriter piece;  // type 7 does not exist
    piece.bytes_field(1, "x");
    piece.varint_field(3, 7);
    ProtoWriter model;
    model.message_field(1, piece);
    std::vector<uint8_t> bytes = model.bytes;
    bytes.insert(bytes.end(), good.begin(), good.end());
    expect_error(bytes, "unknown piece type");
  }
  {
    ProtoWriter piece;  // an empty piece string
    piece.bytes_field(1, "");
    ProtoWriter model;
    model.message_field(1, piece);
    std::vector<uint8_t> bytes = good;
    bytes.insert(bytes.end(), model.bytes.begin(), model.bytes.end());
    expect_error(bytes, "empty piece");
  }
  {
    ProtoWriter piece;  // a NaN score
    piece.bytes_field(1, "zz");
    piece.float_field(2, std::nanf(""));
    ProtoWriter model;
    model.message_field(1, piece);
    std::vector<uint8_t> bytes = good;
    bytes.insert(bytes.end(), model.bytes.begin(), model.bytes.end());
    expect_error(bytes, "NaN score");
  }
  {
    std::vector<uint8_t> bytes = good;  // a fixed64 and a fixed32 unknown field are skipped fine,
    ProtoWriter unknown;                // but cut short they are errors
    unknown.key(99, 1);
    for (int i = 0; i < 8; ++i) unknown.bytes.push_back(0);
    unknown.key(98, 5);
    for (int i = 0; i < 4; ++i) unknown.bytes.push_back(0);
    bytes.insert(bytes.end(), unknown.bytes.begin(), unknown.bytes.end());
    CHECK(parse(bytes).has_value());
    bytes.pop_back();
    expect_error(bytes, "fixed32 cut off");
  }
}

TEST_CASE("sentencepiece reader: the real v1 file cut anywhere is an error or a clean prefix") {
  const std::vector<uint8_t> full = read_mapped_bytes(kModelV1);
  REQUIRE(full.size() > 1000);
  bora::Expected<bora::Vocabulary> whole = parse(full);
  REQUIRE(whole.has_value());

  // Top-level field boundaries: cutting exactly there leaves a valid (shorter) message.
  std::vector<size_t> boundaries;
  size_t offset = 0;
  auto read_varint = [&full, &offset]() {
    uint64_t value = 0;
    for (int shift = 0; offset < full.size(); shift += 7) {
      const uint8_t byte = full[offset++];
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) break;
    }
    return value;
  };
  while (offset < full.size()) {
    boundaries.push_back(offset);
    const uint64_t tag = read_varint();
    REQUIRE((tag & 7) == 2);  // every top-level field of a ModelProto is a message
    offset += static_cast<size_t>(read_varint());
  }
  REQUIRE(offset == full.size());

  std::vector<size_t> cuts;
  for (size_t cut = 0; cut < 64; ++cut) cuts.push_back(cut);
  for (size_t cut = 64; cut < full.size(); cut += 16381) cuts.push_back(cut);
  for (size_t back = 1; back < 400; back += 23) cuts.push_back(full.size() - back);
  size_t errors = 0;
  for (size_t cut : cuts) {
    std::vector<uint8_t> bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut));
    bora::Expected<bora::Vocabulary> vocab = parse(bytes);
    const bool at_boundary = std::find(boundaries.begin(), boundaries.end(), cut) != boundaries.end();
    if (!vocab.has_value()) {
      ++errors;
      continue;
    }
    INFO("cut at ", cut);
    CHECK(at_boundary);
    REQUIRE(vocab->size() <= whole->size());
    CHECK(std::equal(vocab->pieces.begin(), vocab->pieces.end(), whole->pieces.begin()));
  }
  CHECK(errors + 3 >= cuts.size());  // at most a few cuts land on a boundary after the trainer spec
}

TEST_CASE("sentencepiece reader: flipped bytes never crash the reader or the tokenizer") {
  const std::vector<uint8_t> full = read_mapped_bytes(kModelV3);
  uint64_t state = 0x12345678;
  auto next = [&state]() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  int parsed = 0;
  for (int trial = 0; trial < 24; ++trial) {
    std::vector<uint8_t> bytes = full;
    const int flips = 1 + static_cast<int>(next() % 8);
    for (int f = 0; f < flips; ++f) bytes[next() % bytes.size()] = static_cast<uint8_t>(next());
    bora::Expected<bora::Vocabulary> vocab = parse(bytes);
    if (!vocab.has_value()) continue;
    bora::Expected<bora::Tokenizer> tokenizer = bora::Tokenizer::create(std::move(*vocab));
    if (!tokenizer.has_value()) continue;
    ++parsed;
    const std::vector<int32_t> ids = tokenizer->encode("Hello [REFERENCE_DOC_1] 世界 \xF0\x9F\xA6\x99 12", true);
    CHECK(!ids.empty());
    (void)tokenizer->decode(ids);
  }
  CHECK(parsed > 0);  // most single flips land in piece strings and leave a loadable file
}

TEST_CASE("BPE corners, checked against SentencePiece 0.1.97 on the same models") {
  // ids from 259: ▁ a b ab ba c ▁a (ab and ba have the same score)
  const std::vector<Piece> ties = small_vocab({{kSpace, -1, 1}, {"a", -2, 1}, {"b", -3, 1}, {"ab", -5, 1},
                                               {"ba", -5, 1}, {"c", -4, 1}, {std::string(kSpace) + "a", -6, 1}});
  SUBCASE("equal scores: the leftmost pair merges first") {
    bora::Tokenizer t = make_tokenizer(ties, Flags());
    CHECK(t.encode("aba", false) == Ids{259, 262, 260});
    CHECK(t.encode("bab", false) == Ids{259, 263, 261});
    CHECK(t.encode("abab", false) == Ids{259, 262, 262});
    CHECK(t.encode("ababa", false) == Ids{259, 262, 262, 260});
    CHECK(t.encode("cab", false) == Ids{259, 264, 262});
    CHECK(t.encode("a b", false) == Ids{265, 259, 261});
  }
  SUBCASE("a higher score wins wherever it is") {
    const std::vector<Piece> ba_better =
        small_vocab({{kSpace, -1, 1}, {"a", -2, 1}, {"b", -3, 1}, {"ab", -5, 1}, {"ba", -4, 1}});
    bora::Tokenizer t = make_tokenizer(ba_better, Flags());
    CHECK(t.encode("aba", false) == Ids{259, 260, 263});
    CHECK(t.encode("abab", false) == Ids{259, 260, 263, 261});
  }
  SUBCASE("unused pieces take part in merges but are split again in the output") {
    // ▁ a b c ab abc(unused) bc abcd d
    const std::vector<Piece> unused = small_vocab({{kSpace, -1, 1}, {"a", -2, 1}, {"b", -3, 1}, {"c", -4, 1},
                                                   {"ab", -5, 1}, {"abc", -6, 5}, {"bc", -7, 1}, {"abcd", -8, 1},
                                                   {"d", -9, 1}});
    bora::Tokenizer t = make_tokenizer(unused, Flags());
    CHECK(t.encode("abc", false) == Ids{259, 263, 262});
    CHECK(t.encode("abcd", false) == Ids{259, 266});
    CHECK(t.encode("abcabc", false) == Ids{259, 263, 262, 263, 262});
    CHECK(t.encode("xabc", false) == Ids{259, 123, 263, 262});
  }
  SUBCASE("user-defined pieces: longest match, never merged") {
    // ▁ a b ab <x>(user) <x>y(user) x
    const std::vector<Piece> user = small_vocab(
        {{kSpace, -1, 1}, {"a", -2, 1}, {"b", -3, 1}, {"ab", -5, 1}, {"<x>", 0, 4}, {"<x>y", 0, 4}, {"x", -6, 1}});
    bora::Tokenizer t = make_tokenizer(user, Flags());
    CHECK(t.encode("a<x>b", false) == Ids{259, 260, 263, 261});
    CHECK(t.encode("<x>yab", false) == Ids{259, 264, 262});
    CHECK(t.encode("<x", false) == Ids{259, 63, 265});
    CHECK(t.encode("ab<x>y<x>", false) == Ids{259, 262, 264, 263});
    CHECK(t.decode(Ids{259, 262, 264, 263}) == "ab<x>y<x>");
  }
  SUBCASE("without byte fallback a run of unknown characters is one <unk>") {
    Flags flags;
    flags.byte_fallback = false;
    // no byte pieces: ▁=3 a=4 b=5 ab=6
    const std::vector<Piece> pieces = small_vocab({{kSpace, -1, 1}, {"a", -2, 1}, {"b", -3, 1}, {"ab", -5, 1}}, false);
    bora::Tokenizer t = make_tokenizer(pieces, flags);
    CHECK(t.encode("a\xC3\xA9\xC3\xA9" "b", false) == Ids{3, 4, 0, 5});
    CHECK(t.encode("zz ab z", false) == Ids{3, 0, 3, 6, 3, 0});
    CHECK(t.decode(Ids{3, 0, 3, 6, 3, 0}) == " \xE2\x81\x87  ab  \xE2\x81\x87 ");
  }
  SUBCASE("remove_extra_whitespaces collapses runs and trims") {
    Flags flags;
    flags.remove_extra_whitespaces = true;
    bora::Tokenizer t = make_tokenizer(ties, flags);
    CHECK(t.encode("  a   b  ", false) == Ids{265, 259, 261});
    CHECK(t.encode("   ", false).empty());
    CHECK(t.encode(" a b", false) == Ids{265, 259, 261});
    CHECK(t.decode(Ids{265, 259, 261}) == "a b");
  }
  SUBCASE("without the dummy prefix") {
    Flags flags;
    flags.add_dummy_prefix = false;
    bora::Tokenizer t = make_tokenizer(ties, flags);
    CHECK(t.encode("ab a", false) == Ids{262, 265});
    CHECK(t.encode(" ab", false) == Ids{259, 262});
    CHECK(t.decode(Ids{259, 262}) == " ab");
  }
  SUBCASE("split_digits shaped training only: an existing digit pair still merges") {
    // ▁ 1 2 12 ▁1
    const std::vector<Piece> digits =
        small_vocab({{kSpace, -1, 1}, {"1", -2, 1}, {"2", -3, 1}, {"12", -4, 1}, {std::string(kSpace) + "1", -5, 1}});
    bora::Tokenizer t = make_tokenizer(digits, Flags());
    CHECK(t.encode("12 1 21", false) == Ids{259, 262, 263, 259, 261, 260});
  }
}

TEST_CASE("vocabulary_from_gguf: inconsistent tokenizer metadata is an error") {
  auto build = [](void (*edit)(bora_test::GgufWriter&)) {
    bora_test::GgufWriter w;
    w.add_string("general.architecture", "llama");
    edit(w);
    return w.build();
  };
  auto vocab_of = [](const std::vector<uint8_t>& bytes) -> bora::Expected<bora::Vocabulary> {
    static std::vector<uint8_t> keep;
    keep = bytes;
    bora::Expected<bora::GgufFile> gguf = bora::GgufFile::parse(keep.data(), keep.size(), "vocab.gguf");
    if (!gguf) return gguf.error();
    return bora::vocabulary_from_gguf(*gguf);
  };
  static const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a"};

  // A good one first, so the failures below are about the edit alone.
  bora::Expected<bora::Vocabulary> good = vocab_of(build([](bora_test::GgufWriter& w) {
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_f32_array("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -3});
    w.add_i32_array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1});
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", 2);
    w.add_bool("tokenizer.ggml.add_space_prefix", false);
  }));
  REQUIRE_MESSAGE(good.has_value(), good.error().str());
  CHECK(good->unk_id == 0);  // found by type when the key is absent
  CHECK_FALSE(good->add_dummy_prefix);
  CHECK_FALSE(good->byte_fallback);  // no byte pieces
  bora::Expected<bora::Tokenizer> tokenizer = bora::Tokenizer::create(*good);
  REQUIRE(tokenizer.has_value());
  CHECK(tokenizer->encode("a a", true) == Ids{1, 4, 5});

  auto error_code = [](const bora::Expected<bora::Vocabulary>& vocab) {
    return vocab.has_value() ? -1 : static_cast<int>(vocab.error().code());
  };
  CHECK(error_code(vocab_of(build([](bora_test::GgufWriter& w) {
          w.add_string("tokenizer.ggml.model", "gpt2");
          w.add_string_array("tokenizer.ggml.tokens", tokens);
        }))) == static_cast<int>(bora::ErrorCode::kUnsupported));
  CHECK(error_code(vocab_of(build([](bora_test::GgufWriter& w) {
          w.add_string_array("tokenizer.ggml.tokens", tokens);
        }))) == static_cast<int>(bora::ErrorCode::kMissing));
  CHECK_FALSE(vocab_of(build([](bora_test::GgufWriter& w) {  // 5 scores for 6 tokens
                w.add_string("tokenizer.ggml.model", "llama");
                w.add_string_array("tokenizer.ggml.tokens", tokens);
                w.add_f32_array("tokenizer.ggml.scores", {0, 0, 0, -1, -2});
              })).has_value());
  CHECK_FALSE(vocab_of(build([](bora_test::GgufWriter& w) {  // token type 9
                w.add_string("tokenizer.ggml.model", "llama");
                w.add_string_array("tokenizer.ggml.tokens", tokens);
                w.add_i32_array("tokenizer.ggml.token_type", {2, 3, 3, 1, 9, 1});
              })).has_value());
  CHECK_FALSE(vocab_of(build([](bora_test::GgufWriter& w) {  // BOS beyond the vocabulary
                w.add_string("tokenizer.ggml.model", "llama");
                w.add_string_array("tokenizer.ggml.tokens", tokens);
                w.add_u32("tokenizer.ggml.bos_token_id", 6);
              })).has_value());
  CHECK_FALSE(vocab_of(build([](bora_test::GgufWriter& w) {  // tokens of the wrong type
                w.add_string("tokenizer.ggml.model", "llama");
                w.add_f32_array("tokenizer.ggml.tokens", {1, 2, 3});
              })).has_value());
  CHECK_FALSE(vocab_of(build([](bora_test::GgufWriter& w) {  // an empty token string
                w.add_string("tokenizer.ggml.model", "llama");
                w.add_string_array("tokenizer.ggml.tokens", {"<unk>", ""});
              })).has_value());
  CHECK_FALSE(vocab_of(build([](bora_test::GgufWriter& w) {  // no tokens at all
                w.add_string("tokenizer.ggml.model", "llama");
                w.add_string_array("tokenizer.ggml.tokens", {});
              })).has_value());
}
