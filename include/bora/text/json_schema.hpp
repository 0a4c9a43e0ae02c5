// Why this file exists: apps describe the JSON they want with a JSON Schema; this compiles the subset
// people use for structured output into a Grammar, so generation can only produce documents that
// validate. Whitespace, number lengths and nesting are bounded, so even a random model's output ends.
// What is generated is stricter than the schema where that keeps the grammar small, never looser:
// properties come in the schema's order, only the named ones (additionalProperties is never exercised
// when properties are given), output is compact JSON with bounded whitespace.
// Anything outside the subset is an error naming the keyword and its JSON pointer, never ignored
// (annotations such as title, description, default, examples and format are ignored).
#ifndef BORA_TEXT_JSON_SCHEMA_HPP
#define BORA_TEXT_JSON_SCHEMA_HPP

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/text/grammar.hpp"

namespace bora {

struct JsonGrammarOptions {
  int max_whitespace = 12;      // whitespace characters between two tokens of the JSON
  int max_integer_digits = 16;  // also bounds integer minimum/maximum that are absent
  int max_fraction_digits = 15;
  int max_exponent_digits = 2;  // 2: every number fits a double (parsers such as simdjson reject 1e721)
  int max_string_length = -1;   // for strings without maxLength; < 0: unbounded
  int max_members = -1;         // members of objects and items of arrays whose schema sets no bound; < 0: unbounded
  int max_schema_depth = 64;    // nested schemas (and $ref hops while compiling)
};

namespace json_schema_detail {

using Sequence = GrammarBuilder::Sequence;

class Compiler {
 public:
  explicit Compiler(const JsonGrammarOptions& options) : options_(options) {
    options_.max_whitespace = std::max(0, std::min(options_.max_whitespace, 1000));
    options_.max_integer_digits = std::max(1, std::min(options_.max_integer_digits, 18));
    options_.max_fraction_digits = std::max(1, std::min(options_.max_fraction_digits, 1000));
    options_.max_exponent_digits = std::max(1, std::min(options_.max_exponent_digits, 4));
    options_.max_string_length = std::min(options_.max_string_length, GrammarLimits::kMaxRepetition);
    options_.max_members = std::min(options_.max_members, GrammarLimits::kMaxRepetition);
  }

  Expected<Grammar> compile_schema(std::string_view schema_text) {
    const simdjson::padded_string padded(schema_text);
    if (parser_.parse(padded).get(root_)) return make_error(ErrorCode::kInvalidArgument, "json schema: not valid JSON");
    auto value = compile(root_, "#", 0);
    if (!value) return value.error();
    return finish(*value);
  }

  Expected<Grammar> compile_any_object() { return finish(any_object()); }

  // Compiles `schema`, an element of a document the caller keeps alive, as one value inside a larger
  // grammar (tool calls embed each tool's parameters); its $refs resolve within it, apart from other
  // schemas compiled under another `scope`.
  Expected<GrammarSymbol> compile_embedded(simdjson::dom::element schema, const std::string& scope) {
    root_ = schema;
    ref_scope_ = scope;
    return compile(schema, "#", 0);
  }
  GrammarBuilder& builder() { return b_; }

  Expected<Grammar> finish(GrammarSymbol value) {
    const uint32_t root = b_.rule("root");
    b_.define(root, {Sequence{value}});
    return b_.build(root, "json schema");
  }

 private:

  static Error unsupported(const std::string& keyword, const std::string& path) {
    return make_error(ErrorCode::kUnsupported,
                      "json schema: keyword \"%s\" at %s is not supported (bora supports type, properties, required, "
                      "additionalProperties, enum, const, items, minItems, maxItems, minLength, maxLength, integer "
                      "minimum/maximum, anyOf, $ref into $defs)",
                      keyword.c_str(), path.c_str());
  }
  static Error invalid(const std::string& path, const std::string& what) {
    return make_error(ErrorCode::kInvalidArgument, "json schema: %s: %s", path.c_str(), what.c_str());
  }
  static std::string child(const std::string& path, std::string_view key) {
    std::string out = path + "/";
    for (const char c : key) {
      if (c == '~') out += "~0";
      else if (c == '/') out += "~1";
      else out += c;
    }
    return out;
  }
  static bool is_annotation(std::string_view key) {
    static const char* const kIgnored[] = {"$schema", "$id", "$comment", "title", "description", "default", "examples",
                                           "format", "deprecated", "readOnly", "writeOnly", "$defs", "definitions",
                                           "contentMediaType", "contentEncoding"};
    for (const char* ignored : kIgnored)
      if (key == ignored) return true;
    return false;
  }

