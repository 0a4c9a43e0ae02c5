// Why this file exists: a sequence's logits must be the same bits whether it runs alone or in a
// batch beside other sequences (prefilling, decoding, at other positions), and at any thread count,
// for every weight type and on both the fast and the exact path — the promise that lets a game get
// the same NPC line from the same seed however many NPCs talk. Model::forward_batch is checked here;
// tests/text/test_scheduler.cpp checks the scheduler built on it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

const char* const kModelFiles[] = {
    "tiny-mistral/tiny-mistral-F32.gguf",  "tiny-mistral/tiny-mistral-BF16.gguf", "tiny-mistral/tiny-mistral-Q8_0.gguf",
    "tiny-mistral/tiny-mistral-Q4_0.gguf", "tiny-mistral/tiny-mistral-Q4_K.gguf", "tiny-mistral/tiny-mistral-Q4_K_M.gguf",
    "tiny-mistral/tiny-mistral-Q5_K.gguf", "tiny-mistral/tiny-mistral-Q6_K.gguf", "tiny-mixtral/tiny-mixtral-F16.gguf",
    "tiny-mixtral/tiny-mixtral-Q8_0.gguf", "tiny-mixtral/tiny-mixtral-Q4_K.gguf",
};

std::vector<int32_t> some_tokens(int64_t count, int32_t salt, int64_t vocab) {
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < count; ++i) tokens.push_back(static_cast<int32_t>((salt * 131 + i * 37 + 1) % vocab));
  return tokens;
}

// What one sequence does in a step: `n` tokens from its script (a prompt chunk, or one decoded token).
struct Script {
  std::vector<int32_t> tokens;
  std::vector<int64_t> steps;  // tokens consumed per step, 0 = sits this step out
  int64_t n_ctx = 64;
};

