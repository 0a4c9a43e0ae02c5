// Why this file exists: opening a model's weights from a path (a file, a folder, or an Ollama name) as
// a chosen composition, or as whichever composition the file implies. The tokenizer that ships with
// the weights is text's business: text/language_model.hpp binds the two.
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

namespace bora {

// A model path may be `ollama:NAME[:TAG]`, resolved through the Ollama model store.
inline Expected<ModelFiles> open_model_files(const std::string& path, FileAccess access = FileAccess::kRead,
                                             const ReadProgress& progress = {}) {
  if (path.rfind("ollama:", 0) == 0) {
    auto blob = resolve_ollama_model(path.substr(7));
    if (!blob) return blob.error();
    return ModelFiles::open(*blob, access, progress);
  }
  return ModelFiles::open(path, access, progress);
}

inline FileAccess file_access(const LoadParams& params) { return params.use_mmap ? FileAccess::kMap : FileAccess::kRead; }

// Opens a model path as LoadParams ask: mapped or read, with reading reported as the first half of the
// load progress (binding the weights is the second), so a cancel interrupts a multi-gigabyte read.
inline Expected<ModelFiles> open_model_files(const std::string& path, const LoadParams& params) {
  LoadParams caller = params;  // lives through the read below; the callback gets a pointer to it
  ReadProgress reading;
  if (caller.progress_callback != nullptr) {
    reading.user_data = &caller;
    reading.callback = [](uint64_t done, uint64_t total, void* user_data) {
      const LoadParams* p = static_cast<const LoadParams*>(user_data);
      const float fraction = total == 0 ? 0.5f : 0.5f * static_cast<float>(static_cast<double>(done) / total);
      return p->progress_callback(fraction, p->progress_user_data);
    };
  }
  return open_model_files(path, file_access(params), reading);
}

// Opens `files` as the composition `Preset` (weights only).
template <class Preset>
Expected<std::unique_ptr<Preset>> load_model(ModelFiles files, const LoadParams& params = {}) {
  return Preset::load(std::move(files), params);
}

// Opens `path` (a .gguf file, a model folder, or ollama:NAME[:TAG]) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<Preset>> load_model(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load_model<Preset>(std::move(*files), params);
}

// Opens any supported model's weights, choosing dense or mixture-of-experts from the file and the
// cache element type from params.kv_cache_type.
inline Expected<std::unique_ptr<Model>> load_any_model(ModelFiles files, const LoadParams& params = {}) {
  const bool sparse = files.config().n_experts > 0;
  auto erase = [](auto loaded) -> Expected<std::unique_ptr<Model>> {
    if (!loaded) return loaded.error();
    return std::unique_ptr<Model>(std::move(*loaded));
  };
  switch (params.kv_cache_type) {
    case KvCacheType::kF32:
      return sparse ? erase(load_model<Mixtral8x7BExact>(std::move(files), params))
                    : erase(load_model<Mistral7BExact>(std::move(files), params));
    case KvCacheType::kQ8_0:
      return sparse ? erase(load_model<Mixtral8x7BQ8Cache>(std::move(files), params))
                    : erase(load_model<Mistral7BQ8Cache>(std::move(files), params));
    default:
      return sparse ? erase(load_model<Mixtral8x7B>(std::move(files), params))
                    : erase(load_model<Mistral7B>(std::move(files), params));
  }
}

inline Expected<std::unique_ptr<Model>> load_any_model(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load_any_model(std::move(*files), params);
}

}  // namespace bora

#endif  // BORA_MODEL_LOAD_HPP
