// Why this file exists: every function of the SIMD boundary (ops.hpp) is compared with a plain
// scalar reference on every SIMD target this binary compiled and this CPU supports, with odd sizes
// and row ranges so vector tails and partial tiles are exercised.
#include <doctest/doctest.h>

#include <hwy/targets.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bora/io/tensor_view.hpp"
#include "bora/ops/ops.hpp"
#include "bora/quant/dequantize.hpp"
#include "bora/quant/f16.hpp"
#include "bora/quant/q8_activations.hpp"
#include "bora/quant/row_tiles.hpp"
#include "../support/simd_targets.hpp"

namespace {

using bora::WeightType;

const WeightType kAllTypes[] = {WeightType::kF32,  WeightType::kF16,  WeightType::kBF16, WeightType::kQ8_0,
                                WeightType::kQ4_0, WeightType::kQ4_K, WeightType::kQ5_K, WeightType::kQ6_K};

using bora_test::for_each_target;

// Runs check(type) on every target for each of `types`, with the type named in any failure.
template <size_t kCount>
void for_each_target_and_type(const WeightType (&types)[kCount], const std::function<void(WeightType)>& check) {
  for_each_target([&] {
    for (WeightType type : types) {
      const std::string type_name = bora::weight_type_name(type);
      CAPTURE(type_name);
      check(type);
    }
  });
}

std::vector<float> random_floats(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// A quantized matrix plus its exact dequantized values (the scalar reference).
struct TestMatrix {
  bora::TensorView view;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // rows x row_length, from the scalar dequantizer
};

TestMatrix make_matrix(WeightType type, int64_t row_length, int64_t rows, uint32_t seed) {
  TestMatrix m;
  const std::vector<float> source = random_floats(static_cast<size_t>(row_length * rows), seed, 0.5f);
  uint64_t row_bytes = 0;
  REQUIRE(bora::weight_row_bytes(type, static_cast<uint64_t>(row_length), &row_bytes));
  // One spare leading byte puts every row at an odd address: kernels must not assume alignment.
  m.bytes.assign(static_cast<size_t>(row_bytes * rows) + 1, 0);
  m.values.resize(static_cast<size_t>(row_length * rows));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = m.bytes.data() + 1 + r * row_bytes;
    bora::quantize_row(type, source.data() + r * row_length, row, row_length);
    bora::dequantize_row(type, row, m.values.data() + r * row_length, row_length);
  }
  m.view.name = "test";
  m.view.type = type;
  m.view.n_dims = 2;
  m.view.ne[0] = row_length;
  m.view.ne[1] = rows;
  m.view.data = m.bytes.data() + 1;
  m.view.bytes = row_bytes * static_cast<uint64_t>(rows);
  return m;
}

int64_t row_length_for(WeightType type) {
  // Several blocks per row; plain float types get a length that is no multiple of any vector.
  switch (type) {
    case WeightType::kF32:
    case WeightType::kF16:
    case WeightType::kBF16: return 131;
    case WeightType::kQ8_0:
    case WeightType::kQ4_0: return 96;
    default: return 512;
  }
}

// Reference dot in double, with the bound an f32 sum of n terms must stay within.
void reference_dot(const float* w, const float* x, int64_t n, double* value, double* tolerance) {
  double sum = 0, magnitude = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += double(w[i]) * double(x[i]);
    magnitude += std::fabs(double(w[i]) * double(x[i]));
  }
  *value = sum;
  *tolerance = 1e-6 * magnitude * std::sqrt(double(n)) + 1e-30;
}

// The names of the Highway targets in `targets`, best first.
std::string target_names(int64_t targets) {
  std::string names;
  for (int64_t left = targets; left != 0; left &= left - 1) {
    names += std::string(names.empty() ? "" : " ") + hwy::TargetName(left & -left);
  }
  return names.empty() ? "none" : names;
}

}  // namespace

// Every test below runs once per target of the first list; the log says which ones this CPU (or qemu's
// CPU model) could not run, so a machine that silently tests fewer targets shows it.
TEST_CASE("the kernel tests name the SIMD targets they run and the ones this CPU lacks") {
  const int64_t compiled = bora::ops::simd_compiled_targets();
  const int64_t supported = hwy::SupportedTargets();
  MESSAGE("SIMD targets tested: " << target_names(compiled & supported));
  MESSAGE("SIMD targets compiled but not supported by this CPU: " << target_names(compiled & ~supported));
  CHECK((compiled & supported) != 0);
}

TEST_CASE("int8_dot_peak runs its int8 multiply-accumulate loop on every target and reports a positive rate") {
  for_each_target([] {
    const double macs_per_second = bora::ops::int8_dot_peak(0.002);
    CHECK(std::isfinite(macs_per_second));
    CHECK(macs_per_second > 0.0);
  });
}

TEST_CASE("matvec_f32 matches the scalar reference for every weight type and target") {
  for_each_target_and_type(kAllTypes, [](WeightType type) {
    const int64_t n = row_length_for(type), rows = 13;
    const TestMatrix m = make_matrix(type, n, rows, 7u + static_cast<uint32_t>(type));
    const std::vector<float> x = random_floats(static_cast<size_t>(n), 3);
    const float sentinel = 12345.0f;
    std::vector<float> y(static_cast<size_t>(rows), sentinel);
    bora::ops::matvec_f32(m.view, x.data(), y.data(), 3, 12);
    for (int64_t r = 0; r < rows; ++r) {
      if (r < 3 || r >= 12) {
        CHECK(y[r] == sentinel);
        continue;
      }
      double expected = 0, tolerance = 0;
      reference_dot(m.values.data() + r * n, x.data(), n, &expected, &tolerance);
      CHECK(std::fabs(double(y[r]) - expected) <= tolerance);
    }
  });
}

