// Why this file exists: the three file layouts (GGUF, Hugging Face, Mistral consolidated) name the
// same tensors differently and stack Mixtral's experts differently; this binds them all to one
// struct of views, checking every shape against the configuration, so the forward pass has one shape.
#ifndef BORA_MODEL_WEIGHTS_HPP
#define BORA_MODEL_WEIGHTS_HPP

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/io/model_config.hpp"
#include "bora/io/model_files.hpp"
#include "bora/io/tensor_view.hpp"
#include "bora/ops/ops.hpp"
#include "bora/quant/dequantize.hpp"
#include "bora/quant/row_tiles.hpp"

namespace bora {

struct LayerWeights {
  std::vector<float> attention_norm;  // [dim], converted to f32 at load (tiny)
  std::vector<float> ffn_norm;        // [dim]
  TensorView wq, wk, wv, wo;
  // Dense SwiGLU: w1 = gate, w3 = up, w2 = down.
  TensorView w1, w2, w3;
  // Sparse MoE: router [n_experts x dim] and one 2-D view per expert (sliced from stacked tensors
  // or taken from per-expert tensors: the forward pass cannot tell the difference).
  TensorView router;
  std::vector<TensorView> expert_w1, expert_w2, expert_w3;
};

struct ModelWeights {
  TensorView token_embedding;      // [vocab x dim]
  std::vector<float> output_norm;  // [dim]
  TensorView output;               // [vocab x dim]
  std::vector<LayerWeights> layers;
};

namespace detail {

// The three naming schemes, one function per role.
struct TensorNames {
  ModelFormat format;

  std::string embedding() const {
    switch (format) {
      case ModelFormat::kGguf: return "token_embd.weight";
      case ModelFormat::kHuggingFace: return "model.embed_tokens.weight";
      case ModelFormat::kConsolidated: return "tok_embeddings.weight";
    }
    return "";
  }
  std::string output_norm() const {
    switch (format) {
      case ModelFormat::kGguf: return "output_norm.weight";
      case ModelFormat::kHuggingFace: return "model.norm.weight";
      case ModelFormat::kConsolidated: return "norm.weight";
    }
    return "";
  }
  std::string output() const {
    return format == ModelFormat::kHuggingFace ? "lm_head.weight" : "output.weight";
  }
  // role: attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3, router
  std::string layer(int64_t layer, const char* role) const {
    const std::string r = role;
    const std::string n = std::to_string(layer);
    switch (format) {
      case ModelFormat::kGguf: {
        const char* name = r == "attention_norm" ? "attn_norm" : r == "wq" ? "attn_q" : r == "wk" ? "attn_k"
                         : r == "wv" ? "attn_v" : r == "wo" ? "attn_output" : r == "ffn_norm" ? "ffn_norm"
                         : r == "w1" ? "ffn_gate" : r == "w2" ? "ffn_down" : r == "w3" ? "ffn_up"
                         : "ffn_gate_inp";
        return "blk." + n + "." + name + ".weight";
      }
      case ModelFormat::kHuggingFace: {
        const std::string p = "model.layers." + n + ".";
        if (r == "attention_norm") return p + "input_layernorm.weight";
        if (r == "ffn_norm") return p + "post_attention_layernorm.weight";
        if (r == "wq" || r == "wk" || r == "wv" || r == "wo")
          return p + "self_attn." + r.substr(1) + "_proj.weight";
        if (r == "w1") return p + "mlp.gate_proj.weight";
        if (r == "w2") return p + "mlp.down_proj.weight";
        if (r == "w3") return p + "mlp.up_proj.weight";
        return p + "block_sparse_moe.gate.weight";
      }
      case ModelFormat::kConsolidated: {
        const std::string p = "layers." + n + ".";
        if (r == "attention_norm") return p + "attention_norm.weight";
        if (r == "ffn_norm") return p + "ffn_norm.weight";
        if (r[0] == 'w' && (r[1] == 'q' || r[1] == 'k' || r[1] == 'v' || r[1] == 'o'))
          return p + "attention." + r + ".weight";
        if (r == "router") return p + "feed_forward.gate.weight";
        return p + "feed_forward." + r + ".weight";
      }
    }
    return "";
  }
  // One expert's matrix (w1/w2/w3) in per-expert layouts.
  std::string expert(int64_t layer, int64_t expert, const char* w) const {
    const std::string n = std::to_string(layer), e = std::to_string(expert), r = w;
    switch (format) {
      case ModelFormat::kGguf: {
        const char* name = r == "w1" ? "ffn_gate" : r == "w2" ? "ffn_down" : "ffn_up";
        return "blk." + n + "." + name + "." + e + ".weight";
      }
      case ModelFormat::kHuggingFace:
        return "model.layers." + n + ".block_sparse_moe.experts." + e + "." + r + ".weight";
      case ModelFormat::kConsolidated:
        return "layers." + n + ".feed_forward.experts." + e + "." + r + ".weight";
    }
    return "";
  }
  // GGUF's stacked experts tensor (llama.cpp since 2024).
  static std::string stacked_experts(int64_t layer, const char* w) {
    const std::string r = w;
    const char* name = r == "w1" ? "ffn_gate_exps" : r == "w2" ? "ffn_down_exps" : "ffn_up_exps";
    return "blk." + std::to_string(layer) + "." + name + ".weight";
  }
};

inline std::string shape_string(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < t.n_dims; ++i) {
    if (i) s += ", ";
    s += std::to_string(t.ne[i]);
  }
  return s + "]";
}

inline Expected<TensorView> bind_matrix(const ModelFiles& files, const std::string& name, int64_t row_length,
                                        int64_t rows) {
  const TensorView* t = files.find_tensor(name);
  if (t == nullptr) return make_error(ErrorCode::kMissing, "%s: missing tensor '%s'", files.path().c_str(), name.c_str());
  if (t->n_dims != 2 || t->ne[0] != row_length || t->ne[1] != rows) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' has shape %s (innermost first), expected [%lld, %lld]",
                      files.path().c_str(), name.c_str(), shape_string(*t).c_str(), (long long)row_length,
                      (long long)rows);
  }
  return *t;
}

