// Why this file exists: the per-context buffers rely on PageBuffer starting every allocation on its own
// page (decode speed varied by 30% with malloc's placement before) and on it reporting an impossible
// size as a failure instead of throwing or aborting; this checks both promises.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <utility>

#include "bora/base/page_aligned.hpp"

namespace {

bool on_page_boundary(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 4096 == 0; }

}  // namespace

TEST_CASE("PageBuffer starts every buffer on a page boundary, zero-filled, small or large") {
  for (uint64_t count : {uint64_t{1}, uint64_t{3}, uint64_t{1000}, uint64_t{1} << 16, uint64_t{3} << 20}) {
    bora::PageBuffer<float> floats;
    REQUIRE(floats.reset(count));
    CHECK(on_page_boundary(floats.data()));
    CHECK(floats.size() == count);
    CHECK(floats[count - 1] == 0.0f);
    floats[count - 1] = 1.5f;
    bora::PageBuffer<uint8_t> bytes;
    REQUIRE(bytes.reset(count));
    CHECK(on_page_boundary(bytes.data()));
    bora::PageBuffer<float> moved = std::move(floats);
    CHECK(moved[count - 1] == 1.5f);
    CHECK(floats.empty());
  }
}

TEST_CASE("PageBuffer refuses sizes that overflow or exceed physical memory, and stays usable") {
  bora::PageBuffer<double> buffer;
  CHECK_FALSE(buffer.reset(std::numeric_limits<uint64_t>::max()));  // count * 8 overflows
  CHECK(buffer.empty());
  const uint64_t physical = bora::physical_memory_bytes();
  REQUIRE(physical > 0);
  CHECK_FALSE(buffer.reset(physical / sizeof(double) + 1));
  CHECK(buffer.empty());
  REQUIRE(buffer.reset(16));
  CHECK(buffer.size() == 16);
}