TEST_CASE("matvec_f32 and matmul_f32 decode every weight bit-exactly on every target") {
  // One-hot activations select single weights: one exact product plus exact zeros.
  for_each_target_and_type(kAllTypes, [](WeightType type) {
    const int64_t n = row_length_for(type), rows = 6;
    const TestMatrix m = make_matrix(type, n, rows, 100u + static_cast<uint32_t>(type));
    std::vector<float> identity(static_cast<size_t>(n * n), 0.0f);
    for (int64_t i = 0; i < n; ++i) identity[static_cast<size_t>(i * n + i)] = 1.0f;
    std::vector<float> y(static_cast<size_t>(n * rows));
    bora::ops::matmul_f32(m.view, identity.data(), n, y.data(), rows, 0, rows);
    int mismatches = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) mismatches += y[t * rows + r] != m.values[r * n + t];
    }
    CHECK(mismatches == 0);
    std::vector<float> column(static_cast<size_t>(rows));
    for (int64_t i = 0; i < n; i += 37) {
      bora::ops::matvec_f32(m.view, identity.data() + i * n, column.data(), 0, rows);
      for (int64_t r = 0; r < rows; ++r) CHECK(column[r] == m.values[r * n + i]);
    }
  });
}

TEST_CASE("matmul_f32 matches the reference with a strided output and a partial tile") {
  for_each_target_and_type(kAllTypes, [](WeightType type) {
    const int64_t n = row_length_for(type), rows = 11, n_tokens = 5, stride = rows + 3;
    const TestMatrix m = make_matrix(type, n, rows, 40u + static_cast<uint32_t>(type));
    const std::vector<float> x = random_floats(static_cast<size_t>(n * n_tokens), 9);
    const float sentinel = -777.0f;
    std::vector<float> y(static_cast<size_t>(stride * n_tokens), sentinel);
    bora::ops::matmul_f32(m.view, x.data(), n_tokens, y.data(), stride, 1, 10);  // 9 rows: 4+4+1
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = 0; r < stride; ++r) {
        const float got = y[t * stride + r];
        if (r < 1 || r >= 10) {
          CHECK(got == sentinel);
          continue;
        }
        double expected = 0, tolerance = 0;
        reference_dot(m.values.data() + r * n, x.data() + t * n, n, &expected, &tolerance);
        CHECK(std::fabs(double(got) - expected) <= tolerance);
      }
    }
  });
}

TEST_CASE("dot, axpy and scale match scalar loops at every length") {
  for_each_target([] {
    for (int64_t n : {0, 1, 3, 7, 16, 17, 64, 100, 259}) {
      CAPTURE(n);
      const std::vector<float> a = random_floats(static_cast<size_t>(n) + 1, 1);
      const std::vector<float> b = random_floats(static_cast<size_t>(n) + 1, 2);
      double expected = 0, tolerance = 0;
      reference_dot(a.data(), b.data(), n, &expected, &tolerance);
      CHECK(std::fabs(double(bora::ops::dot(a.data(), b.data(), n)) - expected) <= tolerance);

      std::vector<float> y = b;
      bora::ops::axpy(0.75f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) CHECK(y[i] == doctest::Approx(b[i] + 0.75f * a[i]).epsilon(1e-6));
      CHECK(y[n] == b[n]);  // nothing past the end

      std::vector<float> s = a;
      bora::ops::scale(s.data(), -1.5f, n);
      for (int64_t i = 0; i < n; ++i) CHECK(s[i] == a[i] * -1.5f);
      CHECK(s[n] == a[n]);
    }
  });
}

TEST_CASE("rmsnorm matches the reference, also in place") {
  for_each_target([] {
    for (int64_t n : {1, 5, 33, 256}) {
      CAPTURE(n);
      const std::vector<float> x = random_floats(static_cast<size_t>(n), 11, 3.0f);
      const std::vector<float> w = random_floats(static_cast<size_t>(n), 12);
      const float eps = 1e-5f;
      double mean_square = 0;
      for (float v : x) mean_square += double(v) * v;
      mean_square /= double(n);
      const double inverse = 1.0 / std::sqrt(mean_square + eps);
      std::vector<float> y(static_cast<size_t>(n));
      bora::ops::rmsnorm(x.data(), w.data(), eps, n, y.data());
      std::vector<float> in_place = x;
      bora::ops::rmsnorm(in_place.data(), w.data(), eps, n, in_place.data());
      for (int64_t i = 0; i < n; ++i) {
        const double expected = double(x[i]) * inverse * double(w[i]);
        CHECK(std::fabs(y[i] - expected) <= 1e-5 * std::fabs(expected) + 1e-7);
        CHECK(in_place[i] == y[i]);
      }
    }
  });
}

TEST_CASE("softmax is normalized, stable for large inputs and zero for -inf") {
  for_each_target([] {
    for (int64_t n : {1, 2, 9, 40, 129}) {
      CAPTURE(n);
      std::vector<float> x = random_floats(static_cast<size_t>(n), 21, 4.0f);
      x[0] += 1000.0f;  // would overflow a naive exp
      if (n > 2) x[2] = -std::numeric_limits<float>::infinity();
      const std::vector<float> original = x;
      double max_value = -INFINITY;
      for (float v : original) max_value = std::max(max_value, double(v));  // see reference_q8_dot
      double sum = 0;
      for (float v : original) sum += std::exp(double(v) - max_value);
      bora::ops::softmax(x.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double expected = std::exp(double(original[i]) - max_value) / sum;
        CHECK(std::fabs(x[i] - expected) <= 2e-6 * expected + 1e-30);
        total += x[i];
      }
      if (n > 2) CHECK(x[2] == 0.0f);
      CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
    }
  });
}

TEST_CASE("softmax gives NaN scores weight 0 and normalizes the rest, on every target") {
  // A NaN can reach attention from a hostile session file's cache; it must not poison the other weights,
  // nor reach Exp (undefined on Highway's emulated targets).
  for_each_target([] {
    for (int64_t n : {3, 17, 40}) {
      CAPTURE(n);
      std::vector<float> x = random_floats(static_cast<size_t>(n), 23, 2.0f);
      x[1] = std::numeric_limits<float>::quiet_NaN();
      x[static_cast<size_t>(n - 1)] = std::numeric_limits<float>::quiet_NaN();
      const std::vector<float> original = x;
      bora::ops::softmax(x.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(original[static_cast<size_t>(i)])) {
          CHECK(x[static_cast<size_t>(i)] == 0.0f);
        } else {
          CHECK(x[static_cast<size_t>(i)] > 0.0f);
        }
        total += x[static_cast<size_t>(i)];
      }
      CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
    }
  });
}

