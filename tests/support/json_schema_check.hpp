// Why this file exists: "every output validates against its schema" must be checked by something
// other than the engine that produced it. This is a small, independent JSON Schema validator for the
// subset bora supports, written straight from the specification, shared by the structured output and
// tool call tests.
#ifndef BORA_TESTS_SUPPORT_JSON_SCHEMA_CHECK_HPP
#define BORA_TESTS_SUPPORT_JSON_SCHEMA_CHECK_HPP

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace bora_test {

inline size_t codepoints(std::string_view text) {
  size_t count = 0;
  for (const char c : text) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return count;
}

// The JSON Schema subset, checked independently: true when `value` satisfies `schema`.
inline bool validate(simdjson::dom::element value, simdjson::dom::element schema, simdjson::dom::element root, std::string* why) {
  auto fail = [&](const std::string& what) {
    *why = what + " at " + simdjson::minify(value);
    return false;
  };
  bool flag = false;
  if (schema.get_bool().get(flag) == simdjson::SUCCESS) return flag || fail("schema false");
  std::string_view ref;
  if (schema["$ref"].get_string().get(ref) == simdjson::SUCCESS) {
    simdjson::dom::element target = root;
    const std::string pointer(ref.substr(2));  // "#/$defs/x"
    size_t start = 0;
    while (start < pointer.size()) {
      size_t end = pointer.find('/', start);
      if (end == std::string::npos) end = pointer.size();
      if (target[pointer.substr(start, end - start)].get(target)) return fail("bad ref");
      start = end + 1;
    }
    return validate(value, target, root, why);
  }
  simdjson::dom::array list;
  if (schema["anyOf"].get_array().get(list) == simdjson::SUCCESS) {
    for (simdjson::dom::element option : list)
      if (validate(value, option, root, why)) return true;
    return fail("no anyOf option");
  }
  if (schema["enum"].get_array().get(list) == simdjson::SUCCESS) {
    for (simdjson::dom::element option : list)
      if (simdjson::minify(option) == simdjson::minify(value)) return true;
    return fail("not in enum");
  }
  simdjson::dom::element constant;
  if (schema["const"].get(constant) == simdjson::SUCCESS && simdjson::minify(constant) != simdjson::minify(value))
    return fail("not the const");
  std::string_view type;
  if (schema["type"].get_string().get(type) == simdjson::SUCCESS) {
    const auto t = value.type();
    using T = simdjson::dom::element_type;
    const bool is_integer = t == T::INT64 || t == T::UINT64;
    const bool ok = (type == "object" && t == T::OBJECT) || (type == "array" && t == T::ARRAY) ||
                    (type == "string" && t == T::STRING) || (type == "integer" && is_integer) ||
                    (type == "number" && (is_integer || t == T::DOUBLE)) || (type == "boolean" && t == T::BOOL) ||
                    (type == "null" && t == T::NULL_VALUE);
    if (!ok) return fail("not of type " + std::string(type));
  }
  int64_t bound = 0;
  if (value.is_int64()) {
    const int64_t v = value.get_int64().value_unsafe();
    if (schema["minimum"].get_int64().get(bound) == simdjson::SUCCESS && v < bound) return fail("below minimum");
    if (schema["maximum"].get_int64().get(bound) == simdjson::SUCCESS && v > bound) return fail("above maximum");
  }
  std::string_view text;
  if (value.get_string().get(text) == simdjson::SUCCESS) {
    if (schema["minLength"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(codepoints(text)) < bound)
      return fail("too short");
    if (schema["maxLength"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(codepoints(text)) > bound)
      return fail("too long");
  }
  simdjson::dom::array items;
  if (value.get_array().get(items) == simdjson::SUCCESS) {
    if (schema["minItems"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(items.size()) < bound)
      return fail("too few items");
    if (schema["maxItems"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(items.size()) > bound)
      return fail("too many items");
    simdjson::dom::element item_schema;
    if (schema["items"].get(item_schema) == simdjson::SUCCESS) {
      for (simdjson::dom::element item : items)
        if (!validate(item, item_schema, root, why)) return false;
    }
  }
  simdjson::dom::object object;
  if (value.get_object().get(object) == simdjson::SUCCESS) {
    simdjson::dom::object properties;
    const bool has_properties = schema["properties"].get_object().get(properties) == simdjson::SUCCESS;
    if (schema["required"].get_array().get(list) == simdjson::SUCCESS) {
      for (simdjson::dom::element name : list) {
        simdjson::dom::element ignored;
        if (object[name.get_string().value_unsafe()].get(ignored)) return fail("missing required property");
      }
    }
    simdjson::dom::element additional;
    const bool has_additional = schema["additionalProperties"].get(additional) == simdjson::SUCCESS;
    for (auto field : object) {
      simdjson::dom::element property_schema;
      if (has_properties && properties[field.key].get(property_schema) == simdjson::SUCCESS) {
        if (!validate(field.value, property_schema, root, why)) return false;
      } else if (has_additional && !validate(field.value, additional, root, why)) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_JSON_SCHEMA_CHECK_HPP
