// Why this file exists: the tokenizer sees arbitrary user text and, through decoding, arbitrary ids;
// with Mistral's real vocabularies (v1 and v3) this checks on every input that encoding yields ids in
// the vocabulary, that decoding gives the text back as SentencePiece normalizes it (malformed UTF-8
// becomes U+FFFD per bad byte, "▁" reads as a space), that decoding any ids gives valid UTF-8, and that
// the streaming decoder emits valid UTF-8 pieces adding up to decode().
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bora/text/tokenizer.hpp"
#include "bora/text/utf8.hpp"
#include "fuzz_support.hpp"

namespace {

const bora::Tokenizer& load_tokenizer(const char* file) {
  auto tokenizer = bora::Tokenizer::from_file(bora_fuzz::data_path(file));
  BORA_FUZZ_REQUIRE_SETUP(tokenizer.has_value());
  return *new bora::Tokenizer(std::move(*tokenizer));  // lives as long as the process
}

// What decode(encode(text)) must give: the text as SentencePiece's normalizer sees it.
std::string normalized_round_trip(const uint8_t* data, size_t size) {
  std::string valid;
  bora::utf8::append_bytes_as_text(valid, data, size);
  std::string out;
  for (size_t i = 0; i < valid.size(); ++i) {
    if (valid.compare(i, 3, "\xE2\x96\x81") == 0) {
      out.push_back(' ');
      i += 2;
    } else {
      out.push_back(valid[i]);
    }
  }
  return out;
}

std::string streamed(const bora::Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  bora::StreamingDecoder decoder(tokenizer);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = decoder.push(id);
    BORA_FUZZ_CHECK(bora::utf8::is_valid(piece.data(), piece.size()));
    out += piece;
  }
  const std::string rest = decoder.flush();
  BORA_FUZZ_CHECK(bora::utf8::is_valid(rest.data(), rest.size()));
  return out + rest;
}

void check_text(const bora::Tokenizer& tokenizer, const uint8_t* data, size_t size, const std::string& expected) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tokenizer.encode(text, false);
  for (int32_t id : ids) {
    BORA_FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < tokenizer.vocab_size());
    BORA_FUZZ_CHECK(!tokenizer.is_control(id));  // control pieces never come from text
  }
  const std::string decoded = tokenizer.decode(ids);
  BORA_FUZZ_CHECK(decoded == expected);
  BORA_FUZZ_CHECK(streamed(tokenizer, ids) == decoded);
  std::vector<int32_t> with_bos = tokenizer.encode(text, true);
  BORA_FUZZ_CHECK(!with_bos.empty() && with_bos.front() == tokenizer.bos_id());
  with_bos.erase(with_bos.begin());
  BORA_FUZZ_CHECK(with_bos == ids);
}

void check_ids(const bora::Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  const std::string decoded = tokenizer.decode(ids);
  BORA_FUZZ_CHECK(bora::utf8::is_valid(decoded.data(), decoded.size()));
  BORA_FUZZ_CHECK(streamed(tokenizer, ids) == decoded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bora::Tokenizer& v1 = load_tokenizer("tokenizer/tokenizer.model.v1");
  static const bora::Tokenizer& v3 = load_tokenizer("tokenizer/mistral_instruct_tokenizer_240323.model.v3");
  const std::string expected = normalized_round_trip(data, size);
  check_text(v1, data, size, expected);
  check_text(v3, data, size, expected);

  // The same bytes as ids: raw int32 values (mostly outside the vocabulary, which decode skips) and
  // folded into the vocabulary so every kind of piece (bytes, controls, <unk>) follows every other.
  std::vector<int32_t> raw(size / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
  check_ids(v1, raw);
  for (const bora::Tokenizer* tokenizer : {&v1, &v3}) {
    std::vector<int32_t> folded;
    folded.reserve(size / 2);
    for (size_t i = 0; i + 1 < size; i += 2) {
      const uint32_t value = static_cast<uint32_t>(data[i]) | (static_cast<uint32_t>(data[i + 1]) << 8);
      folded.push_back(static_cast<int32_t>(value % tokenizer->vocab_size()));
    }
    check_ids(*tokenizer, folded);
  }
  return 0;
}
