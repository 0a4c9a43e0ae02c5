// Why this file exists: the tokenizer must produce exactly the ids Mistral's SentencePiece files give
// with the real SentencePiece library (tokenizer_goldens.json, made with sentencepiece 0.1.97), for
// the v1 and v3 tokenizer.model files and for the v1 vocabulary stored in a GGUF file; and decoding,
// in one go or streamed token by token, must give back SentencePiece's text.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "bora/io/gguf.hpp"
#include "bora/io/sentencepiece_model.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/text/utf8.hpp"
#include "bora/io/vocabulary.hpp"
#include "../support/golden.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

const std::string kDemoGguf = std::string(BORA_TEST_DATA_DIR) + "/demo-mistral/demo-mistral-Q4_0.gguf";

struct GoldenEncoding {
  std::string name;
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int32_t> ids_with_bos;
  std::vector<std::string> pieces;
  std::string decoded;
};

struct GoldenTokenizer {
  int64_t vocab_size = 0, bos_id = 0, eos_id = 0, unk_id = 0, pad_id = 0;
  int64_t control_count = 0, byte_first_id = 0, byte_last_id = 0;
  std::vector<std::pair<int32_t, std::string>> first_controls;
  std::vector<std::pair<int32_t, float>> first_normal_scores;
  std::vector<std::pair<int32_t, std::string>> first_normal_pieces;
};

struct Goldens {
  bool loaded = false;
  std::string error;
  GoldenTokenizer v1, v3;
  std::vector<GoldenEncoding> v1_encodings, v3_encodings;
};

std::vector<int32_t> int_array(simdjson::simdjson_result<simdjson::dom::element> element) {
  std::vector<int32_t> out;
  simdjson::dom::array array;
  if (element.get_array().get(array) != simdjson::SUCCESS) return out;
  for (simdjson::dom::element value : array) {
    int64_t number = 0;
    if (value.get_int64().get(number) == simdjson::SUCCESS) out.push_back(static_cast<int32_t>(number));
  }
  return out;
}

bool read_tokenizer_info(simdjson::simdjson_result<simdjson::dom::element> info, GoldenTokenizer* out) {
  if (info["vocab_size"].get_int64().get(out->vocab_size) || info["bos_id"].get_int64().get(out->bos_id) ||
      info["eos_id"].get_int64().get(out->eos_id) || info["unk_id"].get_int64().get(out->unk_id) ||
      info["pad_id"].get_int64().get(out->pad_id) ||
      info["control_tokens_count"].get_int64().get(out->control_count) ||
      info["byte_tokens"]["first_id"].get_int64().get(out->byte_first_id) ||
      info["byte_tokens"]["last_id"].get_int64().get(out->byte_last_id)) {
    return false;
  }
  simdjson::dom::array controls;
  if (info["control_tokens_first_20"].get_array().get(controls)) return false;
  for (simdjson::dom::element pair : controls) {
    int64_t id = 0;
    std::string_view piece;
    if (pair.at(0).get_int64().get(id) || pair.at(1).get_string().get(piece)) return false;
    out->first_controls.emplace_back(static_cast<int32_t>(id), std::string(piece));
  }
  simdjson::dom::array normals;
  if (info["first_normal_pieces"].get_array().get(normals)) return false;
  for (simdjson::dom::element triple : normals) {
    int64_t id = 0;
    std::string_view piece;
    double score = 0.0;
    if (triple.at(0).get_int64().get(id) || triple.at(1).get_string().get(piece) || triple.at(2).get_double().get(score)) {
      return false;
    }
    out->first_normal_pieces.emplace_back(static_cast<int32_t>(id), std::string(piece));
    out->first_normal_scores.emplace_back(static_cast<int32_t>(id), static_cast<float>(score));
  }
  return true;
}

