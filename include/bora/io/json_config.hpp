// Why this file exists: a model's sizes come from one of three places (Mistral's params.json,
// Hugging Face's config.json, GGUF metadata); each is read here into the one ModelConfig, with the
// defaults each ecosystem applies, and checked so absurd sizes never reach an allocation.
#ifndef BORA_IO_JSON_CONFIG_HPP
#define BORA_IO_JSON_CONFIG_HPP

#include <simdjson.h>

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "bora/base/expected.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/model_config.hpp"

namespace bora {

// Limits far above any real Mistral-family model, low enough that sizes derived from them
// (dim * vocab, layers * window * heads...) cannot overflow 64 bits.
struct ConfigLimits {
  static constexpr int64_t kMaxDim = int64_t{1} << 20;
  static constexpr int64_t kMaxLayers = 4096;
  static constexpr int64_t kMaxHeads = int64_t{1} << 16;
  static constexpr int64_t kMaxVocab = int64_t{1} << 24;
  static constexpr int64_t kMaxContext = int64_t{1} << 30;
  static constexpr int64_t kMaxExperts = 4096;
};

// Checks the sizes every format shares; `name` is the file named in the error.
inline Status validate_model_config(const ModelConfig& c, const std::string& name) {
  const char* file = name.c_str();
  auto in_range = [&](int64_t value, int64_t low, int64_t high, const char* what) -> Status {
    if (value < low || value >= high) {
      return make_error(ErrorCode::kFormat, "%s: %s is %" PRId64 ", expected %" PRId64 " <= %s < %" PRId64, file, what,
                        value, low, what, high);
    }
    return {};
  };
  BORA_RETURN_IF_ERROR(in_range(c.dim, 1, ConfigLimits::kMaxDim, "dim"));
  BORA_RETURN_IF_ERROR(in_range(c.n_layers, 1, ConfigLimits::kMaxLayers, "n_layers"));
  BORA_RETURN_IF_ERROR(in_range(c.n_heads, 1, ConfigLimits::kMaxHeads, "n_heads"));
  BORA_RETURN_IF_ERROR(in_range(c.n_kv_heads, 1, ConfigLimits::kMaxHeads, "n_kv_heads"));
  BORA_RETURN_IF_ERROR(in_range(c.head_dim, 2, ConfigLimits::kMaxDim, "head_dim"));
  BORA_RETURN_IF_ERROR(in_range(c.hidden_dim, 1, ConfigLimits::kMaxDim, "hidden_dim"));
  BORA_RETURN_IF_ERROR(in_range(c.vocab_size, 1, ConfigLimits::kMaxVocab, "vocab_size"));
  BORA_RETURN_IF_ERROR(in_range(c.context_length, 0, ConfigLimits::kMaxContext, "context_length"));
  BORA_RETURN_IF_ERROR(in_range(c.sliding_window, 0, ConfigLimits::kMaxContext, "sliding_window"));
  BORA_RETURN_IF_ERROR(in_range(c.n_experts, 0, ConfigLimits::kMaxExperts, "n_experts"));
  if (c.n_heads % c.n_kv_heads != 0) {
    return make_error(ErrorCode::kFormat, "%s: n_heads (%" PRId64 ") is not a multiple of n_kv_heads (%" PRId64 ")",
                      file, c.n_heads, c.n_kv_heads);
  }
  if (c.head_dim % 2 != 0) {
    return make_error(ErrorCode::kFormat, "%s: head_dim is %" PRId64 ", but RoPE needs an even head_dim", file,
                      c.head_dim);
  }
  if (c.n_heads * c.head_dim >= ConfigLimits::kMaxDim) {
    return make_error(ErrorCode::kFormat, "%s: n_heads * head_dim = %" PRId64 " is absurdly large", file,
                      c.n_heads * c.head_dim);
  }
  if (c.n_experts == 0 && c.n_experts_used != 0) {
    return make_error(ErrorCode::kFormat, "%s: %" PRId64 " experts used per token, but the model has no experts", file,
                      c.n_experts_used);
  }
  if (c.n_experts > 0 && (c.n_experts_used < 1 || c.n_experts_used > c.n_experts)) {
    return make_error(ErrorCode::kFormat, "%s: experts used per token is %" PRId64 ", expected 1..%" PRId64, file,
                      c.n_experts_used, c.n_experts);
  }
  if (!(c.norm_eps > 0.0f) || !(c.norm_eps < 1.0f)) {
    return make_error(ErrorCode::kFormat, "%s: norm_eps is %g, expected 0 < norm_eps < 1", file,
                      static_cast<double>(c.norm_eps));
  }
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta)) {
    return make_error(ErrorCode::kFormat, "%s: rope_theta is %g, expected a positive finite number", file,
                      static_cast<double>(c.rope_theta));
  }
  return {};
}

