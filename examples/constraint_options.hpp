// Why this file exists: generate and mask_bench both take a constraint on what the model may write
// (--json-schema FILE, --grammar FILE.gbnf, --json); it is read and compiled one way here.
#ifndef BORA_EXAMPLES_CONSTRAINT_OPTIONS_HPP
#define BORA_EXAMPLES_CONSTRAINT_OPTIONS_HPP

#include <fstream>
#include <sstream>
#include <string>

#include "args.hpp"
#include "bora/bora.hpp"

namespace example_args {

struct ConstraintOptions {
  std::string schema_path;   // --json-schema FILE
  std::string grammar_path;  // --grammar FILE.gbnf
  bool any_json_object = false;  // --json

  static const char* help() {
    return "  --json-schema FILE  the output is JSON valid against FILE's schema (a JSON Schema subset: type, properties,\n"
           "      required, additionalProperties, enum, const, items, minItems/maxItems, minLength/maxLength, integer\n"
           "      minimum/maximum, anyOf, $ref into $defs); generation ends when the value is complete\n"
           "  --grammar FILE.gbnf  the output follows a llama.cpp GBNF grammar (start rule: root)\n"
           "  --json  the output is one JSON object\n";
  }

  bool read(Parser& args) {
    if (args.is("--json-schema")) schema_path = args.text();
    else if (args.is("--grammar")) grammar_path = args.text();
    else if (args.is("--json")) any_json_object = true;
    else return false;
    if (static_cast<int>(!schema_path.empty()) + static_cast<int>(!grammar_path.empty()) + static_cast<int>(any_json_object) > 1)
      args.fail("give one of --json-schema, --grammar and --json");
    return true;
  }
  bool given() const { return !schema_path.empty() || !grammar_path.empty() || any_json_object; }

  // The grammar the options ask for; an error names the file.
  bora::Expected<bora::Grammar> grammar() const {
    if (any_json_object) return bora::json_object_grammar();
    const std::string& path = schema_path.empty() ? grammar_path : schema_path;
    std::ifstream file(path, std::ios::binary);
    if (!file) return bora::make_error(bora::ErrorCode::kIo, "cannot read %s", path.c_str());
    std::ostringstream text;
    text << file.rdbuf();
    auto grammar = schema_path.empty() ? bora::parse_gbnf(text.str()) : bora::json_schema_grammar(text.str());
    if (!grammar) return bora::make_error(grammar.error().code(), "%s: %s", path.c_str(), grammar.error().message());
    return grammar;
  }

  // The compiled constraint for `tokenizer`'s vocabulary.
  bora::Expected<std::shared_ptr<const bora::GrammarConstraint>> constraint(const bora::Tokenizer& tokenizer) const {
    auto compiled = grammar();
    if (!compiled) return compiled.error();
    return bora::GrammarConstraint::create(std::move(*compiled), tokenizer);
  }
};

}  // namespace example_args

#endif  // BORA_EXAMPLES_CONSTRAINT_OPTIONS_HPP
