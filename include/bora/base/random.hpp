// Why this file exists: sampling needs a seeded generator that gives the same sequence on every
// platform and standard library (std::mt19937's distributions do not), and so do the tools that
// write random test weights; this is the one generator they share.
#ifndef BORA_BASE_RANDOM_HPP
#define BORA_BASE_RANDOM_HPP

#include <cstdint>

namespace bora {

// xoshiro256** seeded through splitmix64: small, fast, and the same sequence everywhere.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    for (uint64_t& word : state_) {
      seed += 0x9E3779B97F4A7C15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      word = z ^ (z >> 31);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double next_double() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace bora

#endif  // BORA_BASE_RANDOM_HPP
