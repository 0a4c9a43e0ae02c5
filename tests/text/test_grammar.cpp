// Why this file exists: the constraint engine's promises short of a model: GBNF and JSON Schema compile
// (or fail with an error naming the line, the keyword and its path), the matcher accepts exactly the
// texts of the language, hostile inputs get errors or bounded work, and the token mask the trie walk
// computes equals the brute-force answer (each token's bytes run through the grammar alone).
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "bora/text/gbnf.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "bora/text/json_schema.hpp"
#include "../support/demo_model.hpp"
#include "../support/golden.hpp"

namespace {

const bora::Tokenizer& demo_tokenizer() { return *bora_test::demo_model().tokenizer(); }

std::shared_ptr<const bora::GrammarConstraint> constrain(bora::Expected<bora::Grammar> grammar) {
  REQUIRE_MESSAGE(grammar, (grammar ? "" : grammar.error().str()));
  auto constraint = bora::GrammarConstraint::create(std::move(*grammar), demo_tokenizer());
  REQUIRE_MESSAGE(constraint, (constraint ? "" : constraint.error().str()));
  return *constraint;
}

// True when `text` is a complete sentence of the grammar.
bool matches(const std::shared_ptr<const bora::GrammarConstraint>& constraint, const std::string& text) {
  bora::GrammarMatcher matcher(constraint);
  return matcher.accept_text(text) && matcher.is_complete();
}
bool is_prefix(const std::shared_ptr<const bora::GrammarConstraint>& constraint, const std::string& text) {
  bora::GrammarMatcher matcher(constraint);
  return matcher.accept_text(text);
}

std::string error_of(const bora::Expected<bora::Grammar>& grammar) { return grammar ? std::string() : grammar.error().str(); }

const char* const kArithmetic = R"gbnf(# arithmetic, right-recursive
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= number | "(" expr ")"
number ::= [0-9]+
)gbnf";

const char* const kList = R"gbnf(root ::= item+
item ::= "- " [^\n]+ "\n"
)gbnf";

const char* const kJson = R"gbnf(root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
)gbnf";

}  // namespace

TEST_CASE("gbnf: arithmetic, lists and a small JSON grammar accept their language and nothing else") {
  auto arithmetic = constrain(bora::parse_gbnf(kArithmetic));
  CHECK(matches(arithmetic, "1+2*(3-4)/5"));
  CHECK(matches(arithmetic, "((7))"));
  CHECK_FALSE(matches(arithmetic, "1+"));
  CHECK(is_prefix(arithmetic, "1+"));
  CHECK_FALSE(is_prefix(arithmetic, "1++"));
  CHECK_FALSE(is_prefix(arithmetic, ")"));

  auto list = constrain(bora::parse_gbnf(kList));
  CHECK(matches(list, "- eggs\n- milk \xC3\xA9t\xC3\xA9\n"));
  CHECK_FALSE(matches(list, "- eggs"));
  CHECK_FALSE(is_prefix(list, "* eggs"));

  auto json = constrain(bora::parse_gbnf(kJson));
  CHECK(matches(json, "{\"a\": [1, 2.5e3, \"x\\n\"], \"b\": {\"c\": null}}"));
  CHECK(matches(json, "{}"));
  CHECK_FALSE(is_prefix(json, "{\"a\" 1"));
  CHECK_FALSE(is_prefix(json, "[1]"));
}

TEST_CASE("gbnf: classes, escapes, any character and bounded repetition, byte by byte in UTF-8") {
  auto g = constrain(bora::parse_gbnf("root ::= [a-c\\u00e9\\U0001F600]{2,3} . \"\\x41\" [^a-z]"));
  CHECK(matches(g, "ab\xE2\x82\xAC" "A!"));                 // "ab€A!": '.' is any character, in UTF-8
  CHECK(matches(g, "\xC3\xA9\xF0\x9F\x98\x80" "cxA\xC3\x89"));  // é😀c x A É
  CHECK_FALSE(is_prefix(g, "a"  "\xC3\xA8"));                // è is not in the class
  CHECK_FALSE(is_prefix(g, "abcd" "A" "b"));
  CHECK(is_prefix(g, "a\xC3"));                              // half a character is a prefix
  CHECK_FALSE(is_prefix(g, "a\xC3\x28"));                    // malformed UTF-8 never is
}