const Goldens& goldens() {
  static const Goldens result = [] {
    Goldens g;
    static simdjson::padded_string json;  // the DOM below views into it
    if (simdjson::padded_string::load(bora_test::tokenizer_path("tokenizer_goldens.json")).get(json) != simdjson::SUCCESS) {
      g.error = "cannot read tokenizer_goldens.json";
      return g;
    }
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(json).get(root) != simdjson::SUCCESS) {
      g.error = "tokenizer_goldens.json does not parse";
      return g;
    }
    if (!read_tokenizer_info(root["tokenizers"]["v1"], &g.v1) || !read_tokenizer_info(root["tokenizers"]["v3"], &g.v3)) {
      g.error = "tokenizers section incomplete";
      return g;
    }
    simdjson::dom::array corpus;
    if (root["corpus"].get_array().get(corpus) != simdjson::SUCCESS) {
      g.error = "no corpus";
      return g;
    }
    for (simdjson::dom::element item : corpus) {
      std::string_view name;
      std::string_view text;
      if (item["name"].get_string().get(name) || item["text"].get_string().get(text)) {
        g.error = "corpus entry without name or text";
        return g;
      }
      for (int version = 1; version <= 3; version += 2) {
        simdjson::dom::element encoding;
        if (root["encodings"][version == 1 ? "v1" : "v3"][name].get(encoding) != simdjson::SUCCESS) {
          g.error = "missing encoding for " + std::string(name);
          return g;
        }
        GoldenEncoding e;
        e.name = std::string(name);
        e.text = std::string(text);
        e.ids = int_array(encoding["ids"]);
        e.ids_with_bos = int_array(encoding["ids_with_bos"]);
        std::string_view decoded;
        if (encoding["decoded"].get_string().get(decoded)) {
          g.error = "no decoded text for " + e.name;
          return g;
        }
        e.decoded = std::string(decoded);
        simdjson::dom::array pieces;
        if (encoding["pieces"].get_array().get(pieces) == simdjson::SUCCESS) {
          for (simdjson::dom::element piece : pieces) {
            std::string_view p;
            if (piece.get_string().get(p) == simdjson::SUCCESS) e.pieces.emplace_back(p);
          }
        }
        (version == 1 ? g.v1_encodings : g.v3_encodings).push_back(std::move(e));
      }
    }
    g.loaded = true;
    return g;
  }();
  return result;
}

const bora::Tokenizer* load_once(const std::string& path) {
  // One tokenizer per file for the whole run (they are built from the file on first use).
  static std::vector<std::pair<std::string, bora::Tokenizer>> cache;
  for (auto& entry : cache) {
    if (entry.first == path) return &entry.second;
  }
  bora::Expected<bora::Tokenizer> tokenizer = bora::Tokenizer::from_file(path);
  if (!tokenizer) {
    MESSAGE(tokenizer.error().str());
    return nullptr;
  }
  cache.reserve(8);
  cache.emplace_back(path, std::move(*tokenizer));
  return &cache.back().second;
}

const bora::Tokenizer* tokenizer_v1() { return load_once(bora_test::tokenizer_path("tokenizer.model.v1")); }
const bora::Tokenizer* tokenizer_v3() { return load_once(bora_test::tokenizer_path("mistral_instruct_tokenizer_240323.model.v3")); }
const bora::Tokenizer* tokenizer_gguf_v1() { return load_once(kDemoGguf); }

std::string streamed_decode(const bora::Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool* chunks_valid) {
  bora::StreamingDecoder decoder(tokenizer);
  std::string text;
  *chunks_valid = true;
  for (int32_t id : ids) {
    const std::string chunk = decoder.push(id);
    if (!bora::utf8::is_valid(chunk.data(), chunk.size())) *chunks_valid = false;
    text += chunk;
  }
  const std::string rest = decoder.flush();
  if (!bora::utf8::is_valid(rest.data(), rest.size())) *chunks_valid = false;
  return text + rest;
}

