// Why this file exists: kernel tests run their checks once per SIMD target this binary compiled and
// this CPU supports; this is the one loop that switches Highway's dispatch between them.
#ifndef BORA_TESTS_SUPPORT_SIMD_TARGETS_HPP
#define BORA_TESTS_SUPPORT_SIMD_TARGETS_HPP

#include <doctest/doctest.h>
#include <hwy/targets.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bora/ops/ops.hpp"

namespace bora_test {

// Runs `body` once per target, checking that dispatch really switched; the target is named in any failure.
inline void for_each_target(const std::function<void()>& body) {
  std::vector<int64_t> targets;
  for (int64_t left = hwy::SupportedTargets() & bora::ops::simd_compiled_targets(); left != 0; left &= left - 1) {
    targets.push_back(left & -left);
  }
  REQUIRE(!targets.empty());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string target_name = hwy::TargetName(target);
    CAPTURE(target_name);
    REQUIRE(std::string(bora::ops::simd_target_name()) == hwy::TargetName(target));
    body();
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_SIMD_TARGETS_HPP