  Expected<GrammarSymbol> compile(simdjson::dom::element schema, const std::string& path, int depth) {
    if (depth > options_.max_schema_depth)
      return invalid(path, "schemas nested deeper than " + std::to_string(options_.max_schema_depth));
    bool boolean = false;
    if (schema.get_bool().get(boolean) == simdjson::SUCCESS) {
      if (!boolean) return invalid(path, "the schema false matches nothing");
      return any_value();
    }
    simdjson::dom::object object;
    if (schema.get_object().get(object)) return invalid(path, "a schema must be an object or a boolean");
    static const char* const kSupported[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
                                             "items", "minItems", "maxItems", "minLength", "maxLength", "minimum",
                                             "maximum", "anyOf", "$ref"};
    std::vector<std::string> keywords;
    for (auto field : object) {
      const std::string_view key = field.key;
      if (is_annotation(key)) continue;
      bool known = false;
      for (const char* supported : kSupported) known = known || key == supported;
      if (!known) return unsupported(std::string(key), path);
      keywords.emplace_back(key);
    }
    auto has = [&](const char* k) {
      for (const std::string& keyword : keywords)
        if (keyword == k) return true;
      return false;
    };
    if (has("$ref") || has("anyOf") || has("enum") || has("const")) {
      const char* lead = has("$ref") ? "$ref" : has("anyOf") ? "anyOf" : has("enum") ? "enum" : "const";
      for (const std::string& keyword : keywords) {
        if (keyword != lead && !(keyword == "type" && (std::string(lead) == "enum" || std::string(lead) == "const")))
          return make_error(ErrorCode::kUnsupported, "json schema: keyword \"%s\" beside \"%s\" at %s is not supported",
                            keyword.c_str(), lead, path.c_str());
      }
      if (has("$ref")) return compile_ref(object, path, depth);
      if (has("anyOf")) return compile_any_of(object, path, depth);
      return compile_literals(object, lead, path);
    }
    std::vector<std::string> types;
    simdjson::dom::element type;
    if (object["type"].get(type) == simdjson::SUCCESS) {
      std::string_view one;
      simdjson::dom::array many;
      if (type.get_string().get(one) == simdjson::SUCCESS) {
        types.emplace_back(one);
      } else if (type.get_array().get(many) == simdjson::SUCCESS) {
        for (simdjson::dom::element t : many) {
          if (t.get_string().get(one)) return invalid(child(path, "type"), "expected type names");
          types.emplace_back(one);
        }
      } else {
        return invalid(child(path, "type"), "expected a type name or an array of them");
      }
    } else if (has("properties") || has("required") || has("additionalProperties")) {
      types.emplace_back("object");
    } else if (has("items") || has("minItems") || has("maxItems")) {
      types.emplace_back("array");
    } else if (has("minLength") || has("maxLength")) {
      types.emplace_back("string");
    } else if (has("minimum") || has("maximum")) {
      return make_error(ErrorCode::kUnsupported, "json schema: \"minimum\"/\"maximum\" at %s needs \"type\": \"integer\"",
                        path.c_str());
    } else {
      return any_value();
    }
    std::vector<Sequence> alternatives;
    for (const std::string& t : types) {
      Expected<GrammarSymbol> symbol = GrammarSymbol();
      if (t == "object") symbol = compile_object(object, path, depth);
      else if (t == "array") symbol = compile_array(object, path, depth);
      else if (t == "string") symbol = compile_string(object, path);
      else if (t == "integer") symbol = compile_integer(object, path);
      else if (t == "number") symbol = compile_number(object, path);
      else if (t == "boolean") symbol = b_.choice("boolean", {b_.literal("true"), b_.literal("false")});
      else if (t == "null") symbol = b_.choice("null", {b_.literal("null")});
      else return invalid(child(path, "type"), "unknown type \"" + t + "\"");
      if (!symbol) return symbol.error();
      alternatives.push_back(Sequence{*symbol});
    }
    return b_.choice("type", std::move(alternatives));
  }