// SHA-256 (FIPS 180-4), to compare a token stream with a hash stored in a golden file.
std::string sha256_hex(const std::vector<uint8_t>& message) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::vector<uint8_t> data = message;
  const uint64_t bit_length = static_cast<uint64_t>(message.size()) * 8;
  data.push_back(0x80);
  while (data.size() % 64 != 56) data.push_back(0);
  for (int i = 7; i >= 0; --i) data.push_back(static_cast<uint8_t>(bit_length >> (8 * i)));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t block = 0; block < data.size(); block += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (static_cast<uint32_t>(data[block + 4 * i]) << 24) | (static_cast<uint32_t>(data[block + 4 * i + 1]) << 16) |
             (static_cast<uint32_t>(data[block + 4 * i + 2]) << 8) | data[block + 4 * i + 3];
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  std::string hex;
  char buffer[9];
  for (uint32_t word : h) {
    std::snprintf(buffer, sizeof(buffer), "%08x", word);
    hex += buffer;
  }
  return hex;
}

void check_all_encodings(const bora::Tokenizer& tokenizer, const std::vector<GoldenEncoding>& encodings) {
  REQUIRE(encodings.size() >= 25);
  for (const GoldenEncoding& golden : encodings) {
    INFO("corpus text: ", golden.name);
    CHECK(tokenizer.encode(golden.text, false) == golden.ids);
    CHECK(tokenizer.encode(golden.text, true) == golden.ids_with_bos);
    CHECK(tokenizer.decode(golden.ids) == golden.decoded);
    CHECK(tokenizer.decode(golden.ids_with_bos) == golden.decoded);
    bool chunks_valid = false;
    CHECK(streamed_decode(tokenizer, golden.ids_with_bos, &chunks_valid) == golden.decoded);
    CHECK(chunks_valid);
    REQUIRE(golden.pieces.size() == golden.ids.size());
    for (size_t i = 0; i < golden.ids.size(); ++i) {
      CHECK(tokenizer.piece(golden.ids[i]) == golden.pieces[i]);
      CHECK(tokenizer.token_to_id(golden.pieces[i]) == golden.ids[i]);
      CHECK_FALSE(tokenizer.is_control(golden.ids[i]));  // control tokens never come out of text
    }
  }
}

void check_metadata(const bora::Tokenizer& tokenizer, const GoldenTokenizer& golden) {
  CHECK(static_cast<int64_t>(tokenizer.vocab_size()) == golden.vocab_size);
  CHECK(tokenizer.bos_id() == golden.bos_id);
  CHECK(tokenizer.eos_id() == golden.eos_id);
  CHECK(tokenizer.unk_id() == golden.unk_id);
  CHECK(tokenizer.pad_id() == golden.pad_id);
  int64_t controls = 0;
  for (size_t id = 0; id < tokenizer.vocab_size(); ++id) controls += tokenizer.is_control(static_cast<int32_t>(id));
  CHECK(controls == golden.control_count);
  for (const auto& control : golden.first_controls) {
    CHECK(tokenizer.piece(control.first) == control.second);
    CHECK(tokenizer.is_control(control.first));
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = static_cast<int32_t>(golden.byte_first_id + b);
    CHECK(tokenizer.byte_value(id) == b);
    CHECK(tokenizer.token_type(id) == bora::token_type::kByte);
  }
  CHECK(tokenizer.byte_value(static_cast<int32_t>(golden.byte_last_id)) == 255);
  for (size_t i = 0; i < golden.first_normal_pieces.size(); ++i) {
    const int32_t id = golden.first_normal_pieces[i].first;
    CHECK(tokenizer.piece(id) == golden.first_normal_pieces[i].second);
    CHECK(tokenizer.vocabulary().scores[static_cast<size_t>(id)] == golden.first_normal_scores[i].second);
  }
}

}  // namespace

