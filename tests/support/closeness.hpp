// Why this file exists: accuracy tests compare two runs' logits the way llama.cpp's perplexity tool
// does (mean KL divergence, top-token agreement); this is that one comparison.
#ifndef BORA_TESTS_SUPPORT_CLOSENESS_HPP
#define BORA_TESTS_SUPPORT_CLOSENESS_HPP

#include <cmath>
#include <cstdint>
#include <vector>

namespace bora_test {

struct Closeness {
  double mean_kl = 0;        // mean over positions of KL(reference || ours)
  double argmax_agree = 0;   // share of positions with the same top token
};

inline Closeness compare(const std::vector<float>& reference, const std::vector<float>& ours, int64_t vocab) {
  Closeness c;
  const int64_t rows = static_cast<int64_t>(reference.size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = reference.data() + r * vocab;
    const float* q = ours.data() + r * vocab;
    double max_p = p[0], max_q = q[0];
    int64_t arg_p = 0, arg_q = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (p[i] > max_p) { max_p = p[i]; arg_p = i; }
      if (q[i] > max_q) { max_q = q[i]; arg_q = i; }
    }
    double sum_p = 0, sum_q = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      sum_p += std::exp(p[i] - max_p);
      sum_q += std::exp(q[i] - max_q);
    }
    const double log_z_p = max_p + std::log(sum_p), log_z_q = max_q + std::log(sum_q);
    double kl = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double log_p = p[i] - log_z_p, log_q = q[i] - log_z_q;
      kl += std::exp(log_p) * (log_p - log_q);
    }
    c.mean_kl += kl / static_cast<double>(rows);
    c.argmax_agree += (arg_p == arg_q ? 1.0 : 0.0) / static_cast<double>(rows);
  }
  return c;
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_CLOSENESS_HPP
