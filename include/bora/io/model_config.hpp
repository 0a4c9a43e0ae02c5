// Why this file exists: the sizes of a model (layers, widths, heads, window, experts) are runtime
// values read from the file; this is the one struct every format's reader fills in.
#ifndef BORA_IO_MODEL_CONFIG_HPP
#define BORA_IO_MODEL_CONFIG_HPP

#include <cstdint>
#include <string>

namespace bora {

// How RoPE pairs the dimensions of a head: Mistral's reference and GGUF rotate adjacent pairs
// (2i, 2i+1); Hugging Face checkpoints permute q/k rows so that rotate-half pairs (i, i + d/2)
// compute the same function. Using the matching pairing keeps HF weights zero-copy.
enum class RopePairing { kAdjacent, kHalfSplit };

struct ModelConfig {
  std::string architecture;  // "llama" (GGUF), "mistral"/"mixtral" (HF), "mistral" (params.json)
  int64_t dim = 0;           // embedding width
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t hidden_dim = 0;    // FFN width (per expert for MoE)
  int64_t vocab_size = 0;
  int64_t context_length = 0;  // trained context, 0 when the file does not say
  int64_t sliding_window = 0;  // 0 = no window
  int64_t n_experts = 0;       // 0 = dense
  int64_t n_experts_used = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopePairing rope_pairing = RopePairing::kAdjacent;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
};

}  // namespace bora

#endif  // BORA_IO_MODEL_CONFIG_HPP