TEST_CASE("tokenizer goldens: the JSON is there and complete") {
  const Goldens& g = goldens();
  INFO(g.error);
  REQUIRE(g.loaded);
  CHECK(g.v1_encodings.size() == g.v3_encodings.size());
  CHECK(g.v1.vocab_size == 32000);
  CHECK(g.v3.vocab_size == 32768);
}

TEST_CASE("tokenizer.model.v1: flags and special pieces as SentencePiece reports them") {
  bora::Expected<bora::Vocabulary> vocab = bora::load_sentencepiece_model(bora_test::tokenizer_path("tokenizer.model.v1"));
  REQUIRE_MESSAGE(vocab.has_value(), vocab.error().str());
  CHECK(vocab->add_dummy_prefix);
  CHECK_FALSE(vocab->remove_extra_whitespaces);
  CHECK(vocab->escape_whitespaces);
  CHECK(vocab->byte_fallback);
  CHECK(vocab->split_digits);
  CHECK(vocab->normalizer_name == "identity");
  const bora::Tokenizer* tokenizer = tokenizer_v1();
  REQUIRE(tokenizer != nullptr);
  REQUIRE(goldens().loaded);
  check_metadata(*tokenizer, goldens().v1);
}

TEST_CASE("tokenizer.model.v3: flags, control and user-defined pieces") {
  const bora::Tokenizer* tokenizer = tokenizer_v3();
  REQUIRE(tokenizer != nullptr);
  REQUIRE(goldens().loaded);
  check_metadata(*tokenizer, goldens().v3);
  CHECK(tokenizer->token_to_id("[INST]") == 3);
  CHECK(tokenizer->token_to_id("[/INST]") == 4);
  for (int n = 0; n < 20; ++n) {
    const int32_t id = tokenizer->token_to_id("[REFERENCE_DOC_" + std::to_string(n) + "]");
    CHECK(id == 770 - n);
    CHECK(tokenizer->token_type(id) == bora::token_type::kUserDefined);
  }
  CHECK(tokenizer->token_to_id("no such piece") == -1);
}

TEST_CASE("tokenizer.model.v1: every corpus text encodes, decodes and streams like SentencePiece") {
  const bora::Tokenizer* tokenizer = tokenizer_v1();
  REQUIRE(tokenizer != nullptr);
  REQUIRE(goldens().loaded);
  check_all_encodings(*tokenizer, goldens().v1_encodings);
}

TEST_CASE("tokenizer.model.v3: every corpus text encodes, decodes and streams like SentencePiece") {
  const bora::Tokenizer* tokenizer = tokenizer_v3();
  REQUIRE(tokenizer != nullptr);
  REQUIRE(goldens().loaded);
  check_all_encodings(*tokenizer, goldens().v3_encodings);
}

TEST_CASE("GGUF vocabulary (demo-mistral, real v1 vocabulary): same ids as tokenizer.model.v1") {
  bora::Expected<bora::GgufFile> gguf = bora::GgufFile::open(kDemoGguf);
  REQUIRE_MESSAGE(gguf.has_value(), gguf.error().str());
  bora::Expected<bora::Vocabulary> vocab = bora::vocabulary_from_gguf(*gguf);
  REQUIRE_MESSAGE(vocab.has_value(), vocab.error().str());
  CHECK(vocab->size() == 32000);
  CHECK(vocab->add_bos);
  CHECK_FALSE(vocab->add_eos);
  CHECK(vocab->byte_fallback);
  CHECK(vocab->bos_id == 1);
  CHECK(vocab->eos_id == 2);
  CHECK(vocab->unk_id == 0);

  // Same pieces, scores and types as the .model file.
  bora::Expected<bora::Vocabulary> model = bora::load_sentencepiece_model(bora_test::tokenizer_path("tokenizer.model.v1"));
  REQUIRE(model.has_value());
  CHECK(vocab->pieces == model->pieces);
  CHECK(vocab->scores == model->scores);
  CHECK(vocab->types == model->types);

  const bora::Tokenizer* tokenizer = tokenizer_gguf_v1();
  REQUIRE(tokenizer != nullptr);
  REQUIRE(goldens().loaded);
  check_metadata(*tokenizer, goldens().v1);
  check_all_encodings(*tokenizer, goldens().v1_encodings);
}

