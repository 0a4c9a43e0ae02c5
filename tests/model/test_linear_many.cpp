// Why this file exists: a mixture of experts' step runs the products of all its chosen experts in
// one parallel loop (linear_many), which splits their rows across the threads as one range. Each
// product must come out bit for bit as linear() computes it alone, whatever the thread count and
// wherever a thread's share starts or ends.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "bora/base/thread_pool.hpp"
#include "bora/model/linear.hpp"
#include "bora/quant/dequantize.hpp"
#include "bora/quant/row_tiles.hpp"

namespace linear_many_test {

struct Matrix {
  bora::TensorView view;
  std::vector<uint8_t> bytes;
};

// rows x row_length random values of `type`, regrouped in row tiles (as the loader does) when `tiled`.
Matrix quantized_matrix(bora::WeightType type, int64_t row_length, int64_t rows, uint32_t seed, bool tiled) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> source(static_cast<size_t>(row_length));
  uint64_t row_bytes = 0;
  REQUIRE(bora::weight_row_bytes(type, static_cast<uint64_t>(row_length), &row_bytes));
  Matrix m;
  m.bytes.assign(static_cast<size_t>(row_bytes * static_cast<uint64_t>(rows)), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& value : source) value = normal(rng);
    bora::quantize_row(type, source.data(), m.bytes.data() + r * static_cast<int64_t>(row_bytes), row_length);
  }
  m.view.name = "test";
  m.view.type = type;
  m.view.n_dims = 2;
  m.view.ne[0] = row_length;
  m.view.ne[1] = rows;
  m.view.data = m.bytes.data();
  m.view.bytes = row_bytes * static_cast<uint64_t>(rows);
  if (tiled) {
    std::vector<uint8_t> scratch(static_cast<size_t>(bora::quant::kTileRows * row_bytes));
    bora::quant::tile_rows_in_place(type, m.bytes.data(), row_length, rows, scratch.data());
    m.view.row_tiles = true;
  }
  return m;
}

}  // namespace linear_many_test

TEST_CASE("linear_many computes every product bit for bit as linear() alone, at 1, 2 and 3 threads") {
  using linear_many_test::Matrix;
  constexpr int64_t kWidth = 256, kTokens = 7;
  // Whole tiles of 16 rows; split in three, the threads' shares start and end inside products and tiles.
  const int64_t row_counts[] = {48, 16, 64, 32};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(kTokens * kWidth));
  for (float& value : x) value = normal(rng);
  // Tokens 0-2 decode alone (groups of one row), 3-6 are one prompt chunk; each product takes its own subset.
  const bora::RowGroup all_groups[] = {{0, 1, nullptr}, {1, 1, nullptr}, {2, 1, nullptr}, {3, 4, nullptr}};
  const size_t group_counts[] = {4, 2, 3, 1};
  const size_t group_starts[] = {0, 1, 0, 3};
  struct Layout {
    bora::WeightType type;
    bool tiled;
  };
  const Layout layouts[] = {{bora::WeightType::kQ4_0, false}, {bora::WeightType::kQ4_0, true},
                            {bora::WeightType::kQ8_0, false}, {bora::WeightType::kQ8_0, true},
                            {bora::WeightType::kF16, false}};
  for (const Layout& layout : layouts) {
    const bora::WeightType type = layout.type;
    const bool tiled = layout.tiled;
    for (bool exact : {false, true}) {
      CAPTURE(bora::weight_type_name(type));
      CAPTURE(tiled);
      CAPTURE(exact);
      std::vector<Matrix> matrices;
      for (size_t j = 0; j < 4; ++j)
        matrices.push_back(
            linear_many_test::quantized_matrix(type, kWidth, row_counts[j], 11 + static_cast<uint32_t>(j), tiled));
      std::vector<uint8_t> int8(static_cast<size_t>(kTokens * bora::ops::q8_row_bytes(kWidth)));
      bora::ThreadPool one(1);
      const bora::Activations a =
          bora::quantize_activations(one, 1, x.data(), kTokens, kWidth, exact ? nullptr : int8.data());
      REQUIRE((a.int8 != nullptr) == !exact);
      std::vector<std::vector<float>> expected;
      for (size_t j = 0; j < 4; ++j) {
        expected.emplace_back(static_cast<size_t>(kTokens * row_counts[j]), -1.0f);
        bora::linear(one, 1, matrices[j].view, a, all_groups + group_starts[j], group_counts[j], expected[j].data());
      }
      for (int threads : {1, 2, 3}) {
        CAPTURE(threads);
        bora::ThreadPool pool(threads);
        std::vector<std::vector<float>> got;
        std::vector<bora::LinearJob> jobs(4);
        for (size_t j = 0; j < 4; ++j) {
          got.emplace_back(static_cast<size_t>(kTokens * row_counts[j]), -1.0f);
          jobs[j].w = &matrices[j].view;
          jobs[j].x = a;
          jobs[j].groups = all_groups + group_starts[j];
          jobs[j].n_groups = group_counts[j];
          jobs[j].y_base = got[j].data();
        }
        bora::linear_many(pool, threads, jobs.data(), jobs.size());
        for (size_t j = 0; j < 4; ++j) {
          CAPTURE(j);
          CHECK(std::memcmp(got[j].data(), expected[j].data(), got[j].size() * sizeof(float)) == 0);
        }
      }
    }
  }
}

TEST_CASE("a prompt's two-level products equal each token's alone on row tiles, and on other rows without a scratch") {
  constexpr int64_t kWidth = 256, kRows = 48, kTokens = 5;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(kTokens * kWidth));
  for (float& value : x) value = normal(rng);
  std::vector<uint8_t> hi(static_cast<size_t>(kTokens * bora::ops::q8_row_bytes(kWidth)));
  std::vector<uint8_t> lo(hi.size());
  bora::ThreadPool pool(2);
  const bora::Activations a = bora::quantize_activations_two_level(pool, 2, x.data(), kTokens, kWidth, hi.data(), lo.data());
  REQUIRE(a.int8_residual != nullptr);
  for (bora::WeightType type : {bora::WeightType::kQ4_0, bora::WeightType::kQ8_0}) {
    for (bool tiled : {false, true}) {
      CAPTURE(bora::weight_type_name(type));
      CAPTURE(tiled);
      const linear_many_test::Matrix m = linear_many_test::quantized_matrix(type, kWidth, kRows, 5, tiled);
      std::vector<float> alone(static_cast<size_t>(kTokens * kRows), -1.0f);
      for (int64_t t = 0; t < kTokens; ++t) {
        const bora::RowGroup token{t, 1, nullptr};
        bora::linear(pool, 2, m.view, a, &token, 1, alone.data());
      }
      const bora::RowGroup prompt{0, kTokens, nullptr};
      std::vector<float> without_scratch(alone.size(), -1.0f), with_scratch(alone.size(), -1.0f);
      std::vector<float> scratch(alone.size());
      bora::linear(pool, 2, m.view, a, &prompt, 1, without_scratch.data());
      bora::linear(pool, 2, m.view, a, &prompt, 1, with_scratch.data(), scratch.data());
      CHECK(std::memcmp(without_scratch.data(), alone.data(), alone.size() * sizeof(float)) == 0);
      // Untiled rows with a scratch take the second level in a batched pass of its own: the same sums in
      // another order of f32 additions.
      if (tiled) CHECK(std::memcmp(with_scratch.data(), alone.data(), alone.size() * sizeof(float)) == 0);
      for (size_t i = 0; i < alone.size(); ++i) CHECK(with_scratch[i] == doctest::Approx(alone[i]).epsilon(1e-4));
    }
  }
}
