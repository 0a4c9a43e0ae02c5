// Why this file exists: attention at Mistral 7B's real shape (32 query heads over 8 KV heads of 128)
// and at hundreds of positions, across several turns of the rolling window, checked against a float64
// implementation of the reference's rule (query i sees keys i-W+1..i) over the values each cache
// really stores: prompt chunks, single decoding tokens split into key partitions, every cache
// element, and the same bits at any thread count.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "bora/base/thread_pool.hpp"
#include "bora/model/attention.hpp"
#include "bora/model/kv_cache.hpp"
#include "bora/quant/f16.hpp"
#include "bora/quant/q8_0.hpp"

namespace {

constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128;
constexpr int64_t kQDim = kHeads * kHeadDim, kKvDim = kKvHeads * kHeadDim;

// What a cache of this element gives back for a stored row.
template <class Element>
std::vector<float> as_stored(const float* row) {
  std::vector<float> out(row, row + kKvDim);
  if (std::is_same<Element, bora::f16>::value) {
    for (float& x : out) x = bora::quant::f16_to_f32(bora::quant::f32_to_f16(x));
  } else if (std::is_same<Element, bora::q8_0>::value) {
    std::vector<uint8_t> blocks(static_cast<size_t>(kKvDim / 32 * 34));
    bora::quant::quantize_row_q8_0(row, blocks.data(), kKvDim);
    bora::quant::dequantize_row_q8_0(blocks.data(), out.data(), kKvDim);
  }
  return out;
}

struct Stream {
  std::vector<float> q, k, v;  // every position's rows
  explicit Stream(int64_t n_positions) {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    q.resize(static_cast<size_t>(n_positions * kQDim));
    k.resize(static_cast<size_t>(n_positions * kKvDim));
    v.resize(static_cast<size_t>(n_positions * kKvDim));
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
  }
};

// Runs positions [0, n) through attention in the given chunk sizes (cycled; 1 = decoding), storing
// each chunk's keys afterwards as the transformer does, and returns every position's output.
template <class Mask, class Element>
std::vector<float> run(const Stream& s, int64_t n, int64_t window, int64_t capacity, const std::vector<int64_t>& chunks,
                       int threads) {
  using Attention = bora::GroupedQueryAttention<Mask>;
  bora::RollingKvCache<Element> cache;
  REQUIRE(cache.init(1, kKvHeads, kHeadDim, capacity));
  bora::ThreadPool pool(threads);
  std::vector<float> per_thread(static_cast<size_t>(threads * Attention::scratch_floats_per_thread(kHeads, kKvHeads, kHeadDim)));
  std::vector<float> partials(static_cast<size_t>(Attention::partial_floats_per_chunk(kHeads, kHeadDim, capacity)));
  bora::AttentionScratch scratch;
  scratch.data = per_thread.data();
  scratch.per_thread = Attention::scratch_floats_per_thread(kHeads, kKvHeads, kHeadDim);
  scratch.max_threads = threads;
  scratch.partials = partials.data();
  scratch.partial_floats_per_chunk = Attention::partial_floats_per_chunk(kHeads, kHeadDim, capacity);
  std::vector<float> out(static_cast<size_t>(n * kQDim));
  size_t which = 0;
  for (int64_t first = 0; first < n; ++which) {
    const int64_t size = std::min(chunks[which % chunks.size()], n - first);
    bora::AttentionChunk c;
    c.layer = 0;
    c.first_position = first;
    c.n_tokens = size;
    c.n_heads = kHeads;
    c.n_kv_heads = kKvHeads;
    c.head_dim = kHeadDim;
    c.window = window;
    c.q = s.q.data() + first * kQDim;
    c.k = s.k.data() + first * kKvDim;
    c.v = s.v.data() + first * kKvDim;
    c.out = out.data() + first * kQDim;
    const auto* cache_pointer = &cache;
    Attention::forward(&c, &cache_pointer, 1, scratch, pool);
    for (int64_t t = std::max<int64_t>(0, size - capacity); t < size; ++t) {
      cache.store(0, first + t, s.k.data() + (first + t) * kKvDim, s.v.data() + (first + t) * kKvDim);
    }
    first += size;
  }
  return out;
}

// The float64 rule: position p's head h sees keys max(0, p-W+1)..p (all before p with no window);
// keys of earlier chunks as the cache stored them, those of p's own chunk as computed. Checked from
// position `from` on, for every fifth head (each KV head's groups are covered) to keep it quick.
template <class Element>
double worst_error(const Stream& s, const std::vector<float>& got, int64_t n, int64_t window,
                   const std::vector<int64_t>& chunks, int64_t from = 0) {
  std::vector<std::vector<float>> stored_k(static_cast<size_t>(n)), stored_v(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    stored_k[static_cast<size_t>(p)] = as_stored<Element>(s.k.data() + p * kKvDim);
    stored_v[static_cast<size_t>(p)] = as_stored<Element>(s.v.data() + p * kKvDim);
  }
  double worst = 0;
  size_t which = 0;
  for (int64_t first = 0; first < n; ++which) {
    const int64_t size = std::min(chunks[which % chunks.size()], n - first);
    for (int64_t p = std::max(first, from); p < first + size; ++p) {
      const int64_t lowest = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      for (int64_t h = 0; h < kHeads; h += 5) {
        const int64_t g = h / (kHeads / kKvHeads);
        const float* query = s.q.data() + p * kQDim + h * kHeadDim;
        std::vector<double> w;
        double largest = -1e300;
        for (int64_t j = lowest; j <= p; ++j) {
          const float* key = j >= first ? s.k.data() + j * kKvDim : stored_k[static_cast<size_t>(j)].data();
          double dot = 0;
          for (int64_t i = 0; i < kHeadDim; ++i) dot += static_cast<double>(query[i]) * key[g * kHeadDim + i];
          w.push_back(dot / std::sqrt(static_cast<double>(kHeadDim)));
          largest = std::max(largest, w.back());
        }
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - largest));
        for (int64_t i = 0; i < kHeadDim; ++i) {
          double o = 0;
          for (int64_t j = lowest; j <= p; ++j) {
            const float* value = j >= first ? s.v.data() + j * kKvDim : stored_v[static_cast<size_t>(j)].data();
            o += w[static_cast<size_t>(j - lowest)] / sum * value[g * kHeadDim + i];
          }
          worst = std::max(worst, std::fabs(o - got[static_cast<size_t>(p * kQDim + h * kHeadDim + i)]));
        }
      }
    }
    first += size;
  }
  return worst;
}

}  // namespace

