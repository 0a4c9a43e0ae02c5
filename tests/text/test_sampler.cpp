// Why this file exists: sampling must do exactly what its parameters say (greedy, top-k, top-p,
// min-p, temperature, repetition penalty) and a seed must fix the output; these tests use crafted
// logits whose allowed tokens are known in advance.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "bora/text/sampler.hpp"

namespace {

// Logits whose softmax is `probabilities`.
std::vector<float> logits_for(const std::vector<double>& probabilities) {
  std::vector<float> logits;
  for (double p : probabilities) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// Draws `n` tokens (logits copied each time, as a generation loop would have fresh logits).
std::vector<int> histogram(bora::Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  const std::vector<int32_t> no_history;
  for (int i = 0; i < n; ++i) {
    std::vector<float> copy = logits;
    const int32_t token = sampler.sample(copy.data(), static_cast<int64_t>(copy.size()), no_history);
    REQUIRE(token >= 0);
    REQUIRE(token < static_cast<int32_t>(logits.size()));
    ++counts[static_cast<size_t>(token)];
  }
  return counts;
}

bora::SampleParams unrestricted(float temperature = 1.0f) {
  bora::SampleParams params;
  params.temperature = temperature;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  return params;
}

std::vector<float> pseudo_random_logits(size_t n, uint32_t seed) {
  std::vector<float> logits(n);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    logits[i] = static_cast<float>(seed >> 8) / static_cast<float>(1 << 24) * 8.0f - 4.0f;
  }
  return logits;
}

}  // namespace

TEST_CASE("sampler: temperature 0 is argmax, ties go to the lowest id") {
  bora::SampleParams params;
  params.temperature = 0.0f;
  bora::Sampler sampler(params);
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
  CHECK(sampler.sample(logits.data(), 5, {}) == 1);
  std::vector<float> random = pseudo_random_logits(32000, 7);
  size_t best = 0;
  for (size_t i = 1; i < random.size(); ++i) best = random[i] > random[best] ? i : best;
  CHECK(sampler.sample(random.data(), 32000, {}) == static_cast<int32_t>(best));
  // NaN never wins; an empty vocabulary gives -1.
  std::vector<float> with_nan = {std::nanf(""), 1.0f, 0.5f};
  CHECK(sampler.sample(with_nan.data(), 3, {}) == 1);
  CHECK(sampler.sample(logits.data(), 0, {}) == -1);
  CHECK(sampler.sample(nullptr, 5, {}) == -1);
}

TEST_CASE("sampler: top_k = 1 is greedy at any temperature") {
  bora::SampleParams params = unrestricted(1.5f);
  params.top_k = 1;
  bora::Sampler sampler(params);
  for (uint32_t seed = 1; seed < 20; ++seed) {
    std::vector<float> logits = pseudo_random_logits(1000, seed);
    size_t best = 0;
    for (size_t i = 1; i < logits.size(); ++i) best = logits[i] > logits[best] ? i : best;
    CHECK(sampler.sample(logits.data(), 1000, {}) == static_cast<int32_t>(best));
  }
}

TEST_CASE("sampler: the same seed gives the same tokens, another seed other tokens") {
  bora::SampleParams params;
  params.temperature = 1.0f;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  params.seed = 42;
  auto run = [](const bora::SampleParams& p) {
    bora::Sampler sampler(p);
    std::vector<int32_t> tokens;
    for (uint32_t step = 0; step < 200; ++step) {
      std::vector<float> logits = pseudo_random_logits(512, step + 1);
      tokens.push_back(sampler.sample(logits.data(), 512, tokens));
    }
    return tokens;
  };
  const std::vector<int32_t> first = run(params);
  CHECK(run(params) == first);
  params.seed = 43;
  CHECK(run(params) != first);

  // reseed() restarts the sequence.
  params.seed = 42;
  bora::Sampler sampler(params);
  std::vector<float> logits = pseudo_random_logits(512, 1);
  const int32_t a = sampler.sample(logits.data(), 512, {});
  sampler.reseed(42);
  logits = pseudo_random_logits(512, 1);
  CHECK(sampler.sample(logits.data(), 512, {}) == a);
}

