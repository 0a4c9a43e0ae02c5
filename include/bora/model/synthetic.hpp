// Why this file exists: speed depends on shapes and bytes, not on trained values, so benchmarks can
// build a full-size Mistral-7B- or Mixtral-shaped GGUF image with random, numerically sane weights in
// memory (no multi-gigabyte file to download or write) and load it like any other model.
#ifndef BORA_MODEL_SYNTHETIC_HPP
#define BORA_MODEL_SYNTHETIC_HPP

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/io/model_files.hpp"
#include "bora/quant/bf16.hpp"
#include "bora/quant/f16.hpp"
#include "bora/quant/q4_k.hpp"
#include "bora/quant/weight_type.hpp"

namespace bora {

struct SyntheticShape {
  int64_t dim = 4096, n_layers = 32, n_heads = 32, n_kv_heads = 8, hidden_dim = 14336, vocab_size = 32000;
  int64_t n_experts = 0, n_experts_used = 0, sliding_window = 0;
  float rope_theta = 1e6f;
};

namespace synthetic_detail {
using quant::f32_to_bf16;
using quant::f32_to_f16;
using quant::pack_k_scale_mins;
using quant::store_u16_le;

// xoshiro256+ for filling bytes fast; quality hardly matters, speed does (gigabytes).
struct FastRandom {
  uint64_t s[4];
  explicit FastRandom(uint64_t seed) {
    for (uint64_t& word : s) {
      seed += 0x9E3779B97F4A7C15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      word = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = s[0] + s[3];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

struct PlannedTensor {
  std::string name;
  int n_dims;
  int64_t ne[3];
  WeightType type;
  float scale;  // typical magnitude of a weight (0 for norms = all ones)
  uint64_t offset = 0, bytes = 0;
};

// Random blocks whose scales are set so the weights have magnitude ~`scale`: the forward pass
// stays finite and free of denormals, so timings are those of real weights.
inline void fill_tensor(const PlannedTensor& t, uint8_t* out, FastRandom& rng) {
  const int64_t elements = t.ne[0] * t.ne[1] * t.ne[2];
  if (t.scale == 0.0f) {  // a norm: ones
    for (int64_t i = 0; i < elements; ++i) {
      const float one = 1.0f;
      std::memcpy(out + 4 * i, &one, 4);
    }
    return;
  }
  switch (t.type) {
    case WeightType::kF32:
      for (int64_t i = 0; i < elements; ++i) {
        const float v = (rng.uniform() * 2.0f - 1.0f) * t.scale;
        std::memcpy(out + 4 * i, &v, 4);
      }
      return;
    case WeightType::kF16:
    case WeightType::kBF16:
      for (int64_t i = 0; i < elements; ++i) {
        const float v = (rng.uniform() * 2.0f - 1.0f) * t.scale;
        store_u16_le(out + 2 * i, t.type == WeightType::kF16 ? f32_to_f16(v) : f32_to_bf16(v));
      }
      return;
    default:
      break;
  }
  for (uint64_t i = 0; i + 8 <= t.bytes; i += 8) {
    const uint64_t word = rng.next();
    std::memcpy(out + i, &word, 8);
  }
  const WeightTypeInfo info = weight_type_info(t.type);
  const uint64_t blocks = t.bytes / info.block_bytes;
  int scales[8], mins[8];
  for (int j = 0; j < 8; ++j) {
    scales[j] = 2;
    mins[j] = t.type == WeightType::kQ5_K ? 31 : 15;
  }
  uint8_t packed_k_scales[12];
  pack_k_scale_mins(scales, mins, packed_k_scales);
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

inline void put_u32(std::vector<uint8_t>& out, uint32_t v) { for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i))); }
inline void put_u64(std::vector<uint8_t>& out, uint64_t v) { for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i))); }
inline void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put_u64(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}
inline void put_kv_u32(std::vector<uint8_t>& out, const std::string& key, uint32_t v) { put_string(out, key); put_u32(out, 4); put_u32(out, v); }
inline void put_kv_f32(std::vector<uint8_t>& out, const std::string& key, float v) {
  put_string(out, key);
  put_u32(out, 6);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  put_u32(out, bits);
}

}  // namespace synthetic_detail

