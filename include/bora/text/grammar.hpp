// Why this file exists: constrained generation takes GBNF files, JSON Schemas and an "any JSON" mode,
// and all three become this one form: rules of alternatives over byte sets and rule references. It is
// byte-level (a character class becomes its UTF-8 byte sequences here) because tokens are byte
// strings, byte-fallback tokens carry half characters, and a byte set is one 256-bit test.
// GrammarBuilder is how every front end writes rules; build() checks them once (undefined rules, left
// recursion, size), so the matcher (text/grammar_constraint.hpp) never meets a grammar it can loop on.
#ifndef BORA_TEXT_GRAMMAR_HPP
#define BORA_TEXT_GRAMMAR_HPP

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"

namespace bora {

struct ByteSet {
  uint64_t words[4] = {0, 0, 0, 0};

  bool has(uint8_t byte) const { return (words[byte >> 6] >> (byte & 63)) & 1u; }
  void add(uint8_t byte) { words[byte >> 6] |= uint64_t{1} << (byte & 63); }
  void add_range(uint8_t low, uint8_t high) {
    for (unsigned b = low; b <= high; ++b) add(static_cast<uint8_t>(b));
  }
  bool operator==(const ByteSet& other) const {
    return words[0] == other.words[0] && words[1] == other.words[1] && words[2] == other.words[2] &&
           words[3] == other.words[3];
  }
};

// One item of an alternative: a byte from a set, or a whole rule.
struct GrammarSymbol {
  enum Kind : uint8_t { kBytes, kRule };
  Kind kind = kBytes;
  uint32_t index = 0;  // into the byte sets or the rules
};

// Work and size limits, so a hostile grammar or schema gets an error instead of eating the machine.
struct GrammarLimits {
  static constexpr size_t kMaxElements = size_t{1} << 22;
  static constexpr size_t kMaxRules = size_t{1} << 20;
  static constexpr int kMaxRepetition = 100000;  // the n of x{m,n}
};

// A checked grammar, flattened: each rule's alternatives are runs of elements in one array, each run
// closed by kEnd, so a parse position is one index.
class Grammar {
 public:
  enum class ElementKind : uint8_t { kBytes, kRule, kEnd };
  struct Element {
    ElementKind kind;
    uint32_t index;  // byte set or rule
  };

  const std::vector<Element>& elements() const { return elements_; }
  const ByteSet& byte_set(uint32_t index) const { return byte_sets_[index]; }
  size_t byte_set_count() const { return byte_sets_.size(); }
  // Where each alternative of `rule` starts in elements().
  const std::vector<uint32_t>& alternatives(uint32_t rule) const { return alternatives_[rule]; }
  uint32_t root() const { return root_; }
  size_t rule_count() const { return names_.size(); }
  const std::string& rule_name(uint32_t rule) const { return names_[rule]; }

 private:
  friend class GrammarBuilder;
  std::vector<Element> elements_;
  std::vector<ByteSet> byte_sets_;
  std::vector<std::vector<uint32_t>> alternatives_;
  std::vector<std::string> names_;
  uint32_t root_ = 0;
};

class GrammarBuilder {
 public:
  using Sequence = std::vector<GrammarSymbol>;
  struct CodepointRange {
    uint32_t first, last;
  };

  // The rule called `name`, declared on first use (a reference before the definition is fine).
  uint32_t rule(const std::string& name) {
    auto found = by_name_.find(name);
    if (found != by_name_.end()) return found->second;
    const uint32_t id = static_cast<uint32_t>(rules_.size());
    rules_.push_back(RuleDraft{name, {}, false});
    by_name_.emplace(name, id);
    return id;
  }
  // A new rule with a name no user rule has (for the parts front ends make up: repetitions, groups).
  // Never looked up by name, so it stays out of by_name_: x{0,100000} makes 100,000 of them.
  uint32_t new_rule(const std::string& hint) {
    const uint32_t id = static_cast<uint32_t>(rules_.size());
    rules_.push_back(RuleDraft{hint + " #" + std::to_string(id), {}, false});
    return id;
  }
  bool is_defined(uint32_t rule) const { return rules_[rule].defined; }
  const std::string& name(uint32_t rule) const { return rules_[rule].name; }
  size_t rule_count() const { return rules_.size(); }