namespace config_detail {

inline const char* json_type_name(simdjson::dom::element_type type) {
  switch (type) {
    case simdjson::dom::element_type::ARRAY: return "an array";
    case simdjson::dom::element_type::OBJECT: return "an object";
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64: return "an integer";
    case simdjson::dom::element_type::DOUBLE: return "a floating-point number";
    case simdjson::dom::element_type::STRING: return "a string";
    case simdjson::dom::element_type::BOOL: return "a boolean";
    case simdjson::dom::element_type::NULL_VALUE: return "null";
  }
  return "unknown";
}

// Typed access to the keys of one JSON object; absent and null both count as "not given".
class JsonFields {
 public:
  JsonFields(simdjson::dom::object object, const std::string& file, const char* prefix = "")
      : object_(object), file_(file), prefix_(prefix) {}

  // Present at all, even as null.
  bool present(const char* key) const {
    simdjson::dom::element element;
    return object_.at_key(key).get(element) == simdjson::SUCCESS;
  }
  // Present and not null.
  bool has(const char* key) const {
    simdjson::dom::element element;
    return object_.at_key(key).get(element) == simdjson::SUCCESS && !element.is_null();
  }

  // Sets *out only when the key is present and not null; a required key must be present.
  Status get_int(const char* key, int64_t* out, bool required) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return missing_or_ok(key, required);
    return to_int(key, element, out);
  }
  Status get_double(const char* key, double* out, bool required) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return missing_or_ok(key, required);
    double value = 0.0;
    if (element.get_double().get(value) != simdjson::SUCCESS) return wrong_type(key, element, "a number");
    *out = value;
    return {};
  }
  Status get_string(const char* key, std::string* out, bool required) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return missing_or_ok(key, required);
    std::string_view value;
    if (element.get_string().get(value) != simdjson::SUCCESS) return wrong_type(key, element, "a string");
    *out = std::string(value);
    return {};
  }
  // Token ids may be a single integer or (newer configs) a list; the first entry is used.
  Status get_token_id(const char* key, int32_t* out) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return {};
    simdjson::dom::array list;
    if (element.get_array().get(list) == simdjson::SUCCESS) {
      if (list.size() == 0) return {};
      element = *list.begin();
    }
    int64_t value = 0;
    BORA_RETURN_IF_ERROR(to_int(key, element, &value));
    if (value < 0 || value >= ConfigLimits::kMaxVocab) {
      return make_error(ErrorCode::kFormat, "%s: key '%s%s' is %" PRId64 ", not a valid token id", file_.c_str(),
                        prefix_, key, value);
    }
    *out = static_cast<int32_t>(value);
    return {};
  }
  // The first entry of a list of strings (HF "architectures"); leaves *out alone when absent.
  Status get_first_string(const char* key, std::string* out) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return {};
    simdjson::dom::array list;
    if (element.get_array().get(list) != simdjson::SUCCESS) return wrong_type(key, element, "an array of strings");
    if (list.size() == 0) return {};
    std::string_view value;
    if ((*list.begin()).get_string().get(value) != simdjson::SUCCESS) {
      return wrong_type(key, *list.begin(), "an array of strings");
    }
    *out = std::string(value);
    return {};
  }
  // *found is false when the key is absent or null.
  Status get_object(const char* key, simdjson::dom::object* out, bool* found) const {
    simdjson::dom::element element;
    *found = lookup(key, &element);
    if (!*found) return {};
    if (element.get_object().get(*out) != simdjson::SUCCESS) return wrong_type(key, element, "an object");
    return {};
  }

 private:
  bool lookup(const char* key, simdjson::dom::element* element) const {
    if (object_.at_key(key).get(*element) != simdjson::SUCCESS) return false;
    return !element->is_null();
  }
  Status missing_or_ok(const char* key, bool required) const {
    if (!required) return {};
    return make_error(ErrorCode::kMissing, "%s: required key '%s%s' is missing or null", file_.c_str(), prefix_, key);
  }
  Status wrong_type(const char* key, simdjson::dom::element element, const char* expected) const {
    return make_error(ErrorCode::kFormat, "%s: key '%s%s' is %s, expected %s", file_.c_str(), prefix_, key,
                      json_type_name(element.type()), expected);
  }
  Status to_int(const char* key, simdjson::dom::element element, int64_t* out) const {
    int64_t value = 0;
    double real = 0.0;
    if (element.get_int64().get(value) == simdjson::SUCCESS) {
      *out = value;
      return {};
    }
    // Some exporters write integers as 4096.0; accept those when exact.
    if (element.type() == simdjson::dom::element_type::DOUBLE && element.get_double().get(real) == simdjson::SUCCESS &&
        std::fabs(real) < 9007199254740992.0 && std::floor(real) == real) {
      *out = static_cast<int64_t>(real);
      return {};
    }
    if (element.type() == simdjson::dom::element_type::UINT64) {
      return make_error(ErrorCode::kFormat, "%s: key '%s%s' is an integer too large for 64-bit signed", file_.c_str(),
                        prefix_, key);
    }
    return wrong_type(key, element, "an integer");
  }

  simdjson::dom::object object_;
  const std::string& file_;
  const char* prefix_;
};

