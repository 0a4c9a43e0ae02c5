// Why this file exists: ops::attention_block is the whole of attention's arithmetic; it is checked
// here against a float64 softmax attention over the same stored keys and values (f32, f16, q8_0), on
// every SIMD target, with ranges that start and end anywhere in a block, a head size with a tail,
// and rows computed alone or beside others.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bora/ops/ops.hpp"
#include "bora/quant/f16.hpp"
#include "bora/quant/q8_0.hpp"
#include "../support/simd_targets.hpp"

namespace {

using bora::ops::KvElement;

// Keys or values stored as a cache would: rows of `width` values (several heads), one per position.
struct StoredRows {
  KvElement type;
  int64_t width;
  int64_t row_bytes;
  std::vector<uint8_t> bytes;
  std::vector<float> widened;  // what the stored values are, for the reference

  StoredRows(KvElement t, int64_t n_rows, int64_t w, uint32_t seed) : type(t), width(w) {
    row_bytes = t == KvElement::kF32 ? w * 4 : t == KvElement::kF16 ? w * 2 : w / 32 * 34;
    bytes.resize(static_cast<size_t>(n_rows * row_bytes));
    widened.resize(static_cast<size_t>(n_rows * w));
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> row(static_cast<size_t>(w));
    for (int64_t i = 0; i < n_rows; ++i) {
      for (float& x : row) x = normal(rng);
      uint8_t* to = bytes.data() + i * row_bytes;
      float* wide = widened.data() + i * w;
      if (t == KvElement::kF32) {
        std::memcpy(to, row.data(), static_cast<size_t>(w) * 4);
        std::memcpy(wide, row.data(), static_cast<size_t>(w) * 4);
      } else if (t == KvElement::kF16) {
        for (int64_t j = 0; j < w; ++j) {
          const uint16_t h = bora::quant::f32_to_f16(row[static_cast<size_t>(j)]);
          std::memcpy(to + 2 * j, &h, 2);
          wide[j] = bora::quant::f16_to_f32(h);
        }
      } else {
        bora::quant::quantize_row_q8_0(row.data(), to, w);
        bora::quant::dequantize_row_q8_0(to, wide, w);
      }
    }
  }
  // Head `head`'s rows from `position` on.
  bora::ops::KvRows rows(int64_t position, int64_t head, int64_t head_dim) const {
    const int64_t offset = type == KvElement::kF32 ? head * head_dim * 4
                           : type == KvElement::kF16 ? head * head_dim * 2 : head * head_dim / 32 * 34;
    return bora::ops::KvRows{bytes.data() + position * row_bytes + offset, row_bytes, type};
  }
};

struct Shape {
  int64_t n_tokens, group, head_dim, n_keys;
};

// Attention of each token's rows over keys [lowest[t], end[t]), folded block by block at the given
// boundaries, then divided by the sums: what the model layer does.
std::vector<float> attend_in_blocks(const Shape& s, const std::vector<float>& q, const StoredRows& keys,
                                    const StoredRows& values, int64_t head, const std::vector<int64_t>& lowest,
                                    const std::vector<int64_t>& end, const std::vector<int64_t>& boundaries,
                                    bool widen) {
  const int64_t rows_per_token = s.group * s.head_dim;
  std::vector<float> out(static_cast<size_t>(s.n_tokens * rows_per_token), std::nanf(""));
  std::vector<float> row_max(static_cast<size_t>(s.n_tokens * s.group), -std::numeric_limits<float>::infinity());
  std::vector<float> row_sum(static_cast<size_t>(s.n_tokens * s.group), 0.0f);
  std::vector<float> scratch(static_cast<size_t>(2 * bora::ops::kAttentionBlockKeys * s.head_dim));
  std::vector<int32_t> begin(static_cast<size_t>(s.n_tokens)), stop(static_cast<size_t>(s.n_tokens));
  bora::ops::AttentionRows rows;
  rows.q = q.data();
  rows.q_stride = rows_per_token;
  rows.out = out.data();
  rows.out_stride = rows_per_token;
  rows.row_max = row_max.data();
  rows.row_sum = row_sum.data();
  rows.n_tokens = s.n_tokens;
  rows.group = s.group;
  rows.head_dim = s.head_dim;
  rows.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  rows.key_begin = begin.data();
  rows.key_end = stop.data();
  for (size_t b = 0; b + 1 < boundaries.size(); ++b) {
    const int64_t first = boundaries[b], last = boundaries[b + 1];
    for (int64_t t = 0; t < s.n_tokens; ++t) {
      const int64_t lo = std::max(lowest[static_cast<size_t>(t)], first);
      const int64_t hi = std::min(end[static_cast<size_t>(t)], last);
      begin[static_cast<size_t>(t)] = static_cast<int32_t>(lo - first);
      stop[static_cast<size_t>(t)] = static_cast<int32_t>(hi > lo ? hi - first : lo - first);
    }
    bora::ops::attention_block(rows, keys.rows(first, head, s.head_dim), values.rows(first, head, s.head_dim),
                               last - first, widen ? scratch.data() : nullptr);
  }
  for (int64_t r = 0; r < s.n_tokens * s.group; ++r) {
    const float sum = row_sum[static_cast<size_t>(r)];
    for (int64_t i = 0; i < s.head_dim; ++i) out[static_cast<size_t>(r * s.head_dim + i)] /= sum;
  }
  return out;
}

std::vector<double> reference(const Shape& s, const std::vector<float>& q, const StoredRows& keys,
                              const StoredRows& values, int64_t head, const std::vector<int64_t>& lowest,
                              const std::vector<int64_t>& end) {
  std::vector<double> out(static_cast<size_t>(s.n_tokens * s.group * s.head_dim), 0.0);
  for (int64_t t = 0; t < s.n_tokens; ++t) {
    for (int64_t h = 0; h < s.group; ++h) {
      const float* query = q.data() + (t * s.group + h) * s.head_dim;
      std::vector<double> scores;
      double largest = -1e300;
      for (int64_t j = lowest[static_cast<size_t>(t)]; j < end[static_cast<size_t>(t)]; ++j) {
        const float* key = keys.widened.data() + j * keys.width + head * s.head_dim;
        double dot = 0;
        for (int64_t i = 0; i < s.head_dim; ++i) dot += static_cast<double>(query[i]) * key[i];
        scores.push_back(dot / std::sqrt(static_cast<double>(s.head_dim)));
        largest = std::max(largest, scores.back());
      }
      double sum = 0;
      for (double& x : scores) sum += (x = std::exp(x - largest));
      double* o = out.data() + (t * s.group + h) * s.head_dim;
      for (int64_t j = lowest[static_cast<size_t>(t)]; j < end[static_cast<size_t>(t)]; ++j) {
        const float* value = values.widened.data() + j * values.width + head * s.head_dim;
        const double weight = scores[static_cast<size_t>(j - lowest[static_cast<size_t>(t)])] / sum;
        for (int64_t i = 0; i < s.head_dim; ++i) o[i] += weight * value[i];
      }
    }
  }
  return out;
}

std::vector<float> random_queries(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(s.n_tokens * s.group * s.head_dim));
  for (float& x : q) x = normal(rng);
  return q;
}

