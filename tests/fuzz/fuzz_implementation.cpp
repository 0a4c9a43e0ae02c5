// Why this file exists: the one translation unit of the fuzz programs that compiles bora's kernels
// (BORA_IMPLEMENTATION). The fuzz build sets BORA_STATIC_DISPATCH, so only the baseline SIMD target is
// compiled: the fuzzers aim at parsers, not kernels, and every fuzz program links this one object.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"
