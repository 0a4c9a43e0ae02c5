// Why this file exists: turning logits into the next token is where "same seed, same text" is won or
// lost; this sampler uses its own PRNG and a total order on candidates, so a seed gives the same
// tokens on every compiler, standard library and thread count, and it allocates only on first use.
//
// Order of operations (llama.cpp's default chain): repetition penalty -> greedy if temperature <= 0
// -> top-k -> top-p -> min-p (both on the softmax of the untempered logits) -> temperature -> draw.
#ifndef BORA_TEXT_SAMPLER_HPP
#define BORA_TEXT_SAMPLER_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "bora/base/random.hpp"
#include "bora/text/grammar_constraint.hpp"

namespace bora {

struct SampleParams {
  float temperature = 0.8f;   // <= 0: greedy (argmax)
  int top_k = 40;             // <= 0: no limit
  float top_p = 0.95f;        // >= 1: off
  float min_p = 0.05f;        // <= 0: off; keeps tokens with p >= min_p * p(best)
  float repeat_penalty = 1.0f;  // 1: off; > 1 discourages the last repeat_last_n tokens
  int repeat_last_n = 64;     // how many recent tokens the penalty looks at (< 0: all given)
  uint64_t seed = 0xB0BA;
  int max_tokens = 256;       // for generation loops: how many tokens to produce at most (< 0: no limit)
  // Structured output: only tokens the grammar allows are sampled, and EOS once the value is complete
  // (see text/grammar_constraint.hpp). Null: unconstrained.
  std::shared_ptr<const GrammarConstraint> constraint;
};

class Sampler {
 public:
  explicit Sampler(const SampleParams& params = SampleParams()) : params_(params), rng_(params.seed) {
    if (params.repeat_last_n > 0) recent_.reserve(static_cast<size_t>(params.repeat_last_n));
    if (params.constraint) matcher_.reset(new GrammarMatcher(params.constraint));
  }

  const SampleParams& params() const { return params_; }
  void reseed(uint64_t seed) { rng_.reseed(seed); }

  // Picks the next token. `logits` (n_vocab values) is modified in place by the repetition penalty;
  // `recent_tokens` is the history, oldest first (ids outside the vocabulary are ignored).
  // Returns -1 only when n_vocab <= 0. With a constraint, forbidden logits become -infinity and the
  // grammar moves past the token returned.
  int32_t sample(float* logits, int64_t n_vocab, const std::vector<int32_t>& recent_tokens) {
    if (logits == nullptr || n_vocab <= 0) return -1;
    if (!matcher_) return sample_unconstrained(logits, n_vocab, recent_tokens);
    matcher_->mask_logits(logits, n_vocab);
    const int32_t id = sample_unconstrained(logits, n_vocab, recent_tokens);
    if (matcher_->accept(id)) return id;
    // Every allowed logit was -infinity or NaN: end the output rather than break the grammar.
    const int32_t eos = matcher_->constraint().eos_id();
    matcher_->accept(eos);
    return eos;
  }

  // The grammar's cursor (null without a constraint): is_complete() says whether the output so far is a
  // whole value.
  const GrammarMatcher* matcher() const { return matcher_.get(); }

 private:
  int32_t sample_unconstrained(float* logits, int64_t n_vocab, const std::vector<int32_t>& recent_tokens) {
    apply_repeat_penalty(logits, n_vocab, recent_tokens);
    if (!(params_.temperature > 0.0f)) return argmax(logits, n_vocab);

    // Candidates in a total order (logit descending, id ascending), so ties never depend on the
    // sorting algorithm of the standard library at hand.
    size_t count = static_cast<size_t>(n_vocab);
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < count) {
      candidates_.resize(count);
      for (int64_t i = 0; i < n_vocab; ++i) {
        candidates_[static_cast<size_t>(i)] = Candidate{candidate_logit(logits[i]), static_cast<int32_t>(i), 0.0};
      }
      count = static_cast<size_t>(params_.top_k);
      auto better = [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
      };
      std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(count), candidates_.end(),
                        better);
    } else {
      count = order_all_candidates(logits, n_vocab);
    }
    if (candidates_[0].logit == -std::numeric_limits<float>::infinity()) return candidates_[0].id;
    // Forbidden candidates (-infinity, e.g. masked by a grammar) never get the rounding remainder below.
    while (count > 1 && candidates_[count - 1].logit == -std::numeric_limits<float>::infinity()) --count;

    // Probabilities of the untempered logits over the candidates left (for top-p and min-p only: the
    // draw below computes its own).
    if (params_.top_p < 1.0f || params_.min_p > 0.0f) softmax(count, 1.0f);
    if (params_.top_p < 1.0f) {
      double cumulative = 0.0;
      size_t keep = count;
      for (size_t i = 0; i < count; ++i) {
        cumulative += candidates_[i].probability;
        if (cumulative >= static_cast<double>(params_.top_p)) {
          keep = i + 1;
          break;
        }
      }
      count = std::max<size_t>(keep, 1);
    }
    if (params_.min_p > 0.0f) {
      const double threshold = static_cast<double>(params_.min_p) * candidates_[0].probability;
      size_t keep = 1;
      while (keep < count && candidates_[keep].probability >= threshold) ++keep;
      count = keep;
    }

