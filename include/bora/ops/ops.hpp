// Why this file exists: the SIMD boundary. Everything above it (policies, the transformer) calls these
// plain functions; their bodies are Highway kernels compiled for every target in the one translation
// unit that defines BORA_IMPLEMENTATION (see implementation.hpp) and chosen at run time.
#ifndef BORA_OPS_OPS_HPP
#define BORA_OPS_OPS_HPP

#include <cstdint>

#include "bora/io/model_config.hpp"
#include "bora/io/tensor_view.hpp"

namespace bora {
namespace ops {

// ---- weight x activation products -------------------------------------------------------------
// `w` is a matrix of w.rows() rows of w.row_length() values in any WeightType. Rows
// [row_begin, row_end) are computed, so callers split work across threads by rows.

// Exact path (f32 activations; weights dequantized on the fly): y[r] = dot(w.row(r), x).
void matvec_f32(const TensorView& w, const float* x, float* y, int64_t row_begin, int64_t row_end);

// Exact path, several tokens: y[t * y_stride + r] = dot(w.row(r), x + t * w.row_length()).
void matmul_f32(const TensorView& w, const float* x, int64_t n_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end);

// ---- small vector kernels ----------------------------------------------------------------------
float dot(const float* a, const float* b, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);  // y += alpha * x
void scale(float* x, float alpha, int64_t n);                  // x *= alpha
// y = x / sqrt(mean(x^2) + eps) * weight  (y may equal x)
void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* y);
// In-place softmax over n values.
void softmax(float* x, int64_t n);
// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);
// Rotates n_heads consecutive heads of head_dim values at absolute position `position`.
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t position, float theta, RopePairing pairing);
void f32_to_f16(const float* x, uint16_t* y, int64_t n);
void f16_to_f32(const uint16_t* x, float* y, int64_t n);

// ---- attention ----------------------------------------------------------------------------------
// How a KV cache stores a row of head_dim values (kQ8_0: ggml's blocks of 32 int8 sharing an f16
// scale; head_dim a multiple of 32).
enum class KvElement { kF32, kF16, kQ8_0 };
// The keys (or values) of consecutive positions: the i-th row at data + i * stride bytes.
struct KvRows {
  const void* data = nullptr;
  int64_t stride = 0;
  KvElement type = KvElement::kF32;
};
// Most keys one attention_block call takes.
constexpr int64_t kAttentionBlockKeys = 64;
// The query rows of n_tokens tokens that share one KV head (group rows of head_dim per token), and
// each row's running state: its largest score so far (start at -inf), the sum of its weights (start
// at 0) and its output, not yet divided by that sum (not read while the row is at -inf).
struct AttentionRows {
  const float* q = nullptr;  // token t's row h at q + t * q_stride + h * head_dim
  int64_t q_stride = 0;
  float* out = nullptr;  // token t's row h at out + t * out_stride + h * head_dim
  int64_t out_stride = 0;
  float* row_max = nullptr;  // [n_tokens * group]
  float* row_sum = nullptr;  // [n_tokens * group]
  int64_t n_tokens = 0, group = 0, head_dim = 0;
  float scale = 1.0f;  // scores are q.k * scale
  const int32_t* key_begin = nullptr;  // token t sees keys [key_begin[t], key_end[t]) of the block
  const int32_t* key_end = nullptr;
};
// Folds one block of at most kAttentionBlockKeys keys and their values (stored alike) into every
// row's state with an online softmax, the flash-attention way. A row's result depends only on its
// own query, keys and the block boundaries, never on the other rows. widen_scratch, 2 *
// kAttentionBlockKeys * head_dim floats, lets several tokens widen the block once (may be null).
// A NaN score weighs 0, as a masked key does.
void attention_block(const AttentionRows& rows, const KvRows& keys, const KvRows& values, int64_t n_keys,
                     float* widen_scratch);

// Name of the SIMD target chosen at run time (for logs and benchmarks).
const char* simd_target_name();

// ---- additions by the kernels helper -------------------------------------------------------------

