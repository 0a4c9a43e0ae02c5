// Why this file exists: Mistral's function calling is JSON inside control tokens, and the model was
// trained on one exact spelling of it: Python's json.dumps (", " and ": " separators, non-ASCII kept,
// Python's float repr), with string arguments and tool results parsed as JSON first. This writes that
// spelling for the chat templates, reads the model's [TOOL_CALLS] output back into calls, and makes
// call ids the way vLLM's Mistral parser expects them (9 alphanumeric characters).
#ifndef BORA_TEXT_TOOL_CALLS_HPP
#define BORA_TEXT_TOOL_CALLS_HPP

#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/base/random.hpp"

namespace bora {

struct ToolCall {
  std::string id;         // "" when the conversation gives none
  std::string name;
  std::string arguments;  // JSON text (an object), as OpenAI's API carries it
};

namespace tool_calls_detail {

inline void append_python_string(std::string_view text, std::string* out) {
  out->push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned char>(c));
          *out += escaped;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

// Python's repr of a float: the shortest digits that read back the same, fixed notation for decimal
// exponents -4..15, else d.ddde+XX.
inline void append_python_float(double value, std::string* out) {
  char buffer[40];
  int precision = 1;
  for (; precision < 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*e", precision - 1, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::snprintf(buffer, sizeof(buffer), "%.*e", precision - 1, value);
  std::string text(buffer);
  const size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits;
  bool negative = false;
  for (size_t i = 0; i < e; ++i) {
    if (text[i] == '-') negative = true;
    else if (text[i] >= '0' && text[i] <= '9') digits.push_back(text[i]);
  }
  if (negative) out->push_back('-');
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      *out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      *out += digits + std::string(static_cast<size_t>(exponent) + 1 - digits.size(), '0') + ".0";
    } else {
      *out += digits.substr(0, static_cast<size_t>(exponent) + 1) + "." + digits.substr(static_cast<size_t>(exponent) + 1);
    }
    return;
  }
  out->push_back(digits[0]);
  if (digits.size() > 1) *out += "." + digits.substr(1);
  std::snprintf(buffer, sizeof(buffer), "e%c%02d", exponent < 0 ? '-' : '+', exponent < 0 ? -exponent : exponent);
  *out += buffer;
}

}  // namespace tool_calls_detail

// `value` as Python's json.dumps(value, ensure_ascii=False) writes it.
inline void append_python_json(simdjson::dom::element value, std::string* out) {
  using simdjson::dom::element_type;
  switch (value.type()) {
    case element_type::OBJECT: {
      out->push_back('{');
      bool first = true;
      simdjson::dom::object object;
      if (value.get_object().get(object)) return;
      for (auto field : object) {
        if (!first) *out += ", ";
        first = false;
        tool_calls_detail::append_python_string(field.key, out);
        *out += ": ";
        append_python_json(field.value, out);
      }
      out->push_back('}');
      return;
    }
    case element_type::ARRAY: {
      out->push_back('[');
      bool first = true;
      simdjson::dom::array array;
      if (value.get_array().get(array)) return;
      for (simdjson::dom::element item : array) {
        if (!first) *out += ", ";
        first = false;
        append_python_json(item, out);
      }
      out->push_back(']');
      return;
    }
    case element_type::STRING: tool_calls_detail::append_python_string(value.get_string().value_unsafe(), out); return;
    case element_type::INT64: *out += std::to_string(value.get_int64().value_unsafe()); return;
    case element_type::UINT64: *out += std::to_string(value.get_uint64().value_unsafe()); return;
    case element_type::DOUBLE: tool_calls_detail::append_python_float(value.get_double().value_unsafe(), out); return;
    case element_type::BOOL: *out += value.get_bool().value_unsafe() ? "true" : "false"; return;
    case element_type::NULL_VALUE: *out += "null"; return;
  }
}

// What mistral-common does with a string that may hold JSON (tool arguments, tool results): the
// parsed value when it parses, else the string itself, written as json.dumps would.
inline void append_python_json_or_string(std::string_view text, std::string* out) {
  simdjson::dom::parser parser;
  simdjson::dom::element value;
  const simdjson::padded_string padded(text);
  if (parser.parse(padded).get(value) == simdjson::SUCCESS) {
    append_python_json(value, out);
  } else {
    tool_calls_detail::append_python_string(text, out);
  }
}

// The model's text after [TOOL_CALLS]: a JSON list of {"name", "arguments", "id"?} (one object alone
// is accepted too). Arguments come back as compact JSON text.
inline Expected<std::vector<ToolCall>> parse_tool_calls(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string padded(text);
  if (parser.parse(padded).get(root))
    return make_error(ErrorCode::kFormat, "tool calls: the model's output is not valid JSON: %.80s",
                      std::string(text).c_str());
  std::vector<simdjson::dom::element> items;
  simdjson::dom::array list;
  if (root.get_array().get(list) == simdjson::SUCCESS) {
    for (simdjson::dom::element item : list) items.push_back(item);
  } else {
    items.push_back(root);
  }
  std::vector<ToolCall> calls;
  for (size_t i = 0; i < items.size(); ++i) {
    ToolCall call;
    std::string_view name;
    if (items[i]["name"].get_string().get(name) || name.empty())
      return make_error(ErrorCode::kFormat, "tool calls: call %zu has no \"name\"", i);
    call.name = std::string(name);
    simdjson::dom::element arguments;
    if (items[i]["arguments"].get(arguments)) {
      call.arguments = "{}";
    } else {
      std::string_view as_string;
      if (arguments.get_string().get(as_string) == simdjson::SUCCESS) call.arguments = std::string(as_string);
      else if (arguments.is_object()) call.arguments = simdjson::minify(arguments);
      else return make_error(ErrorCode::kFormat, "tool calls: call %zu's \"arguments\" is not an object", i);
    }
    std::string_view id;
    if (items[i]["id"].get_string().get(id) == simdjson::SUCCESS) call.id = std::string(id);
    calls.push_back(std::move(call));
  }
  return calls;
}

// A call id as vLLM's Mistral parser expects: 9 characters from [a-zA-Z0-9].
inline std::string make_tool_call_id(Xoshiro256& rng) {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id;
  for (int i = 0; i < 9; ++i) id.push_back(kAlphabet[static_cast<size_t>(rng.next_double() * 62.0) % 62]);
  return id;
}

}  // namespace bora

#endif  // BORA_TEXT_TOOL_CALLS_HPP
