// Why this file exists: the one translation unit that defines BORA_IMPLEMENTATION includes this, and
// only here are the kernels (kernels-inl.h and the -inl.h files it gathers) compiled for every SIMD
// target (foreach_target.h) and the plain functions declared in ops.hpp defined, each dispatching to
// the best target at run time.
// With BORA_STATIC_DISPATCH only the target of the compiler flags (-march) is built: smaller
// binaries, no run-time detection.
#ifndef BORA_OPS_IMPLEMENTATION_HPP
#define BORA_OPS_IMPLEMENTATION_HPP

// Must precede the first Highway header of the translation unit.
#if defined(BORA_STATIC_DISPATCH) && !defined(HWY_COMPILE_ONLY_STATIC)
#define HWY_COMPILE_ONLY_STATIC 1
#endif
// Also build the AVX-512 target with VNNI (Ice Lake, Zen 4/5), which the int8 fast path uses;
// Highway 1.0.3 leaves it out unless asked.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "bora/io/model_config.hpp"
#include "bora/io/tensor_view.hpp"
#include "bora/ops/ops.hpp"
#include "bora/ops/scratch_sizes.hpp"
#include "bora/quant/row_tiles.hpp"

// The single-header build points this at itself; the multi-header build uses the kernels file.
#ifndef BORA_KERNELS_INCLUDE
#define BORA_KERNELS_INCLUDE "bora/ops/kernels-inl.h"
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE BORA_KERNELS_INCLUDE
#include <hwy/foreach_target.h>  // re-includes HWY_TARGET_INCLUDE once per target
#include <hwy/highway.h>

#include "bora/ops/kernels-inl.h"  // the static (or last) target

#if HWY_ONCE
#include <hwy/aligned_allocator.h>
#include <hwy/targets.h>

namespace bora {
namespace ops {

HWY_EXPORT(TargetNameKernel);
HWY_EXPORT(DotKernel);
HWY_EXPORT(AxpyKernel);
HWY_EXPORT(ScaleKernel);
HWY_EXPORT(RmsNormKernel);
HWY_EXPORT(SoftmaxKernel);
HWY_EXPORT(SiluMulKernel);
HWY_EXPORT(F16ToF32Kernel);
HWY_EXPORT(F32ToF16Kernel);
HWY_EXPORT(AttentionBlockKernel);
HWY_EXPORT(MatvecKernel);
HWY_EXPORT(MatmulKernel);
HWY_EXPORT(RowDotKernel);
HWY_EXPORT(DequantizeRowKernel);
HWY_EXPORT(QuantizeRowQ8Kernel);
HWY_EXPORT(QuantizeResidualQ8Kernel);
HWY_EXPORT(MatvecQ8Kernel);
HWY_EXPORT(MatvecQ8TwoLevelKernel);
HWY_EXPORT(MatmulQ8Kernel);
HWY_EXPORT(MatvecQ8TokensKernel);
HWY_EXPORT(Int8DotPeakKernel);
HWY_EXPORT(PrefersRowTilesKernel);
HWY_EXPORT(MatvecQ8TiledKernel);
HWY_EXPORT(TiledKernelLaysOutTokensKernel);

namespace detail {

// A per-thread buffer of at least `count` T: grown to the largest size asked for and never freed, so
// the token loop does not allocate, and private to each thread so callers can split rows. One buffer
// per Role; null if memory runs out (callers then take a path that needs none).
template <class Role, class T>
T* thread_scratch(size_t count) {
  struct Buffer {
    hwy::AlignedFreeUniquePtr<T[]> data;
    size_t capacity = 0;
  };
  thread_local Buffer buffer;
  if (buffer.capacity < count) {
    buffer.data = hwy::AllocateAligned<T>(count);
    buffer.capacity = buffer.data ? count : 0;
  }
  return buffer.data.get();
}
struct DequantizedRows {};         // matmul_f32: kernels::kMatmulTileRows weight rows as f32
struct DequantizedActivations {};  // the int8 fast path meeting float weights: activations as f32
struct PackedActivations {};       // int8 activations repacked for the kernels (prefill, Q4_0 decode, row tiles)
struct UntiledRows {};             // 16 rows of a row-tiled matrix in the ordinary layout

// Runs compute(tile, tile_row, first, last) for each 16-row tile of the row-tiled w that meets
// [row_begin, row_end): `tile` is an ordinary view of those 16 rows (a per-thread copy), of which rows
// [first, last) are wanted. Without memory for the copy, each wanted row is computed block by block,
// store(t, r, sum of block_dot(block, t, b)) (summed in another order: only when memory runs out), where
// block b holds values [b * values, (b + 1) * values), values = quant::tile_format(w.type).values.
template <class Compute, class BlockDot, class Store>
void for_each_untiled_tile(const TensorView& w, int64_t row_begin, int64_t row_end, int64_t n_tokens,
                           const Compute& compute, const BlockDot& block_dot, const Store& store) {
  const int64_t n = w.row_length();
  TensorView tile = w;
  tile.row_tiles = false;
  tile.n_dims = 2;
  tile.ne[1] = quant::kTileRows;
  tile.ne[2] = tile.ne[3] = 1;
  tile.bytes = quant::kTileRows * w.row_bytes();
  uint8_t* rows = thread_scratch<UntiledRows, uint8_t>(static_cast<size_t>(tile.bytes));
  for (int64_t tile_row = row_begin - row_begin % quant::kTileRows; tile_row < row_end; tile_row += quant::kTileRows) {
    const int64_t first = row_begin > tile_row ? row_begin - tile_row : 0;
    const int64_t last = row_end - tile_row < quant::kTileRows ? row_end - tile_row : quant::kTileRows;
    if (rows != nullptr) {
      quant::untile_rows(w.type, w.data, n, tile_row, quant::kTileRows, rows);
      tile.data = rows;
      compute(tile, tile_row, first, last);
      continue;
    }
    uint8_t block[256];  // the largest tiled block
    const int64_t blocks = n / quant::tile_format(w.type).values;
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = tile_row + first; r < tile_row + last; ++r) {
        float sum = 0.0f;
        for (int64_t b = 0; b < blocks; ++b) {
          quant::untile_block(w.type, w.data, blocks, r, b, block);
          sum += block_dot(block, t, b);
        }
        store(t, r, sum);
      }
    }
  }
}

}  // namespace detail

