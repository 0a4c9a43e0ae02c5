// Why this file exists: the one file implementation.hpp hands to Highway's foreach_target.h, which
// re-includes it once per CPU target (hence toggle guards, not include guards, here and in every
// -inl.h it includes). It gathers the kernel files:
//   target-inl.h         attributes, x86 capability macros, shared tags
//   x86-inl.h            raw x86 helpers several families share
//   vector-inl.h         small f32 vector kernels, f16 conversions
//   attention-inl.h      query rows against cached keys and values, online softmax
//   activations-inl.h    int8 activation quantization and the integer products built on it
//   row_tiles-inl.h      what the kernels over row tiles share (512-bit VNNI)
//   float_weights-inl.h  F32, F16, BF16 rows
//   legacy_blocks-inl.h  Q8_0 and Q4_0
//   k_quants-inl.h       Q4_K and Q5_K
//   q6_k-inl.h           Q6_K
//   matmul-inl.h         per-type dispatch, matrix x vector and the batched (prompt) tiling
//   peak-inl.h           the core's int8 multiply-accumulate rate (for benchmarks)
// Nothing here is called directly: ops.hpp's functions dispatch to the best target the CPU supports.

#if defined(BORA_OPS_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_KERNELS_INL_H_
#undef BORA_OPS_KERNELS_INL_H_
#else
#define BORA_OPS_KERNELS_INL_H_
#endif

#include "bora/ops/target-inl.h"
#include "bora/ops/x86-inl.h"
#include "bora/ops/vector-inl.h"
#include "bora/ops/attention-inl.h"
#include "bora/ops/activations-inl.h"
#include "bora/ops/row_tiles-inl.h"
#include "bora/ops/float_weights-inl.h"
#include "bora/ops/legacy_blocks-inl.h"
#include "bora/ops/k_quants-inl.h"
#include "bora/ops/q6_k-inl.h"
#include "bora/ops/matmul-inl.h"
#include "bora/ops/peak-inl.h"

#endif  // BORA_OPS_KERNELS_INL_H_ toggle
