// Why this file exists: an interactive conversation in the terminal with the model's own chat
// template; each turn reuses the KV cache of the conversation so far. With --tools FILE.json the
// model may call functions: the calls are printed, the user types each result, and the conversation
// goes on with them (Mistral's function calling, v2/v3 tokenizer models).
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <simdjson.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "args.hpp"
#include "generation_options.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: chat -m MODEL [--system TEXT] [--tools FILE.json] [--temp T] [--seed S] [--threads N]\n"
               "            [--kv-type f16|q8_0|f32]\n"
               "  --tools FILE.json  functions the model may call: OpenAI's list [{\"type\": \"function\", \"function\":\n"
               "      {\"name\", \"description\", \"parameters\"}}] (or an object with that list as \"tools\"); each call\n"
               "      is printed and its result read from stdin\n");
}

// The tools list from FILE.json, as JSON text.
bora::Expected<std::string> read_tools(const std::string& path) {
  simdjson::padded_string text;
  if (simdjson::padded_string::load(path).get(text)) return bora::make_error(bora::ErrorCode::kIo, "cannot read %s", path.c_str());
  simdjson::dom::parser parser;
  simdjson::dom::element root, tools;
  if (parser.parse(text).get(root)) return bora::make_error(bora::ErrorCode::kFormat, "%s: not valid JSON", path.c_str());
  if (root.is_array()) tools = root;
  else if (root["tools"].get(tools) || !tools.is_array())
    return bora::make_error(bora::ErrorCode::kFormat, "%s: expected a list of tools or an object with \"tools\"", path.c_str());
  std::string list = simdjson::minify(tools);
  auto checked = bora::tool_calls_grammar(list);  // names and parameter schemas, checked now rather than mid-chat
  if (!checked) return bora::make_error(checked.error().code(), "%s: %s", path.c_str(), checked.error().message());
  return list;
}

}  // namespace

int main(int argc, char** argv) {
  std::string system_prompt;
  std::string tools_path;
  example_args::GenerationOptions options(512);
  example_args::Parser args(argc, argv, "chat", usage);
  while (args.next()) {
    if (options.read(args)) continue;
    if (args.is("--system")) system_prompt = args.text();
    else if (args.is("--tools")) tools_path = args.text();
    else args.unknown();
  }
  if (options.model_path.empty()) args.fail("-m MODEL is required");
  bora::ChatTemplateOptions template_options;
  if (!tools_path.empty()) {
    auto tools = read_tools(tools_path);
    if (!tools) { std::fprintf(stderr, "chat: %s\n", tools.error().message()); return 1; }
    template_options.tools = std::move(*tools);
  }
  auto model = bora::load_any(options.model_path, options.load);
  if (!model) { std::fprintf(stderr, "chat: %s\n", model.error().message()); return 1; }
  auto session = (*model)->session(options.session);
  if (!session) { std::fprintf(stderr, "chat: %s\n", session.error().message()); return 1; }
  const bora::Tokenizer* tokenizer = (*model)->tokenizer();
  const int32_t tool_calls_token = tokenizer != nullptr ? bora::tool_calls_token(*tokenizer) : -1;
  if (!template_options.tools.empty() &&
      (session->chat_template() == bora::ChatTemplate::kMistralV1 || tool_calls_token < 0)) {
    std::fprintf(stderr, "chat: --tools needs a model with tool tokens (a v2/v3 tokenizer, e.g. Mistral 7B v0.3); this one's "
                         "chat template is %s\n", bora::chat_template_name(session->chat_template()));
    return 1;
  }
  bora::Xoshiro256 call_ids(options.sample.seed);

  std::vector<bora::ChatMessage> conversation;
  if (!system_prompt.empty()) conversation.push_back({"system", system_prompt});
  std::string line;
  bool answer_tools = false;  // the last reply called tools: their results are the next input, not a user line
  for (;;) {
    if (!answer_tools) {
      std::printf("> ");
      std::fflush(stdout);
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
      conversation.push_back({"user", line});
    }
    answer_tools = false;
    bora::Status begun = session->begin_chat(conversation, options.sample, {}, template_options);
    if (!begun) { std::fprintf(stderr, "chat: %s\n", begun.error().message()); return 1; }
    // Text before [TOOL_CALLS] is shown as it comes; the calls' JSON after it is collected.
    std::string reply, calls_text;
    bool calling = false;
    for (;;) {
      auto step = session->step();
      if (!step) { std::fprintf(stderr, "\nchat: %s\n", step.error().message()); return 1; }
      if (step->token == tool_calls_token && tool_calls_token >= 0) calling = true;
      if (calling) {
        calls_text += step->text;
      } else {
        reply += step->text;
        std::fwrite(step->text.data(), 1, step->text.size(), stdout);
        std::fflush(stdout);
      }
      if (step->done) break;
    }
    std::printf("\n");
    auto calls = calling ? bora::parse_tool_calls(calls_text) : bora::Expected<std::vector<bora::ToolCall>>(std::vector<bora::ToolCall>());
    if (!calls || calls->empty()) {
      if (calling) std::printf("%s\n(chat: the model's calls did not parse; kept as text)\n", calls_text.c_str());
      conversation.push_back({"assistant", reply + calls_text});
      continue;
    }
    if (!reply.empty()) conversation.push_back({"assistant", reply});
    bora::ChatMessage call_turn{"assistant", ""};
    for (bora::ToolCall& call : *calls) {
      call.id = bora::make_tool_call_id(call_ids);
      call_turn.tool_calls.push_back(call);
    }
    conversation.push_back(call_turn);
    for (const bora::ToolCall& call : *calls) {
      std::printf("[tool call %s] %s(%s)\nresult of %s> ", call.id.c_str(), call.name.c_str(), call.arguments.c_str(),
                  call.name.c_str());
      std::fflush(stdout);
      if (!std::getline(std::cin, line)) return 0;
      bora::ChatMessage result{"tool", line};
      result.tool_call_id = call.id;
      result.name = call.name;
      conversation.push_back(std::move(result));
    }
    answer_tools = true;
  }
  return 0;
}