  Expected<GrammarSymbol> compile_ref(simdjson::dom::object object, const std::string& path, int depth) {
    std::string_view ref;
    if (object["$ref"].get_string().get(ref)) return invalid(child(path, "$ref"), "expected a string");
    const std::string pointer(ref);
    auto known = ref_rules_.find(ref_scope_ + pointer);
    if (known != ref_rules_.end()) return GrammarBuilder::ref(known->second);
    simdjson::dom::element target;
    if (pointer == "#") {
      target = root_;
    } else if (pointer.compare(0, 2, "#/") == 0) {
      // JSON pointer, ~1 and ~0 unescaped; only into $defs / definitions.
      if (pointer.compare(0, 8, "#/$defs/") != 0 && pointer.compare(0, 14, "#/definitions/") != 0)
        return make_error(ErrorCode::kUnsupported, "json schema: \"$ref\" at %s points to %s (only #/$defs/... is supported)",
                          path.c_str(), pointer.c_str());
      target = root_;
      size_t start = 2;
      while (start <= pointer.size()) {
        size_t end = pointer.find('/', start);
        if (end == std::string::npos) end = pointer.size();
        std::string token;
        for (size_t i = start; i < end; ++i) {
          if (pointer[i] == '~' && i + 1 < end) {
            token += pointer[i + 1] == '1' ? '/' : '~';
            ++i;
          } else {
            token += pointer[i];
          }
        }
        simdjson::dom::element next;
        if (target.at_key(token).get(next))
          return invalid(child(path, "$ref"), "\"" + pointer + "\" does not exist in this schema");
        target = next;
        start = end + 1;
      }
    } else {
      return make_error(ErrorCode::kUnsupported, "json schema: \"$ref\" at %s is \"%s\" (only #/$defs/... refs are supported)",
                        path.c_str(), pointer.c_str());
    }
    // Declared before compiling, so recursive schemas refer back to it.
    const uint32_t rule = b_.rule("$ref:" + ref_scope_ + pointer);
    ref_rules_.emplace(ref_scope_ + pointer, rule);
    auto body = compile(target, pointer, depth + 1);
    if (!body) return body.error();
    b_.define(rule, {Sequence{*body}});
    return GrammarBuilder::ref(rule);
  }

  Expected<GrammarSymbol> compile_any_of(simdjson::dom::object object, const std::string& path, int depth) {
    simdjson::dom::array options;
    if (object["anyOf"].get_array().get(options) || options.size() == 0)
      return invalid(child(path, "anyOf"), "expected a non-empty array of schemas");
    std::vector<Sequence> alternatives;
    size_t index = 0;
    for (simdjson::dom::element option : options) {
      auto symbol = compile(option, child(child(path, "anyOf"), std::to_string(index++)), depth + 1);
      if (!symbol) return symbol.error();
      alternatives.push_back(Sequence{*symbol});
    }
    return b_.choice("anyOf", std::move(alternatives));
  }

  // enum / const: the values' compact JSON text, verbatim.
  Expected<GrammarSymbol> compile_literals(simdjson::dom::object object, const char* keyword, const std::string& path) {
    std::vector<std::string> texts;
    if (std::string(keyword) == "const") {
      simdjson::dom::element value;
      if (object["const"].get(value)) return invalid(child(path, "const"), "missing value");
      texts.push_back(simdjson::minify(value));
    } else {
      simdjson::dom::array values;
      if (object["enum"].get_array().get(values) || values.size() == 0)
        return invalid(child(path, "enum"), "expected a non-empty array");
      for (simdjson::dom::element value : values) texts.push_back(simdjson::minify(value));
    }
    return b_.literals(keyword, std::move(texts));
  }

  Status read_count(simdjson::dom::object object, const char* keyword, const std::string& path, int64_t* out) {
    simdjson::dom::element element;
    if (object[keyword].get(element)) return Status();
    double value = 0;
    if (element.get_double().get(value) || value < 0 || value != std::floor(value) || value > GrammarLimits::kMaxRepetition)
      return invalid(child(path, keyword), "expected an integer in 0.." + std::to_string(GrammarLimits::kMaxRepetition));
    *out = static_cast<int64_t>(value);
    return Status();
  }

