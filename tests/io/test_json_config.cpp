// Why this file exists: the three configuration readers (params.json, config.json, GGUF metadata)
// must agree on the tiny models, apply each ecosystem's defaults, and reject malformed or absurd
// configurations with errors naming the file and the key.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "../support/error_text.hpp"
#include "../support/gguf_writer.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/json_config.hpp"
#include "../support/golden.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

using bora_test::data_path;

std::string read_data_text(const std::string& relative) {
  auto mapped = bora::MappedFile::open(data_path(relative));
  REQUIRE(mapped.has_value());
  return std::string(reinterpret_cast<const char*>(mapped->data()), static_cast<size_t>(mapped->size()));
}

using bora_test::contains;

void check_tiny_mistral_sizes(const bora::ModelConfig& c) {
  CHECK(c.dim == 256);
  CHECK(c.n_layers == 2);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 2);
  CHECK(c.head_dim == 32);
  CHECK(c.hidden_dim == 512);
  CHECK(c.vocab_size == 512);
  CHECK(c.sliding_window == 16);
  CHECK(c.n_experts == 0);
  CHECK(c.n_experts_used == 0);
  CHECK(c.norm_eps == doctest::Approx(1e-5f));
  CHECK(c.rope_theta == 10000.0f);
  CHECK(c.bos_id == 1);
  CHECK(c.eos_id == 2);
}

void check_tiny_mixtral_sizes(const bora::ModelConfig& c) {
  CHECK(c.dim == 256);
  CHECK(c.n_layers == 2);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 2);
  CHECK(c.head_dim == 32);
  CHECK(c.hidden_dim == 256);
  CHECK(c.vocab_size == 512);
  CHECK(c.sliding_window == 0);
  CHECK(c.n_experts == 8);
  CHECK(c.n_experts_used == 2);
  CHECK(c.norm_eps == doctest::Approx(1e-5f));
  CHECK(c.rope_theta == 1000000.0f);
}

std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

// A valid params.json with one key replaced (or removed when `value` is empty).
std::string params_with(const std::string& key, const std::string& value) {
  const std::vector<std::pair<std::string, std::string>> base = {
      {"dim", "256"},         {"n_layers", "2"},  {"head_dim", "32"},     {"hidden_dim", "512"},
      {"n_heads", "8"},       {"n_kv_heads", "2"}, {"norm_eps", "1e-05"}, {"vocab_size", "512"},
      {"rope_theta", "1e4"},
  };
  std::string json = "{";
  bool replaced = false;
  for (const auto& kv : base) {
    std::string v = kv.second;
    if (kv.first == key) {
      replaced = true;
      if (value.empty()) continue;
      v = value;
    }
    if (json.size() > 1) json += ",";
    json += "\"" + kv.first + "\":" + v;
  }
  if (!replaced && !value.empty()) json += ",\"" + key + "\":" + value;
  return json + "}";
}

}  // namespace

TEST_CASE("config: params.json of the tiny models") {
  auto mistral = bora::parse_mistral_params(read_data_text("tiny-mistral/native/params.json"), "params.json");
  REQUIRE_MESSAGE(mistral.has_value(), (mistral ? "" : mistral.error().message()));
  check_tiny_mistral_sizes(*mistral);
  CHECK(mistral->rope_pairing == bora::RopePairing::kAdjacent);
  CHECK(mistral->architecture == "mistral");

  auto mixtral = bora::parse_mistral_params(read_data_text("tiny-mixtral/native/params.json"), "params.json");
  REQUIRE_MESSAGE(mixtral.has_value(), (mixtral ? "" : mixtral.error().message()));
  check_tiny_mixtral_sizes(*mixtral);
  CHECK(mixtral->rope_pairing == bora::RopePairing::kAdjacent);
  CHECK(mixtral->architecture == "mixtral");
}

TEST_CASE("config: HF config.json of the tiny models") {
  auto mistral = bora::parse_hf_config(read_data_text("tiny-mistral/hf/config.json"), "config.json");
  REQUIRE_MESSAGE(mistral.has_value(), (mistral ? "" : mistral.error().message()));
  check_tiny_mistral_sizes(*mistral);
  CHECK(mistral->context_length == 32768);
  CHECK(mistral->rope_pairing == bora::RopePairing::kHalfSplit);
  CHECK(mistral->architecture == "mistral");

  auto mixtral = bora::parse_hf_config(read_data_text("tiny-mixtral/hf/config.json"), "config.json");
  REQUIRE_MESSAGE(mixtral.has_value(), (mixtral ? "" : mixtral.error().message()));
  check_tiny_mixtral_sizes(*mixtral);  // "sliding_window": null -> no window
  CHECK(mixtral->rope_pairing == bora::RopePairing::kHalfSplit);
  CHECK(mixtral->architecture == "mixtral");
}