// Parses `json` and hands its top-level object to `fill`. The parser must outlive the object,
// so both live here.
template <class Fill>
Expected<ModelConfig> parse_json_object(std::string_view json, const std::string& name, Fill fill) {
  simdjson::padded_string padded(json.data(), json.size());
  if (padded.data() == nullptr) return make_error(ErrorCode::kIo, "%s: out of memory copying the JSON", name.c_str());
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::error_code parse_error = parser.parse(padded).get(root);
  if (parse_error != simdjson::SUCCESS) {
    return make_error(ErrorCode::kFormat, "%s: malformed JSON: %s", name.c_str(), simdjson::error_message(parse_error));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return make_error(ErrorCode::kFormat, "%s: the top level is %s, expected a JSON object", name.c_str(),
                      json_type_name(root.type()));
  }
  ModelConfig config;
  BORA_RETURN_IF_ERROR(fill(JsonFields(object, name), &config));
  BORA_RETURN_IF_ERROR(validate_model_config(config, name));
  return config;
}

inline Status default_head_dim(ModelConfig* c, const std::string& name, const char* dim_key, const char* heads_key) {
  if (c->n_heads <= 0 || c->dim <= 0 || c->dim % c->n_heads != 0) {
    return make_error(ErrorCode::kFormat, "%s: head_dim is not given and %s (%" PRId64 ") is not a multiple of %s (%" PRId64 ")",
                      name.c_str(), dim_key, c->dim, heads_key, c->n_heads);
  }
  c->head_dim = c->dim / c->n_heads;
  return {};
}

}  // namespace config_detail