TEST_CASE("silu_mul matches x*sigmoid(x)*up, including extreme gates") {
  for_each_target([] {
    for (int64_t n : {1, 6, 31, 100}) {
      CAPTURE(n);
      std::vector<float> gate = random_floats(static_cast<size_t>(n), 31, 5.0f);
      const std::vector<float> up = random_floats(static_cast<size_t>(n), 32);
      gate[0] = -150.0f;
      if (n > 1) gate[1] = 150.0f;
      if (n > 5) gate[5] = 0.0f;
      const std::vector<float> original = gate;
      bora::ops::silu_mul(gate.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double g = original[i];
        const double expected = g / (1.0 + std::exp(-g)) * double(up[i]);
        CHECK(std::isfinite(gate[i]));
        CHECK(std::fabs(gate[i] - expected) <= 4e-6 * std::fabs(expected) + 1e-30);
      }
    }
  });
}

TEST_CASE("rope rotates adjacent and half-split pairs by position * theta^(-2i/d)") {
  const int64_t n_heads = 3, head_dim = 32, position = 4093;
  const float theta = 10000.0f;
  const std::vector<float> x = random_floats(static_cast<size_t>(n_heads * head_dim), 41);

  std::vector<float> adjacent = x;
  bora::ops::rope(adjacent.data(), n_heads, head_dim, position, theta, bora::RopePairing::kAdjacent);
  std::vector<float> zero_position = x;
  bora::ops::rope(zero_position.data(), n_heads, head_dim, 0, theta, bora::RopePairing::kAdjacent);
  CHECK(zero_position == x);

  // The half-split layout of the same head (HF's permutation) must give the same rotated values.
  std::vector<float> split(x.size());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      split[h * head_dim + i] = x[h * head_dim + 2 * i];
      split[h * head_dim + i + head_dim / 2] = x[h * head_dim + 2 * i + 1];
    }
  }
  bora::ops::rope(split.data(), n_heads, head_dim, position, theta, bora::RopePairing::kHalfSplit);

  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      const double angle = double(position) * std::pow(double(theta), -2.0 * double(i) / double(head_dim));
      const double a = x[h * head_dim + 2 * i], b = x[h * head_dim + 2 * i + 1];
      const double first = a * std::cos(angle) - b * std::sin(angle);
      const double second = a * std::sin(angle) + b * std::cos(angle);
      CHECK(adjacent[h * head_dim + 2 * i] == doctest::Approx(first).epsilon(1e-6));
      CHECK(adjacent[h * head_dim + 2 * i + 1] == doctest::Approx(second).epsilon(1e-6));
      CHECK(split[h * head_dim + i] == adjacent[h * head_dim + 2 * i]);
      CHECK(split[h * head_dim + i + head_dim / 2] == adjacent[h * head_dim + 2 * i + 1]);
    }
  }
}

TEST_CASE("f16 conversions agree with the scalar reference bit for bit") {
  std::vector<uint16_t> all_halves(65536);
  for (uint32_t h = 0; h < 65536; ++h) all_halves[h] = static_cast<uint16_t>(h);
  std::vector<float> probes = random_floats(1000, 51, 100.0f);
  for (float v : random_floats(200, 52, 1e-5f)) probes.push_back(v);  // subnormal range
  for (uint32_t h = 0; h < 65536; h += 7) {
    // Exact ties between neighbouring halves and values just beside them.
    const float lo = bora::quant::f16_to_f32(static_cast<uint16_t>(h));
    const float hi = bora::quant::f16_to_f32(static_cast<uint16_t>(h + 1));
    if (std::isfinite(lo) && std::isfinite(hi)) {
      const float mid = static_cast<float>((double(lo) + double(hi)) / 2);
      probes.push_back(mid);
      probes.push_back(std::nextafter(mid, 0.0f));
      probes.push_back(std::nextafter(mid, INFINITY));
    }
  }
  for (float v : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e9f, -1e9f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::denorm_min(), 6.0e-8f, 2.9e-8f, 3.0e-8f}) {
    probes.push_back(v);
  }

  for_each_target([&] {
    std::vector<float> widened(all_halves.size());
    bora::ops::f16_to_f32(all_halves.data(), widened.data(), static_cast<int64_t>(all_halves.size()));
    int widen_mismatches = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
      const float expected = bora::quant::f16_to_f32(static_cast<uint16_t>(h));
      uint32_t got_bits, expected_bits;
      std::memcpy(&got_bits, &widened[h], 4);
      std::memcpy(&expected_bits, &expected, 4);
      widen_mismatches += got_bits != expected_bits;
    }
    CHECK(widen_mismatches == 0);

    std::vector<uint16_t> narrowed(probes.size());
    bora::ops::f32_to_f16(probes.data(), narrowed.data(), static_cast<int64_t>(probes.size()));
    int narrow_mismatches = 0;
    for (size_t i = 0; i < probes.size(); ++i) narrow_mismatches += narrowed[i] != bora::quant::f32_to_f16(probes[i]);
    CHECK(narrow_mismatches == 0);
  });
}

// ---- int8 activation fast path ----------------------------------------------------------------

namespace {

const WeightType kIntegerTypes[] = {WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kQ4_K, WeightType::kQ5_K,
                                    WeightType::kQ6_K};

std::vector<uint8_t> quantize_tokens(const std::vector<float>& x, int64_t n, int64_t n_tokens) {
  const int64_t stride = bora::ops::q8_row_bytes(n);
  std::vector<uint8_t> xq(static_cast<size_t>(stride * n_tokens));
  for (int64_t t = 0; t < n_tokens; ++t) bora::ops::quantize_row_q8(x.data() + t * n, n, xq.data() + t * stride);
  return xq;
}

}  // namespace