// Bit set of the Highway targets (HWY_AVX2 | HWY_SSE4 | ...) compiled into the implementation
// translation unit (one bit with BORA_STATIC_DISPATCH). Tests intersect it with the CPU's targets
// and force each in turn with hwy::SetSupportedTargetsForTest.
int64_t simd_compiled_targets();

// Multiply-accumulates per second of int8 x int8 into int32 that the calling thread reaches for
// `seconds` (after a warm-up of a quarter of that), with the instruction the int8 weight kernels
// use on this target, from registers only: the ceiling of prompt processing and batched decoding,
// as memory bandwidth is that of decoding one stream. Run it on several threads at once for theirs.
double int8_dot_peak(double seconds);

// ---- fast path: int8 activations (approximate) --------------------------------------------------
// Activations are quantized once per token into blocks of 32 int8 sharing one f32 scale (layout in
// quant/q8_activations.hpp) and reused by every matrix that reads them; weights of type Q8_0, Q4_0,
// Q4_K, Q5_K, Q6_K then use integer dot products. Error: each activation moves by at most half its
// block's step (max|x| / 254), like llama.cpp's Q8_0 / Q8_K activations or better. Float weights
// (F32, F16, BF16) are accepted too and multiply the dequantized activations in f32.
// n must be a multiple of 32; buffers of q8_row_bytes(n) bytes, 4-byte aligned.
int64_t q8_row_bytes(int64_t n);
void quantize_row_q8(const float* x, int64_t n, uint8_t* xq);
// The second level of x, quantized at 1/256 of xq_hi = quantize_row_q8(x)'s scales: what xq_hi
// rounded away (quant::quantize_activation_residual_q8 is the reference, up to one step per value).
void quantize_residual_q8(const float* x, const uint8_t* xq_hi, int64_t n, uint8_t* xq_lo);
// y[r] ~= dot(w.row(r), x) for r in [row_begin, row_end), xq = quantize_row_q8(x).
void matvec_q8(const TensorView& w, const uint8_t* xq, float* y, int64_t row_begin, int64_t row_end);
// y[r] ~= dot(w.row(r), x) where x was quantized in two levels, xq_hi = quantize_row_q8(x) and xq_lo =
// quantize_residual_q8(x, xq_hi): near-exact, and each weight row is read from memory once.
void matvec_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                         int64_t row_begin, int64_t row_end);
// Float weights (F32, F16, BF16) times int8 activations in one or two levels (xq_lo may be null) with
// no scratch memory: the activations are widened a stack-sized chunk at a time. matvec_q8,
// matvec_q8_two_level and matmul_q8 fall back to it when a thread's scratch buffer cannot be
// allocated, so running out of memory never leaves an output unwritten.
void matvec_q8_float_weights_unbuffered(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                                        int64_t row_begin, int64_t row_end);
// Several tokens decoding at once: token t's products, y[t][r], are bit-identical to what matvec_q8
// (xq_lo null) or matvec_q8_two_level gives for it alone, whatever the other tokens, so batching
// decoding sequences changes no result; where the target allows, each weight row is decoded once
// for several tokens.
void matvec_q8_tokens(const TensorView& w, const uint8_t* const* xq_hi, const uint8_t* const* xq_lo, int64_t n_tokens,
                      float* const* y, int64_t row_begin, int64_t row_end);
// Whether this CPU's kernels read matrices of `type` fastest in row tiles (quant/row_tiles.hpp; Q4_0, Q8_0,
// Q4_K and Q6_K with 512-bit VNNI or AVX2): the loader then regroups them
// (TensorView::row_tiles). Every function here reads either layout.
bool prefers_row_tiles(WeightType type);
// Token t's quantized row starts at xq + t * q8_row_bytes(w.row_length()); y as in matmul_f32.
void matmul_q8(const TensorView& w, const uint8_t* xq, int64_t n_tokens, float* y, int64_t y_stride,
               int64_t row_begin, int64_t row_end);
// The same with two-level activations (xq_lo[t] = quantize_residual_q8 of token t, at the same offsets):
// token t's products are bit-identical to matvec_q8_two_level's for it alone. Row-tiled matrices take
// both levels in one sweep of the tiles (their integers added per block) for a chunk of tokens at a time.
void matmul_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t row_begin, int64_t row_end);

}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_OPS_HPP
