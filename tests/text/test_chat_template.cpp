// Why this file exists: a chat must become exactly the tokens mistral-common produces for each
// instruct tokenizer version; the expected ids below come from mistral-common's own test data
// (chat_samples/no_tools, copied verbatim) and test suite (test_tokenize_v2/v3).
#include <doctest/doctest.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "bora/text/chat_template.hpp"
#include "bora/text/tokenizer.hpp"
#include "../support/golden.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

const std::string kSamples = bora_test::tokenizer_path("chat_samples/no_tools/");
using Ids = std::vector<int32_t>;

const bora::Tokenizer& tokenizer(const std::string& file) {
  static std::vector<std::pair<std::string, bora::Tokenizer>> cache;
  for (auto& entry : cache) {
    if (entry.first == file) return entry.second;
  }
  bora::Expected<bora::Tokenizer> loaded = bora::Tokenizer::from_file(bora_test::tokenizer_path(file));
  REQUIRE_MESSAGE(loaded.has_value(), loaded.error().str());
  cache.reserve(4);
  cache.emplace_back(file, std::move(*loaded));
  return cache.back().second;
}
const bora::Tokenizer& v1() { return tokenizer("tokenizer.model.v1"); }
const bora::Tokenizer& v3() { return tokenizer("mistral_instruct_tokenizer_240323.model.v3"); }

std::vector<bora::ChatMessage> read_sample_messages() {
  std::vector<bora::ChatMessage> messages;
  simdjson::padded_string json;
  REQUIRE(simdjson::padded_string::load(kSamples + "sample.json").get(json) == simdjson::SUCCESS);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(json).get(root) == simdjson::SUCCESS);
  simdjson::dom::array array;
  REQUIRE(root["messages"].get_array().get(array) == simdjson::SUCCESS);
  for (simdjson::dom::element message : array) {
    std::string_view role;
    std::string_view content;
    REQUIRE(message["role"].get_string().get(role) == simdjson::SUCCESS);
    REQUIRE(message["content"].get_string().get(content) == simdjson::SUCCESS);
    messages.push_back({std::string(role), std::string(content)});
  }
  return messages;
}