TEST_CASE("sliding-window attention at head size 128 matches float64 across three turns of the window") {
  const int64_t n = 700, window = 256;
  const Stream s(n);
  // A prompt in chunks (one longer than the window), then decoding token by token, then a chunk again.
  const std::vector<int64_t> chunks = {300, 37, 1, 1, 1, 64, 1};
  SUBCASE("f32 cache") {
    const auto out = run<bora::SlidingWindow, bora::f32>(s, n, window, window, chunks, 2);
    CHECK(worst_error<bora::f32>(s, out, n, window, chunks) < 1e-5);
  }
  SUBCASE("f16 cache") {
    const auto out = run<bora::SlidingWindow, bora::f16>(s, n, window, window, chunks, 2);
    CHECK(worst_error<bora::f16>(s, out, n, window, chunks) < 1e-5);
  }
  SUBCASE("q8_0 cache") {
    const auto out = run<bora::SlidingWindow, bora::q8_0>(s, n, window, window, chunks, 2);
    CHECK(worst_error<bora::q8_0>(s, out, n, window, chunks) < 1e-5);
  }
}

TEST_CASE("a decoding token past 512 keys is split into partitions and still matches float64") {
  // No window: the last tokens see over 1,100 keys, three partitions of 512.
  const int64_t n = 1150;
  const Stream s(n);
  const std::vector<int64_t> chunks = {512, 512, 100, 1};
  const auto out = run<bora::CausalAttention, bora::f16>(s, n, 0, n, chunks, 3);
  CHECK(worst_error<bora::f16>(s, out, n, 0, chunks, 1024) < 1e-5);
}

TEST_CASE("attention gives the same bits at 1, 2 and 5 threads") {
  const int64_t n = 600, window = 200;
  const Stream s(n);
  const std::vector<int64_t> chunks = {90, 1, 17, 1, 1};
  const auto one = run<bora::SlidingWindow, bora::f16>(s, n, window, window, chunks, 1);
  for (int threads : {2, 5}) {
    const auto many = run<bora::SlidingWindow, bora::f16>(s, n, window, window, chunks, threads);
    CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
  }
  const auto causal_one = run<bora::CausalAttention, bora::q8_0>(s, n, 0, n, {1}, 1);
  const auto causal_two = run<bora::CausalAttention, bora::q8_0>(s, n, 0, n, {1}, 2);
  CHECK(std::memcmp(causal_one.data(), causal_two.data(), causal_one.size() * sizeof(float)) == 0);
}