// Hugging Face config.json (MistralForCausalLM / MixtralForCausalLM). HF permutes q/k rows for
// rotate-half RoPE, hence kHalfSplit. Defaults follow transformers' MistralConfig / MixtralConfig:
// an absent sliding_window means 4096 for "mistral" and none for "mixtral"; null means none.
inline Expected<ModelConfig> parse_hf_config(std::string_view json, const std::string& name_for_errors) {
  return config_detail::parse_json_object(
      json, name_for_errors, [&](const config_detail::JsonFields& f, ModelConfig* c) -> Status {
        const std::string& name = name_for_errors;
        std::string model_type;
        BORA_RETURN_IF_ERROR(f.get_string("model_type", &model_type, false));
        if (model_type.empty()) {  // fall back to the class name in "architectures"
          std::string class_name;
          BORA_RETURN_IF_ERROR(f.get_first_string("architectures", &class_name));
          if (class_name == "MistralForCausalLM") model_type = "mistral";
          if (class_name == "MixtralForCausalLM") model_type = "mixtral";
          if (class_name == "LlamaForCausalLM") model_type = "llama";
          if (model_type.empty()) model_type = class_name.empty() ? "(none)" : class_name;
        }
        if (model_type != "mistral" && model_type != "mixtral" && model_type != "llama") {
          return make_error(ErrorCode::kUnsupported, "%s: model_type '%s' is not supported (mistral, mixtral, llama)",
                            name.c_str(), model_type.c_str());
        }
        BORA_RETURN_IF_ERROR(f.get_int("hidden_size", &c->dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("num_hidden_layers", &c->n_layers, true));
        BORA_RETURN_IF_ERROR(f.get_int("num_attention_heads", &c->n_heads, true));
        c->n_kv_heads = c->n_heads;
        BORA_RETURN_IF_ERROR(f.get_int("num_key_value_heads", &c->n_kv_heads, false));
        BORA_RETURN_IF_ERROR(f.get_int("intermediate_size", &c->hidden_dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, true));
        if (f.has("head_dim")) {
          BORA_RETURN_IF_ERROR(f.get_int("head_dim", &c->head_dim, true));
        } else {
          BORA_RETURN_IF_ERROR(config_detail::default_head_dim(c, name, "hidden_size", "num_attention_heads"));
        }
        double eps = 1e-6, theta = model_type == "mixtral" ? 1e6 : 1e4;
        BORA_RETURN_IF_ERROR(f.get_double("rms_norm_eps", &eps, false));
        BORA_RETURN_IF_ERROR(f.get_double("rope_theta", &theta, false));
        c->norm_eps = static_cast<float>(eps);
        c->rope_theta = static_cast<float>(theta);
        c->sliding_window = 0;
        if (model_type == "mistral" && !f.present("sliding_window")) {
          // Absent (not null) means transformers' default window.
          c->sliding_window = 4096;
        }
        BORA_RETURN_IF_ERROR(f.get_int("sliding_window", &c->sliding_window, false));
        BORA_RETURN_IF_ERROR(f.get_int("max_position_embeddings", &c->context_length, false));
        BORA_RETURN_IF_ERROR(f.get_int("num_local_experts", &c->n_experts, false));
        BORA_RETURN_IF_ERROR(f.get_int("num_experts_per_tok", &c->n_experts_used, false));
        if (c->n_experts == 0) c->n_experts_used = 0;  // dense configs may still carry a top-k default
        BORA_RETURN_IF_ERROR(f.get_token_id("bos_token_id", &c->bos_id));
        BORA_RETURN_IF_ERROR(f.get_token_id("eos_token_id", &c->eos_id));
        c->architecture = c->n_experts > 0 ? "mixtral" : model_type;
        c->rope_pairing = RopePairing::kHalfSplit;
        return {};
      });
}

// Mistral's params.json (REFERENCE.md §1). Without rope_theta, the 2023 dense code used 1e4 and
// the 2024 code 1e6; a file carrying sliding_window is the 2023 (v0.1) style.
inline Expected<ModelConfig> parse_mistral_params(std::string_view json, const std::string& name_for_errors) {
  return config_detail::parse_json_object(
      json, name_for_errors, [&](const config_detail::JsonFields& f, ModelConfig* c) -> Status {
        const std::string& name = name_for_errors;
        BORA_RETURN_IF_ERROR(f.get_int("dim", &c->dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("n_layers", &c->n_layers, true));
        BORA_RETURN_IF_ERROR(f.get_int("n_heads", &c->n_heads, true));
        c->n_kv_heads = c->n_heads;
        BORA_RETURN_IF_ERROR(f.get_int("n_kv_heads", &c->n_kv_heads, false));
        if (f.has("head_dim")) {
          BORA_RETURN_IF_ERROR(f.get_int("head_dim", &c->head_dim, true));
        } else {
          BORA_RETURN_IF_ERROR(config_detail::default_head_dim(c, name, "dim", "n_heads"));
        }
        BORA_RETURN_IF_ERROR(f.get_int("hidden_dim", &c->hidden_dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, true));
        double eps = 1e-5;
        BORA_RETURN_IF_ERROR(f.get_double("norm_eps", &eps, true));
        c->norm_eps = static_cast<float>(eps);
        const bool has_window = f.has("sliding_window");
        c->sliding_window = 0;
        BORA_RETURN_IF_ERROR(f.get_int("sliding_window", &c->sliding_window, false));
        double theta = has_window ? 1e4 : 1e6;
        BORA_RETURN_IF_ERROR(f.get_double("rope_theta", &theta, false));
        c->rope_theta = static_cast<float>(theta);
        simdjson::dom::object moe;
        bool has_moe = false;
        BORA_RETURN_IF_ERROR(f.get_object("moe", &moe, &has_moe));
        if (has_moe) {
          const config_detail::JsonFields moe_fields(moe, name, "moe.");
          BORA_RETURN_IF_ERROR(moe_fields.get_int("num_experts", &c->n_experts, true));
          BORA_RETURN_IF_ERROR(moe_fields.get_int("num_experts_per_tok", &c->n_experts_used, true));
        }
        BORA_RETURN_IF_ERROR(f.get_int("max_seq_len", &c->context_length, false));
        c->architecture = c->n_experts > 0 ? "mixtral" : "mistral";
        c->rope_pairing = RopePairing::kAdjacent;
        return {};
      });
}

// GGUF metadata written by llama.cpp's converter for Mistral/Mixtral (architecture "llama"; the
// keys are prefixed with the architecture name).
inline Expected<ModelConfig> config_from_gguf(const GgufFile& gguf) {
  const char* file = gguf.name().c_str();
  Expected<std::string> arch = gguf.get_string("general.architecture");
  if (!arch) return arch.error();
  if (*arch != "llama" && *arch != "mistral") {
    return make_error(ErrorCode::kUnsupported,
                      "%s: general.architecture is '%s'; bora reads 'llama' (Mistral/Mixtral GGUF files)", file,
                      arch->c_str());
  }
  const std::string prefix = *arch + ".";
  ModelConfig c;
  c.architecture = *arch;
  c.rope_pairing = RopePairing::kAdjacent;

  // Required and optional integer keys, each read as a non-negative count.
  auto read_count = [&](const char* suffix, int64_t* out, bool required) -> Status {
    const std::string key = prefix + suffix;
    if (gguf.find(key) == nullptr) {
      if (required) return make_error(ErrorCode::kMissing, "%s: metadata key '%s' is missing", file, key.c_str());
      return {};
    }
    Expected<uint64_t> value = gguf.get_uint(key);
    if (!value) return value.error();
    if (*value > static_cast<uint64_t>(ConfigLimits::kMaxContext)) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%s' is %" PRIu64 ", absurdly large", file, key.c_str(),
                        *value);
    }
    *out = static_cast<int64_t>(*value);
    return {};
  };
  auto read_real = [&](const char* suffix, float* out) -> Status {
    const std::string key = prefix + suffix;
    if (gguf.find(key) == nullptr) return {};
    Expected<double> value = gguf.get_float(key);
    if (!value) return value.error();
    *out = static_cast<float>(*value);
    return {};
  };

  BORA_RETURN_IF_ERROR(read_count("embedding_length", &c.dim, true));
  BORA_RETURN_IF_ERROR(read_count("block_count", &c.n_layers, true));
  BORA_RETURN_IF_ERROR(read_count("feed_forward_length", &c.hidden_dim, true));
  BORA_RETURN_IF_ERROR(read_count("attention.head_count", &c.n_heads, true));
  c.n_kv_heads = c.n_heads;
  BORA_RETURN_IF_ERROR(read_count("attention.head_count_kv", &c.n_kv_heads, false));
  c.norm_eps = 1e-5f;
  BORA_RETURN_IF_ERROR(read_real("attention.layer_norm_rms_epsilon", &c.norm_eps));
  c.rope_theta = 10000.0f;
  BORA_RETURN_IF_ERROR(read_real("rope.freq_base", &c.rope_theta));
  BORA_RETURN_IF_ERROR(read_count("context_length", &c.context_length, false));
  BORA_RETURN_IF_ERROR(read_count("attention.sliding_window", &c.sliding_window, false));
  BORA_RETURN_IF_ERROR(read_count("expert_count", &c.n_experts, false));
  BORA_RETURN_IF_ERROR(read_count("expert_used_count", &c.n_experts_used, false));

  // head_dim: attention.key_length if given, else the RoPE width, else dim / heads.
  int64_t key_length = 0, rope_dims = 0;
  BORA_RETURN_IF_ERROR(read_count("attention.key_length", &key_length, false));
  BORA_RETURN_IF_ERROR(read_count("rope.dimension_count", &rope_dims, false));
  if (key_length > 0) {
    c.head_dim = key_length;
  } else if (rope_dims > 0) {
    c.head_dim = rope_dims;
  } else {
    BORA_RETURN_IF_ERROR(config_detail::default_head_dim(&c, gguf.name(), (prefix + "embedding_length").c_str(),
                                                         (prefix + "attention.head_count").c_str()));
  }
  if (rope_dims > 0 && rope_dims != c.head_dim) {
    return make_error(ErrorCode::kUnsupported, "%s: %srope.dimension_count is %" PRId64 " but head_dim is %" PRId64
                      "; partial rotary embeddings are not supported", file, prefix.c_str(), rope_dims, c.head_dim);
  }

  // Vocabulary: explicit key, else the token list, else the embedding's row count.
  BORA_RETURN_IF_ERROR(read_count("vocab_size", &c.vocab_size, false));
  if (c.vocab_size == 0) {
    const GgufValue* tokens = gguf.find("tokenizer.ggml.tokens");
    if (tokens != nullptr && tokens->is_array()) {
      c.vocab_size = static_cast<int64_t>(tokens->array_count);
    } else if (const TensorView* embedding = gguf.find_tensor("token_embd.weight")) {
      c.vocab_size = embedding->ne[1];
    }
  }
  if (c.vocab_size == 0) {
    return make_error(ErrorCode::kMissing, "%s: cannot tell the vocabulary size (no %svocab_size, no "
                      "tokenizer.ggml.tokens, no token_embd.weight)", file, prefix.c_str());
  }

  auto read_token = [&](const char* key, int32_t* out) -> Status {
    if (gguf.find(key) == nullptr) return {};
    Expected<int64_t> value = gguf.get_int(key);
    if (!value) return value.error();
    if (*value < 0 || *value >= c.vocab_size) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%s' is %" PRId64 ", outside the vocabulary of %" PRId64,
                        file, key, *value, c.vocab_size);
    }
    *out = static_cast<int32_t>(*value);
    return {};
  };
  BORA_RETURN_IF_ERROR(read_token("tokenizer.ggml.bos_token_id", &c.bos_id));
  BORA_RETURN_IF_ERROR(read_token("tokenizer.ggml.eos_token_id", &c.eos_id));

  BORA_RETURN_IF_ERROR(validate_model_config(c, gguf.name()));
  return c;
}

}  // namespace bora

#endif  // BORA_IO_JSON_CONFIG_HPP