void matvec_f32(const TensorView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin) return;
  if (w.row_tiles) {
    detail::for_each_untiled_tile(
        w, row_begin, row_end, 1,
        [&](const TensorView& tile, int64_t tile_row, int64_t first, int64_t last) {
          matvec_f32(tile, x, y + tile_row, first, last);
        },
        [&](const uint8_t* block, int64_t, int64_t b) {
          const int64_t values = quant::tile_format(w.type).values;
          return HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, block, x + values * b, values);
        },
        [&](int64_t, int64_t r, float sum) { y[r] = sum; });
    return;
  }
  HWY_DYNAMIC_DISPATCH(MatvecKernel)(w.type, w.data, w.row_bytes(), w.row_length(), x, y, row_begin,
                                     row_end);
}

void matmul_f32(const TensorView& w, const float* x, int64_t n_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  if (w.row_tiles) {
    detail::for_each_untiled_tile(
        w, row_begin, row_end, n_tokens,
        [&](const TensorView& tile, int64_t tile_row, int64_t first, int64_t last) {
          matmul_f32(tile, x, n_tokens, y + tile_row, y_stride, first, last);
        },
        [&](const uint8_t* block, int64_t t, int64_t b) {
          const int64_t values = quant::tile_format(w.type).values;
          return HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, block, x + t * n + values * b, values);
        },
        [&](int64_t t, int64_t r, float sum) { y[t * y_stride + r] = sum; });
    return;
  }
  const uint64_t row_bytes = w.row_bytes();
  float* scratch =
      detail::thread_scratch<detail::DequantizedRows, float>(static_cast<size_t>(kernels::kMatmulTileRows * n));
  if (scratch == nullptr) {
    // Out of memory for the row buffer: fall back to one row at a time (slower, no allocation).
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = row_begin; r < row_end; ++r) {
        y[t * y_stride + r] = HWY_DYNAMIC_DISPATCH(RowDotKernel)(
            w.type, w.data + static_cast<uint64_t>(r) * row_bytes, x + t * n, n);
      }
    }
    return;
  }
  HWY_DYNAMIC_DISPATCH(MatmulKernel)(w.type, w.data, row_bytes, n, x, n_tokens, y, y_stride,
                                     row_begin, row_end, scratch);
}

float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotKernel)(a, b, n); }

void axpy(float alpha, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AxpyKernel)(alpha, x, y, n); }

void scale(float* x, float alpha, int64_t n) { HWY_DYNAMIC_DISPATCH(ScaleKernel)(x, alpha, n); }

void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(RmsNormKernel)(x, weight, eps, n, y);
}

void softmax(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(SoftmaxKernel)(x, n); }

void silu_mul(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMulKernel)(gate, up, n); }