Ids read_tokens(const std::string& file) {
  Ids ids;
  simdjson::padded_string json;
  REQUIRE(simdjson::padded_string::load(kSamples + file).get(json) == simdjson::SUCCESS);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(json).get(root) == simdjson::SUCCESS);
  simdjson::dom::array array;
  REQUIRE(root["tokens"].get_array().get(array) == simdjson::SUCCESS);
  for (simdjson::dom::element value : array) {
    int64_t id = 0;
    REQUIRE(value.get_int64().get(id) == simdjson::SUCCESS);
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

std::string read_text(const std::string& file) {
  simdjson::padded_string text;
  REQUIRE(simdjson::padded_string::load(kSamples + file).get(text) == simdjson::SUCCESS);
  std::string out(text.data(), text.size());
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// The rendering used by mistral-common's text_v*.txt: the pieces side by side ("▁" for spaces).
std::string render_pieces(const bora::Tokenizer& t, const Ids& ids) {
  std::string out;
  for (int32_t id : ids) out += t.piece(id);
  return out;
}

Ids apply(const bora::Tokenizer& t, bora::ChatTemplate chat_template, const std::vector<bora::ChatMessage>& messages,
          bool continue_final = false) {
  bora::ChatTemplateOptions options;
  options.continue_final_message = continue_final;
  bora::Expected<Ids> ids = bora::apply_chat_template(t, chat_template, messages, options);
  REQUIRE_MESSAGE(ids.has_value(), ids.error().str());
  return *ids;
}

Ids concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

}  // namespace

TEST_CASE("chat template v1: mistral-common's no_tools sample") {
  const std::vector<bora::ChatMessage> messages = read_sample_messages();
  REQUIRE(messages.size() == 7);
  const Ids expected = read_tokens("tokens_v1.json");
  REQUIRE(expected.size() > 100);
  const Ids ids = apply(v1(), bora::ChatTemplate::kMistralV1, messages);
  CHECK(ids == expected);
  CHECK(render_pieces(v1(), ids) == read_text("text_v1.txt"));
}

TEST_CASE("chat template v3 (and v2): mistral-common's no_tools sample") {
  const std::vector<bora::ChatMessage> messages = read_sample_messages();
  const Ids expected = read_tokens("tokens_v3.json");
  REQUIRE(expected.size() > 90);
  const Ids ids = apply(v3(), bora::ChatTemplate::kMistralV3, messages);
  CHECK(ids == expected);
  CHECK(render_pieces(v3(), ids) == read_text("text_v3.txt"));
  CHECK(apply(v3(), bora::ChatTemplate::kMistralV2, messages) == expected);  // no tools: same tokens
}

TEST_CASE("chat template v3: system prompt goes to the last user message (mistral-common test_tokenize_v3)") {
  const std::vector<bora::ChatMessage> messages = {
      {"system", "SYSTEM"}, {"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "d"}};
  // test_continue_final_message: the final assistant message is continued, so no EOS after it.
  CHECK(apply(v3(), bora::ChatTemplate::kMistralV3, messages, true) ==
        Ids{1, 3, 1032, 4, 1055, 2, 3, 17889, 23294, 781, 781, 29485, 4, 1049});
  // Without continuing, every assistant turn ends with EOS.
  CHECK(apply(v3(), bora::ChatTemplate::kMistralV3, messages) ==
        Ids{1, 3, 1032, 4, 1055, 2, 3, 17889, 23294, 781, 781, 29485, 4, 1049, 2});
  // The system message may come anywhere; it is taken out of the conversation.
  const std::vector<bora::ChatMessage> moved = {
      {"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"system", "SYSTEM"}, {"assistant", "d"}};
  CHECK(apply(v3(), bora::ChatTemplate::kMistralV3, moved, true) ==
        Ids{1, 3, 1032, 4, 1055, 2, 3, 17889, 23294, 781, 781, 29485, 4, 1049});
  // test_tokenize_v2 test_system_singleturn: [1, 3, ▁SY, STEM, \n, \n, a, 4] ready for generation.
  CHECK(apply(v3(), bora::ChatTemplate::kMistralV2, {{"system", "SYSTEM"}, {"user", "a"}}) ==
        Ids{1, 3, 17889, 23294, 781, 781, 29476, 4});
}

TEST_CASE("chat template v1: plain-text [INST], system prompt on the first user message") {
  const bora::Tokenizer& t = v1();
  const std::vector<bora::ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "a"}, {"assistant", "b "}, {"user", "c"}};
  const Ids expected = concat({{1}, t.encode("[INST] Be brief.\n\na [/INST]", false), t.encode("b ", false), {2},
                               t.encode("[INST] c [/INST]", false)});
  CHECK(apply(t, bora::ChatTemplate::kMistralV1, messages) == expected);
  CHECK(std::count(expected.begin(), expected.end(), 1) == 1);  // the "[INST]" text is never a control id
}

TEST_CASE("chat template: consecutive messages, leading assistant, trailing spaces") {
  const bora::Tokenizer& t = v3();
  // Two user messages in a row are one turn joined by "\n\n"; empty contents are skipped.
  CHECK(apply(t, bora::ChatTemplate::kMistralV3, {{"user", "a"}, {"user", ""}, {"user", "c"}}) ==
        concat({{1, 3}, t.encode("a\n\nc", false), {4}}));
  // A conversation not starting with a user turn gets an empty one.
  CHECK(apply(t, bora::ChatTemplate::kMistralV3, {{"assistant", "x"}, {"user", "y"}}) ==
        concat({{1, 3, 4}, t.encode("x", false), {2, 3}, t.encode("y", false), {4}}));
  // v2/v3 strip trailing spaces of assistant text, v1 does not.
  CHECK(apply(t, bora::ChatTemplate::kMistralV3, {{"user", "a"}, {"assistant", "b  "}}) ==
        apply(t, bora::ChatTemplate::kMistralV3, {{"user", "a"}, {"assistant", "b"}}));
  CHECK(apply(v1(), bora::ChatTemplate::kMistralV1, {{"user", "a"}, {"assistant", "b  "}}) !=
        apply(v1(), bora::ChatTemplate::kMistralV1, {{"user", "a"}, {"assistant", "b"}}));
  // Only a system prompt: an empty user turn carries it.
  CHECK(apply(t, bora::ChatTemplate::kMistralV3, {{"system", "S"}}) == concat({{1, 3}, t.encode("S\n\n", false), {4}}));
}

TEST_CASE("chat template: errors") {
  auto code = [](const bora::Expected<Ids>& ids) { return ids.has_value() ? -1 : static_cast<int>(ids.error().code()); };
  const int invalid = static_cast<int>(bora::ErrorCode::kInvalidArgument);
  CHECK(code(bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV3, {{"tool", "x"}})) == invalid);
  CHECK(code(bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV3, {{"user", "a"}, {"assistant", ""}})) ==
        invalid);
  bora::ChatTemplateOptions continued;
  continued.continue_final_message = true;
  CHECK(code(bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV3, {{"user", "a"}}, continued)) == invalid);
  // The v1 vocabulary has no [INST] control token.
  CHECK(code(bora::apply_chat_template(v1(), bora::ChatTemplate::kMistralV3, {{"user", "a"}})) ==
        static_cast<int>(bora::ErrorCode::kUnsupported));
}

