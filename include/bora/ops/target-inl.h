// Why this file exists: what every per-target kernel file needs before its own code: the attributes
// its namespace is compiled with, which x86 instruction families the target may use directly, and
// the vector tags the kernels share. Re-included once per target like the kernels (toggle guard).

#if defined(BORA_OPS_TARGET_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_TARGET_INL_H_
#undef BORA_OPS_TARGET_INL_H_
#else
#define BORA_OPS_TARGET_INL_H_
#endif

#include <hwy/highway.h>

// Raw x86 intrinsics: u8 x s8 products from AVX2 up, and 512-bit VNNI (vpdpbusd) from AVX3_DL up;
// lower numbers are better targets, so newer ones (AVX3_ZEN4, AVX3_SPR, ...) count too.
#undef BORA_OPS_X86_INT8
#undef BORA_OPS_X86_VNNI
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define BORA_OPS_X86_INT8 1
#else
#define BORA_OPS_X86_INT8 0
#endif
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL
#define BORA_OPS_X86_VNNI 1
#else
#define BORA_OPS_X86_VNNI 0
#endif
// Arm SVE in any of Highway's variants: SDOT (four int8 products per 32-bit lane) is part of them all.
#undef BORA_OPS_SVE
#if HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 || HWY_TARGET == HWY_SVE2_128
#define BORA_OPS_SVE 1
#else
#define BORA_OPS_SVE 0
#endif
// Arm NEON with Armv8.2's dot product (SDOT): 1 when the compiler may assume it (-march=armv8.2-a+dotprod,
// Apple cores), 2 when it is detected at run time (GCC on Linux, whose Highway NEON target assumes only
// Armv8.0, as a Cortex-A53 or A72 has), 0 otherwise.
#undef BORA_OPS_NEON_DOTPROD
#if HWY_TARGET == HWY_NEON && HWY_ARCH_ARM_A64 && defined(__ARM_FEATURE_DOTPROD)
#define BORA_OPS_NEON_DOTPROD 1
#elif HWY_TARGET == HWY_NEON && HWY_ARCH_ARM_A64 && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define BORA_OPS_NEON_DOTPROD 2
#else
#define BORA_OPS_NEON_DOTPROD 0
#endif

// Use BORA_OPS_BEFORE_NAMESPACE() / BORA_OPS_AFTER_NAMESPACE() where Highway code would use
// HWY_BEFORE_NAMESPACE() / HWY_AFTER_NAMESPACE().
//
// Highway only selects AVX3_DL on CPUs with VNNI, but Highway 1.0.3 names only "avxvnni" in that
// target's attribute string, so the EVEX form's feature is appended to the target's own string. It
// must be one string: Clang keeps one target attribute per function, so a second push of
// "avx512vnni" alone would be ignored (and vpdpbusd rejected). Naming a feature twice, as newer
// Highway versions' strings would, is harmless. MSVC needs no attributes (HWY_PUSH_ATTRIBUTES is
// empty there).
#undef BORA_OPS_TARGET_ATTRIBUTES
#undef BORA_OPS_POP_TARGET_ATTRIBUTES
#if BORA_OPS_X86_VNNI && defined(HWY_TARGET_STR)
#define BORA_OPS_TARGET_ATTRIBUTES HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR ",avx512vnni")
#define BORA_OPS_POP_TARGET_ATTRIBUTES HWY_POP_ATTRIBUTES
#elif defined(HWY_TARGET_STR)
#define BORA_OPS_TARGET_ATTRIBUTES HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR)
#define BORA_OPS_POP_TARGET_ATTRIBUTES HWY_POP_ATTRIBUTES
#else
#define BORA_OPS_TARGET_ATTRIBUTES
#define BORA_OPS_POP_TARGET_ATTRIBUTES
#endif

// GCC 12's intrinsics leave "don't care" lanes as self-initialized variables, which -O3 reports as
// maybe-uninitialized when the intrinsic headers were first included outside Highway's own
// diagnostic guard (e.g. by simdjson); Highway silences the same warning in its x86 headers. Clang
// has no such warning (and would reject its name under -Werror).
#undef BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF
#if BORA_OPS_X86_INT8 && !HWY_COMPILER_CLANG
#define BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF HWY_DIAGNOSTICS_OFF(disable : 4701, ignored "-Wmaybe-uninitialized")
#else
#define BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF
#endif

#undef BORA_OPS_BEFORE_NAMESPACE
#undef BORA_OPS_AFTER_NAMESPACE
#define BORA_OPS_BEFORE_NAMESPACE()                                                     \
  BORA_OPS_TARGET_ATTRIBUTES HWY_DIAGNOSTICS(push) BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF \
  static_assert(true, "requires a semicolon")
#define BORA_OPS_AFTER_NAMESPACE() \
  HWY_DIAGNOSTICS(pop) BORA_OPS_POP_TARGET_ATTRIBUTES static_assert(true, "requires a semicolon")

// Declarations only, so no attributes (Clang warns about an attribute region without functions).
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Elementwise kernels use full vectors. Block decoders use at most 16 float lanes so that a vector
// never straddles a 16-value sub-block (the finest scale granularity, Q6_K's) on any target.
using FullF32 = hn::ScalableTag<float>;
using BlockF32 = hn::CappedTag<float, 16>;

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_TARGET_INL_H_ toggle
