// Why this file exists: the ready-made compositions users name (bora::Mistral7B, bora::Mixtral8x7B)
// (the compositions of the policies that real Mistral-family checkpoints need).
#ifndef BORA_MODEL_PRESETS_HPP
#define BORA_MODEL_PRESETS_HPP

#include "bora/model/transformer.hpp"

namespace bora {

// Mistral 7B: sliding-window GQA (window from the file), f16 cache, dense SwiGLU.
using Mistral7B = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<f16>, DenseSwiGLU>;
// Mixtral 8x7B: causal GQA, f16 cache, top-k of 8 experts (k from the file).
using Mixtral8x7B = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<f16>, SparseMoE<>>;
// The same with an f32 cache: what `--exact` runs, to match reference logits to 1e-3.
using Mistral7BExact = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<f32>, DenseSwiGLU>;
using Mixtral8x7BExact = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<f32>, SparseMoE<>>;
// The same with a q8_0 cache: half the bytes of f16, for long contexts (`--kv-type q8_0`).
using Mistral7BQ8Cache = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<q8_0>, DenseSwiGLU>;
using Mixtral8x7BQ8Cache = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<q8_0>, SparseMoE<>>;

}  // namespace bora

#endif  // BORA_MODEL_PRESETS_HPP