TEST_CASE("chat template: chosen from the vocabulary, overridable by name") {
  CHECK(bora::detect_chat_template(v1().vocabulary()) == bora::ChatTemplate::kMistralV1);
  CHECK(bora::detect_chat_template(v1().vocabulary(), "{{ '[INST] ' + message['content'] + ' [/INST]' }}") ==
        bora::ChatTemplate::kMistralV1);
  CHECK(bora::detect_chat_template(v3().vocabulary()) == bora::ChatTemplate::kMistralV3);

  // A v2-like vocabulary: [INST] control tokens but no [IMG] and no [REFERENCE_DOC_n] pieces.
  bora::Vocabulary v2_like = v3().vocabulary();
  for (size_t i = 0; i < v2_like.size(); ++i) {
    if (v2_like.pieces[i] == "[IMG]") v2_like.pieces[i] = "[control_x]";
    if (v2_like.types[i] == bora::token_type::kUserDefined) v2_like.types[i] = bora::token_type::kControl;
  }
  CHECK(bora::detect_chat_template(v2_like) == bora::ChatTemplate::kMistralV2);
  CHECK(bora::detect_chat_template(v2_like, "... \"call_id\" ...") == bora::ChatTemplate::kMistralV3);

  bora::Expected<bora::Tokenizer> demo =
      bora::Tokenizer::from_file(std::string(BORA_TEST_DATA_DIR) + "/demo-mistral/demo-mistral-Q4_0.gguf");
  REQUIRE_MESSAGE(demo.has_value(), demo.error().str());
  CHECK(bora::detect_chat_template(demo->vocabulary()) == bora::ChatTemplate::kMistralV1);

  CHECK(*bora::parse_chat_template_name("v1") == bora::ChatTemplate::kMistralV1);
  CHECK(*bora::parse_chat_template_name("mistral-v2") == bora::ChatTemplate::kMistralV2);
  CHECK(*bora::parse_chat_template_name("3") == bora::ChatTemplate::kMistralV3);
  CHECK_FALSE(bora::parse_chat_template_name("chatml").has_value());
  CHECK(std::string(bora::chat_template_name(bora::ChatTemplate::kMistralV3)) == "mistral-v3");
}
