// Why this file exists: decoding speed must not depend on where malloc happens to put the per-context
// buffers. With plain vectors, one and the same binary decoded Q4_0 7B at 4.1 or 5.4 tokens/s depending on
// glibc's heap state (after an earlier context freed large buffers, later ones moved from their own
// mappings into the heap, always at the slow speed); with every buffer on its own page most runs are fast.
#ifndef BORA_BASE_PAGE_ALIGNED_HPP
#define BORA_BASE_PAGE_ALIGNED_HPP

#include <cstddef>
#include <new>
#include <vector>

namespace bora {

// A std::allocator that starts every allocation on a 4 KiB page boundary. Failure behaves as
// std::allocator's does (operator new), so vectors using it need no extra error paths.
template <class T>
struct PageAlignedAllocator {
  using value_type = T;
  static constexpr std::size_t kPage = 4096;

  PageAlignedAllocator() = default;
  template <class U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}

  T* allocate(std::size_t count) {
    return static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t{kPage}));
  }
  void deallocate(T* pointer, std::size_t) { ::operator delete(pointer, std::align_val_t{kPage}); }

  template <class U>
  bool operator==(const PageAlignedAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const PageAlignedAllocator<U>&) const { return false; }
};

// The vector type for buffers the kernels read or write on every token.
template <class T>
using PageVector = std::vector<T, PageAlignedAllocator<T>>;

}  // namespace bora

#endif  // BORA_BASE_PAGE_ALIGNED_HPP