// Scalar on purpose: RoPE touches head_dim values per head once per token, so it is cheap, and the
// angles are computed in double so large positions keep full f32 accuracy in cos/sin.
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t position, float theta, RopePairing pairing) {
  const int64_t half = head_dim / 2;
  if (half <= 0 || n_heads <= 0) return;
  constexpr int64_t kMaxCachedPairs = 512;
  double cos_cache[kMaxCachedPairs], sin_cache[kMaxCachedPairs];
  const int64_t cached = half < kMaxCachedPairs ? half : kMaxCachedPairs;
  auto angle_of = [&](int64_t i) {
    const double inverse_frequency =
        std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    return static_cast<double>(position) * inverse_frequency;
  };
  for (int64_t i = 0; i < cached; ++i) {
    const double angle = angle_of(i);
    cos_cache[i] = std::cos(angle);
    sin_cache[i] = std::sin(angle);
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* head = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      double c, s;
      if (i < cached) {
        c = cos_cache[i];
        s = sin_cache[i];
      } else {
        const double angle = angle_of(i);
        c = std::cos(angle);
        s = std::sin(angle);
      }
      float* first = pairing == RopePairing::kAdjacent ? head + 2 * i : head + i;
      float* second = pairing == RopePairing::kAdjacent ? head + 2 * i + 1 : head + i + half;
      const double a = *first, b = *second;
      *first = static_cast<float>(a * c - b * s);
      *second = static_cast<float>(a * s + b * c);
    }
  }
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) { HWY_DYNAMIC_DISPATCH(F32ToF16Kernel)(x, y, n); }

void f16_to_f32(const uint16_t* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(F16ToF32Kernel)(x, y, n); }

void attention_block(const AttentionRows& rows, const KvRows& keys, const KvRows& values, int64_t n_keys,
                     float* widen_scratch) {
  HWY_DYNAMIC_DISPATCH(AttentionBlockKernel)(rows, keys, values, n_keys, widen_scratch);
}

const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetNameKernel)(); }

int64_t simd_compiled_targets() { return HWY_TARGETS; }

double int8_dot_peak(double seconds) {
  using Clock = std::chrono::steady_clock;
  constexpr int64_t kRounds = 4096;  // a fraction of a millisecond per call on any target
  auto elapsed_since = [](Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); };
  uint32_t checksum = 0, part = 0;
  // The warm-up lets the wide units power up and the clock settle where they keep it.
  const Clock::time_point warm_up = Clock::now();
  do {
    HWY_DYNAMIC_DISPATCH(Int8DotPeakKernel)(kRounds, 1, &part);
    checksum += part;
  } while (elapsed_since(warm_up) < seconds / 4);
  int64_t macs = 0;
  double elapsed = 0;
  const Clock::time_point start = Clock::now();
  do {
    macs += HWY_DYNAMIC_DISPATCH(Int8DotPeakKernel)(kRounds, static_cast<int32_t>(macs & 0xFF), &part);
    checksum += part;
    elapsed = elapsed_since(start);
  } while (elapsed < seconds);
  volatile uint32_t keep = checksum;  // the sums are used, so no call can be dropped
  (void)keep;
  return static_cast<double>(macs) / elapsed;
}

int64_t q8_row_bytes(int64_t n) { return quant::q8_activation_row_bytes(n); }

void quantize_row_q8(const float* x, int64_t n, uint8_t* xq) { HWY_DYNAMIC_DISPATCH(QuantizeRowQ8Kernel)(x, n, xq); }

void quantize_residual_q8(const float* x, const uint8_t* xq_hi, int64_t n, uint8_t* xq_lo) {
  HWY_DYNAMIC_DISPATCH(QuantizeResidualQ8Kernel)(x, xq_hi, n, xq_lo);
}

void matvec_q8_float_weights_unbuffered(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                                        int64_t row_begin, int64_t row_end) {
  constexpr int64_t kChunk = 256;  // a multiple of the activations' 32-value blocks
  float x[kChunk];
  const int64_t n = w.row_length();
  const uint64_t value_bytes = weight_type_info(w.type).block_bytes;  // float types: one value per block
  // The layout keeps all int8 values first and the scales after them, so chunks index the whole row.
  const quant::Q8ActivationRow hi = quant::q8_activation_view(xq_hi, n);
  for (int64_t r = row_begin; r < row_end; ++r) y[r] = 0.0f;
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t count = std::min(kChunk, n - c);
    for (int64_t i = 0; i < count; ++i) x[i] = hi.d[(c + i) / 32] * static_cast<float>(hi.q[c + i]);
    if (xq_lo != nullptr) {
      const quant::Q8ActivationRow lo = quant::q8_activation_view(xq_lo, n);
      for (int64_t i = 0; i < count; ++i) x[i] += lo.d[(c + i) / 32] * static_cast<float>(lo.q[c + i]);
    }
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + static_cast<uint64_t>(r) * w.row_bytes() + static_cast<uint64_t>(c) * value_bytes;
      y[r] += HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, row, x, count);
    }
  }
}

