// Why this file exists: conversations arrive as JSON in mistral-common's request format
// ({"messages": [{"role": ..., "content": ...}, ...]}); this reads one into ChatMessages.
#ifndef BORA_TEXT_CHAT_REQUEST_HPP
#define BORA_TEXT_CHAT_REQUEST_HPP

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/text/chat_template.hpp"

namespace bora {

inline Expected<std::vector<ChatMessage>> parse_chat_request(std::string_view json, const std::string& name_for_errors) {
  const char* name = name_for_errors.c_str();
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string padded(json);
  if (parser.parse(padded).get(root)) return make_error(ErrorCode::kFormat, "%s: not valid JSON", name);
  simdjson::dom::array messages;
  if (root["messages"].get_array().get(messages))
    return make_error(ErrorCode::kFormat, "%s: expected an object with a \"messages\" array", name);
  std::vector<ChatMessage> out;
  size_t index = 0;
  for (simdjson::dom::element message : messages) {
    std::string_view role, content;
    if (message["role"].get_string().get(role))
      return make_error(ErrorCode::kFormat, "%s: messages[%zu] has no string \"role\"", name, index);
    if (role != "system" && role != "user" && role != "assistant")
      return make_error(ErrorCode::kUnsupported, "%s: messages[%zu] has role '%.40s' (system, user or assistant)", name,
                        index, std::string(role).c_str());
    if (message["content"].get_string().get(content))
      return make_error(ErrorCode::kFormat, "%s: messages[%zu] has no string \"content\"", name, index);
    out.push_back(ChatMessage{std::string(role), std::string(content)});
    ++index;
  }
  return out;
}

}  // namespace bora

#endif  // BORA_TEXT_CHAT_REQUEST_HPP