TEST_CASE("quantize_row_q8 matches the scalar reference bit for bit") {
  const int64_t n = 32 * 7;
  std::vector<float> x = random_floats(static_cast<size_t>(n), 61, 2.0f);
  for (int i = 32; i < 64; ++i) x[i] = 0.0f;  // an all-zero block: d = 0, q = 0
  x[70] = 1e30f;                               // a huge value next to ordinary ones
  for (int i = 96; i < 128; ++i) x[i] = static_cast<float>(i - 112) * 0.5f;  // exact ties at .5
  std::vector<uint8_t> expected(static_cast<size_t>(bora::ops::q8_row_bytes(n)));
  bora::quant::quantize_activations_q8(x.data(), n, expected.data());
  const bora::quant::Q8ActivationRow view = bora::quant::q8_activation_view(expected.data(), n);
  CHECK(view.d[1] == 0.0f);
  CHECK(view.q[70] == 127);
  for (int64_t i = 0; i < n; ++i) {
    CHECK(view.q[i] >= -127);
    CHECK(std::fabs(view.d[i / 32] * view.q[i] - x[i]) <= 0.5f * view.d[i / 32] * 1.0001f + 1e-30f);
  }
  for_each_target([&] {
    std::vector<uint8_t> got(expected.size(), 0xAB);
    bora::ops::quantize_row_q8(x.data(), n, got.data());
    CHECK(got == expected);
  });
}

TEST_CASE("the second activation level has 1/256 of the first's scale and carries the rounding error") {
  const int64_t n = 32 * 5;
  std::vector<float> x = random_floats(static_cast<size_t>(n), 63, 3.0f);
  for (int i = 32; i < 64; ++i) x[i] = 0.0f;  // an all-zero block stays zero in both levels
  const size_t bytes = static_cast<size_t>(bora::ops::q8_row_bytes(n));
  std::vector<uint8_t> hi(bytes), lo(bytes);
  bora::quant::quantize_activations_q8(x.data(), n, hi.data());
  bora::quant::quantize_activation_residual_q8(x.data(), hi.data(), n, lo.data());
  const bora::quant::Q8ActivationRow h = bora::quant::q8_activation_view(hi.data(), n);
  const bora::quant::Q8ActivationRow l = bora::quant::q8_activation_view(lo.data(), n);
  std::vector<float> x_hi(static_cast<size_t>(n)), x_lo(static_cast<size_t>(n));
  bora::quant::dequantize_activations_q8(hi.data(), n, x_hi.data());
  bora::quant::dequantize_activations_q8(lo.data(), n, x_lo.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    CHECK(l.d[b] * 256.0f == h.d[b]);
    int sum = 0;
    for (int i = 0; i < 32; ++i) sum += l.q[32 * b + i];
    CHECK(l.d_sum[b] == l.d[b] * static_cast<float>(sum));
  }
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(i);
    CHECK(l.q[i] >= -127);
    // Within one fine step (the clamp at 127 of a rest of exactly 128 steps), plus f32 rounding.
    CHECK(std::fabs(x_hi[k] + x_lo[k] - x[k]) <= l.d[i / 32] * 1.001f + 1e-6f * std::fabs(x[k]));
  }
  CHECK(l.d[1] == 0.0f);
  for_each_target([&] {
    std::vector<uint8_t> got(bytes, 0xAB);
    bora::ops::quantize_residual_q8(x.data(), hi.data(), n, got.data());
    const bora::quant::Q8ActivationRow g = bora::quant::q8_activation_view(got.data(), n);
    for (int64_t i = 0; i < n; ++i) CHECK(std::abs(g.q[i] - l.q[i]) <= 1);  // a fused multiply-subtract may differ
    for (int64_t b = 0; b < n / 32; ++b) {
      CHECK(g.d[b] == l.d[b]);
      int sum = 0;
      for (int i = 0; i < 32; ++i) sum += g.q[32 * b + i];
      CHECK(g.d_sum[b] == g.d[b] * static_cast<float>(sum));
    }
  });
}

// Row lengths for the decode tests: 37 blocks (two full groups of 16 per-block scales plus a partial
// one with an odd last block) for the 32-value formats, and for Q4_0 also 2048, a multiple of 1024 that
// takes its window kernel through a whole 32-block period and through a row's last one.
std::vector<int64_t> decode_lengths(WeightType type) {
  if (type == WeightType::kQ4_0) return {32 * 37, 2048};
  if (type == WeightType::kQ8_0) return {32 * 37};
  return {512};
}

// Runs check(type, n) on every target for every weight type and each of its decode lengths, with the
// type and length named in any failure.
void for_each_decode_case(const std::function<void(WeightType, int64_t)>& check) {
  for_each_target_and_type(kAllTypes, [&](WeightType type) {
    for (int64_t n : decode_lengths(type)) {
      CAPTURE(n);
      check(type, n);
    }
  });
}

TEST_CASE("matvec_q8 equals the dot of the dequantized weights and activations") {
  for_each_decode_case([](WeightType type, int64_t n) {
    const int64_t rows = 9;
    const TestMatrix m = make_matrix(type, n, rows, 200u + static_cast<uint32_t>(type));
    const std::vector<float> x = random_floats(static_cast<size_t>(n), 71);
    const std::vector<uint8_t> xq = quantize_tokens(x, n, 1);
    std::vector<float> x_hat(static_cast<size_t>(n));
    bora::quant::dequantize_activations_q8(xq.data(), n, x_hat.data());
    const bora::quant::Q8ActivationRow view = bora::quant::q8_activation_view(xq.data(), n);

    std::vector<float> y(static_cast<size_t>(rows), -1.0f), y_exact(static_cast<size_t>(rows));
    bora::ops::matvec_q8(m.view, xq.data(), y.data(), 1, rows);
    bora::ops::matvec_f32(m.view, x.data(), y_exact.data(), 0, rows);
    CHECK(y[0] == -1.0f);
    for (int64_t r = 1; r < rows; ++r) {
      const float* w = m.values.data() + r * n;
      double expected = 0, magnitude = 0, quantization_bound = 0, max_w = 0;
      for (int64_t i = 0; i < n; ++i) max_w = std::max(max_w, double(std::fabs(w[i])));  // see reference_q8_dot
      for (int64_t i = 0; i < n; ++i) {
        expected += double(w[i]) * double(x_hat[i]);
        // Offsets (Q4_0's -8, K-quant mins) are applied per block, so partial sums reach a few max|w|.
        magnitude += std::fabs(double(x_hat[i])) * 4 * max_w;
        quantization_bound += std::fabs(double(w[i])) * 0.5 * double(view.d[i / 32]);
      }
      // Exact integer block sums; only the f32 scaling and summation round.
      CHECK(std::fabs(double(y[r]) - expected) <= 1e-6 * std::sqrt(double(n)) * magnitude);
      // Against the exact f32 path the difference is the activation rounding, <= half a step each.
      CHECK(std::fabs(double(y[r]) - double(y_exact[r])) <= quantization_bound * 1.001 + 1e-4);
    }
  });
}