TEST_CASE("GGUF vocabulary: the demo model's held-out text tokenizes to its golden token stream") {
  // The demo's evaluation protocol (demo-mistral/README.md): the file without its final newline,
  // split on blank lines, each entry as [BOS] + encode(entry) + [EOS], little-endian int32 ids.
  const bora::Tokenizer* tokenizer = tokenizer_gguf_v1();
  REQUIRE(tokenizer != nullptr);
  simdjson::padded_string golden_json;
  REQUIRE(simdjson::padded_string::load(std::string(BORA_TEST_DATA_DIR) + "/demo-mistral/golden/golden.json")
              .get(golden_json) == simdjson::SUCCESS);
  simdjson::dom::parser parser;
  simdjson::dom::element golden;
  REQUIRE(parser.parse(golden_json).get(golden) == simdjson::SUCCESS);
  std::string_view expected_sha;
  int64_t expected_count = 0;
  REQUIRE(golden["heldout"]["tokens_sha256"].get_string().get(expected_sha) == simdjson::SUCCESS);
  REQUIRE(golden["heldout"]["n_tokens"].get_int64().get(expected_count) == simdjson::SUCCESS);
  const std::vector<int32_t> first_chunk = int_array(golden["heldout"]["first_chunk_ids"]);
  REQUIRE(first_chunk.size() == 128);

  simdjson::padded_string heldout;
  REQUIRE(simdjson::padded_string::load(std::string(BORA_TEST_DATA_DIR) + "/demo-mistral/heldout.txt").get(heldout) ==
          simdjson::SUCCESS);
  std::string text(heldout.data(), heldout.size());
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::vector<int32_t> stream;
  size_t start = 0;
  while (true) {
    const size_t end = text.find("\n\n", start);
    const std::string entry = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::vector<int32_t> ids = tokenizer->encode(entry, true);
    stream.insert(stream.end(), ids.begin(), ids.end());
    stream.push_back(tokenizer->eos_id());
    if (end == std::string::npos) break;
    start = end + 2;
  }
  CHECK(static_cast<int64_t>(stream.size()) == expected_count);
  CHECK(std::vector<int32_t>(stream.begin(), stream.begin() + 128) == first_chunk);
  std::vector<uint8_t> bytes;
  for (int32_t id : stream) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(static_cast<uint32_t>(id) >> (8 * i)));
  }
  CHECK(sha256_hex(bytes) == expected_sha);
  CHECK(sha256_hex({}) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");  // the hash itself
}

TEST_CASE("tokenizer: the long Chinese article is 7060 tokens and v3 ids are v1 ids + 768") {
  const bora::Tokenizer* v1 = tokenizer_v1();
  const bora::Tokenizer* v3 = tokenizer_v3();
  REQUIRE(v1 != nullptr);
  REQUIRE(v3 != nullptr);
  REQUIRE(goldens().loaded);
  for (const GoldenEncoding& golden : goldens().v1_encodings) {
    if (golden.name != "chinese_article_full") continue;
    const std::vector<int32_t> ids = v1->encode(golden.text, false);
    CHECK(ids.size() == 7060);
    std::vector<int32_t> shifted = ids;
    for (int32_t& id : shifted) id += id >= 3 ? 768 : 0;
    CHECK(v3->encode(golden.text, false) == shifted);
    // Encoding it twice in one text gives the same pieces twice plus the seam (no state leaks).
    const std::vector<int32_t> twice = v1->encode(golden.text + golden.text, false);
    CHECK(twice.size() >= 2 * ids.size() - 2);
    CHECK(std::vector<int32_t>(twice.begin(), twice.begin() + 100) == std::vector<int32_t>(ids.begin(), ids.begin() + 100));
  }
}