// Runs the scripts side by side (step s runs every script whose steps[s] > 0) and returns the logits
// of script 0 after each of its steps, concatenated.
std::vector<float> run(const bora::Model& model, const std::vector<Script>& scripts, int threads, bool exact,
                       int64_t sliding_window, int64_t n_batch = 64) {
  const int64_t vocab = model.config().vocab_size;
  bora::WorkspaceParams wp;
  wp.n_batch = n_batch;
  wp.n_threads = threads;
  wp.n_threads_batch = threads;
  wp.f32_activations = exact;
  auto workspace = model.create_workspace(wp);
  REQUIRE(workspace);
  std::vector<std::unique_ptr<bora::KvSequence>> sequences;
  for (const Script& script : scripts) {
    bora::SequenceParams sp;
    sp.n_ctx = script.n_ctx;
    sp.sliding_window = sliding_window;
    auto sequence = model.create_sequence(sp);
    REQUIRE(sequence);
    sequences.push_back(std::move(*sequence));
  }
  std::vector<float> target;
  std::vector<size_t> offsets(scripts.size(), 0);
  std::vector<std::vector<float>> logits(scripts.size(), std::vector<float>(static_cast<size_t>(vocab)));
  size_t n_steps = 0;
  for (const Script& script : scripts) n_steps = std::max(n_steps, script.steps.size());
  for (size_t step = 0; step < n_steps; ++step) {
    std::vector<bora::BatchSegment> segments;
    std::vector<size_t> who;
    for (size_t i = 0; i < scripts.size(); ++i) {
      if (step >= scripts[i].steps.size() || scripts[i].steps[step] == 0) continue;
      bora::BatchSegment segment;
      segment.sequence = sequences[i].get();
      segment.tokens = scripts[i].tokens.data() + offsets[i];
      segment.n_tokens = scripts[i].steps[step];
      segment.logits = logits[i].data();
      offsets[i] += static_cast<size_t>(segment.n_tokens);
      segments.push_back(segment);
      who.push_back(i);
    }
    REQUIRE(model.forward_batch(**workspace, segments.data(), segments.size()));
    for (size_t k = 0; k < who.size(); ++k)
      if (who[k] == 0) target.insert(target.end(), logits[0].begin(), logits[0].end());
  }
  return target;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("a sequence's logits are the same bits alone, batched with 7 others, and at 1 or 2 threads") {
  for (const char* file : kModelFiles) {
    auto model = bora::load_any_model(bora_test::data_path(file));
    REQUIRE(model);
    const int64_t vocab = (*model)->config().vocab_size;
    // The target: a 13-token prompt in chunks of 5, 5, 3, then 6 tokens one at a time.
    Script target{some_tokens(19, 1, vocab), {5, 5, 3, 1, 1, 1, 1, 1, 1}, 64};
    // Others: prompts of other lengths and chunkings, decoding at other positions, joining and
    // leaving at other steps (0 = not in that step).
    std::vector<Script> batch = {target};
    batch.push_back({some_tokens(30, 2, vocab), {9, 9, 1, 1, 1, 1, 1, 1, 1, 1}, 64});
    batch.push_back({some_tokens(12, 3, vocab), {0, 0, 2, 2, 2, 1, 1, 1, 1}, 64});
    batch.push_back({some_tokens(40, 4, vocab), {16, 16, 1, 1, 1, 0, 1, 1}, 64});
    batch.push_back({some_tokens(9, 5, vocab), {1, 1, 1, 1, 1, 1, 1, 1, 1}, 64});
    batch.push_back({some_tokens(20, 6, vocab), {0, 0, 0, 7, 7, 1, 1}, 64});
    batch.push_back({some_tokens(14, 7, vocab), {8, 1, 1, 1, 1, 1}, 64});
    batch.push_back({some_tokens(10, 8, vocab), {0, 0, 0, 0, 0, 0, 5, 1, 1}, 64});
    for (bool exact : {false, true}) {
      const std::string name = file;
      CAPTURE(name);
      CAPTURE(exact);
      const std::vector<float> alone = run(**model, {target}, 1, exact, -1);
      REQUIRE(alone.size() == static_cast<size_t>(9 * vocab));
      CHECK(same_bits(alone, run(**model, {target}, 2, exact, -1)));
      CHECK(same_bits(alone, run(**model, batch, 1, exact, -1)));
      CHECK(same_bits(alone, run(**model, batch, 2, exact, -1)));
      // A mixture of experts runs its chosen experts in waves of at most n_batch routed rows: the
      // batch's first step (39 tokens, 78 routed rows) takes two or more, cut between other experts at
      // n_batch 39 than at 64, while the target alone runs every expert in one.
      if ((*model)->config().n_experts > 0) CHECK(same_bits(alone, run(**model, batch, 2, exact, -1, 39)));
    }
  }
}

TEST_CASE("batch invariance holds while the sequences' rolling caches wrap around their window") {
  auto model = bora::load_any_model(bora_test::data_path("tiny-mistral/tiny-mistral-Q4_0.gguf"));
  REQUIRE(model);
  const int64_t vocab = (*model)->config().vocab_size;
  Script target{some_tokens(20, 11, vocab), {4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 8};
  std::vector<Script> batch = {target};
  batch.push_back({some_tokens(30, 12, vocab), {6, 6, 6, 1, 1, 1, 1, 1, 1, 1}, 8});
  batch.push_back({some_tokens(30, 13, vocab), {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 8});
  const std::vector<float> alone = run(**model, {target}, 1, false, 6);
  CHECK(same_bits(alone, run(**model, batch, 2, false, 6)));
}

TEST_CASE("forward_batch refuses a bad batch before computing anything") {
  auto model = bora::load_any_model(bora_test::data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"));
  REQUIRE(model);
  bora::WorkspaceParams wp;
  wp.n_batch = 4;
  auto workspace = (*model)->create_workspace(wp);
  REQUIRE(workspace);
  bora::SequenceParams sp;
  sp.n_ctx = 6;
  sp.sliding_window = 0;
  auto a = (*model)->create_sequence(sp);
  auto b = (*model)->create_sequence(sp);
  REQUIRE(a);
  REQUIRE(b);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
  bora::BatchSegment first{a->get(), tokens.data(), 3, nullptr, false};
  bora::BatchSegment second{b->get(), tokens.data(), 2, nullptr, false};

  bora::BatchSegment both[] = {first, second};
  auto too_many = (*model)->forward_batch(**workspace, both, 2);  // 5 tokens, room for 4
  REQUIRE_FALSE(too_many);
  CHECK(too_many.error().code() == bora::ErrorCode::kInvalidArgument);

  bora::BatchSegment twice[] = {second, second};
  CHECK_FALSE((*model)->forward_batch(**workspace, twice, 2));

  const int32_t outside = static_cast<int32_t>((*model)->config().vocab_size);
  bora::BatchSegment bad{b->get(), &outside, 1, nullptr, false};
  bora::BatchSegment mixed[] = {first, bad};
  CHECK_FALSE((*model)->forward_batch(**workspace, mixed, 2));
  CHECK((*a)->n_past() == 0);  // nothing ran, not even the valid segment

  REQUIRE((*model)->forward_batch(**workspace, both, 1));
  REQUIRE((*model)->forward_batch(**workspace, both, 1));
  auto full = (*model)->forward_batch(**workspace, both, 1);  // 6 positions used, 3 more asked
  REQUIRE_FALSE(full);
  CHECK(full.error().code() == bora::ErrorCode::kContextFull);

  auto other = bora::load_any_model(bora_test::data_path("tiny-mistral/tiny-mistral-Q4_0.gguf"));
  REQUIRE(other);
  CHECK_FALSE((*other)->forward_batch(**workspace, &second, 1));  // another model's workspace
}

TEST_CASE("a cloned sequence continues exactly as the original would") {
  auto model = bora::load_any_model(bora_test::data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf"));
  REQUIRE(model);
  const int64_t vocab = (*model)->config().vocab_size;
  bora::ContextParams params;
  params.n_ctx = 32;
  auto ctx = (*model)->create_context(params);
  REQUIRE(ctx);
  const std::vector<int32_t> prefix = some_tokens(9, 21, vocab), rest = some_tokens(4, 22, vocab);
  REQUIRE((*model)->forward(**ctx, prefix.data(), 9, nullptr, false));
  auto copy = (*ctx)->sequence().clone();
  REQUIRE(copy);
  std::vector<float> original(static_cast<size_t>(vocab)), forked(static_cast<size_t>(vocab));
  REQUIRE((*model)->forward(**ctx, rest.data(), 4, original.data(), false));
  bora::BatchSegment segment{copy->get(), rest.data(), 4, forked.data(), false};
  REQUIRE((*model)->forward_batch((*ctx)->workspace(), &segment, 1));
  CHECK(same_bits(original, forked));
  CHECK((*copy)->n_past() == 13);
}

TEST_CASE("a Q4_0, Q8_0, Q4_K or Q5_K model read into memory is regrouped in row tiles where the CPU prefers them") {
  // Mapped files stay as they are; both layouts compute the same products up to the order of f32 sums.
  for (const char* file : {"tiny-mistral/tiny-mistral-Q4_0.gguf", "tiny-mixtral/tiny-mixtral-Q8_0.gguf",
                           "tiny-mistral/tiny-mistral-Q4_K_M.gguf", "tiny-mixtral/tiny-mixtral-Q4_K.gguf",
                           "tiny-mistral/tiny-mistral-Q5_K.gguf"}) {
    CAPTURE(file);
    bora::LoadParams mapped_params;
    mapped_params.use_mmap = true;
    auto read = bora::load_any_model(bora_test::data_path(file));
    auto mapped = bora::load_any_model(bora_test::data_path(file), mapped_params);
    REQUIRE(read);
    REQUIRE(mapped);
    int64_t matrices = 0;
    for (const std::string& name : (*read)->files().tensor_names()) {
      const bora::TensorView* t = (*read)->files().find_tensor(name);
      CHECK_FALSE((*mapped)->files().find_tensor(name)->row_tiles);
      if (t->n_dims < 2 || name == "token_embd.weight") {
        CHECK_FALSE(t->row_tiles);
        continue;
      }
      const bool tileable = bora::quant::row_tiles_apply(t->type, t->ne[1]);
      matrices += tileable;
      CHECK(t->row_tiles == (tileable && bora::ops::prefers_row_tiles(t->type)));
    }
    CHECK(matrices > 0);
    const int64_t vocab = (*read)->config().vocab_size;
    const std::vector<int32_t> prompt = some_tokens(9, 3, vocab);
    Script script{prompt, {6, 1, 1, 1}, 64};
    const std::vector<float> from_read = run(**read, {script}, 1, false, -1);
    const std::vector<float> from_mapped = run(**mapped, {script}, 1, false, -1);
    REQUIRE(from_read.size() == from_mapped.size());
    // The layouts round their f32 sums in other orders, and a product that moves by one rounding can
    // move an int8 activation of the next layer by a step: so they differ by up to the fast path's
    // own error (its distance from the exact path), and the tiles are no further from the exact path.
    const std::vector<float> exact = run(**mapped, {script}, 1, true, -1);
    auto distance = [](const std::vector<float>& a, const std::vector<float>& b) {
      float worst = 0.0f;
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
      return worst;
    };
    const float layouts = distance(from_read, from_mapped), fast_path = distance(from_mapped, exact);
    const float read_error = distance(from_read, exact);
    CAPTURE(fast_path);
    CAPTURE(read_error);
    CHECK(layouts <= fast_path);
    CHECK(read_error <= 1.25f * fast_path);
  }
}