TEST_CASE("matvec_q8_two_level equals the sum of the two levels' matvec_q8, for every type and target") {
  for_each_decode_case([](WeightType type, int64_t n) {
    const int64_t rows = 7;
    const TestMatrix m = make_matrix(type, n, rows, 300u + static_cast<uint32_t>(type));
    const std::vector<float> x = random_floats(static_cast<size_t>(n), 72);
    const std::vector<uint8_t> hi = quantize_tokens(x, n, 1);
    std::vector<uint8_t> lo(hi.size());
    bora::ops::quantize_residual_q8(x.data(), hi.data(), n, lo.data());

    std::vector<float> y(static_cast<size_t>(rows), -1.0f), y_hi(static_cast<size_t>(rows)),
        y_lo(static_cast<size_t>(rows)), y_exact(static_cast<size_t>(rows));
    bora::ops::matvec_q8_two_level(m.view, hi.data(), lo.data(), y.data(), 1, rows);
    bora::ops::matvec_q8(m.view, hi.data(), y_hi.data(), 0, rows);
    bora::ops::matvec_q8(m.view, lo.data(), y_lo.data(), 0, rows);
    bora::ops::matvec_f32(m.view, x.data(), y_exact.data(), 0, rows);
    CHECK(y[0] == -1.0f);
    for (int64_t r = 1; r < rows; ++r) {
      const size_t i = static_cast<size_t>(r);
      if (is_float_weight_type(type)) {
        CHECK(std::fabs(y[i] - y_exact[i]) <= 1e-3f * (1.0f + std::fabs(y_exact[i])));
      } else {
        // The same integer products, summed in another order (one pass adds 256 * hi + lo).
        CHECK(std::fabs(y[i] - (y_hi[i] + y_lo[i])) <= 1e-5f * (1.0f + std::fabs(y_hi[i])));
        // Near-exact: much closer to the f32 result than one level is.
        CHECK(std::fabs(y[i] - y_exact[i]) <= 0.05f * std::fabs(y_hi[i] - y_exact[i]) + 1e-4f * (1.0f + std::fabs(y_exact[i])));
      }
    }
  });
}

TEST_CASE("matvec_q8_tokens gives every token exactly what it gets alone, in one or two levels") {
  // The batch invariance of decoding sequences rests on this: a token's products must not depend on
  // how many other tokens share the weight reads, nor on its place among them.
  for_each_decode_case([](WeightType type, int64_t n) {
    const int64_t rows = 300;  // more than a kernel's tile of rows at Q4_0 2048 (256 KiB)
    const TestMatrix m = make_matrix(type, n, rows, 350u + static_cast<uint32_t>(type));
    for (int64_t n_tokens : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{5}, int64_t{9}, int64_t{17}}) {
      CAPTURE(n_tokens);
      const std::vector<float> x = random_floats(static_cast<size_t>(n * n_tokens), 73 + static_cast<uint32_t>(n_tokens));
      const std::vector<uint8_t> hi = quantize_tokens(x, n, n_tokens);
      std::vector<uint8_t> lo(hi.size());
      const int64_t stride = bora::ops::q8_row_bytes(n);
      for (int64_t t = 0; t < n_tokens; ++t)
        bora::ops::quantize_residual_q8(x.data() + t * n, hi.data() + t * stride, n, lo.data() + t * stride);
      for (bool two_level : {false, true}) {
        CAPTURE(two_level);
        std::vector<const uint8_t*> hi_rows, lo_rows;
        std::vector<std::vector<float>> together(static_cast<size_t>(n_tokens), std::vector<float>(rows, -1.0f));
        std::vector<float*> outputs;
        for (int64_t t = 0; t < n_tokens; ++t) {
          hi_rows.push_back(hi.data() + t * stride);
          lo_rows.push_back(lo.data() + t * stride);
          outputs.push_back(together[static_cast<size_t>(t)].data());
        }
        bora::ops::matvec_q8_tokens(m.view, hi_rows.data(), two_level ? lo_rows.data() : nullptr, n_tokens,
                                    outputs.data(), 1, rows);
        for (int64_t t = 0; t < n_tokens; ++t) {
          std::vector<float> alone(static_cast<size_t>(rows), -1.0f);
          if (two_level) {
            bora::ops::matvec_q8_two_level(m.view, hi_rows[static_cast<size_t>(t)], lo_rows[static_cast<size_t>(t)],
                                           alone.data(), 1, rows);
          } else {
            bora::ops::matvec_q8(m.view, hi_rows[static_cast<size_t>(t)], alone.data(), 1, rows);
          }
          CHECK(std::memcmp(alone.data(), together[static_cast<size_t>(t)].data(), alone.size() * sizeof(float)) == 0);
        }
      }
    }
  });
}

