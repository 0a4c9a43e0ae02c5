// Why this file exists: a model's files usually carry its tokenizer (GGUF tokenizer.ggml.* metadata, or
// a tokenizer.model beside the safetensors in a model folder); this is the one place that finds it, so
// loading a model and tokenizing for it can never pick different vocabularies.
#ifndef BORA_TEXT_MODEL_TOKENIZER_HPP
#define BORA_TEXT_MODEL_TOKENIZER_HPP

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "bora/base/expected.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/model_files.hpp"
#include "bora/text/tokenizer.hpp"

namespace bora {

// The tokenizer of a model's files; null (not an error) when they carry none.
inline Expected<std::shared_ptr<const Tokenizer>> load_model_tokenizer(const ModelFiles& files) {
  if (const GgufFile* gguf = files.gguf()) {
    if (gguf->find("tokenizer.ggml.tokens") == nullptr) return std::shared_ptr<const Tokenizer>();
    auto tokenizer = Tokenizer::from_gguf(*gguf);
    if (!tokenizer) return tokenizer.error();
    return std::shared_ptr<const Tokenizer>(std::make_shared<Tokenizer>(std::move(*tokenizer)));
  }
  // Folders: Mistral ships tokenizer.model.v3 / tokenizer.model.v1 / tokenizer.model.
  for (const char* name : {"tokenizer.model", "tokenizer.model.v3", "tokenizer.model.v2", "tokenizer.model.v1"}) {
    const std::string path = files.path() + "/" + name;
    std::FILE* probe = std::fopen(path.c_str(), "rb");
    if (probe == nullptr) continue;
    std::fclose(probe);
    auto tokenizer = Tokenizer::from_file(path);
    if (!tokenizer) return tokenizer.error();
    return std::shared_ptr<const Tokenizer>(std::make_shared<Tokenizer>(std::move(*tokenizer)));
  }
  return std::shared_ptr<const Tokenizer>();
}

}  // namespace bora

#endif  // BORA_TEXT_MODEL_TOKENIZER_HPP
