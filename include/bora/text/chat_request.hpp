// Why this file exists: conversations arrive as JSON in mistral-common's request format
// ({"messages": [{"role": ..., "content": ...}, ...], "tools": [...]}, assistant "tool_calls" and "tool"
// messages as OpenAI writes them); this reads one into ChatMessages.
#ifndef BORA_TEXT_CHAT_REQUEST_HPP
#define BORA_TEXT_CHAT_REQUEST_HPP

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/text/chat_template.hpp"

namespace bora {

// `tools` (may be null) receives the request's "tools" array as JSON text, "" when it has none; a
// request with tools is refused when `tools` is null.
inline Expected<std::vector<ChatMessage>> parse_chat_request(std::string_view json, const std::string& name_for_errors,
                                                            std::string* tools = nullptr) {
  const char* name = name_for_errors.c_str();
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string padded(json);
  if (parser.parse(padded).get(root)) return make_error(ErrorCode::kFormat, "%s: not valid JSON", name);
  simdjson::dom::array messages;
  if (root["messages"].get_array().get(messages))
    return make_error(ErrorCode::kFormat, "%s: expected an object with a \"messages\" array", name);
  if (tools != nullptr) tools->clear();
  simdjson::dom::array tool_list;
  if (root["tools"].get_array().get(tool_list) == simdjson::SUCCESS && tool_list.size() > 0) {
    if (tools == nullptr) return make_error(ErrorCode::kUnsupported, "%s: \"tools\" are not supported here", name);
    *tools = simdjson::minify(tool_list);
  }
  std::vector<ChatMessage> out;
  size_t index = 0;
  for (simdjson::dom::element message : messages) {
    std::string_view role, content;
    if (message["role"].get_string().get(role))
      return make_error(ErrorCode::kFormat, "%s: messages[%zu] has no string \"role\"", name, index);
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      return make_error(ErrorCode::kUnsupported, "%s: messages[%zu] has role '%.40s' (system, user, assistant or tool)", name,
                        index, std::string(role).c_str());
    ChatMessage parsed{std::string(role), std::string()};
    simdjson::dom::array calls;
    if (role == "assistant" && message["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (simdjson::dom::element call : calls) {
        ToolCall tool_call;
        std::string_view text;
        simdjson::dom::element function, arguments;
        if (call["function"].get(function) || function["name"].get_string().get(text))
          return make_error(ErrorCode::kFormat, "%s: messages[%zu] has a tool call without function.name", name, index);
        tool_call.name = std::string(text);
        if (function["arguments"].get(arguments) == simdjson::SUCCESS) {
          if (arguments.get_string().get(text) == simdjson::SUCCESS) tool_call.arguments = std::string(text);
          else tool_call.arguments = simdjson::minify(arguments);
        }
        if (call["id"].get_string().get(text) == simdjson::SUCCESS) tool_call.id = std::string(text);
        parsed.tool_calls.push_back(std::move(tool_call));
      }
    }
    if (message["content"].get_string().get(content)) {
      const bool may_lack = !parsed.tool_calls.empty();
      if (!may_lack) return make_error(ErrorCode::kFormat, "%s: messages[%zu] has no string \"content\"", name, index);
      content = std::string_view();
    }
    parsed.content = std::string(content);
    std::string_view text;
    if (message["tool_call_id"].get_string().get(text) == simdjson::SUCCESS) parsed.tool_call_id = std::string(text);
    if (message["name"].get_string().get(text) == simdjson::SUCCESS) parsed.name = std::string(text);
    out.push_back(std::move(parsed));
    ++index;
  }
  return out;
}

}  // namespace bora

#endif  // BORA_TEXT_CHAT_REQUEST_HPP