TEST_CASE("gbnf: errors name the line and column, the undefined rule, the left recursion") {
  CHECK(error_of(bora::parse_gbnf("root ::= \"a\"\nfoo ::= bar")).find("rule \"bar\" is used (line 2) but never defined") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("start ::= \"a\"")).find("no rule named \"root\"") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= \"a\n")).find("unterminated string literal") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= [a-")).find("unterminated character class") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= \"a\"\nroot ::= \"b\"")).find("line 2 column 1: rule \"root\" is defined twice") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]")).find("\"expr\" is left-recursive") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= a\na ::= b? a \"x\"\nb ::= \"y\"")).find("left-recursive") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= (\"a\"?)*")).find("left-recursive") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= \"a\"{1,9999999}")).find("repetition count too large") != std::string::npos);
  CHECK(error_of(bora::parse_gbnf("root ::= \"\\q\"")).find("unknown escape") != std::string::npos);
  std::string deep = "root ::= " + std::string(5000, '(') + "\"a\"" + std::string(5000, ')');
  CHECK(error_of(bora::parse_gbnf(deep)).find("nested deeper") != std::string::npos);
}

TEST_CASE("json schema: the subset compiles to exactly its documents") {
  auto person = constrain(bora::json_schema_grammar(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "minLength": 1, "maxLength": 4},
      "age": {"type": "integer", "minimum": -5, "maximum": 130},
      "mood": {"enum": ["calm", "angry", 3, null]},
      "tags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
      "pos": {"$ref": "#/$defs/point"},
      "kind": {"const": "npc"},
      "either": {"anyOf": [{"type": "null"}, {"type": "number"}]}
    },
    "required": ["name", "kind"],
    "additionalProperties": false,
    "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}
  })"));
  CHECK(matches(person, R"({"name":"Ann","kind":"npc"})"));
  CHECK(matches(person, "{ \"name\" : \"\xC3\xA9t\xC3\xA9\",\n  \"age\": 130, \"kind\":\"npc\"}"));
  CHECK(matches(person, R"({"name":"a\"b","age":-5,"mood":3,"tags":[true,false],"pos":{"x":-1,"y":20},"kind":"npc","either":-1.5e3})"));
  CHECK_FALSE(is_prefix(person, R"({"age":)"));                   // properties come in order: name first
  CHECK_FALSE(is_prefix(person, R"({"name":"")"));                 // minLength 1
  CHECK_FALSE(is_prefix(person, R"({"name":"abcde)"));             // maxLength 4
  CHECK_FALSE(is_prefix(person, R"({"name":"a","age":131)"));      // maximum
  CHECK_FALSE(is_prefix(person, R"({"name":"a","age":-6)"));       // minimum
  CHECK_FALSE(is_prefix(person, R"({"name":"a","age":007)"));      // no leading zeros
  CHECK_FALSE(is_prefix(person, R"({"name":"a","tags":[])"));      // minItems 1
  CHECK_FALSE(is_prefix(person, R"({"name":"a","tags":[true,true,)"));  // maxItems 2
  CHECK_FALSE(is_prefix(person, R"({"name":"a","kind":"pc)"));
  CHECK_FALSE(matches(person, R"({"name":"a"})"));                 // kind is required
  CHECK_FALSE(is_prefix(person, R"({"name":"a","kind":"npc","extra")"));

  auto any_object = constrain(bora::json_object_grammar());
  CHECK(matches(any_object, R"({"a":[1,{"b":null}],"c":"d","e":true})"));
  CHECK_FALSE(is_prefix(any_object, "[1]"));
  CHECK_FALSE(matches(any_object, "{\"a\":1} "));  // the value ends the output: EOS only

  auto recursive = constrain(bora::json_schema_grammar(R"({"$ref": "#/$defs/node", "$defs": {"node": {
    "type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
    "required": ["v"], "additionalProperties": false}}})"));
  CHECK(matches(recursive, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]})"));
}

TEST_CASE("json schema: errors name the keyword and its JSON pointer") {
  CHECK(error_of(bora::json_schema_grammar(R"({"type":"object","properties":{"name":{"type":"string","pattern":"^a"}}})"))
            .find("keyword \"pattern\" at #/properties/name is not supported") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"oneOf":[{"type":"string"}]})")).find("keyword \"oneOf\" at #") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"type":"number","minimum":0})")).find("\"minimum\" at # is supported on integers only") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"type":"strin"})")).find("#/type: unknown type \"strin\"") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"type":"array","items":{"type":"string","maxLength":-1}})")).find("#/items/maxLength") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"$ref":"#/$defs/missing"})")).find("does not exist") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"$ref":"http://example.com/s.json"})")).find("only #/$defs/") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"type":"integer","minimum":5,"maximum":4})")).find("no integer") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar(R"({"type":"object","required":["a"],"additionalProperties":false})"))
            .find("#/required: \"a\" is required but not in properties") != std::string::npos);
  CHECK(error_of(bora::json_schema_grammar("{not json")).find("not valid JSON") != std::string::npos);
  // A $ref cycle that consumes nothing is left recursion.
  CHECK(error_of(bora::json_schema_grammar(R"({"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/b"},"b":{"anyOf":[{"$ref":"#/$defs/a"}]}}})"))
            .find("left-recursive") != std::string::npos);
}

TEST_CASE("hostile schemas and grammars get errors or bounded work") {
  std::string deep;
  for (int i = 0; i < 500; ++i) deep += R"({"type":"array","items":)";
  deep += "{}" + std::string(500, '}');
  CHECK(error_of(bora::json_schema_grammar(deep)).find("nested deeper than 64") != std::string::npos);

  std::string huge_enum = R"({"enum":[)";
  for (int i = 0; i < 20000; ++i) huge_enum += (i ? ",\"v" : "\"v") + std::to_string(i) + "\"";
  huge_enum += "]}";
  const auto start = std::chrono::steady_clock::now();
  auto many = constrain(bora::json_schema_grammar(huge_enum));
  bora::GrammarMatcher matcher(many);
  CHECK(matcher.allowed_tokens().size() == many->mask_words());
  CHECK(matches(many, "\"v19999\""));
  CHECK_FALSE(matches(many, "\"v20000\""));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));

  CHECK(error_of(bora::json_schema_grammar(R"({"type":"string","maxLength":100000000})")).find("maxLength") != std::string::npos);
}