bool prefers_row_tiles(WeightType type) { return HWY_DYNAMIC_DISPATCH(PrefersRowTilesKernel)(type); }

namespace detail {

// Products of a row-tiled matrix with n_tokens int8 tokens (two levels where xq_lo is not null): the
// tile kernel where the target has one (and memory for its scratch), else each tile untiled and handed
// to matvec_q8_tokens.
inline void tiled_q8_products(const TensorView& w, const uint8_t* const* xq_hi, const uint8_t* const* xq_lo,
                              int64_t n_tokens, float* const* y, int64_t row_begin, int64_t row_end) {
  const int64_t n = w.row_length();
  if (prefers_row_tiles(w.type)) {
    const bool lays_out = HWY_DYNAMIC_DISPATCH(TiledKernelLaysOutTokensKernel)();
    const int64_t laid_out = std::min(n_tokens, kernels::kTiledTokens);
    uint8_t* scratch = !lays_out ? nullptr : thread_scratch<PackedActivations, uint8_t>(
        static_cast<size_t>(kernels::tiled_scratch_bytes(n, laid_out, xq_lo != nullptr ? 2 : 1)));
    if (scratch != nullptr || !lays_out) {
      HWY_DYNAMIC_DISPATCH(MatvecQ8TiledKernel)(w.type, w.data, n, xq_hi, xq_lo, n_tokens, y, row_begin, row_end,
                                                scratch);
      return;
    }
  }
  constexpr int64_t kChunk = 16;
  float* shifted[kChunk];
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kChunk) {
    const int64_t count = std::min(kChunk, n_tokens - t0);
    for_each_untiled_tile(
        w, row_begin, row_end, count,
        [&](const TensorView& tile, int64_t tile_row, int64_t first, int64_t last) {
          for (int64_t t = 0; t < count; ++t) shifted[t] = y[t0 + t] + tile_row;
          matvec_q8_tokens(tile, xq_hi + t0, xq_lo == nullptr ? nullptr : xq_lo + t0, count, shifted, first, last);
        },
        [&](const uint8_t* block, int64_t t, int64_t b) {
          float x[256];  // the largest tiled block's values
          const int64_t values = quant::tile_format(w.type).values;
          const quant::Q8ActivationRow hi = quant::q8_activation_view(xq_hi[t0 + t], n);
          for (int64_t i = values * b; i < values * (b + 1); ++i) x[i - values * b] = hi.d[i / 32] * static_cast<float>(hi.q[i]);
          if (xq_lo != nullptr) {
            const quant::Q8ActivationRow lo = quant::q8_activation_view(xq_lo[t0 + t], n);
            for (int64_t i = values * b; i < values * (b + 1); ++i) x[i - values * b] += lo.d[i / 32] * static_cast<float>(lo.q[i]);
          }
          return HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, block, x, values);
        },
        [&](int64_t t, int64_t r, float sum) { y[t0 + t][r] = sum; });
  }
}

}  // namespace detail

void matvec_q8(const TensorView& w, const uint8_t* xq, float* y, int64_t row_begin, int64_t row_end) {
  matmul_q8(w, xq, 1, y, 0, row_begin, row_end);
}

void matvec_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                         int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin) return;
  if (w.row_tiles) return detail::tiled_q8_products(w, &xq_hi, &xq_lo, 1, &y, row_begin, row_end);
  if (is_float_weight_type(w.type)) {  // no integer products to share: one f32 pass over hi + lo
    const int64_t n = w.row_length();
    float* x = detail::thread_scratch<detail::DequantizedActivations, float>(static_cast<size_t>(2 * n));
    if (x == nullptr) return matvec_q8_float_weights_unbuffered(w, xq_hi, xq_lo, y, row_begin, row_end);
    quant::dequantize_activations_q8(xq_hi, n, x);
    quant::dequantize_activations_q8(xq_lo, n, x + n);
    for (int64_t i = 0; i < n; ++i) x[i] += x[n + i];
    matvec_f32(w, x, y, row_begin, row_end);
    return;
  }
  const int64_t n = w.row_length();
  uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
      static_cast<size_t>(kernels::decode_scratch_bytes(n)));
  HWY_DYNAMIC_DISPATCH(MatvecQ8TwoLevelKernel)(w.type, w.data, w.row_bytes(), n, xq_hi, xq_lo, y, row_begin, row_end,
                                               scratch);
}