TEST_CASE("config: GGUF metadata of the tiny models") {
  const char* mistral_files[] = {"tiny-mistral/tiny-mistral-F32.gguf", "tiny-mistral/tiny-mistral-Q4_K_M.gguf"};
  for (const char* f : mistral_files) {
    CAPTURE(f);
    auto gguf = bora::GgufFile::open(data_path(f));
    REQUIRE(gguf.has_value());
    auto c = bora::config_from_gguf(*gguf);
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().message()));
    check_tiny_mistral_sizes(*c);
    CHECK(c->context_length == 32768);
    CHECK(c->rope_pairing == bora::RopePairing::kAdjacent);
    CHECK(c->architecture == "llama");
  }
  auto gguf = bora::GgufFile::open(data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf"));
  REQUIRE(gguf.has_value());
  auto c = bora::config_from_gguf(*gguf);
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().message()));
  check_tiny_mixtral_sizes(*c);

  auto demo = bora::GgufFile::open(data_path("demo-mistral/demo-mistral-Q4_0.gguf"));
  REQUIRE(demo.has_value());
  auto d = bora::config_from_gguf(*demo);
  REQUIRE(d.has_value());
  CHECK(d->n_layers == 4);
  CHECK(d->hidden_dim == 768);
  CHECK(d->vocab_size == 32000);
  CHECK(d->sliding_window == 64);
}

TEST_CASE("config: params.json defaults") {
  SUBCASE("rope_theta: 1e4 for v0.1-style files with sliding_window, else 1e6") {
    auto with_window = bora::parse_mistral_params(params_with("rope_theta", "") .insert(1, "\"sliding_window\":4096,"), "p.json");
    REQUIRE(with_window.has_value());
    CHECK(with_window->rope_theta == 10000.0f);
    CHECK(with_window->sliding_window == 4096);
    auto without = bora::parse_mistral_params(params_with("rope_theta", ""), "p.json");
    REQUIRE(without.has_value());
    CHECK(without->rope_theta == 1000000.0f);
    CHECK(without->sliding_window == 0);
  }
  SUBCASE("sliding_window null means none") {
    auto c = bora::parse_mistral_params(params_with("sliding_window", "null"), "p.json");
    REQUIRE(c.has_value());
    CHECK(c->sliding_window == 0);
  }
  SUBCASE("head_dim defaults to dim / n_heads; n_kv_heads to n_heads") {
    auto c = bora::parse_mistral_params(params_with("head_dim", ""), "p.json");
    REQUIRE(c.has_value());
    CHECK(c->head_dim == 32);
    auto d = bora::parse_mistral_params(params_with("n_kv_heads", ""), "p.json");
    REQUIRE(d.has_value());
    CHECK(d->n_kv_heads == 8);
  }
  SUBCASE("integers written as 256.0 are accepted; unknown keys ignored") {
    auto c = bora::parse_mistral_params(params_with("dim", "256.0").insert(1, "\"max_batch_size\":1,"), "p.json");
    REQUIRE(c.has_value());
    CHECK(c->dim == 256);
  }
}

TEST_CASE("config: HF config.json defaults") {
  const std::string base =
      "\"hidden_size\":256,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":2,"
      "\"intermediate_size\":512,\"vocab_size\":512,\"rms_norm_eps\":1e-5";
  auto mistral = bora::parse_hf_config("{\"model_type\":\"mistral\"," + base + "}", "c.json");
  REQUIRE(mistral.has_value());
  CHECK(mistral->sliding_window == 4096);  // transformers' MistralConfig default when absent
  CHECK(mistral->rope_theta == 10000.0f);
  CHECK(mistral->head_dim == 32);
  auto mixtral = bora::parse_hf_config(
      "{\"model_type\":\"mixtral\",\"num_local_experts\":8,\"num_experts_per_tok\":2," + base + "}", "c.json");
  REQUIRE(mixtral.has_value());
  CHECK(mixtral->sliding_window == 0);
  CHECK(mixtral->rope_theta == 1000000.0f);
  CHECK(mixtral->n_experts == 8);
  auto null_window = bora::parse_hf_config("{\"model_type\":\"mistral\",\"sliding_window\":null," + base + "}", "c");
  REQUIRE(null_window.has_value());
  CHECK(null_window->sliding_window == 0);
  auto by_class = bora::parse_hf_config(
      "{\"architectures\":[\"MixtralForCausalLM\"],\"num_local_experts\":4,\"num_experts_per_tok\":1," + base + "}", "c");
  REQUIRE(by_class.has_value());
  CHECK(by_class->architecture == "mixtral");
  auto eos_list = bora::parse_hf_config("{\"model_type\":\"mistral\",\"eos_token_id\":[7,2]," + base + "}", "c");
  REQUIRE(eos_list.has_value());
  CHECK(eos_list->eos_id == 7);
  auto dense_topk = bora::parse_hf_config("{\"model_type\":\"mistral\",\"num_experts_per_tok\":2," + base + "}", "c");
  REQUIRE(dense_topk.has_value());
  CHECK(dense_topk->n_experts_used == 0);
}

