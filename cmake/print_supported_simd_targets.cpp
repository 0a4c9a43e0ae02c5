// Why this file exists: CMake's try_run asks Highway which SIMD targets the build machine can run
// (see boraRunnableSimdTargets.cmake); it prints the bit set in decimal.
#include <hwy/targets.h>

#include <cstdio>

int main() {
  std::printf("%lld\n", static_cast<long long>(hwy::SupportedTargets()));
  return 0;
}