TEST_CASE("float weights meet int8 activations without scratch memory as they do with it") {
  // The unbuffered path is what the buffered ones fall back to when memory runs out: it must write
  // every output, and the same values up to the order of the f32 sums.
  for_each_target([] {
    for (WeightType type : {WeightType::kF32, WeightType::kF16, WeightType::kBF16}) {
      for (int64_t n : {int64_t{32}, int64_t{256}, int64_t{288}, int64_t{1024}}) {
        CAPTURE(bora::weight_type_name(type));
        CAPTURE(n);
        const int64_t rows = 5;
        const TestMatrix m = make_matrix(type, n, rows, 900u + static_cast<uint32_t>(n));
        const std::vector<float> x = random_floats(static_cast<size_t>(n), 91);
        const std::vector<uint8_t> hi = quantize_tokens(x, n, 1);
        std::vector<uint8_t> lo(hi.size());
        bora::ops::quantize_residual_q8(x.data(), hi.data(), n, lo.data());
        for (const uint8_t* second : {static_cast<const uint8_t*>(nullptr), static_cast<const uint8_t*>(lo.data())}) {
          std::vector<float> buffered(static_cast<size_t>(rows)), unbuffered(static_cast<size_t>(rows), NAN);
          if (second == nullptr) {
            bora::ops::matvec_q8(m.view, hi.data(), buffered.data(), 0, rows);
          } else {
            bora::ops::matvec_q8_two_level(m.view, hi.data(), second, buffered.data(), 0, rows);
          }
          bora::ops::matvec_q8_float_weights_unbuffered(m.view, hi.data(), second, unbuffered.data(), 0, rows);
          for (int64_t r = 0; r < rows; ++r) {
            const size_t i = static_cast<size_t>(r);
            CHECK(std::fabs(unbuffered[i] - buffered[i]) <= 1e-4f * (1.0f + std::fabs(buffered[i])));
          }
        }
      }
    }
  });
}

// The reference both fast-path tests use: the exact dot of dequantized weights and activations,
// and a bound for f32 rounding of the per-block scaling (offsets such as Q4_0's -8 and the K-quant
// mins are applied per block, so partial sums reach a few times max|w| per activation).
void reference_q8_dot(const float* w, const float* x_hat, int64_t n, double* value, double* tolerance) {
  double sum = 0, max_w = 0, magnitude = 0;
  // std::max, not std::fmax (the same for these finite values): GCC 12 for aarch64 crashes
  // vectorizing an fmax reduction at -O3 (internal compiler error in vect_transform_reduction).
  for (int64_t i = 0; i < n; ++i) max_w = std::max(max_w, double(std::fabs(w[i])));
  for (int64_t i = 0; i < n; ++i) {
    sum += double(w[i]) * double(x_hat[i]);
    magnitude += std::fabs(double(x_hat[i])) * 4 * max_w;
  }
  *value = sum;
  *tolerance = 1e-6 * std::sqrt(double(n)) * magnitude;
}

TEST_CASE("matmul_q8 matches the reference with a strided output, partial tiles and padded token groups") {
  for_each_target_and_type(kIntegerTypes, [](WeightType type) {
    // 7 tokens take the row-at-a-time kernel, 37 the packed prefill kernel (32 + 5 padded).
    for (int64_t n_tokens : {int64_t{7}, int64_t{37}}) {
      CAPTURE(n_tokens);
      const int64_t n = 512, rows = 21, stride = rows + 2;
      const TestMatrix m = make_matrix(type, n, rows, 300u + static_cast<uint32_t>(type));
      const std::vector<float> x = random_floats(static_cast<size_t>(n * n_tokens), 81);
      const std::vector<uint8_t> xq = quantize_tokens(x, n, n_tokens);
      const float sentinel = 4242.0f;
      std::vector<float> y(static_cast<size_t>(stride * n_tokens), sentinel);
      bora::ops::matmul_q8(m.view, xq.data(), n_tokens, y.data(), stride, 2, 20);  // 18 rows
      std::vector<float> x_hat(static_cast<size_t>(n));
      int bad = 0;
      for (int64_t t = 0; t < n_tokens; ++t) {
        bora::quant::dequantize_activations_q8(xq.data() + t * bora::ops::q8_row_bytes(n), n, x_hat.data());
        for (int64_t r = 0; r < stride; ++r) {
          const float got = y[t * stride + r];
          if (r < 2 || r >= 20) {
            bad += got != sentinel;
            continue;
          }
          double expected = 0, tolerance = 0;
          reference_q8_dot(m.values.data() + r * n, x_hat.data(), n, &expected, &tolerance);
          bad += !(std::fabs(double(got) - expected) <= tolerance);
        }
      }
      CHECK(bad == 0);
    }
  });
}

TEST_CASE("every row's result is bit-identical whatever row range computes it") {
  // Threads split rows; a row must not be summed differently at the edge of a range.
  for_each_target_and_type(kAllTypes, [](WeightType type) {
    const int64_t n = 512, rows = 19;
    const TestMatrix m = make_matrix(type, n, rows, 500u + static_cast<uint32_t>(type));
    for (int64_t n_tokens : {int64_t{1}, int64_t{5}, int64_t{40}}) {
      CAPTURE(n_tokens);
      const std::vector<float> x = random_floats(static_cast<size_t>(n * n_tokens), 91);
      const std::vector<uint8_t> xq = quantize_tokens(x, n, n_tokens);
      for (bool fast : {false, true}) {
        CAPTURE(fast);
        auto run = [&](int64_t begin, int64_t end, std::vector<float>* y) {
          if (fast) {
            bora::ops::matmul_q8(m.view, xq.data(), n_tokens, y->data(), rows, begin, end);
          } else {
            bora::ops::matmul_f32(m.view, x.data(), n_tokens, y->data(), rows, begin, end);
          }
        };
        std::vector<float> whole(static_cast<size_t>(rows * n_tokens)), pieces(whole.size());
        run(0, rows, &whole);
        const int64_t cuts[] = {0, 1, 4, 9, 10, 17, rows};
        for (size_t k = 0; k + 1 < sizeof(cuts) / sizeof(cuts[0]); ++k) run(cuts[k], cuts[k + 1], &pieces);
        CHECK(pieces == whole);
      }
    }
  });
}

