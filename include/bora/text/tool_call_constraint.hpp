// Why this file exists: with tool_choice "any"/"required" or a named function, an app must get calls
// it can run, not text that merely looks like them. This turns the tools' parameter schemas into one
// grammar, `[{"name": "<a tool>", "arguments": <that tool's parameters>}, ...]`, and a constraint that
// forces the model's [TOOL_CALLS] control token first (when its vocabulary has one), so the output
// always parses with parse_tool_calls() and every call's arguments validate against its own schema.
// Models without tool tokens (v1) get the JSON array alone: structure through the grammar only.
#ifndef BORA_TEXT_TOOL_CALL_CONSTRAINT_HPP
#define BORA_TEXT_TOOL_CALL_CONSTRAINT_HPP

#include <simdjson.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/text/grammar.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "bora/text/json_schema.hpp"
#include "bora/text/tokenizer.hpp"

namespace bora {

struct ToolCallGrammarOptions {
  std::string only_function;  // a named tool_choice: calls of this function only; "" = any of the tools
  int max_calls = 8;          // calls in one reply (OpenAI's parallel_tool_calls: false is 1)
  JsonGrammarOptions json;    // whitespace and number bounds inside the arguments
};

// A function name as OpenAI accepts it (and as the grammar can spell without escapes).
inline bool is_valid_function_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The grammar of a reply's calls (the text after [TOOL_CALLS]): an optional space, then a JSON array
// of 1..max_calls objects {"name", "arguments"} in that order, as Mistral's models write them.
// `tools` is OpenAI's list [{"type": "function", "function": {"name", "description", "parameters"}}];
// errors name the tool and the schema keyword.
inline Expected<Grammar> tool_calls_grammar(std::string_view tools, const ToolCallGrammarOptions& options = {}) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array list;
  const simdjson::padded_string padded(tools);
  if (parser.parse(padded).get(root) || root.get_array().get(list))
    return make_error(ErrorCode::kInvalidArgument, "tools: expected a JSON array of {\"type\": \"function\", \"function\": {...}}");
  if (options.max_calls < 1 || options.max_calls > 1000)
    return make_error(ErrorCode::kInvalidArgument, "tool calls: max_calls %d is outside 1..1000", options.max_calls);
  json_schema_detail::Compiler compiler(options.json);
  GrammarBuilder& b = compiler.builder();
  using Sequence = GrammarBuilder::Sequence;
  auto byte = [&](char c) { return b.byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)); };
  const GrammarSymbol ws = compiler.whitespace();
  std::vector<Sequence> calls;
  bool found_only = options.only_function.empty();
  size_t index = 0;
  for (simdjson::dom::element tool : list) {
    const std::string where = "tools[" + std::to_string(index++) + "]";
    simdjson::dom::element function;
    std::string_view name;
    if (tool["function"].get(function) || function["name"].get_string().get(name))
      return make_error(ErrorCode::kInvalidArgument, "%s: expected {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        where.c_str());
    if (!is_valid_function_name(name))
      return make_error(ErrorCode::kInvalidArgument, "%s: function name '%.64s' must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
                        where.c_str(), std::string(name).c_str());
    if (!options.only_function.empty() && name != options.only_function) continue;
    found_only = true;
    simdjson::dom::element parameters;
    GrammarSymbol arguments;
    simdjson::dom::object parameter_object;
    const bool absent = function["parameters"].get(parameters) != simdjson::SUCCESS || parameters.is_null() ||
                        (parameters.get_object().get(parameter_object) == simdjson::SUCCESS && parameter_object.size() == 0);
    if (absent) {
      arguments = compiler.any_object();
    } else {
      auto compiled = compiler.compile_embedded(parameters, where);
      if (!compiled)
        return make_error(compiled.error().code(), "%s (%s) parameters: %s", where.c_str(), std::string(name).c_str(),
                          compiled.error().message());
      arguments = *compiled;
    }
    Sequence call{byte('{'), ws};
    b.append_literal(&call, "\"name\"");
    call.insert(call.end(), {ws, byte(':'), ws});
    b.append_literal(&call, "\"" + std::string(name) + "\"");
    call.insert(call.end(), {ws, byte(','), ws});
    b.append_literal(&call, "\"arguments\"");
    call.insert(call.end(), {ws, byte(':'), ws, arguments, ws, byte('}')});
    calls.push_back(std::move(call));
  }
  if (!found_only)
    return make_error(ErrorCode::kInvalidArgument, "tool choice names function '%s', which is not among the tools",
                      options.only_function.c_str());
  if (calls.empty()) return make_error(ErrorCode::kInvalidArgument, "tools: the list is empty");
  const GrammarSymbol call = b.choice("call", std::move(calls));
  auto more = b.repeat(Sequence{ws, byte(','), ws, call}, 0, options.max_calls - 1);
  if (!more) return more.error();
  const GrammarSymbol space = b.choice("space", {Sequence{byte(' ')}, Sequence{}});
  const GrammarSymbol array = b.choice("calls", {Sequence{space, byte('['), ws, call, *more, ws, byte(']')}});
  return compiler.finish(array);
}

// The [TOOL_CALLS] control token's id, or -1 when the vocabulary has none (v1).
inline int32_t tool_calls_token(const Tokenizer& tokenizer) {
  const int32_t id = tokenizer.token_to_id("[TOOL_CALLS]");
  return id >= 0 && tokenizer.is_control(id) ? id : -1;
}

// The constraint for SampleParams::constraint: [TOOL_CALLS] (when the vocabulary has it), then the
// calls of tool_calls_grammar(), then EOS. The reply's text is the JSON list for parse_tool_calls().
// `vocabulary`: the tokenizer's shared VocabularyTrie, or null to build one.
inline Expected<std::shared_ptr<const GrammarConstraint>> tool_calls_constraint(
    std::string_view tools, const Tokenizer& tokenizer, const ToolCallGrammarOptions& options = {},
    std::shared_ptr<const VocabularyTrie> vocabulary = nullptr) {
  auto grammar = tool_calls_grammar(tools, options);
  if (!grammar) return grammar.error();
  GrammarConstraintOptions constraint_options;
  constraint_options.vocabulary = std::move(vocabulary);
  const int32_t leading = tool_calls_token(tokenizer);
  if (leading >= 0) constraint_options.leading_tokens.push_back(leading);
  return GrammarConstraint::create(std::move(*grammar), tokenizer, constraint_options);
}

}  // namespace bora

#endif  // BORA_TEXT_TOOL_CALL_CONSTRAINT_HPP
