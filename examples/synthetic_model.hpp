// Why this file exists: speed depends on shapes and bytes, not on trained values, so the benchmark can
// build a full-size Mistral-7B- or Mixtral-shaped GGUF image with random, numerically sane weights in
// memory (no multi-gigabyte file to download or write) and load it like any other model. It is a
// benchmark's tool, not part of the library: it uses the library's GGUF writer and generator.
#ifndef BORA_EXAMPLES_SYNTHETIC_MODEL_HPP
#define BORA_EXAMPLES_SYNTHETIC_MODEL_HPP

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/base/random.hpp"
#include "bora/io/gguf_writer.hpp"
#include "bora/io/model_files.hpp"
#include "bora/quant/bf16.hpp"
#include "bora/quant/f16.hpp"
#include "bora/quant/q4_k.hpp"
#include "bora/quant/weight_type.hpp"

namespace synthetic {

struct Shape {
  int64_t dim = 4096, n_layers = 32, n_heads = 32, n_kv_heads = 8, hidden_dim = 14336, vocab_size = 32000;
  int64_t n_experts = 0, n_experts_used = 0, sliding_window = 0;
  float rope_theta = 1e6f;
};

struct PlannedTensor {
  std::string name;
  std::vector<uint64_t> ne;
  bora::WeightType type;
  float scale;  // typical magnitude of a weight (0 for norms = all ones)
};

// Uniform in [-1, 1) from 24 random bits: as fine as a float weight needs, and cheap.
inline float symmetric_uniform(bora::Xoshiro256& rng) {
  return static_cast<float>(rng.next() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// Random blocks whose scales are set so the weights have magnitude ~`scale`: the forward pass stays
// finite and free of denormals, so timings are those of real weights.
inline void fill_tensor(const PlannedTensor& t, uint8_t* out, uint64_t bytes, bora::Xoshiro256& rng) {
  using bora::WeightType;
  using bora::quant::f32_to_f16;
  using bora::quant::store_u16_le;
  uint64_t elements = 1;
  for (uint64_t e : t.ne) elements *= e;
  if (t.scale == 0.0f) {  // a norm: ones
    const float one = 1.0f;
    for (uint64_t i = 0; i < elements; ++i) std::memcpy(out + 4 * i, &one, 4);
    return;
  }
  switch (t.type) {
    case WeightType::kF32:
      for (uint64_t i = 0; i < elements; ++i) {
        const float v = symmetric_uniform(rng) * t.scale;
        std::memcpy(out + 4 * i, &v, 4);
      }
      return;
    case WeightType::kF16:
    case WeightType::kBF16:
      for (uint64_t i = 0; i < elements; ++i) {
        const float v = symmetric_uniform(rng) * t.scale;
        store_u16_le(out + 2 * i, t.type == WeightType::kF16 ? f32_to_f16(v) : bora::quant::f32_to_bf16(v));
      }
      return;
    default:
      break;
  }
  for (uint64_t i = 0; i + 8 <= bytes; i += 8) {
    const uint64_t word = rng.next();
    std::memcpy(out + i, &word, 8);
  }
  const bora::WeightTypeInfo info = bora::weight_type_info(t.type);
  const uint64_t blocks = bytes / info.block_bytes;
  int scales[8], mins[8];
  for (int j = 0; j < 8; ++j) {
    scales[j] = 2;
    mins[j] = t.type == WeightType::kQ5_K ? 31 : 15;
  }
  uint8_t packed_k_scales[12];
  bora::quant::pack_k_scale_mins(scales, mins, packed_k_scales);
  for (uint64_t b = 0; b < blocks; ++b) {
    uint8_t* block = out + b * info.block_bytes;
    switch (t.type) {
      case WeightType::kQ4_0: store_u16_le(block, f32_to_f16((b & 1 ? -1.0f : 1.0f) * t.scale / 4.6f)); break;
      case WeightType::kQ8_0: store_u16_le(block, f32_to_f16(t.scale / 73.0f)); break;
      case WeightType::kQ4_K:
      case WeightType::kQ5_K: {
        const uint16_t d = f32_to_f16(t.scale / (t.type == WeightType::kQ4_K ? 9.2f : 18.5f));
        store_u16_le(block, d);
        store_u16_le(block + 2, d);
        std::memcpy(block + 4, packed_k_scales, 12);
        break;
      }
      case WeightType::kQ6_K:
        for (int j = 0; j < 16; ++j) block[192 + j] = (j & 1) ? 4 : 252;  // +-4 so the mean cancels
        store_u16_le(block + 208, f32_to_f16(t.scale / (4 * 18.5f)));
        break;
      default: break;
    }
  }
}

// The tensors of a llama-architecture model of `shape` whose matrices are `type`; "Q4_K_M" mixes are
// asked for with `mixed_q4_k_m` (Q4_K, with Q6_K for attn_v, ffn_down and output, as llama.cpp).
// Q4_0 and Q4_K files get a Q6_K output matrix, as llama-quantize makes them.
inline std::vector<PlannedTensor> plan_tensors(const Shape& shape, bora::WeightType type, bool mixed_q4_k_m) {
  using bora::WeightType;
  const uint64_t D = static_cast<uint64_t>(shape.dim), F = static_cast<uint64_t>(shape.hidden_dim);
  const uint64_t E = static_cast<uint64_t>(shape.n_experts), V = static_cast<uint64_t>(shape.vocab_size);
  const uint64_t head_dim = D / static_cast<uint64_t>(shape.n_heads);
  const uint64_t q_rows = head_dim * static_cast<uint64_t>(shape.n_heads);
  const uint64_t kv_rows = head_dim * static_cast<uint64_t>(shape.n_kv_heads);
  const bool quantized = !bora::is_float_weight_type(type);
  auto type_of = [&](const std::string& kind) {
    if (!quantized) return type;
    if (kind == "output") return (type == WeightType::kQ4_0 || type == WeightType::kQ4_K) ? WeightType::kQ6_K : type;
    if (mixed_q4_k_m && (kind == "attn_v" || kind == "ffn_down")) return WeightType::kQ6_K;
    return type;
  };
  std::vector<PlannedTensor> plan;
  auto add = [&](const std::string& name, std::vector<uint64_t> ne, WeightType t, float scale) {
    plan.push_back(PlannedTensor{name, std::move(ne), t, scale});
  };
  const float in_d = 1.0f / std::sqrt(static_cast<float>(D)), in_f = 1.0f / std::sqrt(static_cast<float>(F));
  add("token_embd.weight", {D, V}, type_of("token_embd"), 1.0f);
  for (int64_t l = 0; l < shape.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {D}, WeightType::kF32, 0.0f);
    add(b + "attn_q.weight", {D, q_rows}, type_of("attn_q"), in_d);
    add(b + "attn_k.weight", {D, kv_rows}, type_of("attn_k"), in_d);
    add(b + "attn_v.weight", {D, kv_rows}, type_of("attn_v"), in_d);
    add(b + "attn_output.weight", {q_rows, D}, type_of("attn_output"), in_d);
    add(b + "ffn_norm.weight", {D}, WeightType::kF32, 0.0f);
    if (E == 0) {
      add(b + "ffn_gate.weight", {D, F}, type_of("ffn_gate"), in_d);
      add(b + "ffn_down.weight", {F, D}, type_of("ffn_down"), in_f);
      add(b + "ffn_up.weight", {D, F}, type_of("ffn_up"), in_d);
    } else {
      add(b + "ffn_gate_inp.weight", {D, E}, WeightType::kF32, in_d);
      add(b + "ffn_gate_exps.weight", {D, F, E}, type_of("ffn_gate"), in_d);
      add(b + "ffn_down_exps.weight", {F, D, E}, type_of("ffn_down"), in_f);
      add(b + "ffn_up_exps.weight", {D, F, E}, type_of("ffn_up"), in_d);
    }
  }
  add("output_norm.weight", {D}, WeightType::kF32, 0.0f);
  add("output.weight", {D, V}, type_of("output"), in_d);
  return plan;
}

// The GGUF image of that model, built in one allocation (tens of gigabytes for the largest presets).
inline bora::Expected<bora::ModelFiles> make_model(const Shape& shape, bora::WeightType type, bool mixed_q4_k_m,
                                                   const std::string& name, uint64_t seed = 1) {
  using bora::ErrorCode;
  const std::vector<PlannedTensor> plan = plan_tensors(shape, type, mixed_q4_k_m);
  bora::GgufWriter writer;
  writer.add_string("general.architecture", "llama");
  writer.add_u32("llama.embedding_length", static_cast<uint32_t>(shape.dim));
  writer.add_u32("llama.block_count", static_cast<uint32_t>(shape.n_layers));
  writer.add_u32("llama.feed_forward_length", static_cast<uint32_t>(shape.hidden_dim));
  writer.add_u32("llama.attention.head_count", static_cast<uint32_t>(shape.n_heads));
  writer.add_u32("llama.attention.head_count_kv", static_cast<uint32_t>(shape.n_kv_heads));
  writer.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  writer.add_f32("llama.rope.freq_base", shape.rope_theta);
  writer.add_u32("llama.rope.dimension_count", static_cast<uint32_t>(shape.dim / shape.n_heads));
  writer.add_u32("llama.context_length", 32768);
  writer.add_u32("llama.vocab_size", static_cast<uint32_t>(shape.vocab_size));
  if (shape.n_experts > 0) {
    writer.add_u32("llama.expert_count", static_cast<uint32_t>(shape.n_experts));
    writer.add_u32("llama.expert_used_count", static_cast<uint32_t>(shape.n_experts_used));
  }
  if (shape.sliding_window > 0)
    writer.add_u32("llama.attention.sliding_window", static_cast<uint32_t>(shape.sliding_window));
  for (const PlannedTensor& t : plan) {
    uint64_t bytes = 0;
    if (!bora::GgufWriter::tensor_bytes(t.ne, static_cast<uint32_t>(t.type), &bytes))
      return bora::make_error(ErrorCode::kInvalidArgument, "synthetic: %s rows of %llu values are not whole %s blocks",
                              t.name.c_str(), (unsigned long long)t.ne[0], bora::weight_type_name(t.type));
    writer.add_tensor(t.name, t.ne, static_cast<uint32_t>(t.type), bytes);
  }

  // Not GgufWriter::build(): that would zero the whole image before the weights overwrite it.
  const bora::GgufWriter::Layout layout = writer.layout();
  const uint64_t data_bytes = (layout.data_bytes + writer.alignment - 1) / writer.alignment * writer.alignment;
  const uint64_t total = layout.head.size() + data_bytes;
  std::shared_ptr<uint8_t> image(new (std::nothrow) uint8_t[total], std::default_delete<uint8_t[]>());
  if (!image) return bora::make_error(ErrorCode::kInvalidArgument, "synthetic: cannot allocate %llu bytes", (unsigned long long)total);
  std::memcpy(image.get(), layout.head.data(), layout.head.size());
  uint8_t* data = image.get() + layout.head.size();
  bora::Xoshiro256 rng(seed);
  uint64_t filled = 0;  // zero the padding between tensors as the fill passes it
  for (size_t i = 0; i < plan.size(); ++i) {
    uint64_t bytes = 0;
    bora::GgufWriter::tensor_bytes(plan[i].ne, static_cast<uint32_t>(plan[i].type), &bytes);
    std::memset(data + filled, 0, layout.offsets[i] - filled);
    fill_tensor(plan[i], data + layout.offsets[i], bytes, rng);
    filled = layout.offsets[i] + bytes;
  }
  std::memset(data + filled, 0, data_bytes - filled);
  return bora::ModelFiles::from_gguf_bytes(std::shared_ptr<const uint8_t>(image), total, name);
}

// "mistral-7b:q4_0", "mixtral-8x7b:q4_k_m", "mixtral-8x7b-4l:q8_0" (4 of 32 layers), "tiny:f32".
inline bora::Expected<bora::ModelFiles> make_model(const std::string& spec) {
  using bora::ErrorCode;
  using bora::WeightType;
  const size_t colon = spec.find(':');
  const std::string preset = spec.substr(0, colon), type_name = colon == std::string::npos ? "q4_0" : spec.substr(colon + 1);
  Shape shape;
  if (preset == "mistral-7b") {
    shape.sliding_window = 4096;
    shape.rope_theta = 1e4f;
  } else if (preset == "mixtral-8x7b" || preset == "mixtral-8x7b-4l") {
    shape.n_experts = 8;
    shape.n_experts_used = 2;
    if (preset == "mixtral-8x7b-4l") shape.n_layers = 4;
  } else if (preset == "tiny") {
    shape.dim = 256;
    shape.n_layers = 2;
    shape.n_heads = 8;
    shape.n_kv_heads = 2;
    shape.hidden_dim = 512;
    shape.vocab_size = 512;
  } else {
    return bora::make_error(ErrorCode::kInvalidArgument,
                            "synthetic:%s: unknown preset '%s' (mistral-7b, mixtral-8x7b, mixtral-8x7b-4l, tiny)",
                            spec.c_str(), preset.c_str());
  }
  struct Named { const char* name; WeightType type; bool mix; };
  const Named types[] = {{"f32", WeightType::kF32, false},   {"f16", WeightType::kF16, false},   {"bf16", WeightType::kBF16, false},
                         {"q8_0", WeightType::kQ8_0, false}, {"q4_0", WeightType::kQ4_0, false}, {"q4_k", WeightType::kQ4_K, false},
                         {"q5_k", WeightType::kQ5_K, false}, {"q6_k", WeightType::kQ6_K, false}, {"q4_k_m", WeightType::kQ4_K, true}};
  for (const Named& t : types) {
    if (type_name == t.name) return make_model(shape, t.type, t.mix, "synthetic:" + spec);
  }
  return bora::make_error(ErrorCode::kInvalidArgument,
                          "synthetic:%s: unknown weight type '%s' (f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m)",
                          spec.c_str(), type_name.c_str());
}

}  // namespace synthetic

#endif  // BORA_EXAMPLES_SYNTHETIC_MODEL_HPP