  Expected<GrammarSymbol> compile_object(simdjson::dom::object object, const std::string& path, int depth) {
    simdjson::dom::object properties;
    const bool has_properties = object["properties"].get_object().get(properties) == simdjson::SUCCESS;
    if (!has_properties && object["properties"].error() != simdjson::NO_SUCH_FIELD)
      return invalid(child(path, "properties"), "expected an object");
    std::vector<std::string> required;
    simdjson::dom::element required_element;
    if (object["required"].get(required_element) == simdjson::SUCCESS) {
      simdjson::dom::array list;
      if (required_element.get_array().get(list)) return invalid(child(path, "required"), "expected an array of names");
      for (simdjson::dom::element name : list) {
        std::string_view text;
        if (name.get_string().get(text)) return invalid(child(path, "required"), "expected an array of names");
        required.emplace_back(text);
      }
    }
    simdjson::dom::element additional;
    const bool has_additional = object["additionalProperties"].get(additional) == simdjson::SUCCESS;
    bool additional_allowed = true;
    if (has_additional) {
      bool flag = true;
      if (additional.get_bool().get(flag) == simdjson::SUCCESS) additional_allowed = flag;
    }
    const GrammarSymbol ws = whitespace();

    if (!has_properties && required.empty()) {
      if (!additional_allowed) return b_.choice("object", {Sequence{byte('{'), ws, byte('}')}});
      if (has_additional && additional.is_object()) {
        auto value = compile(additional, child(path, "additionalProperties"), depth + 1);
        if (!value) return value.error();
        return members_object(*value);
      }
      return any_object();
    }

    struct Entry {
      std::string name;
      GrammarSymbol value;
      bool required;
    };
    std::vector<Entry> entries;
    auto is_required = [&](std::string_view name) {
      for (const std::string& r : required)
        if (r == name) return true;
      return false;
    };
    if (has_properties) {
      for (auto field : properties) {
        auto value = compile(field.value, child(child(path, "properties"), field.key), depth + 1);
        if (!value) return value.error();
        entries.push_back(Entry{std::string(field.key), *value, is_required(field.key)});
      }
    }
    for (const std::string& name : required) {
      bool listed = false;
      for (const Entry& e : entries) listed = listed || e.name == name;
      if (listed) continue;
      if (!additional_allowed)
        return invalid(child(path, "required"), "\"" + name + "\" is required but not in properties, and additionalProperties is false");
      GrammarSymbol value = any_value();
      if (has_additional && additional.is_object()) {
        auto compiled = compile(additional, child(path, "additionalProperties"), depth + 1);
        if (!compiled) return compiled.error();
        value = *compiled;
      }
      entries.push_back(Entry{name, value, true});
    }
    // first[i]: properties i.. with none written yet; rest[i]: the same after one was (", " first).
    const size_t n = entries.size();
    std::vector<uint32_t> first(n + 1), rest(n + 1);
    for (size_t i = 0; i <= n; ++i) {
      first[i] = b_.new_rule("properties");
      rest[i] = b_.new_rule("properties");
    }
    b_.define(first[n], {});  // no property left: nothing to start with
    b_.define(rest[n], {Sequence{}});
    bool any_required = false;
    for (size_t i = n; i-- > 0;) {
      Sequence member = b_.literal(json_string_literal(entries[i].name));
      member.insert(member.end(), {ws, byte(':'), ws, entries[i].value});
      const GrammarSymbol kv = b_.choice("member", {member});
      std::vector<Sequence> first_alternatives{Sequence{kv, GrammarBuilder::ref(rest[i + 1])}};
      std::vector<Sequence> rest_alternatives{Sequence{ws, byte(','), ws, kv, GrammarBuilder::ref(rest[i + 1])}};
      if (!entries[i].required) {
        first_alternatives.push_back(Sequence{GrammarBuilder::ref(first[i + 1])});
        rest_alternatives.push_back(Sequence{GrammarBuilder::ref(rest[i + 1])});
      }
      any_required = any_required || entries[i].required;
      b_.define(first[i], std::move(first_alternatives));
      b_.define(rest[i], std::move(rest_alternatives));
    }
    const GrammarSymbol body = GrammarBuilder::ref(first[0]);
    if (any_required) return b_.choice("object", {Sequence{byte('{'), ws, body, ws, byte('}')}});
    return b_.choice("object", {Sequence{byte('{'), ws, body, ws, byte('}')}, Sequence{byte('{'), ws, byte('}')}});
  }

