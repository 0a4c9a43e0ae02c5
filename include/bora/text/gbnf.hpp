// Why this file exists: llama.cpp's GBNF is the grammar format people already write (and share) for
// constrained generation; this reads it into a bora Grammar, with errors that give the line and column.
// Syntax: `name ::= alternatives`, `|`, "literals", [classes] ([^...] negated, a-z ranges), `.` (any
// character), ( groups ), postfix * + ? {m} {m,} {m,n}, # comments; escapes \n \r \t \\ \" \' \[ \]
// \xHH \uHHHH \UHHHHHHHH. A rule ends at a newline outside parentheses, unless the next line begins
// with `|`. The start rule is `root`.
#ifndef BORA_TEXT_GBNF_HPP
#define BORA_TEXT_GBNF_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/text/grammar.hpp"

namespace bora {

namespace gbnf_detail {

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Expected<Grammar> parse() {
    skip_space(true);
    while (pos_ < text_.size()) {
      BORA_RETURN_IF_ERROR(parse_rule());
      skip_space(true);
    }
    if (!has_root_) return make_error(ErrorCode::kInvalidArgument, "gbnf: no rule named \"root\" (the start rule)");
    for (size_t r = 0; r < builder_.rule_count(); ++r) {
      if (!builder_.is_defined(static_cast<uint32_t>(r))) {
        const std::string& name = builder_.name(static_cast<uint32_t>(r));
        return make_error(ErrorCode::kInvalidArgument, "gbnf: rule \"%s\" is used (line %d) but never defined",
                          name.c_str(), first_use_line(name));
      }
    }
    return builder_.build(builder_.rule("root"), "gbnf");
  }

 private:
  static constexpr int kMaxNesting = 128;

