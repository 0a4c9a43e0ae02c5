// Why this file exists: opening a model is more than binding weights: the tokenizer that ships with
// it (GGUF metadata, or tokenizer.model beside the safetensors) comes along, and tools that take any
// model need load_any() to pick the composition from the file.
#ifndef BORA_MODEL_LOAD_HPP
#define BORA_MODEL_LOAD_HPP

#include <memory>
#include <string>
#include <utility>

#include "bora/base/expected.hpp"
#include "bora/io/model_files.hpp"
#include "bora/io/ollama.hpp"
#include "bora/model/presets.hpp"
#include "bora/model/transformer.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/text/vocabulary.hpp"

namespace bora {

// The tokenizer of a model's files; null (not an error) when they carry none.
inline Expected<std::shared_ptr<const Tokenizer>> load_model_tokenizer(const ModelFiles& files) {
  if (const GgufFile* gguf = files.gguf()) {
    if (gguf->find("tokenizer.ggml.tokens") == nullptr) return std::shared_ptr<const Tokenizer>();
    auto vocab = vocabulary_from_gguf(*gguf);
    if (!vocab) return vocab.error();
    auto tokenizer = Tokenizer::create(std::move(*vocab));
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

// A model path may be `ollama:NAME[:TAG]`, resolved through the Ollama model store.
inline Expected<ModelFiles> open_model_files(const std::string& path, FileAccess access = FileAccess::kRead) {
  if (path.rfind("ollama:", 0) == 0) {
    auto blob = resolve_ollama_model(path.substr(7));
    if (!blob) return blob.error();
    return ModelFiles::open(*blob, access);
  }
  return ModelFiles::open(path, access);
}

inline FileAccess file_access(const LoadParams& params) { return params.use_mmap ? FileAccess::kMap : FileAccess::kRead; }

namespace detail {
template <class Preset>
Expected<std::unique_ptr<Preset>> load_files(ModelFiles files, const LoadParams& params) {
  auto tokenizer = load_model_tokenizer(files);
  if (!tokenizer) return tokenizer.error();
  auto model = Preset::load(std::move(files), params);
  if (!model) return model.error();
  (*model)->set_tokenizer(std::move(*tokenizer));
  return model;
}
}  // namespace detail

// Opens `path` (a .gguf file, a model folder, or ollama:NAME[:TAG]) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<Preset>> load(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, file_access(params));
  if (!files) return files.error();
  return detail::load_files<Preset>(std::move(*files), params);
}

// Opens any supported model, choosing dense or mixture-of-experts from the file and the cache
// element type from params.kv_cache_type.
inline Expected<std::unique_ptr<Model>> load_any(ModelFiles files, const LoadParams& params = {}) {
  const bool sparse = files.config().n_experts > 0;
  const bool exact_cache = params.kv_cache_type == KvCacheType::kF32;
  auto erase = [](auto loaded) -> Expected<std::unique_ptr<Model>> {
    if (!loaded) return loaded.error();
    return std::unique_ptr<Model>(std::move(*loaded));
  };
  if (sparse) {
    return exact_cache ? erase(detail::load_files<Mixtral8x7BExact>(std::move(files), params))
                       : erase(detail::load_files<Mixtral8x7B>(std::move(files), params));
  }
  return exact_cache ? erase(detail::load_files<Mistral7BExact>(std::move(files), params))
                     : erase(detail::load_files<Mistral7B>(std::move(files), params));
}

inline Expected<std::unique_ptr<Model>> load_any(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, file_access(params));
  if (!files) return files.error();
  return load_any(std::move(*files), params);
}

}  // namespace bora

#endif  // BORA_MODEL_LOAD_HPP
