// Why this file exists: examples/serve reads request bodies from any client; this feeds its request
// reader arbitrary bytes as each API's body (OpenAI chat and completions, Bedrock) and checks that it
// only ever returns a request or a 400 that says why, then turns what it accepts into prompt token ids
// and compiles its JSON schema the way the server does, so none of that can be crashed by a request.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api_request.hpp"
#include "bora/text/json_schema.hpp"
#include "bora/text/tokenizer.hpp"
#include "fuzz_support.hpp"
#include "prompt.hpp"

namespace {

const bora::Tokenizer& load_tokenizer(const char* file) {
  auto tokenizer = bora::Tokenizer::from_file(bora_fuzz::data_path(file));
  BORA_FUZZ_REQUIRE_SETUP(tokenizer.has_value());
  return *new bora::Tokenizer(std::move(*tokenizer));  // lives as long as the process
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bora::Tokenizer& v3 = load_tokenizer("tokenizer/mistral_instruct_tokenizer_240323.model.v3");
  static const serve::PromptBuilder& prompts = *new serve::PromptBuilder(v3, bora::ChatTemplate::kMistralV3);
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (serve::Api api : {serve::Api::kChat, serve::Api::kCompletion, serve::Api::kBedrock}) {
    serve::GenerationRequest request;
    serve::ApiError error;
    if (!serve::parse_generation_request(api, body, &request, &error)) {
      BORA_FUZZ_CHECK(error.status == 400 && !error.message.empty() && !error.type.empty());
      continue;
    }
    BORA_FUZZ_CHECK(request.api == api);
    BORA_FUZZ_CHECK(request.sample.max_tokens == -1 || request.sample.max_tokens >= 1);
    for (const bora::ChatMessage& message : request.messages) BORA_FUZZ_CHECK(!message.role.empty());
    std::vector<int32_t> ids;
    serve::ApiError prompt_error;
    if (prompts.build(request, &ids, &prompt_error)) {
      BORA_FUZZ_CHECK(!ids.empty());
    } else {
      BORA_FUZZ_CHECK(prompt_error.status == 400 && !prompt_error.message.empty());
    }
    if (request.response_format == serve::ResponseFormat::kJsonSchema) {
      auto grammar = bora::json_schema_grammar(request.json_schema);
      if (!grammar) BORA_FUZZ_CHECK(!grammar.error().str().empty());
    }
  }
  return 0;
}