// Blocks as the model cuts them: at multiples of kAttentionBlockKeys and at one extra point (a wrap).
std::vector<int64_t> block_boundaries(int64_t first, int64_t last, int64_t extra) {
  std::vector<int64_t> b = {first};
  for (int64_t p = first; p < last;) {
    int64_t next = std::min(last, (p / bora::ops::kAttentionBlockKeys + 1) * bora::ops::kAttentionBlockKeys);
    if (p < extra && extra < next) next = extra;
    b.push_back(p = next);
  }
  return b;
}

}  // namespace

TEST_CASE("attention_block folds blocks into the float64 softmax attention over the stored keys") {
  const KvElement kTypes[] = {KvElement::kF32, KvElement::kF16, KvElement::kQ8_0};
  const Shape kShapes[] = {{5, 4, 128, 300}, {3, 3, 64, 150}, {4, 1, 40, 90}, {1, 4, 128, 700}};
  bora_test::for_each_target([&] {
    for (const Shape& s : kShapes) {
      for (KvElement type : kTypes) {
        if (type == KvElement::kQ8_0 && s.head_dim % 32 != 0) continue;
        CAPTURE(static_cast<int>(type));
        CAPTURE(s.head_dim);
        const int64_t n_heads = 2, head = 1;
        const StoredRows keys(type, s.n_keys, n_heads * s.head_dim, 11), values(type, s.n_keys, n_heads * s.head_dim, 12);
        const std::vector<float> q = random_queries(s, 13);
        // Token t is at position n_keys - n_tokens + t and sees a window of 100 keys (fewer at the start).
        std::vector<int64_t> lowest, end;
        for (int64_t t = 0; t < s.n_tokens; ++t) {
          const int64_t position = s.n_keys - s.n_tokens + t;
          lowest.push_back(std::max<int64_t>(0, position - 99));
          end.push_back(position + 1);
        }
        const std::vector<int64_t> boundaries = block_boundaries(lowest.front(), end.back(), lowest.front() + 37);
        const std::vector<double> want = reference(s, q, keys, values, head, lowest, end);
        for (bool widen : {false, true}) {
          const std::vector<float> got = attend_in_blocks(s, q, keys, values, head, lowest, end, boundaries, widen);
          double worst = 0;
          for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
          CHECK(worst < 2e-5);
        }
      }
    }
  });
}