TEST_CASE("tokenizer: literal control strings are text, user-defined pieces are matched (v3)") {
  const bora::Tokenizer* v3 = tokenizer_v3();
  REQUIRE(v3 != nullptr);
  const std::vector<int32_t> ids = v3->encode("[INST] hi [/INST]</s><s>", true);
  REQUIRE(!ids.empty());
  CHECK(ids[0] == 1);
  for (size_t i = 1; i < ids.size(); ++i) CHECK_FALSE(v3->is_control(ids[i]));
  CHECK(v3->encode("see [REFERENCE_DOC_3] and [REFERENCE_DOC_12]x", false) ==
        std::vector<int32_t>{1800, 29473, 767, 1072, 29473, 758, 29512});
  // A piece glued to text on both sides is still matched whole, and a truncated one is not.
  const std::vector<int32_t> glued = v3->encode("a[REFERENCE_DOC_0]b", false);
  CHECK(std::count(glued.begin(), glued.end(), 770) == 1);
  const std::vector<int32_t> truncated = v3->encode("[REFERENCE_DOC_0", false);
  CHECK(std::count(truncated.begin(), truncated.end(), 770) == 0);
}

TEST_CASE("tokenizer: malformed UTF-8 is encoded as SentencePiece does (each bad byte is U+FFFD)") {
  const bora::Tokenizer* v1 = tokenizer_v1();
  REQUIRE(v1 != nullptr);
  const std::string replacement = "\xEF\xBF\xBD";
  struct Case {
    std::string bad;
    std::string as_replacements;
  };
  const Case cases[] = {
      {"a\xFF" "b", "a" + replacement + "b"},
      {"\x80\x80", replacement + replacement},
      {"x\xE2\x96", "x" + replacement + replacement},                   // truncated 3-byte character
      {"\xC0\xAF", replacement + replacement},                          // overlong '/'
      {"\xED\xA0\x80", replacement + replacement + replacement},        // surrogate
      {"\xF4\x90\x80\x80", replacement + replacement + replacement + replacement},  // above U+10FFFF
      {std::string("nul\0byte", 8), std::string("nul\0byte", 8)},
  };
  for (const Case& c : cases) {
    const std::vector<int32_t> ids = v1->encode(c.bad, false);
    CHECK(ids == v1->encode(c.as_replacements, false));
    CHECK(v1->decode(ids) == c.as_replacements);
  }
  // Every byte value alone, and random-ish junk, never crash and always round-trip to valid UTF-8.
  std::string junk;
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    const std::string decoded = v1->decode(v1->encode(one, false));
    CHECK(bora::utf8::is_valid(decoded.data(), decoded.size()));
    junk.push_back(static_cast<char>((b * 73 + 11) & 0xFF));
  }
  const std::string decoded = v1->decode(v1->encode(junk, true));
  CHECK(bora::utf8::is_valid(decoded.data(), decoded.size()));
}