namespace {

// Whether the target for_each_target set has 512-bit VNNI (Highway numbers better targets lower).
bool current_target_has_vnni() {
#if HWY_ARCH_X86
  const int64_t targets = hwy::SupportedTargets() & bora::ops::simd_compiled_targets();
  return (targets & -targets) <= HWY_AVX3_DL;
#else
  return false;
#endif
}

// m's rows regrouped into row tiles (quant/row_tiles.hpp), as the loader does with a model's matrices.
TestMatrix tiled_copy(const TestMatrix& m) {
  TestMatrix tiled = m;
  const uint64_t tile_bytes = bora::quant::kTileRows * m.view.row_bytes();
  std::vector<uint8_t> scratch(static_cast<size_t>(tile_bytes));
  bora::quant::tile_rows_in_place(m.view.type, tiled.bytes.data() + 1, m.view.row_length(), m.view.rows(),
                                  scratch.data());
  tiled.view.data = tiled.bytes.data() + 1;
  tiled.view.row_tiles = true;
  return tiled;
}

}  // namespace

TEST_CASE("a row-tiled matrix gives a token the same products alone, batched or in a prompt, near the ordinary rows'") {
  // Where the target prefers tiles for the type (AVX2 and 512-bit VNNI: all five) one tile kernel
  // computes each (row, token) the same way for any token count (with VNNI also bit for bit as the
  // prefill kernel on ordinary rows); on other targets the tiles are read back into ordinary rows for
  // the usual kernels. Either way every function of ops.hpp reads both layouts, and a range of rows
  // may start and end inside a tile.
  const WeightType kTileTypes[] = {WeightType::kQ4_0, WeightType::kQ8_0, WeightType::kQ4_K, WeightType::kQ5_K,
                                   WeightType::kQ6_K};
  for_each_target_and_type(kTileTypes, [](WeightType type) {
    // Ranges of rows that start and end in the first half of a tile (3, 45: the other half too) and in
    // the second (11, 37: only that half of the tile).
    struct Case {
      int64_t n, begin, end;
    };
    const int64_t three_blocks = 3 * bora::quant::tile_format(type).values;
    for (const Case& c : {Case{three_blocks, 3, 45}, Case{1024, 3, 45}, Case{1024, 11, 37}}) {
      const int64_t n = c.n, begin = c.begin, end = c.end;
      CAPTURE(n);
      CAPTURE(begin);
      const int64_t rows = 48, n_tokens = 17, stride = bora::ops::q8_row_bytes(n);
      const TestMatrix plain = make_matrix(type, n, rows, 900u + static_cast<uint32_t>(n));
      const TestMatrix tiled = tiled_copy(plain);
      const std::vector<float> x = random_floats(static_cast<size_t>(n * n_tokens), 93);
      const std::vector<uint8_t> hi = quantize_tokens(x, n, n_tokens);
      std::vector<uint8_t> lo(hi.size());
      for (int64_t t = 0; t < n_tokens; ++t)
        bora::ops::quantize_residual_q8(x.data() + t * n, hi.data() + t * stride, n, lo.data() + t * stride);
      const float sentinel = 4242.0f;
      auto fresh = [&] { return std::vector<float>(static_cast<size_t>(rows * n_tokens), sentinel); };

      // A prompt: the packed prefill kernel on the ordinary rows is the reference where tiles are preferred.
      std::vector<float> prompt_plain = fresh(), prompt_tiled = fresh();
      bora::ops::matmul_q8(plain.view, hi.data(), n_tokens, prompt_plain.data(), rows, begin, end);
      bora::ops::matmul_q8(tiled.view, hi.data(), n_tokens, prompt_tiled.data(), rows, begin, end);
      const bool tile_kernel = bora::ops::prefers_row_tiles(type);
      // The same integers per block, scaled and summed in the tile kernel's own order.
      for (size_t i = 0; i < prompt_plain.size(); ++i)
        CHECK(std::fabs(prompt_tiled[i] - prompt_plain[i]) <= 1e-4f * (1.0f + std::fabs(prompt_plain[i])));
      if (current_target_has_vnni() && tile_kernel) CHECK(prompt_tiled == prompt_plain);

      for (bool two_level : {false, true}) {
        CAPTURE(two_level);
        // Every remainder after groups of eight (1-7), a group of eight and one, two groups and seven.
        for (int64_t count : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{6}, int64_t{7},
                              int64_t{9}, int64_t{15}, n_tokens}) {
          CAPTURE(count);
          std::vector<float> together_plain = fresh(), together_tiled = fresh();
          std::vector<const uint8_t*> hi_rows, lo_rows;
          std::vector<float*> out_plain, out_tiled;
          for (int64_t t = 0; t < count; ++t) {
            hi_rows.push_back(hi.data() + t * stride);
            lo_rows.push_back(lo.data() + t * stride);
            out_plain.push_back(together_plain.data() + t * rows);
            out_tiled.push_back(together_tiled.data() + t * rows);
          }
          const uint8_t* const* lo_arg = two_level ? lo_rows.data() : nullptr;
          bora::ops::matvec_q8_tokens(plain.view, hi_rows.data(), lo_arg, count, out_plain.data(), begin, end);
          bora::ops::matvec_q8_tokens(tiled.view, hi_rows.data(), lo_arg, count, out_tiled.data(), begin, end);
          // Each token alone through the tiled matrix: what it must get in any batch.
          std::vector<float> alone_tiled = fresh();
          for (int64_t t = 0; t < count; ++t) {
            float* out = alone_tiled.data() + t * rows;
            const uint8_t* lo_row = lo_rows[static_cast<size_t>(t)];
            bora::ops::matvec_q8_tokens(tiled.view, &hi_rows[static_cast<size_t>(t)], two_level ? &lo_row : nullptr, 1,
                                        &out, begin, end);
          }
          const std::vector<float>& reference = tile_kernel && !two_level ? prompt_tiled : together_plain;
          int differ = 0, differ_alone = 0, near = 0;
          for (int64_t i = 0; i < count * rows; ++i) {
            const size_t k = static_cast<size_t>(i);
            differ += std::memcmp(&together_tiled[k], &reference[k], sizeof(float)) != 0;
            differ_alone += std::memcmp(&together_tiled[k], &alone_tiled[k], sizeof(float)) != 0;
            near += std::fabs(together_tiled[k] - together_plain[k]) <= 1e-4f * (1.0f + std::fabs(together_plain[k]));
          }
          CHECK(differ_alone == 0);
          // Two levels: the tile kernel sums the same integers per block, scaled in its own order.
          if (tile_kernel && two_level) CHECK(near == count * rows);
          else CHECK(differ == 0);
        }
      }

      // The exact path dequantizes the same values from either layout.
      std::vector<float> exact_plain = fresh(), exact_tiled = fresh();
      bora::ops::matmul_f32(plain.view, x.data(), n_tokens, exact_plain.data(), rows, begin, end);
      bora::ops::matmul_f32(tiled.view, x.data(), n_tokens, exact_tiled.data(), rows, begin, end);
      CHECK(exact_tiled == exact_plain);
      std::vector<float> one_plain(static_cast<size_t>(rows), sentinel), one_tiled = one_plain;
      bora::ops::matvec_f32(plain.view, x.data(), one_plain.data(), begin, end);
      bora::ops::matvec_f32(tiled.view, x.data(), one_tiled.data(), begin, end);
      CHECK(one_tiled == one_plain);
    }
  });
}

