// Why this file exists: Model::weight_bytes_per_token() is the denominator of the decoding speed limit
// that bench --bandwidth reports, so it must count exactly what one token reads: every matrix once,
// the share of the experts the router picks, and not the embedding table (and weight_bytes_per_step
// what a step reads whose tokens route to a given number of experts). The expectation here is
// summed independently from the files' own tensor list.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

// Sums the bytes of every matrix in the file except the token embeddings; expert tensors (stacked
// GGUF "_exps", or one per expert) count `used` of `n_experts`.
uint64_t expected_bytes(const bora::ModelFiles& files, int64_t used) {
  const bora::ModelConfig& c = files.config();
  uint64_t dense = 0, experts = 0;
  for (const std::string& name : files.tensor_names()) {
    const bora::TensorView* t = files.find_tensor(name);
    REQUIRE(t != nullptr);
    const bool embedding = name == "token_embd.weight" || name == "model.embed_tokens.weight" ||
                           name == "tok_embeddings.weight";
    if (t->n_dims < 2 || embedding) continue;
    const bool expert = name.find("_exps.") != std::string::npos || name.find(".experts.") != std::string::npos;
    (expert ? experts : dense) += t->bytes;
  }
  return c.n_experts > 0 ? dense + experts / static_cast<uint64_t>(c.n_experts) * static_cast<uint64_t>(used) : dense;
}

}  // namespace

TEST_CASE("weight bytes per token: every matrix of a dense model, not the embeddings") {
  for (const char* file : {"tiny-mistral-Q4_K_M.gguf", "tiny-mistral-F32.gguf", "hf"}) {
    CAPTURE(file);
    auto model = bora::load_any(bora_test::data_path(std::string("tiny-mistral/") + file));
    REQUIRE(model);
    const uint64_t bytes = (*model)->weight_bytes_per_token();
    CHECK(bytes == expected_bytes((*model)->files(), 0));
    CHECK(bytes < (*model)->files().total_bytes());
    CHECK((*model)->weight_bytes_per_step(8.0) == bytes);  // no experts to route to
  }
}

TEST_CASE("weight bytes per token: a mixture of experts reads the chosen share of its experts") {
  for (const char* file : {"tiny-mixtral-Q8_0.gguf", "tiny-mixtral-Q4_K.gguf", "hf"}) {
    CAPTURE(file);
    auto model = bora::load_any(bora_test::data_path(std::string("tiny-mixtral/") + file));
    REQUIRE(model);
    REQUIRE((*model)->config().n_experts_used == 2);
    CHECK((*model)->weight_bytes_per_token() == expected_bytes((*model)->files(), 2));
    // Several tokens in one step: the experts they route to between them, at most all of them.
    const int64_t n_experts = (*model)->config().n_experts;
    for (int64_t read = 0; read <= n_experts; ++read)
      CHECK((*model)->weight_bytes_per_step(static_cast<double>(read)) == expected_bytes((*model)->files(), read));
    CHECK((*model)->weight_bytes_per_step(static_cast<double>(n_experts) + 5.0) == expected_bytes((*model)->files(), n_experts));
    const uint64_t three = expected_bytes((*model)->files(), 3), four = expected_bytes((*model)->files(), 4);
    const uint64_t between = (*model)->weight_bytes_per_step(3.5);  // an average over layers and steps
    CHECK(between > three);
    CHECK(between < four);
  }
  // A composition that routes each token to one expert reads half as many expert bytes.
  using OneExpert = bora::Transformer<bora::GroupedQueryAttention<bora::CausalAttention>, bora::RollingKvCache<bora::f16>,
                                      bora::SparseMoE<bora::TopK<1>>>;
  auto one = bora::load<OneExpert>(bora_test::data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf"));
  REQUIRE(one);
  CHECK((*one)->weight_bytes_per_token() == expected_bytes((*one)->files(), 1));
  CHECK((*one)->weight_bytes_per_token() < expected_bytes((*one)->files(), 2));
}
