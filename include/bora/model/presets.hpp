// Why this file exists: the ready-made compositions users name (bora::Mistral7B, bora::Mixtral8x7B)
// and load_any(), which reads the file and picks the right one for tools that take any model.
#ifndef BORA_MODEL_PRESETS_HPP
#define BORA_MODEL_PRESETS_HPP

#include <memory>
#include <string>

#include "bora/io/model_files.hpp"
#include "bora/model/transformer.hpp"

namespace bora {

// Mistral 7B: sliding-window GQA (window from the file), f16 cache, dense SwiGLU.
using Mistral7B = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<f16>, DenseSwiGLU>;
// Mixtral 8x7B: causal GQA, f16 cache, top-k of 8 experts (k from the file).
using Mixtral8x7B = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<f16>, SparseMoE<>>;
// The same with an f32 cache: what `--exact` runs, to match reference logits to 1e-3.
using Mistral7BExact = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<f32>, DenseSwiGLU>;
using Mixtral8x7BExact = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<f32>, SparseMoE<>>;

// Opens `path` (a .gguf file or a model folder) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<Preset>> load(const std::string& path, const LoadParams& params = {}) {
  auto files = ModelFiles::open(path);
  if (!files) return files.error();
  return Preset::load(std::move(*files), params);
}

// Opens any supported model, choosing dense or mixture-of-experts from the file and the cache
// element type from params.kv_cache_type.
inline Expected<std::unique_ptr<Model>> load_any(const std::string& path, const LoadParams& params = {}) {
  auto files = ModelFiles::open(path);
  if (!files) return files.error();
  const bool sparse = files->config().n_experts > 0;
  const bool exact_cache = params.kv_cache_type == KvCacheType::kF32;
  auto erase = [](auto loaded) -> Expected<std::unique_ptr<Model>> {
    if (!loaded) return loaded.error();
    return std::unique_ptr<Model>(std::move(*loaded));
  };
  if (sparse) {
    return exact_cache ? erase(Mixtral8x7BExact::load(std::move(*files), params))
                       : erase(Mixtral8x7B::load(std::move(*files), params));
  }
  return exact_cache ? erase(Mistral7BExact::load(std::move(*files), params))
                     : erase(Mistral7B::load(std::move(*files), params));
}

}  // namespace bora

#endif  // BORA_MODEL_PRESETS_HPP