TEST_CASE("a prompt's two-level products equal each token's alone, in ordinary rows and row tiles, across chunks") {
  const WeightType kTileTypes[] = {WeightType::kQ4_0, WeightType::kQ8_0, WeightType::kQ4_K, WeightType::kQ5_K,
                                   WeightType::kQ6_K};
  for_each_target_and_type(kTileTypes, [](WeightType type) {
    // 8192-value rows: two levels of a token take 16 KiB, so 17 tokens sweep the tiles in two chunks.
    const int64_t n = 8192, rows = 32, n_tokens = 17, begin = 3, end = 29, stride = bora::ops::q8_row_bytes(n);
    const TestMatrix plain = make_matrix(type, n, rows, 4100u);
    const TestMatrix tiled = tiled_copy(plain);
    const std::vector<float> x = random_floats(static_cast<size_t>(n * n_tokens), 95);
    const std::vector<uint8_t> hi = quantize_tokens(x, n, n_tokens);
    std::vector<uint8_t> lo(hi.size());
    for (int64_t t = 0; t < n_tokens; ++t)
      bora::ops::quantize_residual_q8(x.data() + t * n, hi.data() + t * stride, n, lo.data() + t * stride);
    for (const TestMatrix* m : {&plain, &tiled}) {
      const bool is_tiled = m == &tiled;
      CAPTURE(is_tiled);
      std::vector<float> prompt(static_cast<size_t>(rows * n_tokens), 4242.0f), alone = prompt;
      bora::ops::matmul_q8_two_level(m->view, hi.data(), lo.data(), n_tokens, prompt.data(), rows, begin, end);
      for (int64_t t = 0; t < n_tokens; ++t)
        bora::ops::matvec_q8_two_level(m->view, hi.data() + t * stride, lo.data() + t * stride, alone.data() + t * rows,
                                       begin, end);
      CHECK(std::memcmp(prompt.data(), alone.data(), prompt.size() * sizeof(float)) == 0);
    }
  });
}

TEST_CASE("K-quant products reach their largest integer sums without overflow, in ordinary rows and row tiles") {
  // Every value at its largest (Q4_K 15, Q5_K 31: all nibbles and fifth bits set, scale 1, min 0) met by
  // activations at +-127 gives the largest sums a kernel can hold in 16 bits before widening them.
  const WeightType kKQuants[] = {WeightType::kQ4_K, WeightType::kQ5_K};
  for_each_target_and_type(kKQuants, [](WeightType type) {
    const int64_t n = 1024, rows = 32, n_tokens = 3;
    const bora::quant::TileFormat f = bora::quant::tile_format(type);
    TestMatrix plain;
    plain.bytes.assign(static_cast<size_t>(rows * (n / f.values) * f.bytes) + 1, 0xFF);
    uint8_t* data = plain.bytes.data() + 1;
    for (int64_t b = 0; b < rows * (n / f.values); ++b) {
      uint8_t* block = data + b * f.bytes;
      const uint16_t one = bora::quant::f32_to_f16(1.0f), zero = bora::quant::f32_to_f16(0.0f);
      bora::quant::store_u16_le(block, one);
      bora::quant::store_u16_le(block + 2, zero);
      // Packed 6-bit scales and mins (quant::unpack_k_scales_mins): scales 0..3 and 4..7 are 1, mins 0.
      for (int k = 0; k < 12; ++k) block[4 + k] = k < 4 ? 1 : k < 8 ? 0 : 1;
    }
    plain.view.name = "largest";
    plain.view.type = type;
    plain.view.n_dims = 2;
    plain.view.ne[0] = n;
    plain.view.ne[1] = rows;
    plain.view.data = data;
    plain.view.bytes = static_cast<uint64_t>(rows * (n / f.values) * f.bytes);
    const TestMatrix tiled = tiled_copy(plain);
    const float largest = type == WeightType::kQ5_K ? 31.0f : 15.0f;
    std::vector<float> x(static_cast<size_t>(n * n_tokens));
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(t * n + i)] = t == 1 ? -1.0f : 1.0f;
    const std::vector<uint8_t> xq = quantize_tokens(x, n, n_tokens);
    const int64_t stride = bora::ops::q8_row_bytes(n);
    for (const TestMatrix* m : {static_cast<const TestMatrix*>(&plain), &tiled}) {
      CAPTURE(m->view.row_tiles);
      std::vector<float> prompt(static_cast<size_t>(rows * n_tokens)), alone(static_cast<size_t>(rows * n_tokens));
      bora::ops::matmul_q8(m->view, xq.data(), n_tokens, prompt.data(), rows, 0, rows);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const uint8_t* token = xq.data() + t * stride;
        float* out = alone.data() + t * rows;
        bora::ops::matvec_q8_tokens(m->view, &token, nullptr, 1, &out, 0, rows);
      }
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float expected = (t == 1 ? -1.0f : 1.0f) * largest * static_cast<float>(n);
        for (int64_t r = 0; r < rows; ++r) {
          const size_t k = static_cast<size_t>(t * rows + r);
          CHECK(std::fabs(prompt[k] - expected) <= 1e-4f * std::fabs(expected));
          CHECK(std::fabs(alone[k] - expected) <= 1e-4f * std::fabs(expected));
        }
      }
    }
  });
}
