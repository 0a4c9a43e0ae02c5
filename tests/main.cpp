// Why this file exists: the single doctest runner for every test file, and the one translation unit
// of the test program that compiles bora's SIMD kernels (BORA_IMPLEMENTATION).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"