TEST_CASE("attention_block gives a row the same bits alone, beside other tokens, widened or not") {
  bora_test::for_each_target([&] {
    for (KvElement type : {KvElement::kF32, KvElement::kF16, KvElement::kQ8_0}) {
      const Shape crowd{6, 4, 128, 200};
      const StoredRows keys(type, crowd.n_keys, 2 * crowd.head_dim, 21), values(type, crowd.n_keys, 2 * crowd.head_dim, 22);
      const std::vector<float> q = random_queries(crowd, 23);
      std::vector<int64_t> lowest, end;
      for (int64_t t = 0; t < crowd.n_tokens; ++t) {
        lowest.push_back(30 + 5 * t);
        end.push_back(crowd.n_keys - crowd.n_tokens + t + 1);
      }
      const std::vector<int64_t> boundaries = block_boundaries(lowest.front(), end.back(), 120);
      const std::vector<float> together = attend_in_blocks(crowd, q, keys, values, 0, lowest, end, boundaries, true);
      const int64_t per_token = crowd.group * crowd.head_dim;
      for (int64_t t = 0; t < crowd.n_tokens; ++t) {
        const Shape alone{1, 4, 128, 200};
        const std::vector<float> own_q(q.begin() + t * per_token, q.begin() + (t + 1) * per_token);
        const std::vector<float> single = attend_in_blocks(alone, own_q, keys, values, 0, {lowest[static_cast<size_t>(t)]},
                                                           {end[static_cast<size_t>(t)]}, boundaries, false);
        CHECK(std::memcmp(single.data(), together.data() + t * per_token, static_cast<size_t>(per_token) * 4) == 0);
      }
    }
  });
}