// Builds the GGUF image of a model of `shape` whose matrices are `type`; "Q4_K_M" mixes are
// asked for with `mixed_q4_k_m` (Q4_K, with Q6_K for attn_v, ffn_down and output, as llama.cpp).
// Q4_0 and Q4_K files get a Q6_K output matrix, as llama-quantize makes them.
inline Expected<ModelFiles> make_synthetic_model(const SyntheticShape& shape, WeightType type, bool mixed_q4_k_m,
                                                 const std::string& name, uint64_t seed = 1) {
  using namespace synthetic_detail;
  const int64_t D = shape.dim, F = shape.hidden_dim, E = shape.n_experts, V = shape.vocab_size;
  const int64_t head_dim = D / shape.n_heads;
  const bool quantized = type != WeightType::kF32 && type != WeightType::kF16 && type != WeightType::kBF16;
  auto type_of = [&](const std::string& kind) {
    if (!quantized) return type;
    if (kind == "output") return (type == WeightType::kQ4_0 || type == WeightType::kQ4_K) ? WeightType::kQ6_K : type;
    if (mixed_q4_k_m && (kind == "attn_v" || kind == "ffn_down")) return WeightType::kQ6_K;
    return type;
  };
  std::vector<PlannedTensor> plan;
  auto add = [&](const std::string& tensor, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2, WeightType t, float scale) {
    plan.push_back(PlannedTensor{tensor, n_dims, {ne0, ne1, ne2}, t, scale});
  };
  const float in_d = 1.0f / std::sqrt(static_cast<float>(D)), in_f = 1.0f / std::sqrt(static_cast<float>(F));
  add("token_embd.weight", 2, D, V, 1, type_of("token_embd"), 1.0f);
  for (int64_t l = 0; l < shape.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", 1, D, 1, 1, WeightType::kF32, 0.0f);
    add(b + "attn_q.weight", 2, D, head_dim * shape.n_heads, 1, type_of("attn_q"), in_d);
    add(b + "attn_k.weight", 2, D, head_dim * shape.n_kv_heads, 1, type_of("attn_k"), in_d);
    add(b + "attn_v.weight", 2, D, head_dim * shape.n_kv_heads, 1, type_of("attn_v"), in_d);
    add(b + "attn_output.weight", 2, head_dim * shape.n_heads, D, 1, type_of("attn_output"), in_d);
    add(b + "ffn_norm.weight", 1, D, 1, 1, WeightType::kF32, 0.0f);
    if (E == 0) {
      add(b + "ffn_gate.weight", 2, D, F, 1, type_of("ffn_gate"), in_d);
      add(b + "ffn_down.weight", 2, F, D, 1, type_of("ffn_down"), in_f);
      add(b + "ffn_up.weight", 2, D, F, 1, type_of("ffn_up"), in_d);
    } else {
      add(b + "ffn_gate_inp.weight", 2, D, E, 1, WeightType::kF32, in_d);
      add(b + "ffn_gate_exps.weight", 3, D, F, E, type_of("ffn_gate"), in_d);
      add(b + "ffn_down_exps.weight", 3, F, D, E, type_of("ffn_down"), in_f);
      add(b + "ffn_up_exps.weight", 3, D, F, E, type_of("ffn_up"), in_d);
    }
  }
  add("output_norm.weight", 1, D, 1, 1, WeightType::kF32, 0.0f);
  add("output.weight", 2, D, V, 1, type_of("output"), in_d);

  std::vector<uint8_t> header;
  header.insert(header.end(), {'G', 'G', 'U', 'F'});
  put_u32(header, 3);
  put_u64(header, plan.size());
  const bool windowed = shape.sliding_window > 0;
  put_u64(header, 11 + (E > 0 ? 2 : 0) + (windowed ? 1 : 0));
  put_string(header, "general.architecture");
  put_u32(header, 8);
  put_string(header, "llama");
  put_kv_u32(header, "llama.embedding_length", static_cast<uint32_t>(D));
  put_kv_u32(header, "llama.block_count", static_cast<uint32_t>(shape.n_layers));
  put_kv_u32(header, "llama.feed_forward_length", static_cast<uint32_t>(F));
  put_kv_u32(header, "llama.attention.head_count", static_cast<uint32_t>(shape.n_heads));
  put_kv_u32(header, "llama.attention.head_count_kv", static_cast<uint32_t>(shape.n_kv_heads));
  put_kv_f32(header, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
  put_kv_f32(header, "llama.rope.freq_base", shape.rope_theta);
  put_kv_u32(header, "llama.rope.dimension_count", static_cast<uint32_t>(head_dim));
  put_kv_u32(header, "llama.context_length", 32768);
  put_kv_u32(header, "llama.vocab_size", static_cast<uint32_t>(V));
  if (E > 0) {
    put_kv_u32(header, "llama.expert_count", static_cast<uint32_t>(E));
    put_kv_u32(header, "llama.expert_used_count", static_cast<uint32_t>(shape.n_experts_used));
  }
  if (windowed) put_kv_u32(header, "llama.attention.sliding_window", static_cast<uint32_t>(shape.sliding_window));
  uint64_t data_size = 0;
  for (PlannedTensor& t : plan) {
    const uint64_t row_length = static_cast<uint64_t>(t.ne[0]);
    if (!weight_row_bytes(t.type, row_length, &t.bytes))
      return make_error(ErrorCode::kInvalidArgument, "synthetic: %s rows of %lld values are not whole %s blocks",
                        t.name.c_str(), (long long)t.ne[0], weight_type_name(t.type));
    t.bytes *= static_cast<uint64_t>(t.ne[1] * t.ne[2]);
    t.offset = data_size;
    data_size += (t.bytes + 31) / 32 * 32;
    put_string(header, t.name);
    put_u32(header, static_cast<uint32_t>(t.n_dims));
    for (int i = 0; i < t.n_dims; ++i) put_u64(header, static_cast<uint64_t>(t.ne[i]));
    put_u32(header, static_cast<uint32_t>(t.type));
    put_u64(header, t.offset);
  }
  while (header.size() % 32 != 0) header.push_back(0);
  const uint64_t total = header.size() + data_size;
  std::shared_ptr<uint8_t> image(new (std::nothrow) uint8_t[total], std::default_delete<uint8_t[]>());
  if (!image) return make_error(ErrorCode::kInvalidArgument, "synthetic: cannot allocate %llu bytes", (unsigned long long)total);
  std::memcpy(image.get(), header.data(), header.size());
  FastRandom rng(seed);
  for (const PlannedTensor& t : plan) {
    uint8_t* out = image.get() + header.size() + t.offset;
    fill_tensor(t, out, rng);
    std::memset(out + t.bytes, 0, (t.bytes + 31) / 32 * 32 - t.bytes);
  }
  return ModelFiles::from_gguf_bytes(std::shared_ptr<const uint8_t>(image), total, name);
}

// "mistral-7b:q4_0", "mixtral-8x7b:q4_k_m", "mixtral-8x7b-4l:q8_0" (4 of 32 layers), "tiny:f32".
inline Expected<ModelFiles> make_synthetic_model(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string preset = spec.substr(0, colon), type_name = colon == std::string::npos ? "q4_0" : spec.substr(colon + 1);
  SyntheticShape shape;
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
    return make_error(ErrorCode::kInvalidArgument, "synthetic:%s: unknown preset '%s' (mistral-7b, mixtral-8x7b, mixtral-8x7b-4l, tiny)",
                      spec.c_str(), preset.c_str());
  }
  struct Named { const char* name; WeightType type; bool mix; };
  const Named types[] = {{"f32", WeightType::kF32, false},   {"f16", WeightType::kF16, false},   {"bf16", WeightType::kBF16, false},
                         {"q8_0", WeightType::kQ8_0, false}, {"q4_0", WeightType::kQ4_0, false}, {"q4_k", WeightType::kQ4_K, false},
                         {"q5_k", WeightType::kQ5_K, false}, {"q6_k", WeightType::kQ6_K, false}, {"q4_k_m", WeightType::kQ4_K, true}};
  for (const Named& t : types) {
    if (type_name == t.name) return make_synthetic_model(shape, t.type, t.mix, "synthetic:" + spec);
  }
  return make_error(ErrorCode::kInvalidArgument, "synthetic:%s: unknown weight type '%s' (f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m)",
                    spec.c_str(), type_name.c_str());
}

}  // namespace bora

#endif  // BORA_MODEL_SYNTHETIC_HPP