inline Expected<std::vector<float>> bind_vector_f32(const ModelFiles& files, const std::string& name, int64_t n) {
  const TensorView* t = files.find_tensor(name);
  if (t == nullptr) return make_error(ErrorCode::kMissing, "%s: missing tensor '%s'", files.path().c_str(), name.c_str());
  if (t->elements() != n || (t->n_dims != 1 && !(t->n_dims == 2 && t->ne[1] == 1))) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' has shape %s, expected [%lld]", files.path().c_str(),
                      name.c_str(), shape_string(*t).c_str(), (long long)n);
  }
  const WeightTypeInfo info = weight_type_info(t->type);
  if (n % info.block_elements != 0) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' of type %s cannot hold %lld values",
                      files.path().c_str(), name.c_str(), info.name, (long long)n);
  }
  std::vector<float> values(static_cast<size_t>(n));
  dequantize_row(t->type, t->data, values.data(), n);
  return values;
}

// Cuts a stacked [E][rows][row_length] tensor into E matrices (zero copy).
inline Expected<std::vector<TensorView>> slice_stacked_experts(const ModelFiles& files, const std::string& name,
                                                               int64_t row_length, int64_t rows, int64_t n_experts) {
  const TensorView* t = files.find_tensor(name);
  if (t == nullptr) return make_error(ErrorCode::kMissing, "%s: missing tensor '%s'", files.path().c_str(), name.c_str());
  if (t->n_dims != 3 || t->ne[0] != row_length || t->ne[1] != rows || t->ne[2] != n_experts) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' has shape %s, expected [%lld, %lld, %lld]",
                      files.path().c_str(), name.c_str(), shape_string(*t).c_str(), (long long)row_length,
                      (long long)rows, (long long)n_experts);
  }
  std::vector<TensorView> experts;
  const uint64_t expert_bytes = t->row_bytes() * static_cast<uint64_t>(rows);
  for (int64_t e = 0; e < n_experts; ++e) {
    TensorView view = *t;
    view.name = name + "[" + std::to_string(e) + "]";
    view.n_dims = 2;
    view.ne[2] = 1;
    view.data = t->data + expert_bytes * static_cast<uint64_t>(e);
    view.bytes = expert_bytes;
    experts.push_back(view);
  }
  return experts;
}

inline Expected<std::vector<TensorView>> bind_experts(const ModelFiles& files, const TensorNames& names,
                                                      int64_t layer, const char* w, int64_t row_length,
                                                      int64_t rows, int64_t n_experts) {
  if (files.format() == ModelFormat::kGguf) {
    const std::string stacked = TensorNames::stacked_experts(layer, w);
    if (files.find_tensor(stacked) != nullptr)
      return slice_stacked_experts(files, stacked, row_length, rows, n_experts);
  }
  std::vector<TensorView> experts;
  for (int64_t e = 0; e < n_experts; ++e) {
    auto m = bind_matrix(files, names.expert(layer, e, w), row_length, rows);
    if (!m) return m.error();
    experts.push_back(*m);
  }
  return experts;
}

}  // namespace detail