  Status parse_rule() {
    const size_t name_start = pos_;
    const std::string name = parse_name();
    if (name.empty()) return fail("expected a rule name");
    skip_space(false);
    if (text_.compare(pos_, 3, "::=") != 0) {
      pos_ = name_start;
      return fail("expected \"::=\" after the rule name \"" + name + "\"");
    }
    pos_ += 3;
    const uint32_t id = builder_.rule(name);
    if (builder_.is_defined(id)) {
      pos_ = name_start;
      return fail("rule \"" + name + "\" is defined twice");
    }
    if (name == "root") has_root_ = true;
    std::vector<GrammarBuilder::Sequence> alternatives;
    BORA_RETURN_IF_ERROR(parse_alternatives(&alternatives, 0));
    builder_.define(id, std::move(alternatives));
    skip_space(false);
    if (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\r') return fail("unexpected character");
    return Status();
  }

  // Alternatives separated by '|'. At nesting 0 a newline ends the rule unless the next line starts with '|'.
  Status parse_alternatives(std::vector<GrammarBuilder::Sequence>* out, int nesting) {
    if (nesting > kMaxNesting) return fail("parentheses nested deeper than 128");
    skip_space(true);  // a rule's body may begin on the next line
    for (;;) {
      GrammarBuilder::Sequence sequence;
      BORA_RETURN_IF_ERROR(parse_sequence(&sequence, nesting));
      out->push_back(std::move(sequence));
      const size_t before = pos_;
      skip_space(true);
      if (pos_ < text_.size() && text_[pos_] == '|') {
        ++pos_;
        skip_space(true);
        continue;
      }
      if (nesting == 0) pos_ = before;  // the newline ends the rule
      return Status();
    }
  }

  Status parse_sequence(GrammarBuilder::Sequence* out, int nesting) {
    for (;;) {
      skip_space(nesting > 0);
      if (pos_ >= text_.size()) return Status();
      const char c = text_[pos_];
      const size_t item_start = out->size();
      if (c == '"') {
        ++pos_;
        std::string bytes;
        while (pos_ < text_.size() && text_[pos_] != '"') {
          uint32_t cp = 0;
          BORA_RETURN_IF_ERROR(parse_char(&cp));
          append_utf8(cp, &bytes);
        }
        if (pos_ >= text_.size()) return fail("unterminated string literal");
        ++pos_;
        if (bytes.empty()) continue;  // "" matches nothing and is nothing
        GrammarBuilder::Sequence literal = builder_.literal(bytes);
        if (literal.size() == 1) out->push_back(literal[0]);
        else out->push_back(builder_.choice("literal", {std::move(literal)}));
      } else if (c == '[') {
        ++pos_;
        bool negated = false;
        if (pos_ < text_.size() && text_[pos_] == '^') { negated = true; ++pos_; }
        std::vector<GrammarBuilder::CodepointRange> ranges;
        while (pos_ < text_.size() && text_[pos_] != ']') {
          uint32_t first = 0, last = 0;
          BORA_RETURN_IF_ERROR(parse_char(&first));
          last = first;
          if (pos_ + 1 < text_.size() && text_[pos_] == '-' && text_[pos_ + 1] != ']') {
            ++pos_;
            BORA_RETURN_IF_ERROR(parse_char(&last));
            if (last < first) return fail("character range is backwards");
          }
          ranges.push_back(GrammarBuilder::CodepointRange{first, last});
        }
        if (pos_ >= text_.size()) return fail("unterminated character class");
        ++pos_;
        out->push_back(builder_.char_class(std::move(ranges), negated));
      } else if (c == '.') {
        ++pos_;
        out->push_back(builder_.char_class({}, true));
      } else if (c == '(') {
        ++pos_;
        std::vector<GrammarBuilder::Sequence> group;
        BORA_RETURN_IF_ERROR(parse_alternatives(&group, nesting + 1));
        skip_space(true);
        if (pos_ >= text_.size() || text_[pos_] != ')') return fail("expected ')'");
        ++pos_;
        out->push_back(builder_.choice("group", std::move(group)));
      } else if (is_name_char(c)) {
        const size_t start = pos_;
        const std::string name = parse_name();
        // `name ::=` on this line means we ran into the next rule: the sequence ends before it.
        const size_t after = pos_;
        skip_space(false);
        if (text_.compare(pos_, 3, "::=") == 0) {
          pos_ = start;
          return fail("missing newline before the rule \"" + name + "\"");
        }
        pos_ = after;
        if (uses_.size() < 4096) uses_.emplace_back(name, line_of(start));
        out->push_back(GrammarBuilder::ref(builder_.rule(name)));
      } else {
        return Status();  // '|', ')', a newline, or something the caller reports
      }
      BORA_RETURN_IF_ERROR(parse_postfix(out, item_start));
    }
  }

  Status parse_postfix(GrammarBuilder::Sequence* out, size_t item_start) {
    if (item_start >= out->size() || pos_ >= text_.size()) return Status();
    const char c = text_[pos_];
    int min = 0, max = -1;
    if (c == '*') { ++pos_; }
    else if (c == '+') { ++pos_; min = 1; }
    else if (c == '?') { ++pos_; max = 1; }
    else if (c == '{') {
      ++pos_;
      BORA_RETURN_IF_ERROR(parse_count(&min));
      max = min;
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        skip_space(false);
        max = -1;
        if (pos_ < text_.size() && text_[pos_] != '}') BORA_RETURN_IF_ERROR(parse_count(&max));
      }
      skip_space(false);
      if (pos_ >= text_.size() || text_[pos_] != '}') return fail("expected '}' to close the repetition");
      ++pos_;
    } else {
      return Status();
    }
    const GrammarBuilder::Sequence item(out->begin() + static_cast<std::ptrdiff_t>(item_start), out->end());
    out->resize(item_start);
    auto repeated = builder_.repeat(item, min, max);
    if (!repeated) return fail(repeated.error().str());
    out->push_back(*repeated);
    if (pos_ < text_.size() && (text_[pos_] == '*' || text_[pos_] == '+' || text_[pos_] == '?' || text_[pos_] == '{'))
      return fail("two repetition operators in a row (group the first one in parentheses)");
    return Status();
  }

