// Why this file exists: a context's buffers are sized by what the caller asks (n_ctx, n_batch, threads)
// and by what the file says (widths, experts per token). Absurd requests must come back as errors that
// name what did not fit, never as an exception, an abort, or a write past a buffer.
#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

bool mentions(const bora::Error& error, const char* text) {
  return std::string(error.message()).find(text) != std::string::npos;
}

template <int K>
using MixtralTopK = bora::Transformer<bora::GroupedQueryAttention<bora::CausalAttention>, bora::RollingKvCache<bora::f32>,
                                      bora::SparseMoE<bora::TopK<K>>>;

}  // namespace

TEST_CASE("a context larger than memory is an out-of-memory error naming the buffer") {
  auto model = bora::load_any_model(bora_test::data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"));
  REQUIRE(model);

  bora::ContextParams huge_cache;
  huge_cache.n_ctx = int64_t{1} << 40;
  huge_cache.sliding_window = 0;
  auto cache = (*model)->create_context(huge_cache);
  REQUIRE_FALSE(cache);
  CHECK(cache.error().code() == bora::ErrorCode::kOutOfMemory);
  CHECK(mentions(cache.error(), "KV cache"));

  bora::ContextParams huge_batch;
  huge_batch.n_ctx = 64;
  huge_batch.n_batch = int64_t{1} << 40;
  auto batch = (*model)->create_context(huge_batch);
  REQUIRE_FALSE(batch);
  CHECK(batch.error().code() == bora::ErrorCode::kOutOfMemory);
  CHECK(mentions(batch.error(), "n_batch"));

  bora::ContextParams overflowing = huge_batch;
  overflowing.n_batch = INT64_MAX;  // n_batch * width overflows 64 bits
  auto overflow = (*model)->create_context(overflowing);
  REQUIRE_FALSE(overflow);
  CHECK(overflow.error().code() == bora::ErrorCode::kOutOfMemory);

  bora::ContextParams many_threads;
  many_threads.n_ctx = 64;
  many_threads.n_threads = 1 << 20;
  auto threads = (*model)->create_context(many_threads);
  REQUIRE_FALSE(threads);
  CHECK(threads.error().code() == bora::ErrorCode::kInvalidArgument);

  bora::ContextParams sane;
  sane.n_ctx = 64;
  CHECK((*model)->create_context(sane));  // the model is still usable
}

TEST_CASE("SparseMoE<TopK<K>> with more experts than the file uses routes K distinct experts per token") {
  // tiny-mixtral uses 2 of its 8 experts; TopK<4> must size its routing buffers by 4.
  auto model = bora::load_model<MixtralTopK<4>>(bora_test::data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf"));
  REQUIRE(model);
  std::vector<int32_t> trace;
  bora::ContextParams params;
  params.n_ctx = 32;
  params.n_batch = 8;
  params.expert_trace = &trace;
  auto ctx = (*model)->create_context(params);
  REQUIRE(ctx);
  const std::vector<int32_t> tokens = {1, 17, 33, 100, 7, 250, 3, 9, 11, 400};
  std::vector<float> logits(tokens.size() * static_cast<size_t>((*model)->config().vocab_size));
  REQUIRE((*model)->forward(**ctx, tokens.data(), static_cast<int64_t>(tokens.size()), logits.data(), true));
  for (float value : logits) REQUIRE(value == value);  // no NaN from reading outside the router's logits
  // The trace holds (layer, position, K expert ids) per token and layer.
  const size_t per_entry = 2 + 4;
  REQUIRE(trace.size() == tokens.size() * static_cast<size_t>((*model)->config().n_layers) * per_entry);
  for (size_t i = 0; i < trace.size(); i += per_entry) {
    const std::set<int32_t> experts(trace.begin() + static_cast<std::ptrdiff_t>(i) + 2,
                                    trace.begin() + static_cast<std::ptrdiff_t>(i + per_entry));
    CHECK(experts.size() == 4);
    for (int32_t e : experts) CHECK((e >= 0 && e < 8));
  }
}

TEST_CASE("SparseMoE<TopK<K>> with more experts than the file has is refused at load") {
  auto model = bora::load_model<MixtralTopK<9>>(bora_test::data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf"));
  REQUIRE_FALSE(model);
  CHECK(model.error().code() == bora::ErrorCode::kInvalidArgument);
  CHECK(mentions(model.error(), "9 experts per token"));
  CHECK(mentions(model.error(), "8 experts"));
}
