// Why this file exists: a second translation unit including bora without BORA_IMPLEMENTATION, so the
// link fails if an installed header defines something non-inline.
#include <bora/bora.hpp>

const char* simd_target_from_second_unit() { return bora::ops::simd_target_name(); }