TEST_CASE("sampler: with no top-k limit the candidates take the order a comparison sort gives") {
  // Without top-k the whole vocabulary is ordered by a radix sort; with top-k the standard library's
  // partial_sort does it. Logits full of ties (few distinct values), -0 next to +0, NaN and -infinity:
  // if the two orders differed anywhere (ties by id, signs, the key's digits), the cumulative draws
  // would pick other tokens.
  const size_t n = 3000;
  std::vector<float> logits(n);
  uint32_t state = 7;
  for (size_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    const uint32_t pick = state >> 24;
    if (pick < 8) {
      logits[i] = (pick & 1) ? -0.0f : 0.0f;
    } else if (pick < 12) {
      logits[i] = std::numeric_limits<float>::quiet_NaN();
    } else {
      // A few dozen distinct values from -30 to +3 (so exponents and mantissas both vary), each many times.
      logits[i] = static_cast<float>(static_cast<int>(pick % 48) - 40) * 0.7f + ((pick & 1) ? 1e-6f : 0.0f);
    }
  }
  logits[n - 1] = -std::numeric_limits<float>::infinity();  // the one a top-k of n - 1 leaves out
  for (const float top_p : {1.0f, 0.9f}) {
    for (const float min_p : {0.0f, 0.01f}) {
      bora::SampleParams params = unrestricted();
      params.top_p = top_p;
      params.min_p = min_p;
      params.seed = 99;
      bora::SampleParams with_top_k = params;
      with_top_k.top_k = static_cast<int>(n - 1);
      bora::Sampler radix(params), comparison(with_top_k);
      std::vector<int> seen(n, 0);
      for (int draw = 0; draw < 400; ++draw) {
        std::vector<float> a = logits, b = logits;
        const int32_t token = radix.sample(a.data(), static_cast<int64_t>(n), {});
        REQUIRE(token == comparison.sample(b.data(), static_cast<int64_t>(n), {}));
        ++seen[static_cast<size_t>(token)];
      }
      CHECK(std::count_if(seen.begin(), seen.end(), [](int c) { return c > 0; }) > 10);
    }
  }
}

TEST_CASE("sampler: plain temperature-1 sampling follows the softmax") {
  const std::vector<double> probabilities = {0.5, 0.3, 0.15, 0.05};
  bora::Sampler sampler(unrestricted(1.0f));
  const int n = 20000;
  const std::vector<int> counts = histogram(sampler, logits_for(probabilities), n);
  for (size_t i = 0; i < probabilities.size(); ++i) {
    const double expected = probabilities[i] * n;
    const double sigma = std::sqrt(n * probabilities[i] * (1 - probabilities[i]));
    CHECK(std::fabs(counts[i] - expected) < 5 * sigma);
  }
}

TEST_CASE("sampler: top_p keeps the smallest head reaching p") {
  bora::SampleParams params = unrestricted(1.0f);
  params.top_p = 0.7f;  // 0.5 < 0.7 <= 0.5 + 0.3: tokens 0 and 1 stay
  bora::Sampler sampler(params);
  const std::vector<int> counts = histogram(sampler, logits_for({0.5, 0.3, 0.15, 0.05}), 4000);
  CHECK(counts[0] > 0);
  CHECK(counts[1] > 0);
  CHECK(counts[2] == 0);
  CHECK(counts[3] == 0);
  CHECK(std::fabs(counts[0] / 4000.0 - 0.625) < 0.05);  // renormalized 0.5 / 0.8
}