TEST_CASE("attention_block gives a key with a NaN score no weight, and leaves a row with no keys untouched") {
  bora_test::for_each_target([&] {
    const Shape s{2, 4, 64, 64};
    StoredRows keys(KvElement::kF32, s.n_keys, s.head_dim, 31);
    const StoredRows values(KvElement::kF32, s.n_keys, s.head_dim, 32);
    const std::vector<float> q = random_queries(s, 33);
    // Key 10 is NaN: the rows must equal attention over the other keys.
    float* poisoned = reinterpret_cast<float*>(keys.bytes.data() + 10 * keys.row_bytes);
    poisoned[3] = std::nanf("");
    const std::vector<float> got = attend_in_blocks({1, 4, 64, 64}, q, keys, values, 0, {0}, {64}, {0, 64}, false);
    std::vector<double> want(static_cast<size_t>(4 * s.head_dim), 0.0);
    {
      // Reference over keys 0..9 and 11..63.
      const StoredRows& clean = keys;
      for (int64_t h = 0; h < 4; ++h) {
        std::vector<double> scores;
        double largest = -1e300;
        for (int64_t j = 0; j < 64; ++j) {
          if (j == 10) continue;
          double dot = 0;
          for (int64_t i = 0; i < s.head_dim; ++i) {
            dot += static_cast<double>(q[static_cast<size_t>(h * s.head_dim + i)]) * clean.widened[static_cast<size_t>(j * s.head_dim + i)];
          }
          scores.push_back(dot / 8.0);
          largest = std::max(largest, scores.back());
        }
        double sum = 0;
        for (double& x : scores) sum += (x = std::exp(x - largest));
        size_t k = 0;
        for (int64_t j = 0; j < 64; ++j) {
          if (j == 10) continue;
          for (int64_t i = 0; i < s.head_dim; ++i) {
            want[static_cast<size_t>(h * s.head_dim + i)] += scores[k] / sum * values.widened[static_cast<size_t>(j * s.head_dim + i)];
          }
          ++k;
        }
      }
    }
    for (size_t i = 0; i < want.size(); ++i) CHECK(std::fabs(got[i] - want[i]) < 2e-5);

    // A token whose range is empty in a block keeps its state exactly.
    float row_max[4], row_sum[4];
    float out[4 * 64];
    for (int i = 0; i < 4; ++i) {
      row_max[i] = 1.5f;
      row_sum[i] = 2.5f;
    }
    for (float& x : out) x = 7.0f;
    const int32_t begin[1] = {20}, stop[1] = {20};
    bora::ops::AttentionRows rows;
    rows.q = q.data();
    rows.q_stride = 4 * 64;
    rows.out = out;
    rows.out_stride = 4 * 64;
    rows.row_max = row_max;
    rows.row_sum = row_sum;
    rows.n_tokens = 1;
    rows.group = 4;
    rows.head_dim = 64;
    rows.scale = 0.125f;
    rows.key_begin = begin;
    rows.key_end = stop;
    bora::ops::attention_block(rows, values.rows(0, 0, 64), values.rows(0, 0, 64), 64, nullptr);
    for (int i = 0; i < 4; ++i) {
      CHECK(row_max[i] == 1.5f);
      CHECK(row_sum[i] == 2.5f);
    }
    for (float x : out) CHECK(x == 7.0f);
  });
}

TEST_CASE("attention_block scores a key the same bits whether it meets the rows with three other keys, one or alone") {
  // Keys 5 and 6 repeat keys 1 and 2; key k's value is the unit vector of dimension k, so a row's
  // output in dimension k is key k's softmax weight. Keys 0-3 are scored four at a time where the
  // target sums several scores' lanes together, 4-5 as a pair, 6 alone: the copies must weigh the same.
  bora_test::for_each_target([&] {
    for (KvElement type : {KvElement::kF32, KvElement::kF16}) {
      for (int64_t group : {4, 2, 1}) {
        for (int64_t head_dim : {128, 64}) {
          CAPTURE(static_cast<int>(type));
          CAPTURE(group);
          CAPTURE(head_dim);
          const Shape s{1, group, head_dim, 7};
          StoredRows keys(type, s.n_keys, head_dim, 41), values(type, s.n_keys, head_dim, 42);
          for (int64_t copy : {5, 6}) {
            std::memcpy(keys.bytes.data() + copy * keys.row_bytes, keys.bytes.data() + (copy - 4) * keys.row_bytes,
                        static_cast<size_t>(keys.row_bytes));
          }
          for (int64_t k = 0; k < s.n_keys; ++k) {
            uint8_t* value = values.bytes.data() + k * values.row_bytes;
            for (int64_t i = 0; i < head_dim; ++i) {
              const float one_hot = i == k ? 1.0f : 0.0f;
              if (type == KvElement::kF32) {
                std::memcpy(value + 4 * i, &one_hot, 4);
              } else {
                const uint16_t half = bora::quant::f32_to_f16(one_hot);
                std::memcpy(value + 2 * i, &half, 2);
              }
            }
          }
          const std::vector<float> q = random_queries(s, 43);
          const std::vector<float> out = attend_in_blocks(s, q, keys, values, 0, {0}, {7}, {0, 7}, false);
          for (int64_t r = 0; r < group; ++r) {
            const float* row = out.data() + r * head_dim;
            CHECK(row[1] > 0.0f);
            CHECK(std::memcmp(&row[1], &row[5], 4) == 0);
            CHECK(std::memcmp(&row[2], &row[6], 4) == 0);
          }
        }
      }
    }
  });
}