// Regroups every Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K matrix of a GGUF read into private memory into row tiles
// (quant/row_tiles.hpp) when this CPU's kernels prefer them for its type: same bytes, no copy. The embedding table
// stays as it is (its rows are looked up one at a time); stacked experts are tiled whole, each
// expert's rows being a multiple of 16 so that slicing still works. Returns the count tiled.
inline int64_t tile_matrix_rows(ModelFiles& files) {
  if (files.format() != ModelFormat::kGguf) return 0;
  const std::string embedding = detail::TensorNames{files.format()}.embedding();
  int64_t tiled = 0;
  for (const std::string& name : files.tensor_names()) {
    TensorView* t = files.writable_tensor(name);
    if (t == nullptr || name == embedding || t->n_dims < 2 || t->row_tiles || !ops::prefers_row_tiles(t->type) ||
        !quant::row_tiles_apply(t->type, t->ne[1]) ||
        t->row_length() % quant::tile_format(t->type).values != 0) {
      continue;
    }
    const uint64_t tile_bytes = quant::kTileRows * t->row_bytes();
    std::unique_ptr<uint8_t[]> scratch(new (std::nothrow) uint8_t[tile_bytes]);
    if (!scratch) return tiled;  // out of memory: the rest keep the ordinary layout
    quant::tile_rows_in_place(t->type, const_cast<uint8_t*>(t->data), t->row_length(), t->rows(), scratch.get());
    t->row_tiles = true;
    ++tiled;
  }
  return tiled;
}

// Binds every tensor the configuration calls for; the first missing or misshapen one is the error.
inline Expected<ModelWeights> bind_weights(const ModelFiles& files) {
  const ModelConfig& c = files.config();
  const detail::TensorNames names{files.format()};
  ModelWeights w;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;

  auto embedding = detail::bind_matrix(files, names.embedding(), c.dim, c.vocab_size);
  if (!embedding) return embedding.error();
  w.token_embedding = *embedding;
  auto output_norm = detail::bind_vector_f32(files, names.output_norm(), c.dim);
  if (!output_norm) return output_norm.error();
  w.output_norm = std::move(*output_norm);
  // Some GGUF conversions tie the output matrix to the embedding and leave output.weight out.
  if (files.format() == ModelFormat::kGguf && files.find_tensor(names.output()) == nullptr) {
    w.output = w.token_embedding;
  } else {
    auto output = detail::bind_matrix(files, names.output(), c.dim, c.vocab_size);
    if (!output) return output.error();
    w.output = *output;
  }

  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights layer;
    auto attention_norm = detail::bind_vector_f32(files, names.layer(l, "attention_norm"), c.dim);
    if (!attention_norm) return attention_norm.error();
    layer.attention_norm = std::move(*attention_norm);
    auto ffn_norm = detail::bind_vector_f32(files, names.layer(l, "ffn_norm"), c.dim);
    if (!ffn_norm) return ffn_norm.error();
    layer.ffn_norm = std::move(*ffn_norm);

    struct MatrixRole { const char* role; TensorView* slot; int64_t row_length, rows; };
    std::vector<MatrixRole> roles = {{"wq", &layer.wq, c.dim, q_dim},
                                     {"wk", &layer.wk, c.dim, kv_dim},
                                     {"wv", &layer.wv, c.dim, kv_dim},
                                     {"wo", &layer.wo, q_dim, c.dim}};
    if (c.n_experts == 0) {
      roles.push_back({"w1", &layer.w1, c.dim, c.hidden_dim});
      roles.push_back({"w2", &layer.w2, c.hidden_dim, c.dim});
      roles.push_back({"w3", &layer.w3, c.dim, c.hidden_dim});
    } else {
      roles.push_back({"router", &layer.router, c.dim, c.n_experts});
    }
    for (const MatrixRole& r : roles) {
      auto m = detail::bind_matrix(files, names.layer(l, r.role), r.row_length, r.rows);
      if (!m) return m.error();
      *r.slot = *m;
    }
    if (c.n_experts > 0) {
      auto w1 = detail::bind_experts(files, names, l, "w1", c.dim, c.hidden_dim, c.n_experts);
      if (!w1) return w1.error();
      auto w2 = detail::bind_experts(files, names, l, "w2", c.hidden_dim, c.dim, c.n_experts);
      if (!w2) return w2.error();
      auto w3 = detail::bind_experts(files, names, l, "w3", c.dim, c.hidden_dim, c.n_experts);
      if (!w3) return w3.error();
      layer.expert_w1 = std::move(*w1);
      layer.expert_w2 = std::move(*w2);
      layer.expert_w3 = std::move(*w3);
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

}  // namespace bora

#endif  // BORA_MODEL_WEIGHTS_HPP