  Expected<GrammarSymbol> compile_array(simdjson::dom::object object, const std::string& path, int depth) {
    GrammarSymbol item = any_value();
    simdjson::dom::element items;
    if (object["items"].get(items) == simdjson::SUCCESS) {
      auto compiled = compile(items, child(path, "items"), depth + 1);
      if (!compiled) return compiled.error();
      item = *compiled;
    }
    int64_t min = 0, max = -1;
    BORA_RETURN_IF_ERROR(read_count(object, "minItems", path, &min));
    BORA_RETURN_IF_ERROR(read_count(object, "maxItems", path, &max));
    if (max >= 0 && max < min) return invalid(path, "minItems is larger than maxItems");
    const GrammarSymbol ws = whitespace();
    if (max < 0 && options_.max_members >= 0) max = std::max<int64_t>(min, options_.max_members);
    if (max == 0) return b_.choice("array", {Sequence{byte('['), ws, byte(']')}});
    auto more = b_.repeat(Sequence{ws, byte(','), ws, item}, min > 0 ? static_cast<int>(min - 1) : 0,
                          max < 0 ? -1 : static_cast<int>(max - 1));
    if (!more) return invalid(path, more.error().str());
    const GrammarSymbol list = b_.choice("items", {Sequence{item, *more}});
    std::vector<Sequence> alternatives{Sequence{byte('['), ws, list, ws, byte(']')}};
    if (min == 0) alternatives.push_back(Sequence{byte('['), ws, byte(']')});
    return b_.choice("array", std::move(alternatives));
  }

  Expected<GrammarSymbol> compile_string(simdjson::dom::object object, const std::string& path) {
    int64_t min = 0, max = -1;
    BORA_RETURN_IF_ERROR(read_count(object, "minLength", path, &min));
    BORA_RETURN_IF_ERROR(read_count(object, "maxLength", path, &max));
    if (max >= 0 && max < min) return invalid(path, "minLength is larger than maxLength");
    if (max < 0 && options_.max_string_length >= 0) max = std::max<int64_t>(min, options_.max_string_length);
    if (min == 0 && (max < 0 || max == options_.max_string_length)) return string_rule();
    auto body = b_.repeat(Sequence{string_char()}, static_cast<int>(min), static_cast<int>(max));
    if (!body) return invalid(path, body.error().str());
    return b_.choice("string", {Sequence{byte('"'), *body, byte('"')}});
  }

  Expected<GrammarSymbol> compile_number(simdjson::dom::object object, const std::string& path) {
    for (const char* keyword : {"minimum", "maximum"}) {
      if (object[keyword].error() != simdjson::NO_SUCH_FIELD)
        return make_error(ErrorCode::kUnsupported, "json schema: keyword \"%s\" at %s is supported on integers only",
                          keyword, path.c_str());
    }
    return number_rule();
  }

  Expected<GrammarSymbol> compile_integer(simdjson::dom::object object, const std::string& path) {
    int64_t limit = 1;
    for (int i = 0; i < options_.max_integer_digits && i < 18; ++i) limit *= 10;
    limit -= 1;
    int64_t low = -limit, high = limit;
    for (const char* keyword : {"minimum", "maximum"}) {
      simdjson::dom::element element;
      if (object[keyword].get(element)) continue;
      double value = 0;
      if (element.get_double().get(value) || !std::isfinite(value))
        return invalid(child(path, keyword), "expected a number");
      const bool is_min = keyword[1] == 'i';
      const double rounded = is_min ? std::ceil(value) : std::floor(value);
      const double clamped = std::max(std::min(rounded, static_cast<double>(limit)), static_cast<double>(-limit));
      (is_min ? low : high) = static_cast<int64_t>(clamped);
    }
    if (low > high) return invalid(path, "no integer lies between minimum and maximum");
    if (low == -limit && high == limit) return integer_rule();
    std::vector<Sequence> alternatives;
    if (low < 0) {
      const int64_t a = high < 0 ? -high : 1;
      for (Sequence& s : decimal_range(a, -low)) {
        s.insert(s.begin(), byte('-'));
        alternatives.push_back(std::move(s));
      }
    }
    if (high >= 0) {
      for (Sequence& s : decimal_range(low > 0 ? low : 0, high)) alternatives.push_back(std::move(s));
    }
    return b_.choice("integer", std::move(alternatives));
  }