void matvec_q8_tokens(const TensorView& w, const uint8_t* const* xq_hi, const uint8_t* const* xq_lo, int64_t n_tokens,
                      float* const* y, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  if (w.row_tiles) return detail::tiled_q8_products(w, xq_hi, xq_lo, n_tokens, y, row_begin, row_end);
  if (is_float_weight_type(w.type)) {  // the f32 kernels, one token at a time, as alone
    for (int64_t t = 0; t < n_tokens; ++t) {
      if (xq_lo != nullptr) matvec_q8_two_level(w, xq_hi[t], xq_lo[t], y[t], row_begin, row_end);
      else matvec_q8(w, xq_hi[t], y[t], row_begin, row_end);
    }
    return;
  }
  const int64_t n = w.row_length();
  const int64_t laid_out = n_tokens < 16 ? n_tokens : 16;  // tokens whose activations a kernel lays out at once
  uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
      static_cast<size_t>(laid_out * kernels::decode_scratch_bytes(n)));
  HWY_DYNAMIC_DISPATCH(MatvecQ8TokensKernel)(w.type, w.data, w.row_bytes(), n, xq_hi, xq_lo, n_tokens, y, row_begin,
                                             row_end, scratch);
}

void matmul_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  const uint8_t* hi[kernels::kTiledTokens];
  const uint8_t* lo[kernels::kTiledTokens];
  float* out[kernels::kTiledTokens];
  // Tiles: as many tokens per sweep as matmul_q8 lays out with one level, halved (two levels take twice
  // the bytes). Other layouts: the decoding kernel's chunk of 16.
  const int64_t chunk = w.row_tiles ? kernels::tiled_prompt_tokens(2 * n) : 16;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
    const int64_t count = std::min(chunk, n_tokens - t0);
    for (int64_t t = 0; t < count; ++t) {
      hi[t] = xq_hi + (t0 + t) * q8_row_bytes(n);
      lo[t] = xq_lo + (t0 + t) * q8_row_bytes(n);
      out[t] = y + (t0 + t) * y_stride;
    }
    matvec_q8_tokens(w, hi, lo, count, out, row_begin, row_end);
  }
}

void matmul_q8(const TensorView& w, const uint8_t* xq, int64_t n_tokens, float* y, int64_t y_stride,
               int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  if (w.row_tiles) {  // pointers to tiled_prompt_tokens(n) tokens at a time: one sweep of the tiles each
    const uint8_t* xq_tokens[kernels::kTiledTokens];
    float* y_tokens[kernels::kTiledTokens];
    const int64_t chunk = kernels::tiled_prompt_tokens(n);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
      const int64_t count = std::min(chunk, n_tokens - t0);
      for (int64_t t = 0; t < count; ++t) {
        xq_tokens[t] = xq + (t0 + t) * q8_row_bytes(n);
        y_tokens[t] = y + (t0 + t) * y_stride;
      }
      detail::tiled_q8_products(w, xq_tokens, nullptr, count, y_tokens, row_begin, row_end);
    }
    return;
  }
  if (!is_float_weight_type(w.type)) {
    if (n_tokens == 1) {
      uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
          static_cast<size_t>(kernels::decode_scratch_bytes(n)));
      HWY_DYNAMIC_DISPATCH(MatvecQ8Kernel)(w.type, w.data, w.row_bytes(), n, xq, y, row_begin, row_end, scratch);
    } else {
      uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
          static_cast<size_t>(kernels::prefill_scratch_bytes(n)));
      HWY_DYNAMIC_DISPATCH(MatmulQ8Kernel)(w.type, w.data, w.row_bytes(), n, xq, n_tokens, y, y_stride,
                                           row_begin, row_end, scratch);
    }
    return;
  }
  // Float weights gain nothing from int8 activations: widen them back and use the f32 kernels.
  float* x = detail::thread_scratch<detail::DequantizedActivations, float>(static_cast<size_t>(n));
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (x == nullptr) {
      matvec_q8_float_weights_unbuffered(w, xq + t * q8_row_bytes(n), nullptr, y + t * y_stride, row_begin, row_end);
      continue;
    }
    quant::dequantize_activations_q8(xq + t * q8_row_bytes(n), n, x);
    matvec_f32(w, x, y + t * y_stride, row_begin, row_end);
  }
}

}  // namespace ops
}  // namespace bora

#endif  // HWY_ONCE
#endif  // BORA_OPS_IMPLEMENTATION_HPP
