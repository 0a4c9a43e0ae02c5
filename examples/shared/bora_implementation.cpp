// Why this file exists: a program with several .cpp files defines BORA_IMPLEMENTATION in exactly one of
// them, so the SIMD kernels for every target are compiled once. The example programs are built together,
// so they share this one unit, as the files of one program would, instead of each compiling the kernels.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"