TEST_CASE("sampler: min_p drops tokens below min_p times the best probability") {
  bora::SampleParams params = unrestricted(1.0f);
  params.min_p = 0.25f;  // threshold 0.125: 0.15 stays, 0.05 goes
  bora::Sampler sampler(params);
  const std::vector<int> counts = histogram(sampler, logits_for({0.5, 0.3, 0.15, 0.05}), 4000);
  CHECK(counts[2] > 0);
  CHECK(counts[3] == 0);
}

TEST_CASE("sampler: top_k keeps the k best") {
  bora::SampleParams params = unrestricted(2.0f);
  params.top_k = 2;
  bora::Sampler sampler(params);
  const std::vector<int> counts = histogram(sampler, {1.0f, 3.0f, 2.5f, 0.0f, 2.9f}, 3000);
  CHECK(counts[1] > 0);
  CHECK(counts[4] > 0);
  CHECK(counts[0] + counts[2] + counts[3] == 0);
}

TEST_CASE("sampler: low temperature sharpens, high temperature flattens") {
  const std::vector<float> logits = logits_for({0.4, 0.3, 0.2, 0.1});
  bora::Sampler cold(unrestricted(0.05f));
  bora::Sampler hot(unrestricted(5.0f));
  const std::vector<int> cold_counts = histogram(cold, logits, 2000);
  const std::vector<int> hot_counts = histogram(hot, logits, 4000);
  CHECK(cold_counts[0] > 1950);
  CHECK(hot_counts[3] > 600);  // 0.1 at T=1 becomes ~0.21 at T=5
}

TEST_CASE("sampler: repetition penalty divides positive and multiplies negative logits") {
  bora::SampleParams params;
  params.temperature = 0.0f;
  params.repeat_penalty = 2.0f;
  params.repeat_last_n = 64;
  bora::Sampler sampler(params);
  std::vector<float> logits = {2.0f, -2.0f, 1.0f};
  sampler.sample(logits.data(), 3, {0, 1, 0, 1});  // each distinct token penalized once
  CHECK(logits[0] == doctest::Approx(1.0f));
  CHECK(logits[1] == doctest::Approx(-4.0f));
  CHECK(logits[2] == doctest::Approx(1.0f));

  // Only the last repeat_last_n tokens count; ids outside the vocabulary are ignored.
  params.repeat_last_n = 2;
  bora::Sampler windowed(params);
  logits = {2.0f, 1.5f, 1.0f};
  CHECK(windowed.sample(logits.data(), 3, {0, 7, -3}) == 0);  // 0 is outside the window
  CHECK(logits[0] == doctest::Approx(2.0f));
  logits = {2.0f, 1.5f, 1.0f};
  CHECK(windowed.sample(logits.data(), 3, {2, 0}) == 1);  // 2.0 / 2 = 1.0 < 1.5
  CHECK(logits[0] == doctest::Approx(1.0f));
  CHECK(logits[2] == doctest::Approx(0.5f));

  // penalty 1 changes nothing.
  params.repeat_penalty = 1.0f;
  bora::Sampler neutral(params);
  logits = {2.0f, -2.0f, 1.0f};
  neutral.sample(logits.data(), 3, {0, 1, 2});
  CHECK(logits == std::vector<float>{2.0f, -2.0f, 1.0f});
}

TEST_CASE("sampler: degenerate logits") {
  for (const int top_k : {40, 0}) {  // a partial order of the best, and the whole vocabulary ordered
    CAPTURE(top_k);
    bora::SampleParams params;
    params.top_k = top_k;
    bora::Sampler sampler(params);
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> all_minus_inf = {-inf, -inf, -inf};
    CHECK(sampler.sample(all_minus_inf.data(), 3, {}) == 0);  // all tied: the lowest id
    std::vector<float> one_finite = {-inf, std::nanf(""), 0.0f, -inf};
    for (int i = 0; i < 50; ++i) {
      std::vector<float> copy = one_finite;
      CHECK(sampler.sample(copy.data(), 4, {}) == 2);
    }
    std::vector<float> single = {1.0f};
    CHECK(sampler.sample(single.data(), 1, {}) == 0);
  }
}