    softmax(count, params_.temperature);
    const double target = rng_.next_double();
    double cumulative = 0.0;
    for (size_t i = 0; i < count; ++i) {
      cumulative += candidates_[i].probability;
      if (target < cumulative) return candidates_[i].id;
    }
    return candidates_[count - 1].id;  // rounding left the total a hair under 1
  }

  struct Candidate {
    float logit;
    int32_t id;
    double probability;
  };

  // NaN never wins; -0 and +0 are the same logit (the order must not tell them apart).
  static float candidate_logit(float logit) {
    return std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit + 0.0f;
  }

  // Every candidate in the total order, without a comparison sort: with no top-k limit (OpenAI's default)
  // the whole vocabulary is ordered for every token, and std::sort spent milliseconds on 32,768 of them.
  // Each candidate becomes one 64-bit number, a key that grows as the logit falls (high half) and its id
  // (low half); a stable radix sort on the key of numbers listed by id leaves equal logits by id, which is
  // exactly `logit descending, id ascending`, the order a comparison sort with that rule gives.
  // Candidates at -infinity (forbidden by a grammar: most of the vocabulary) are never drawn and weigh
  // nothing, so they are left out; when all are, the lowest id stands alone, as a full order would give.
  // Returns how many candidates there are.
  size_t order_all_candidates(const float* logits, int64_t n_vocab) {
    packed_.clear();
    for (int64_t i = 0; i < n_vocab; ++i) {
      const float logit = candidate_logit(logits[i]);
      if (logit == -std::numeric_limits<float>::infinity()) continue;
      uint32_t bits = 0;
      std::memcpy(&bits, &logit, sizeof bits);
      // Ascending floats as ascending unsigned numbers (negatives reversed), then inverted: best first.
      const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
      packed_.push_back((static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(i));
    }
    const size_t n = packed_.size();
    if (n == 0) {
      candidates_.assign(1, Candidate{-std::numeric_limits<float>::infinity(), 0, 0.0});
      return 1;
    }
    packed_scratch_.resize(n);
    // Three stable passes of 11, 11 and 10 bits over the key, least significant first.
    constexpr int kDigitBits[3] = {11, 11, 10};
    int shift = 32;
    for (const int digit_bits : kDigitBits) {
      const uint64_t mask = (uint64_t{1} << digit_bits) - 1;
      uint32_t starts[2048] = {};
      for (const uint64_t value : packed_) ++starts[(value >> shift) & mask];
      if (starts[(packed_[0] >> shift) & mask] != n) {  // a digit every key shares moves nothing
        uint32_t next = 0;
        for (uint64_t digit = 0; digit <= mask; ++digit) {
          const uint32_t bucket = starts[digit];
          starts[digit] = next;
          next += bucket;
        }
        for (const uint64_t value : packed_) packed_scratch_[starts[(value >> shift) & mask]++] = value;
        packed_.swap(packed_scratch_);
      }
      shift += digit_bits;
    }
    candidates_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = static_cast<int32_t>(packed_[i] & 0xFFFFFFFFu);
      candidates_[i] = Candidate{candidate_logit(logits[id]), id, 0.0};
    }
    return n;
  }

  static int32_t argmax(const float* logits, int64_t n_vocab) {
    int64_t best = 0;
    for (int64_t i = 1; i < n_vocab; ++i) {
      if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
    }
    return static_cast<int32_t>(best);
  }

  // llama.cpp's convention: each distinct recent token once, positive logits divided by the
  // penalty, negative ones multiplied (both make the token less likely).
  void apply_repeat_penalty(float* logits, int64_t n_vocab, const std::vector<int32_t>& recent_tokens) {
    if (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0 || recent_tokens.empty()) return;
    size_t window = recent_tokens.size();
    if (params_.repeat_last_n > 0) window = std::min(window, static_cast<size_t>(params_.repeat_last_n));
    recent_.assign(recent_tokens.end() - static_cast<std::ptrdiff_t>(window), recent_tokens.end());
    std::sort(recent_.begin(), recent_.end());
    recent_.erase(std::unique(recent_.begin(), recent_.end()), recent_.end());
    for (const int32_t id : recent_) {
      if (id < 0 || id >= n_vocab) continue;
      float& logit = logits[id];
      logit = logit > 0.0f ? logit / params_.repeat_penalty : logit * params_.repeat_penalty;
    }
  }

  // Probabilities of the first `count` candidates (sorted, best first) at a temperature.
  void softmax(size_t count, float temperature) {
    const double max_logit = static_cast<double>(candidates_[0].logit);
    double total = 0.0;
    for (size_t i = 0; i < count; ++i) {
      const double scaled = (static_cast<double>(candidates_[i].logit) - max_logit) / static_cast<double>(temperature);
      const double weight = std::exp(scaled);
      candidates_[i].probability = weight;
      total += weight;
    }
    for (size_t i = 0; i < count; ++i) candidates_[i].probability /= total;
  }

  SampleParams params_;
  Xoshiro256 rng_;
  std::vector<Candidate> candidates_;  // grown once to the vocabulary size, then reused
  std::vector<uint64_t> packed_, packed_scratch_;  // order_all_candidates' keys, reused too
  std::vector<int32_t> recent_;
  std::unique_ptr<GrammarMatcher> matcher_;
};

}  // namespace bora

#endif  // BORA_TEXT_SAMPLER_HPP