  void define(uint32_t rule, std::vector<Sequence> alternatives) {
    for (const Sequence& s : alternatives) symbol_count_ += s.size() + 1;
    rules_[rule].alternatives = std::move(alternatives);
    rules_[rule].defined = true;
  }
  // A rule defined on the spot: the alternatives as one symbol.
  GrammarSymbol choice(const std::string& hint, std::vector<Sequence> alternatives) {
    if (alternatives.size() == 1 && alternatives[0].size() == 1) return alternatives[0][0];
    const uint32_t id = new_rule(hint);
    define(id, std::move(alternatives));
    return ref(id);
  }
  static GrammarSymbol ref(uint32_t rule) { return GrammarSymbol{GrammarSymbol::kRule, rule}; }

  GrammarSymbol bytes(const ByteSet& set) {
    const std::string key(reinterpret_cast<const char*>(set.words), sizeof(set.words));
    auto found = set_index_.find(key);
    if (found != set_index_.end()) return GrammarSymbol{GrammarSymbol::kBytes, found->second};
    const uint32_t index = static_cast<uint32_t>(byte_sets_.size());
    byte_sets_.push_back(set);
    set_index_.emplace(key, index);
    return GrammarSymbol{GrammarSymbol::kBytes, index};
  }
  GrammarSymbol byte_range(uint8_t low, uint8_t high) {
    ByteSet set;
    set.add_range(low, high);
    return bytes(set);
  }
  // The UTF-8 bytes of `text`, one symbol each.
  void append_literal(Sequence* out, std::string_view text) {
    for (const char c : text) out->push_back(byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)));
  }
  Sequence literal(std::string_view text) {
    Sequence out;
    append_literal(&out, text);
    return out;
  }

  // Any one of `texts`, as a trie of rules (shared prefixes once), so a 10,000-value enum keeps the
  // matcher's stack sets small.
  GrammarSymbol literals(const std::string& hint, std::vector<std::string> texts) {
    std::sort(texts.begin(), texts.end());
    texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
    return choice(hint, literal_trie(hint, texts, 0, texts.size(), 0, 0));
  }

  // One code point from `ranges` (or, negated, any code point outside them), as UTF-8 byte sequences.
  GrammarSymbol char_class(std::vector<CodepointRange> ranges, bool negated) {
    std::vector<CodepointRange> set = normalize(std::move(ranges));
    if (negated) set = complement(set);
    std::vector<Sequence> alternatives;
    // ASCII first, merged into one byte set: the common case stays one symbol.
    ByteSet ascii;
    bool any_ascii = false;
    for (const CodepointRange& r : set) {
      if (r.first > 0x7F) continue;
      ascii.add_range(static_cast<uint8_t>(r.first), static_cast<uint8_t>(r.last < 0x7F ? r.last : 0x7F));
      any_ascii = true;
    }
    if (any_ascii) alternatives.push_back(Sequence{bytes(ascii)});
    for (const CodepointRange& r : set) {
      if (r.last < 0x80) continue;
      append_utf8_sequences(r.first < 0x80 ? 0x80 : r.first, r.last, &alternatives);
    }
    if (alternatives.empty()) {  // an empty class matches nothing: a set no byte is in
      return bytes(ByteSet());
    }
    return choice("class", std::move(alternatives));
  }

  // item{min,max}; max < 0 means unbounded. Nested optionals (x (x (x)?)?)? keep each step one choice.
  Expected<GrammarSymbol> repeat(const Sequence& item, int min, int max) {
    if (min < 0 || (max >= 0 && max < min) || min > GrammarLimits::kMaxRepetition ||
        max > GrammarLimits::kMaxRepetition) {
      return make_error(ErrorCode::kUnsupported, "repetition {%d,%d} is outside 0..%d", min, max,
                        GrammarLimits::kMaxRepetition);
    }
    const GrammarSymbol one = choice("item", {item});
    Sequence sequence(static_cast<size_t>(min), one);
    if (max < 0) {
      const uint32_t star = new_rule("star");
      define(star, {Sequence{one, ref(star)}, Sequence{}});
      sequence.push_back(ref(star));
    } else if (max > min) {
      uint32_t tail = new_rule("opt");
      define(tail, {Sequence{one}, Sequence{}});
      for (int i = min + 1; i < max; ++i) {
        const uint32_t outer = new_rule("opt");
        define(outer, {Sequence{one, ref(tail)}, Sequence{}});
        tail = outer;
      }
      sequence.push_back(ref(tail));
    }
    const uint32_t id = new_rule("repeat");
    define(id, {std::move(sequence)});
    return ref(id);
  }

  // Checks and flattens. `what` starts the error messages ("gbnf", "json schema").
  Expected<Grammar> build(uint32_t root, const char* what) const {
    if (rules_.size() > GrammarLimits::kMaxRules || symbol_count_ > GrammarLimits::kMaxElements) {
      return make_error(ErrorCode::kUnsupported, "%s: the grammar is too large (%zu rules, %zu symbols)", what,
                        rules_.size(), symbol_count_);
    }
    for (const RuleDraft& r : rules_) {
      if (!r.defined) return make_error(ErrorCode::kInvalidArgument, "%s: rule \"%s\" is used but never defined", what, r.name.c_str());
    }
    BORA_RETURN_IF_ERROR(check_left_recursion(what));
    Grammar grammar;
    grammar.byte_sets_ = byte_sets_;
    grammar.root_ = root;
    grammar.alternatives_.resize(rules_.size());
    grammar.names_.reserve(rules_.size());
    grammar.elements_.reserve(symbol_count_);
    for (size_t r = 0; r < rules_.size(); ++r) {
      grammar.names_.push_back(rules_[r].name);
      for (const Sequence& alternative : rules_[r].alternatives) {
        grammar.alternatives_[r].push_back(static_cast<uint32_t>(grammar.elements_.size()));
        for (const GrammarSymbol& s : alternative) {
          grammar.elements_.push_back(Grammar::Element{
              s.kind == GrammarSymbol::kBytes ? Grammar::ElementKind::kBytes : Grammar::ElementKind::kRule, s.index});
        }
        grammar.elements_.push_back(Grammar::Element{Grammar::ElementKind::kEnd, 0});
      }
    }
    return grammar;
  }

 private:
  struct RuleDraft {
    std::string name;
    std::vector<Sequence> alternatives;
    bool defined;
  };

  // Alternatives for texts[begin, end) (sorted, unique) from byte `depth` on.
  std::vector<Sequence> literal_trie(const std::string& hint, const std::vector<std::string>& texts, size_t begin,
                                     size_t end, size_t depth, int nesting) {
    std::vector<Sequence> alternatives;
    if (nesting > 200) {  // deep branching (a, aa, aaa, ...): plain alternatives for the rest
      for (size_t i = begin; i < end; ++i) alternatives.push_back(literal(std::string_view(texts[i]).substr(depth)));
      return alternatives;
    }
    size_t i = begin;
    if (i < end && texts[i].size() == depth) alternatives.push_back(Sequence{}), ++i;  // sorted: the shortest first
    while (i < end) {
      size_t j = i + 1;
      while (j < end && texts[j][depth] == texts[i][depth]) ++j;
      // The group's common prefix is written at once.
      size_t common = texts[i].size();
      for (size_t k = i + 1; k < j; ++k) {
        size_t c = depth;
        while (c < common && c < texts[k].size() && texts[k][c] == texts[i][c]) ++c;
        common = c;
      }
      Sequence sequence = literal(std::string_view(texts[i]).substr(depth, common - depth));
      if (j - i > 1 || texts[i].size() > common) {
        sequence.push_back(choice(hint, literal_trie(hint, texts, i, j, common, nesting + 1)));
      }
      alternatives.push_back(std::move(sequence));
      i = j;
    }
    return alternatives;
  }

  static std::vector<CodepointRange> normalize(std::vector<CodepointRange> ranges) {
    std::vector<CodepointRange> out;
    for (CodepointRange& r : ranges) {
      if (r.last > 0x10FFFF) r.last = 0x10FFFF;
      if (r.first <= r.last) out.push_back(r);
    }
    for (size_t i = 1; i < out.size(); ++i) {  // insertion sort: classes are short
      for (size_t j = i; j > 0 && out[j].first < out[j - 1].first; --j) std::swap(out[j], out[j - 1]);
    }
    std::vector<CodepointRange> merged;
    for (const CodepointRange& r : out) {
      if (!merged.empty() && r.first <= merged.back().last + 1) {
        if (r.last > merged.back().last) merged.back().last = r.last;
      } else {
        merged.push_back(r);
      }
    }
    return merged;
  }

  static std::vector<CodepointRange> complement(const std::vector<CodepointRange>& sorted) {
    std::vector<CodepointRange> out;
    uint32_t next = 0;
    for (const CodepointRange& r : sorted) {
      if (r.first > next) out.push_back(CodepointRange{next, r.first - 1});
      next = r.last + 1;
    }
    if (next <= 0x10FFFF) out.push_back(CodepointRange{next, 0x10FFFF});
    return out;
  }

  static int utf8_encode(uint32_t cp, uint8_t* out) {
    if (cp < 0x80) { out[0] = static_cast<uint8_t>(cp); return 1; }
    if (cp < 0x800) {
      out[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
      out[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
      return 2;
    }
    if (cp < 0x10000) {
      out[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
      out[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
      out[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
      return 3;
    }
    out[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
    out[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 4;
  }

  // Code points first..last (all >= 0x80) as byte-range sequences: split where the encoded length
  // changes, skip surrogates, then split until every byte position ranges independently.
  void append_utf8_sequences(uint32_t first, uint32_t last, std::vector<Sequence>* out) {
    static const uint32_t kLengthEnds[] = {0x7FF, 0xFFFF, 0x10FFFF};
    if (first <= 0xDFFF && last >= 0xD800) {  // surrogates are not characters
      if (first < 0xD800) append_utf8_sequences(first, 0xD7FF, out);
      if (last > 0xDFFF) append_utf8_sequences(0xE000, last, out);
      return;
    }
    for (const uint32_t end : kLengthEnds) {
      if (first <= end && last > end) {
        append_utf8_sequences(first, end, out);
        append_utf8_sequences(end + 1, last, out);
        return;
      }
    }
    for (int i = 1; i < 4; ++i) {
      const uint32_t low_mask = (uint32_t{1} << (6 * i)) - 1;
      if ((first & ~low_mask) != (last & ~low_mask)) {
        if ((first & low_mask) != 0) {
          append_utf8_sequences(first, first | low_mask, out);
          append_utf8_sequences((first | low_mask) + 1, last, out);
          return;
        }
        if ((last & low_mask) != low_mask) {
          append_utf8_sequences(first, (last & ~low_mask) - 1, out);
          append_utf8_sequences(last & ~low_mask, last, out);
          return;
        }
      }
    }
    uint8_t a[4], b[4];
    const int n = utf8_encode(first, a);
    utf8_encode(last, b);
    Sequence sequence;
    for (int i = 0; i < n; ++i) sequence.push_back(byte_range(a[i], b[i]));
    out->push_back(std::move(sequence));
  }

  // A rule that can start with itself (directly or through rules that may match nothing) would send
  // a top-down matcher into a loop; refuse it, naming the rule.
  Status check_left_recursion(const char* what) const {
    const size_t n = rules_.size();
    std::vector<uint8_t> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const Sequence& alternative : rules_[r].alternatives) {
          bool all = true;
          for (const GrammarSymbol& s : alternative) {
            if (s.kind == GrammarSymbol::kBytes || !nullable[s.index]) { all = false; break; }
          }
          if (all) { nullable[r] = 1; changed = true; break; }
        }
      }
    }
    std::vector<std::vector<uint32_t>> starts(n);  // rules each rule can begin with
    for (size_t r = 0; r < n; ++r) {
      for (const Sequence& alternative : rules_[r].alternatives) {
        for (const GrammarSymbol& s : alternative) {
          if (s.kind == GrammarSymbol::kBytes) break;
          starts[r].push_back(s.index);
          if (!nullable[s.index]) break;
        }
      }
    }
    // Iterative depth-first search (grammars from long repetitions are deep).
    std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
    std::vector<std::pair<uint32_t, size_t>> path;
    for (size_t start = 0; start < n; ++start) {
      if (color[start]) continue;
      path.push_back({static_cast<uint32_t>(start), 0});
      color[start] = 1;
      while (!path.empty()) {
        auto& top = path.back();
        if (top.second == starts[top.first].size()) {
          color[top.first] = 2;
          path.pop_back();
          continue;
        }
        const uint32_t next = starts[top.first][top.second++];
        if (color[next] == 1) {
          return make_error(ErrorCode::kUnsupported,
                            "%s: rule \"%s\" is left-recursive (it can begin with itself); write it right-recursive or with * / +",
                            what, display_name(next).c_str());
        }
        if (color[next] == 0) {
          color[next] = 1;
          path.push_back({next, 0});
        }
      }
    }
    return Status();
  }

  // Made-up rules carry " #" (no user rule name can); errors say what they stand for.
  std::string display_name(uint32_t rule) const {
    const std::string& name = rules_[rule].name;
    const size_t hash = name.find(" #");
    return hash == std::string::npos ? name : "a group or repetition (" + name + ")";
  }

  std::vector<RuleDraft> rules_;
  std::unordered_map<std::string, uint32_t> by_name_;
  std::vector<ByteSet> byte_sets_;
  std::unordered_map<std::string, uint32_t> set_index_;  // the set's 32 bytes -> its index
  size_t symbol_count_ = 0;
};

}  // namespace bora

#endif  // BORA_TEXT_GRAMMAR_HPP
