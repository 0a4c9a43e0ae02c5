// Why this file exists: a tokenizer.model is an untrusted protobuf; this feeds the reader arbitrary bytes
// and, whenever they parse, builds a tokenizer from the vocabulary and encodes and decodes with it, so
// hostile pieces, scores, types and flags can crash neither the reader nor the tables built from it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bora/io/sentencepiece_model.hpp"
#include "bora/text/tokenizer.hpp"
#include "fuzz_support.hpp"

namespace {

const char* const kTexts[] = {
    "", " ", "Hello world", "  two  spaces ", "\xE2\x96\x81 under\xE2\x96\x81score",
    "caf\xC3\xA9 \xF0\x9F\xA6\x99 \xE4\xB8\xAD\xE6\x96\x87", "bad \xFF\xC0\xAF bytes", "<s>[INST] 1234 </s>",
};

void exercise(const bora::Tokenizer& tokenizer) {
  const int32_t vocab = static_cast<int32_t>(tokenizer.vocab_size());
  for (const char* text : kTexts) {
    const std::vector<int32_t> ids = tokenizer.encode(text, true);
    for (int32_t id : ids) BORA_FUZZ_CHECK(id >= 0 && id < vocab);
    const std::string decoded = tokenizer.decode(ids);
    bora::StreamingDecoder decoder(tokenizer);
    std::string streamed;
    for (int32_t id : ids) streamed += decoder.push(id);
    streamed += decoder.flush();
    BORA_FUZZ_CHECK(streamed == decoded);
  }
  std::vector<int32_t> every_id;
  for (int32_t id = -1; id <= vocab && id < 4096; ++id) every_id.push_back(id);
  (void)tokenizer.decode(every_id);
  for (int32_t id = -1; id <= vocab && id < 4096; ++id) {
    (void)tokenizer.piece_text(id);
    (void)tokenizer.token_to_id(tokenizer.piece(id));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<uint8_t[]> copy = bora_fuzz::exact_copy(data, size);
  auto vocab = bora::parse_sentencepiece_model(copy.get(), size, "fuzz.model");
  if (!vocab) {
    BORA_FUZZ_CHECK(!vocab.error().str().empty());
    return 0;
  }
  BORA_FUZZ_CHECK(bora::validate_vocabulary(*vocab).has_value());
  auto tokenizer = bora::Tokenizer::create(std::move(*vocab));
  BORA_FUZZ_CHECK(tokenizer.has_value());  // a vocabulary the reader accepted must build
  exercise(*tokenizer);
  return 0;
}