TEST_CASE("config: malformed and absurd JSON configs are rejected with the key named") {
  struct Case {
    std::string json;
    bora::ErrorCode code;
    const char* message;
  };
  const Case cases[] = {
      {"", bora::ErrorCode::kFormat, "p.json: malformed JSON"},
      {"{\"dim\": 256", bora::ErrorCode::kFormat, "malformed JSON"},
      {"[1, 2]", bora::ErrorCode::kFormat, "top level is an array"},
      {"\"text\"", bora::ErrorCode::kFormat, "top level is a string"},
      {params_with("dim", "\"256\""), bora::ErrorCode::kFormat, "key 'dim' is a string, expected an integer"},
      {params_with("dim", "256.5"), bora::ErrorCode::kFormat, "key 'dim' is a floating-point number, expected an integer"},
      {params_with("n_layers", ""), bora::ErrorCode::kMissing, "required key 'n_layers' is missing"},
      {params_with("norm_eps", "null"), bora::ErrorCode::kMissing, "required key 'norm_eps' is missing or null"},
      {params_with("norm_eps", "[1]"), bora::ErrorCode::kFormat, "key 'norm_eps' is an array, expected a number"},
      {params_with("n_kv_heads", "3"), bora::ErrorCode::kFormat, "n_heads (8) is not a multiple of n_kv_heads (3)"},
      {params_with("head_dim", "33"), bora::ErrorCode::kFormat, "head_dim is 33"},
      {params_with("dim", "1073741824"), bora::ErrorCode::kFormat, "dim is 1073741824"},
      {params_with("dim", "0"), bora::ErrorCode::kFormat, "dim is 0"},
      {params_with("n_layers", "-2"), bora::ErrorCode::kFormat, "n_layers is -2"},
      {params_with("n_layers", "100000"), bora::ErrorCode::kFormat, "n_layers is 100000"},
      {params_with("vocab_size", "18446744073709551615"), bora::ErrorCode::kFormat, "'vocab_size' is an integer too large"},
      {params_with("norm_eps", "0"), bora::ErrorCode::kFormat, "norm_eps is 0"},
      {params_with("rope_theta", "-1"), bora::ErrorCode::kFormat, "rope_theta is -1"},
      {params_with("sliding_window", "-16"), bora::ErrorCode::kFormat, "sliding_window is -16"},
      {params_with("moe", "{\"num_experts\": 8, \"num_experts_per_tok\": 9}"), bora::ErrorCode::kFormat,
       "experts used per token is 9"},
      {params_with("moe", "{\"num_experts\": 8}"), bora::ErrorCode::kMissing, "'moe.num_experts_per_tok' is missing"},
      {params_with("moe", "8"), bora::ErrorCode::kFormat, "key 'moe' is an integer, expected an object"},
      {replace_once(params_with("head_dim", ""), "\"dim\":256", "\"dim\":250"), bora::ErrorCode::kFormat,
       "head_dim is not given and dim (250) is not a multiple of n_heads (8)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.json);
    auto parsed = bora::parse_mistral_params(c.json, "p.json");
    REQUIRE_FALSE(parsed.has_value());
    CHECK(parsed.error().code() == c.code);
    CHECK(contains(parsed.error(), "p.json"));
    CHECK_MESSAGE(contains(parsed.error(), c.message), parsed.error().message());
  }
  auto bad_type = bora::parse_hf_config("{\"model_type\":\"gpt2\"}", "config.json");
  REQUIRE_FALSE(bad_type.has_value());
  CHECK(bad_type.error().code() == bora::ErrorCode::kUnsupported);
  CHECK(contains(bad_type.error(), "config.json: model_type 'gpt2' is not supported"));
  auto no_heads = bora::parse_hf_config("{\"model_type\":\"mistral\",\"hidden_size\":256,\"num_hidden_layers\":2}", "c");
  REQUIRE_FALSE(no_heads.has_value());
  CHECK(contains(no_heads.error(), "required key 'num_attention_heads' is missing"));
  auto indivisible = bora::parse_hf_config(
      "{\"model_type\":\"mistral\",\"hidden_size\":250,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
      "\"intermediate_size\":512,\"vocab_size\":512}", "c");
  REQUIRE_FALSE(indivisible.has_value());
  CHECK(contains(indivisible.error(), "head_dim is not given and hidden_size (250) is not a multiple"));
}

TEST_CASE("config: GGUF metadata defaults, fallbacks and errors") {
  SUBCASE("vocab from the token list, head_dim from dim / heads") {
    bora_test::GgufWriter w;
    bora_test::add_tiny_llama_metadata(w);
    const std::vector<uint8_t> bytes = w.build();
    auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "tiny.gguf");
    REQUIRE(gguf.has_value());
    auto c = bora::config_from_gguf(*gguf);
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().message()));
    CHECK(c->vocab_size == 32);
    CHECK(c->head_dim == 16);
    CHECK(c->rope_theta == 1000000.0f);
    CHECK(c->sliding_window == 0);
    CHECK(c->context_length == 4096);
  }
  SUBCASE("vocab from the embedding shape") {
    bora_test::GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_u32("llama.embedding_length", 64);
    w.add_u32("llama.block_count", 1);
    w.add_u32("llama.feed_forward_length", 128);
    w.add_u32("llama.attention.head_count", 4);
    w.add_u32("llama.attention.sliding_window", 8);
    w.add_tensor("token_embd.weight", {64, 48}, 0);
    const std::vector<uint8_t> bytes = w.build();
    auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "embd.gguf");
    REQUIRE(gguf.has_value());
    auto c = bora::config_from_gguf(*gguf);
    REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().message()));
    CHECK(c->vocab_size == 48);
    CHECK(c->n_kv_heads == 4);
    CHECK(c->sliding_window == 8);
    CHECK(c->rope_theta == 10000.0f);
    CHECK(c->norm_eps == 1e-5f);
  }
  SUBCASE("errors") {
    struct Case {
      void (*edit)(bora_test::GgufWriter&);
      bora::ErrorCode code;
      const char* message;
    };
    const Case cases[] = {
        {[](bora_test::GgufWriter& w) { w.add_u32("llama.rope.dimension_count", 8); }, bora::ErrorCode::kUnsupported,
         "partial rotary"},
        {[](bora_test::GgufWriter& w) { w.add_u32("llama.expert_count", 4); }, bora::ErrorCode::kFormat,
         "experts used per token is 0"},
        {[](bora_test::GgufWriter& w) { w.add_string("llama.vocab_size", "32"); }, bora::ErrorCode::kFormat,
         "'llama.vocab_size' has type string"},
        {[](bora_test::GgufWriter& w) { w.add_i32("llama.attention.sliding_window", -1); }, bora::ErrorCode::kFormat,
         "'llama.attention.sliding_window' is -1"},
        {[](bora_test::GgufWriter& w) { w.add_u32("llama.vocab_size", 2); }, bora::ErrorCode::kFormat,
         "'tokenizer.ggml.eos_token_id' is 2, outside the vocabulary of 2"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.message);
      bora_test::GgufWriter w;
      bora_test::add_tiny_llama_metadata(w);
      w.add_u32("llama.attention.key_length", 16);
      c.edit(w);
      const std::vector<uint8_t> bytes = w.build();
      auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "bad.gguf");
      REQUIRE(gguf.has_value());
      auto config = bora::config_from_gguf(*gguf);
      REQUIRE_FALSE(config.has_value());
      CHECK(config.error().code() == c.code);
      CHECK(contains(config.error(), "bad.gguf"));
      CHECK_MESSAGE(contains(config.error(), c.message), config.error().message());
    }
  }
  SUBCASE("architecture and required keys") {
    bora_test::GgufWriter w;
    w.add_string("general.architecture", "gemma");
    const std::vector<uint8_t> bytes = w.build();
    auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "gemma.gguf");
    REQUIRE(gguf.has_value());
    auto c = bora::config_from_gguf(*gguf);
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code() == bora::ErrorCode::kUnsupported);
    CHECK(contains(c.error(), "general.architecture is 'gemma'"));

    bora_test::GgufWriter no_arch;
    const std::vector<uint8_t> none = no_arch.build();
    auto g2 = bora::GgufFile::parse(none.data(), none.size(), "none.gguf");
    REQUIRE(g2.has_value());
    CHECK(contains(bora::config_from_gguf(*g2).error(), "'general.architecture' is missing"));

    bora_test::GgufWriter partial;
    partial.add_string("general.architecture", "llama");
    partial.add_u32("llama.embedding_length", 64);
    const std::vector<uint8_t> p = partial.build();
    auto g3 = bora::GgufFile::parse(p.data(), p.size(), "partial.gguf");
    REQUIRE(g3.has_value());
    auto c3 = bora::config_from_gguf(*g3);
    REQUIRE_FALSE(c3.has_value());
    CHECK(c3.error().code() == bora::ErrorCode::kMissing);
    CHECK(contains(c3.error(), "'llama.block_count' is missing"));
  }
}
