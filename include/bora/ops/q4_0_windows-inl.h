// Why this file exists: the 512-bit VNNI decode kernel for Q4_0 rows whose length is a multiple of
// 1024 values (all of Mistral's matrices), which reads raw 64-byte windows of blocks instead of block
// pairs; kept apart from legacy_blocks-inl.h, whose block helpers it uses, because it is a kernel of
// its own with its own activation layout. Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>

#include "bora/ops/scratch_sizes.hpp"
#include "bora/quant/q8_activations.hpp"

#if defined(BORA_OPS_Q4_0_WINDOWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_Q4_0_WINDOWS_INL_H_
#undef BORA_OPS_Q4_0_WINDOWS_INL_H_
#else
#define BORA_OPS_Q4_0_WINDOWS_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/activations-inl.h"
#include "bora/ops/legacy_blocks-inl.h"
#include "bora/ops/target-inl.h"
#include "bora/ops/x86-inl.h"

#if BORA_OPS_X86_VNNI
BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// Q4_0 rows of a multiple of 1024 values (Mistral's 4096 and 14336) are read as raw 64-byte windows
// instead of block pairs: with the activations laid out in the blocks' own 18-byte geometry (zero
// opposite each f16 scale, then the 16 values the low nibbles meet; a second copy for the high
// nibbles), one load, one mask and one shift decode 3.6 blocks. Every 4-byte lane of vpdpbusd then
// lies in a single block (a scale's two bytes start at an even offset), so both nibble halves go into
// one sum and one permute of 32 blocks' scales completes it: about half the decode work of the
// pair kernel, which shuffles every pair into natural order.
constexpr int64_t kQ4_0WindowValues = 1024;  // 32 blocks, 576 bytes, nine 64-byte windows

struct Q4_0WindowLayout {
  int16_t source[576] = {};    // value index (within 1024) a byte's low nibble meets; -1 opposite a scale
  int32_t block[9][16] = {};   // the block (0-31) that lane j of window w falls in
  constexpr Q4_0WindowLayout() {
    for (int i = 0; i < 576; ++i) source[i] = static_cast<int16_t>(i % 18 < 2 ? -1 : 32 * (i / 18) + i % 18 - 2);
    for (int w = 0; w < 9; ++w)
      for (int j = 0; j < 16; ++j) block[w][j] = (64 * w + 4 * j) / 18;
  }
};
constexpr Q4_0WindowLayout kQ4_0WindowLayout{};

// The activations of one level in the window layout: n / 32 * 18 bytes for the low nibbles, as many
// for the high ones (value + 16).
HWY_INLINE void LayOutActivationsQ4_0(const int8_t* q, int64_t n, int8_t* low, int8_t* high) {
  for (int64_t period = 0; period < n / kQ4_0WindowValues; ++period) {
    const int8_t* values = q + kQ4_0WindowValues * period;
    int8_t* l = low + 576 * period;
    int8_t* h = high + 576 * period;
    for (int i = 0; i < 576; ++i) {
      const int source = kQ4_0WindowLayout.source[i];
      l[i] = source < 0 ? int8_t{0} : values[source];
      h[i] = source < 0 ? int8_t{0} : values[source + 16];
    }
  }
}

// One token's view of the window kernel: its activation levels, their window layout, and the
// accumulators of the row being computed.
template <int kLevels>
struct Q4_0WindowToken {
  const quant::Q8ActivationRow* x = nullptr;  // kLevels levels
  const int8_t* low[2] = {};
  const int8_t* high[2] = {};
  __m512 acc[3], offset, step_first16, step_last16;
};

// Window w of the period at `first` (already loaded and split into nibbles), whose laid-out
// activations start at byte `offset`, for one token.
template <int kLevels>
HWY_INLINE void X512Q4_0Window(__m512i lo, __m512i hi, int w, int64_t offset, Q4_0WindowToken<kLevels>& token) {
  const int64_t at = offset + 64 * w;
  __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(token.low[0] + at));
  sums = _mm512_dpbusd_epi32(sums, hi, _mm512_loadu_si512(token.high[0] + at));
  if (kLevels == 2) {  // as X512DotLevels: 256 * first level + second, in the second level's units
    sums = _mm512_dpbusd_epi32(_mm512_slli_epi32(sums, 8), lo, _mm512_loadu_si512(token.low[1] + at));
    sums = _mm512_dpbusd_epi32(sums, hi, _mm512_loadu_si512(token.high[1] + at));
  }
  const __m512 step =
      _mm512_permutex2var_ps(token.step_first16, _mm512_loadu_si512(kQ4_0WindowLayout.block[w]), token.step_last16);
  token.acc[w % 3] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), step, token.acc[w % 3]);
}