TEST_CASE("tokenizer: decode rules (leading space, bytes, controls, out-of-range ids)") {
  const bora::Tokenizer* v1 = tokenizer_v1();
  REQUIRE(v1 != nullptr);
  const int32_t space = v1->token_to_id("\xE2\x96\x81");  // "▁"
  const int32_t hello = v1->token_to_id("\xE2\x96\x81Hello");
  REQUIRE(space >= 0);
  REQUIRE(hello >= 0);
  // Only the first piece's leading space is dropped; BOS/EOS in front do not change that.
  CHECK(v1->decode({hello, hello}) == "Hello Hello");
  CHECK(v1->decode({1, hello, 2}) == "Hello");
  CHECK(v1->decode({space, hello}) == " Hello");  // SentencePiece 0.1.97 drops one space only
  // Byte pieces join into characters; a lone continuation byte or a cut character is U+FFFD.
  const int32_t b_e2 = 3 + 0xE2, b_96 = 3 + 0x96, b_81 = 3 + 0x81;
  CHECK(v1->decode({b_e2, b_96, b_81}) == "\xE2\x96\x81");
  CHECK(v1->decode({b_e2, b_96}) == "\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(v1->decode({b_e2, b_96, hello}) == "\xEF\xBF\xBD\xEF\xBF\xBD Hello");  // text before: space kept
  CHECK(v1->decode({-1, 5, 1 << 30, hello}) == "\x02 Hello");  // <0x02>, then the space stays
  CHECK(v1->piece(-1).empty());
  CHECK(v1->piece(32000).empty());
  CHECK(v1->piece_text(hello) == " Hello");
  CHECK(v1->piece_text(1).empty());
  CHECK(v1->piece_text(3 + 'A') == "A");
  CHECK(v1->piece_text(0) == " \xE2\x81\x87 ");  // <unk>
  CHECK(v1->decode({0}) == " \xE2\x81\x87 ");
}

TEST_CASE("StreamingDecoder: never half a character, flush emits what is left") {
  const bora::Tokenizer* v1 = tokenizer_v1();
  REQUIRE(v1 != nullptr);
  // "🦙" (F0 9F A6 99) through byte fallback: nothing until the fourth byte.
  const std::vector<int32_t> llama = v1->encode("\xF0\x9F\xA6\x99", false);
  REQUIRE(llama.size() == 5);  // "▁" + 4 byte pieces
  bora::StreamingDecoder decoder(*v1);
  CHECK(decoder.push(llama[0]).empty());  // the dummy-prefix space is dropped
  CHECK(decoder.push(llama[1]).empty());
  CHECK(decoder.push(llama[2]).empty());
  CHECK(decoder.push(llama[3]).empty());
  CHECK(decoder.push(llama[4]) == "\xF0\x9F\xA6\x99");
  CHECK(decoder.flush().empty());

  // A sequence cut in the middle of a character: flush gives U+FFFD per byte, as decode() does.
  decoder.reset();
  CHECK(decoder.push(3 + 0xF0).empty());
  CHECK(decoder.push(3 + 0x9F).empty());
  CHECK(decoder.flush() == "\xEF\xBF\xBD\xEF\xBF\xBD");

  // A byte that can never start a character comes out at once.
  decoder.reset();
  CHECK(decoder.push(3 + 0xFF) == "\xEF\xBF\xBD");
  // An impossible second byte ends the wait right away (E0 80 is overlong).
  decoder.reset();
  CHECK(decoder.push(3 + 0xE0).empty());
  CHECK(decoder.push(3 + 0x80) == "\xEF\xBF\xBD\xEF\xBF\xBD");

  // Out-of-range ids are ignored; reset restores the leading-space rule.
  decoder.reset();
  const int32_t hello = v1->token_to_id("\xE2\x96\x81Hello");
  CHECK(decoder.push(-5).empty());
  CHECK(decoder.push(hello) == "Hello");
  CHECK(decoder.push(hello) == " Hello");
  decoder.reset();
  CHECK(decoder.push(hello) == "Hello");

  // Continuing a text already shown: the first piece keeps its space.
  bora::StreamingDecoder continuation(*v1, false);
  CHECK(continuation.push(hello) == " Hello");
  continuation.reset(false);
  CHECK(continuation.push(1).empty());
  CHECK(continuation.push(hello) == " Hello");
}

TEST_CASE("tokenizer: empty and whitespace-only texts") {
  const bora::Tokenizer* v1 = tokenizer_v1();
  REQUIRE(v1 != nullptr);
  CHECK(v1->encode("", false).empty());
  CHECK(v1->encode("", true) == std::vector<int32_t>{1});
  CHECK(v1->decode(std::vector<int32_t>{}).empty());
  const std::vector<int32_t> spaces = v1->encode("   ", false);
  CHECK(v1->decode(spaces) == "   ");
}