  Status parse_count(int* out) {
    skip_space(false);
    long value = 0;
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      value = value * 10 + (text_[pos_] - '0');
      if (value > GrammarLimits::kMaxRepetition) return fail("repetition count too large");
      ++pos_;
    }
    if (pos_ == start) return fail("expected a number in the repetition");
    skip_space(false);
    *out = static_cast<int>(value);
    return Status();
  }

  // One character of a literal or class, escapes decoded; UTF-8 input is read as one code point.
  Status parse_char(uint32_t* out) {
    const uint8_t c = static_cast<uint8_t>(text_[pos_]);
    if (c == '\\') {
      if (pos_ + 1 >= text_.size()) return fail("escape at the end of the input");
      const char e = text_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case 'n': *out = '\n'; return Status();
        case 'r': *out = '\r'; return Status();
        case 't': *out = '\t'; return Status();
        case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/':
          *out = static_cast<uint8_t>(e);
          return Status();
        case 'x': return parse_hex(2, out);
        case 'u': return parse_hex(4, out);
        case 'U': return parse_hex(8, out);
        default: pos_ -= 2; return fail(std::string("unknown escape \\") + e);
      }
    }
    if (c < 0x80) {
      ++pos_;
      *out = c;
      return Status();
    }
    int length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (length == 0 || pos_ + static_cast<size_t>(length) > text_.size()) return fail("malformed UTF-8");
    uint32_t cp = c & (0x7F >> length);
    for (int i = 1; i < length; ++i) {
      const uint8_t next = static_cast<uint8_t>(text_[pos_ + static_cast<size_t>(i)]);
      if ((next & 0xC0) != 0x80) return fail("malformed UTF-8");
      cp = (cp << 6) | (next & 0x3F);
    }
    pos_ += static_cast<size_t>(length);
    *out = cp;
    return Status();
  }

  Status parse_hex(int digits, uint32_t* out) {
    uint32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      if (pos_ >= text_.size()) return fail("short hex escape");
      const char h = text_[pos_];
      int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
      if (v < 0) return fail("expected a hex digit");
      value = value * 16 + static_cast<uint32_t>(v);
      ++pos_;
    }
    if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return fail("escape is not a Unicode character");
    *out = value;
    return Status();
  }

  static void append_utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  }
  std::string parse_name() {
    const size_t start = pos_;
    while (pos_ < text_.size() && is_name_char(text_[pos_])) ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }

  // Spaces, tabs and comments; newlines too when `newlines`.
  void skip_space(bool newlines) {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  int line_of(size_t offset) const {
    int line = 1;
    for (size_t i = 0; i < offset && i < text_.size(); ++i) line += text_[i] == '\n';
    return line;
  }
  int first_use_line(const std::string& name) const {
    for (const auto& use : uses_)
      if (use.first == name) return use.second;
    return 0;
  }

  Error fail(const std::string& what) const {
    const int line = line_of(pos_);
    size_t line_start = pos_;
    while (line_start > 0 && text_[line_start - 1] != '\n') --line_start;
    return make_error(ErrorCode::kInvalidArgument, "gbnf line %d column %zu: %s", line, pos_ - line_start + 1,
                      what.c_str());
  }

  std::string_view text_;
  size_t pos_ = 0;
  GrammarBuilder builder_;
  bool has_root_ = false;
  std::vector<std::pair<std::string, int>> uses_;  // rule references and their lines, for errors
};

}  // namespace gbnf_detail

// Reads a GBNF grammar (llama.cpp's format); the error names the line and column, or the rule.
inline Expected<Grammar> parse_gbnf(std::string_view text) {
  gbnf_detail::Parser parser(text);
  return parser.parse();
}

}  // namespace bora

#endif  // BORA_TEXT_GBNF_HPP