  // Decimal texts (no leading zeros) of every integer in [low, high], 0 <= low <= high.
  std::vector<Sequence> decimal_range(int64_t low, int64_t high) {
    std::vector<Sequence> out;
    const std::string low_text = std::to_string(low), high_text = std::to_string(high);
    for (size_t length = low_text.size(); length <= high_text.size(); ++length) {
      const std::string first = length == low_text.size() ? low_text : "1" + std::string(length - 1, '0');
      const std::string last = length == high_text.size() ? high_text : std::string(length, '9');
      same_length_range(first, last, Sequence(), &out);
    }
    return out;
  }
  void same_length_range(const std::string& low, const std::string& high, Sequence prefix, std::vector<Sequence>* out) {
    if (low.empty()) {
      out->push_back(std::move(prefix));
      return;
    }
    const std::string low_rest = low.substr(1), high_rest = high.substr(1);
    if (low[0] == high[0]) {
      prefix.push_back(byte(low[0]));
      same_length_range(low_rest, high_rest, std::move(prefix), out);
      return;
    }
    const std::string zeros(low_rest.size(), '0'), nines(low_rest.size(), '9');
    if (low_rest == zeros && high_rest == nines) {  // a whole block: [a-b][0-9][0-9]...
      prefix.push_back(b_.byte_range(static_cast<uint8_t>(low[0]), static_cast<uint8_t>(high[0])));
      for (size_t i = 0; i < low_rest.size(); ++i) prefix.push_back(b_.byte_range('0', '9'));
      out->push_back(std::move(prefix));
      return;
    }
    Sequence with_low = prefix;
    with_low.push_back(byte(low[0]));
    same_length_range(low_rest, nines, std::move(with_low), out);
    if (low[0] + 1 <= high[0] - 1) {
      Sequence middle = prefix;
      middle.push_back(b_.byte_range(static_cast<uint8_t>(low[0] + 1), static_cast<uint8_t>(high[0] - 1)));
      for (size_t i = 0; i < low_rest.size(); ++i) middle.push_back(b_.byte_range('0', '9'));
      out->push_back(std::move(middle));
    }
    prefix.push_back(byte(high[0]));
    same_length_range(zeros, high_rest, std::move(prefix), out);
  }

  static std::string json_string_literal(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (u < 0x20) {
        char escaped[8];
        std::snprintf(escaped, sizeof(escaped), "\\u%04x", u);
        out += escaped;
      } else {
        out += c;
      }
    }
    return out + "\"";
  }