// One row against T tokens: each window is loaded and split once for all of them, and every token's
// sums run exactly as they would alone (T = 1), so a token's result does not depend on T.
template <int kLevels, int T>
HWY_INLINE void X512RowDotQ4_0Windows(const uint8_t* row, int64_t n, Q4_0WindowToken<kLevels>* tokens, float* out) {
  for (int t = 0; t < T; ++t) {
    tokens[t].acc[0] = tokens[t].acc[1] = tokens[t].acc[2] = _mm512_setzero_ps();
    tokens[t].offset = _mm512_setzero_ps();
  }
  const __m512i nibble = _mm512_set1_epi8(15);
  const int64_t blocks = n / 32;
  for (int64_t b = 0; b < blocks; b += 32) {
    const uint8_t* first = row + b * 18;
    X86PrefetchAhead(first, 576, 256 * 18);
    // The second group's scale windows reach 36 bytes past the period: gathered in the row's last one.
    const __m512 dw_first16 = X512GroupScales<18>(first);
    const __m512 dw_last16 = blocks - b >= 34 ? X512GroupScales<18>(first + 16 * 18)
                                              : X512BlockScales<18>(first + 16 * 18, static_cast<__mmask16>(0xFFFF));
    for (int t = 0; t < T; ++t) {
      Q4_0WindowToken<kLevels>& token = tokens[t];
      const quant::Q8ActivationRow* x = token.x;
      const float* dx = X512LevelScales<kLevels>(x) + b;
      auto d_sum = [&](int64_t at) {
        return kLevels == 2 ? _mm512_add_ps(_mm512_loadu_ps(x[0].d_sum + at), _mm512_loadu_ps(x[1].d_sum + at))
                            : _mm512_loadu_ps(x[0].d_sum + at);
      };
      token.offset = _mm512_fmadd_ps(dw_first16, d_sum(b), token.offset);
      token.offset = _mm512_fmadd_ps(dw_last16, d_sum(b + 16), token.offset);
      token.step_first16 = _mm512_mul_ps(dw_first16, _mm512_loadu_ps(dx));
      token.step_last16 = _mm512_mul_ps(dw_last16, _mm512_loadu_ps(dx + 16));
    }
    const int64_t at = b * 18;
    HWY_UNROLL(9)
    for (int w = 0; w < 9; ++w) {
      const __m512i raw = _mm512_loadu_si512(first + 64 * w);
      const __m512i lo = _mm512_and_si512(raw, nibble);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
      for (int t = 0; t < T; ++t) X512Q4_0Window<kLevels>(lo, hi, w, at, tokens[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    const Q4_0WindowToken<kLevels>& token = tokens[t];
    out[t] = _mm512_reduce_add_ps(_mm512_add_ps(token.acc[0], _mm512_add_ps(token.acc[1], token.acc[2]))) -
             8.0f * _mm512_reduce_add_ps(token.offset);
  }
}

// y[t][r] for Q4_0 rows [row_begin, row_end) and n_tokens tokens (x[t]: that token's kLevels levels)
// with the window kernel when it applies (returns false otherwise). `scratch` holds n_tokens *
// kernels::decode_scratch_bytes(n) bytes, or is null. Two tokens at a time share each row's decoding;
// each token's sums are the same whatever n_tokens.
template <int kLevels>
HWY_INLINE bool MatvecQ4_0Windows(const uint8_t* data, uint64_t row_bytes, int64_t n,
                                  const quant::Q8ActivationRow* const* x, int64_t n_tokens, float* const* y,
                                  int64_t row_begin, int64_t row_end, uint8_t* scratch_bytes) {
  if (n % kQ4_0WindowValues != 0 || scratch_bytes == nullptr) return false;
  // Two tokens at a time: at four, their accumulators no longer fit in registers (measured slower).
  constexpr int kMaxTokens = 2;
  const size_t level_bytes = static_cast<size_t>(n / 32 * 18);
  int8_t* scratch = reinterpret_cast<int8_t*>(scratch_bytes);
  // Each token's activations are laid out once; then tiles of rows small enough to stay in L2 meet
  // every pair of tokens, so the weights come from memory once for all the tokens.
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int level = 0; level < kLevels; ++level) {
      int8_t* l = scratch + static_cast<size_t>(2 * (t * kLevels + level)) * level_bytes;
      LayOutActivationsQ4_0(x[t][level].q, n, l, l + level_bytes);
    }
  }
  const int64_t tile_rows = n_tokens <= kMaxTokens ? row_end - row_begin
                                                   : static_cast<int64_t>((256 * 1024) / row_bytes + 1);
  for (int64_t tile = row_begin; tile < row_end; tile += tile_rows) {
    const int64_t tile_end = row_end - tile < tile_rows ? row_end : tile + tile_rows;
    for (int64_t first_token = 0; first_token < n_tokens; first_token += kMaxTokens) {
      const int count = static_cast<int>(n_tokens - first_token < kMaxTokens ? n_tokens - first_token : kMaxTokens);
      Q4_0WindowToken<kLevels> tokens[kMaxTokens];
      for (int t = 0; t < count; ++t) {
        tokens[t].x = x[first_token + t];
        for (int level = 0; level < kLevels; ++level) {
          const int8_t* l = scratch + static_cast<size_t>(2 * ((first_token + t) * kLevels + level)) * level_bytes;
          tokens[t].low[level] = l;
          tokens[t].high[level] = l + level_bytes;
        }
      }
      float out[kMaxTokens];
      for (int64_t r = tile; r < tile_end; ++r) {
        const uint8_t* row = data + static_cast<uint64_t>(r) * row_bytes;
        if (count == 2) X512RowDotQ4_0Windows<kLevels, 2>(row, n, tokens, out);
        else X512RowDotQ4_0Windows<kLevels, 1>(row, n, tokens, out);
        for (int t = 0; t < count; ++t) y[first_token + t][r] = out[t];
      }
    }
  }
  return true;
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();
#endif  // BORA_OPS_X86_VNNI

#endif  // BORA_OPS_Q4_0_WINDOWS_INL_H_ toggle
