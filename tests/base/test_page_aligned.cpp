// Why this file exists: the per-context buffers rely on PageVector starting every allocation on its own
// page (decode speed varied by 30% with malloc's placement before); this checks that promise holds
// through the ways the library fills and grows those vectors.
#include <doctest/doctest.h>

#include <cstdint>

#include "bora/base/page_aligned.hpp"

namespace {

bool on_page_boundary(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 4096 == 0; }

}  // namespace

TEST_CASE("PageVector starts every buffer on a page boundary, small or large, after assign and growth") {
  for (size_t count : {size_t{1}, size_t{3}, size_t{1000}, size_t{1} << 16, size_t{3} << 20}) {
    bora::PageVector<float> floats;
    floats.assign(count, 1.5f);
    CHECK(on_page_boundary(floats.data()));
    CHECK(floats[count - 1] == 1.5f);
    bora::PageVector<uint8_t> bytes(count, 7);
    CHECK(on_page_boundary(bytes.data()));
  }
  bora::PageVector<int32_t> growing;
  for (int i = 0; i < 100000; ++i) {
    growing.push_back(i);
    if ((i & (i - 1)) == 0) REQUIRE(on_page_boundary(growing.data()));
  }
  CHECK(growing[99999] == 99999);
}