  GrammarSymbol byte(char c) { return b_.byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)); }

 public:
  // The shared pieces, made on first use.
  GrammarSymbol whitespace() {
    if (ws_ < 0) {
      ByteSet set;
      set.add(' ');
      set.add('\t');
      set.add('\n');
      ws_ = b_.repeat(Sequence{b_.bytes(set)}, 0, options_.max_whitespace)->index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(ws_));
  }
  GrammarSymbol string_char() {
    if (string_char_ < 0) {
      const GrammarSymbol plain = b_.char_class({{'"', '"'}, {'\\', '\\'}, {0, 0x1F}}, true);
      const GrammarSymbol hex = b_.char_class({{'0', '9'}, {'a', 'f'}, {'A', 'F'}}, false);
      const GrammarSymbol simple = b_.char_class({{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', 'b'}, {'f', 'f'}, {'n', 'n'}, {'r', 'r'}, {'t', 't'}}, false);
      string_char_ = b_.choice("char", {Sequence{plain}, Sequence{byte('\\'), simple},
                                        Sequence{byte('\\'), byte('u'), hex, hex, hex, hex}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(string_char_));
  }
  GrammarSymbol string_rule() {
    if (string_ < 0) {
      auto body = b_.repeat(Sequence{string_char()}, 0, options_.max_string_length < 0 ? -1 : options_.max_string_length);
      string_ = b_.choice("string", {Sequence{byte('"'), *body, byte('"')}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(string_));
  }
  GrammarSymbol digits(int min, int max) {
    auto repeated = b_.repeat(Sequence{b_.byte_range('0', '9')}, min, max);
    return *repeated;
  }
  GrammarSymbol integer_rule() {
    if (integer_ < 0) {
      const GrammarSymbol sign = b_.choice("sign", {Sequence{byte('-')}, Sequence{}});
      const GrammarSymbol magnitude = b_.choice("digits", {Sequence{byte('0')}, Sequence{b_.byte_range('1', '9'),
                                                          digits(0, std::max(0, options_.max_integer_digits - 1))}});
      integer_ = b_.choice("integer", {Sequence{sign, magnitude}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(integer_));
  }
  GrammarSymbol number_rule() {
    if (number_ < 0) {
      const GrammarSymbol fraction =
          b_.choice("fraction", {Sequence{byte('.'), digits(1, std::max(1, options_.max_fraction_digits))}, Sequence{}});
      const GrammarSymbol exponent_sign = b_.choice("sign", {Sequence{byte('-')}, Sequence{byte('+')}, Sequence{}});
      const GrammarSymbol exponent = b_.choice(
          "exponent", {Sequence{b_.char_class({{'e', 'e'}, {'E', 'E'}}, false), exponent_sign,
                                digits(1, std::max(1, options_.max_exponent_digits))},
                       Sequence{}});
      number_ = b_.choice("number", {Sequence{integer_rule(), fraction, exponent}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(number_));
  }
  // Any JSON value: one recursive rule set, shared.
  GrammarSymbol any_value() {
    if (value_ < 0) {
      const uint32_t value = b_.new_rule("value");
      value_ = value;
      const GrammarSymbol self = GrammarBuilder::ref(value);
      const GrammarSymbol ws = whitespace();
      const GrammarSymbol more = *b_.repeat(Sequence{ws, byte(','), ws, self}, 0, more_members());
      const GrammarSymbol array = b_.choice("array", {Sequence{byte('['), ws, self, more, ws, byte(']')},
                                                      Sequence{byte('['), ws, byte(']')}});
      b_.define(value, {Sequence{members_object(self)}, Sequence{array}, Sequence{string_rule()},
                        Sequence{number_rule()}, b_.literal("true"), b_.literal("false"), b_.literal("null")});
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(value_));
  }
  GrammarSymbol any_object() {
    any_value();
    if (object_ < 0) object_ = members_object(GrammarBuilder::ref(static_cast<uint32_t>(value_))).index;
    return GrammarBuilder::ref(static_cast<uint32_t>(object_));
  }
 private:
  // How many members may follow the first in an unbounded container (-1: any number).
  int more_members() const { return options_.max_members < 0 ? -1 : std::max(0, options_.max_members - 1); }
  // {"key": value, ...} with any keys and values of one kind.
  GrammarSymbol members_object(GrammarSymbol value) {
    const GrammarSymbol ws = whitespace();
    const GrammarSymbol member = b_.choice("member", {Sequence{string_rule(), ws, byte(':'), ws, value}});
    const GrammarSymbol more = *b_.repeat(Sequence{ws, byte(','), ws, member}, 0, more_members());
    const uint32_t rule = b_.new_rule("object");
    b_.define(rule, {Sequence{byte('{'), ws, member, more, ws, byte('}')}, Sequence{byte('{'), ws, byte('}')}});
    return GrammarBuilder::ref(rule);
  }

  JsonGrammarOptions options_;
  GrammarBuilder b_;
  simdjson::dom::parser parser_;
  simdjson::dom::element root_;
  std::map<std::string, uint32_t> ref_rules_;  // by scope + pointer
  std::string ref_scope_;
  int64_t ws_ = -1, string_char_ = -1, string_ = -1, integer_ = -1, number_ = -1, value_ = -1, object_ = -1;
};

}  // namespace json_schema_detail

// The grammar of the JSON documents `schema` (JSON Schema text) accepts; see the top of this file.
inline Expected<Grammar> json_schema_grammar(std::string_view schema, const JsonGrammarOptions& options = JsonGrammarOptions()) {
  json_schema_detail::Compiler compiler(options);
  return compiler.compile_schema(schema);
}

// Any JSON object (OpenAI's response_format {"type": "json_object"}).
inline Expected<Grammar> json_object_grammar(const JsonGrammarOptions& options = JsonGrammarOptions()) {
  json_schema_detail::Compiler compiler(options);
  return compiler.compile_any_object();
}

}  // namespace bora

#endif  // BORA_TEXT_JSON_SCHEMA_HPP
