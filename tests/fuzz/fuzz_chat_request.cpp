// Why this file exists: a chat request arrives as untrusted JSON (from a client of a server built on
// bora); this feeds the reader arbitrary bytes and renders whatever it accepts with every chat
// template, so neither the reader nor the template code can be crashed by a request.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bora/text/chat_request.hpp"
#include "bora/text/chat_template.hpp"
#include "bora/text/tokenizer.hpp"
#include "fuzz_support.hpp"

namespace {

const bora::Tokenizer& load_tokenizer(const char* file) {
  auto tokenizer = bora::Tokenizer::from_file(bora_fuzz::data_path(file));
  BORA_FUZZ_REQUIRE_SETUP(tokenizer.has_value());
  return *new bora::Tokenizer(std::move(*tokenizer));  // lives as long as the process
}

void render(const bora::Tokenizer& tokenizer, bora::ChatTemplate chat_template,
            const std::vector<bora::ChatMessage>& messages) {
  for (bool continue_final : {false, true}) {
    bora::ChatTemplateOptions options;
    options.continue_final_message = continue_final;
    auto ids = bora::apply_chat_template(tokenizer, chat_template, messages, options);
    if (!ids) continue;
    BORA_FUZZ_CHECK(!ids->empty() && ids->front() == tokenizer.bos_id());
    for (int32_t id : *ids) BORA_FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < tokenizer.vocab_size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bora::Tokenizer& v1 = load_tokenizer("tokenizer/tokenizer.model.v1");
  static const bora::Tokenizer& v3 = load_tokenizer("tokenizer/mistral_instruct_tokenizer_240323.model.v3");
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto messages = bora::parse_chat_request(json, "request.json");
  if (!messages) {
    BORA_FUZZ_CHECK(!messages.error().str().empty());
    return 0;
  }
  for (const bora::ChatMessage& message : *messages) {
    BORA_FUZZ_CHECK(message.role == "system" || message.role == "user" || message.role == "assistant" ||
                    message.role == "tool");
  }
  render(v1, bora::ChatTemplate::kMistralV1, *messages);
  render(v3, bora::ChatTemplate::kMistralV2, *messages);
  render(v3, bora::ChatTemplate::kMistralV3, *messages);
  return 0;
}