TEST_CASE("the trie walk's mask equals each token's bytes run through the grammar alone") {
  auto constraint = constrain(bora::json_schema_grammar(R"({"type":"object","properties":{
    "say": {"type": "string", "maxLength": 6}, "n": {"type": "number"}, "ok": {"type": "boolean"}},
    "required": ["say", "n", "ok"], "additionalProperties": false})"));
  const bora::Tokenizer& tokenizer = demo_tokenizer();
  for (const char* prefix : {"", "{", "{\"say\"", "{\"say\": \"h\xC3", "{\"say\":\"abcdef", "{\"say\":\"\",\"n\":-1.5",
                             "{\"say\":\"\",\"n\":0,\"ok\":true", "{\"say\":\"\",\"n\":0,\"ok\":true}"}) {
    CAPTURE(prefix);
    bora::GrammarMatcher matcher(constraint);
    REQUIRE(matcher.accept_text(prefix));
    const std::vector<uint64_t> mask = matcher.allowed_tokens();
    size_t allowed = 0, mismatches = 0;
    for (int32_t id = 0; id < static_cast<int32_t>(tokenizer.vocab_size()); ++id) {
      bool expected;
      if (id == tokenizer.eos_id()) {
        expected = matcher.is_complete();
      } else {
        const std::string bytes = tokenizer.piece_text(id);
        bora::GrammarMatcher alone(constraint);
        expected = !tokenizer.is_control(id) && id != tokenizer.unk_id() && !bytes.empty() &&
                   alone.accept_text(std::string(prefix) + bytes);
      }
      const bool got = (mask[static_cast<size_t>(id) >> 6] >> (id & 63)) & 1u;
      allowed += got;
      mismatches += got != expected;
    }
    CHECK(mismatches == 0);
    CHECK(allowed > 0);
  }
}

TEST_CASE("constraints sharing one vocabulary trie allow what constraints with their own allow") {
  const bora::Tokenizer& tokenizer = demo_tokenizer();
  const std::shared_ptr<const bora::VocabularyTrie> vocabulary = bora::VocabularyTrie::build(tokenizer);
  REQUIRE(vocabulary != nullptr);
  bora::GrammarConstraintOptions shared;
  shared.vocabulary = vocabulary;
  for (const char* schema : {R"({"type":"object","properties":{"say":{"type":"string"}},"required":["say"]})",
                             R"({"type":"array","items":{"type":"integer"},"maxItems":3})"}) {
    CAPTURE(schema);
    auto own = bora::GrammarConstraint::create(*bora::json_schema_grammar(schema), tokenizer);
    auto with_shared = bora::GrammarConstraint::create(*bora::json_schema_grammar(schema), tokenizer, shared);
    REQUIRE(own);
    REQUIRE(with_shared);
    CHECK((*with_shared)->trie_nodes() == (*own)->trie_nodes());
    bora::GrammarMatcher a(*own), b(*with_shared);
    for (const char* text : {"", "{\"say\": \"hi", "[1, 2"}) {
      CAPTURE(text);
      const bool took = a.accept_text(text);
      CHECK(b.accept_text(text) == took);
      if (took) CHECK(a.allowed_tokens() == b.allowed_tokens());
    }
  }
  // A trie is tied to its tokenizer: one built from another vocabulary is refused with a message.
  auto other = bora::Tokenizer::from_file(bora_test::tokenizer_path("mistral_instruct_tokenizer_240323.model.v3"));
  REQUIRE(other);
  REQUIRE(other->vocab_size() != tokenizer.vocab_size());
  bora::GrammarConstraintOptions foreign;
  foreign.vocabulary = bora::VocabularyTrie::build(*other);
  auto refused = bora::GrammarConstraint::create(*bora::json_object_grammar(), tokenizer, foreign);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().str().find("another tokenizer") != std::string::npos);
}
