// Why this file exists: "no allocation larger than the file from a count in it" is a promise about
// hostile input that no return value shows; this lets a test see every operator new made while a
// probe is active (on any thread) and check the largest single request against the file's size.
//
// Use: include this header anywhere. In exactly ONE .cpp of the test program, define
// BORA_TEST_ALLOCATION_PROBE_OPERATORS before including it: that .cpp then replaces the global
// operator new/delete (every form: plain, array, nothrow, aligned, sized) with versions that report
// to the probe and allocate with malloc / aligned allocation. This works under AddressSanitizer too:
// the program's own operators take precedence over ASan's, and ASan still checks the malloc'ed
// blocks (it then only cannot tell new/delete from malloc/free mismatches). Define
// BORA_TEST_NO_ALLOCATION_PROBE to build without the replacement; AllocationProbe::installed() then
// says false and tests relying on it should skip.
#ifndef BORA_TESTS_SUPPORT_ALLOCATION_PROBE_HPP
#define BORA_TESTS_SUPPORT_ALLOCATION_PROBE_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bora_test {

namespace allocation_probe_detail {
// Constant-initialized, so they are usable from operator new before any static constructor ran.
inline std::atomic<bool> installed{false};
inline std::atomic<int> active{0};
inline std::atomic<std::size_t> largest{0};
inline std::atomic<std::uint64_t> count{0};

inline void note(std::size_t size) {
  if (active.load(std::memory_order_relaxed) == 0) return;
  count.fetch_add(1, std::memory_order_relaxed);
  std::size_t seen = largest.load(std::memory_order_relaxed);
  while (size > seen && !largest.compare_exchange_weak(seen, size, std::memory_order_relaxed)) {
  }
}
}  // namespace allocation_probe_detail

// Records the largest single operator new request (bytes) between construction and stop() or
// destruction. One probe at a time.
class AllocationProbe {
 public:
  AllocationProbe() {
    allocation_probe_detail::largest.store(0);
    allocation_probe_detail::count.store(0);
    allocation_probe_detail::active.store(1);
  }
  ~AllocationProbe() { stop(); }
  AllocationProbe(const AllocationProbe&) = delete;
  AllocationProbe& operator=(const AllocationProbe&) = delete;

  void stop() { allocation_probe_detail::active.store(0); }
  std::size_t largest() const { return allocation_probe_detail::largest.load(); }
  std::uint64_t allocations() const { return allocation_probe_detail::count.load(); }
  // True once the replaced operator new has run at least once (it runs long before any test).
  static bool installed() { return allocation_probe_detail::installed.load(); }
};

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_ALLOCATION_PROBE_HPP

// Outside the include guard on purpose: the one .cpp that defines the macro gets the operators even if
// the header was already included before.
#if defined(BORA_TEST_ALLOCATION_PROBE_OPERATORS) && !defined(BORA_TEST_NO_ALLOCATION_PROBE) && \
    !defined(BORA_TEST_ALLOCATION_PROBE_OPERATORS_DEFINED)
#define BORA_TEST_ALLOCATION_PROBE_OPERATORS_DEFINED

// These operators pair malloc with free by design; GCC cannot see that once they are inlined into
// code that calls new and delete, and would warn about a mismatch that is not there.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <cstdlib>
#include <new>
#if defined(_WIN32)
#include <malloc.h>
#endif

namespace bora_test {
namespace allocation_probe_detail {

[[noreturn]] inline void out_of_memory() {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
  throw std::bad_alloc();
#else
  std::abort();  // without exceptions a failed operator new has nothing else to do
#endif
}

// malloc, with the new-handler retry the standard asks of operator new; null only when `nothrow`.
inline void* allocate(std::size_t size, bool nothrow) {
  installed.store(true, std::memory_order_relaxed);
  note(size);
  if (size == 0) size = 1;
  for (;;) {
    if (void* p = std::malloc(size)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) {
      if (nothrow) return nullptr;
      out_of_memory();
    }
    handler();
  }
}

inline void* allocate_aligned(std::size_t size, std::align_val_t alignment, bool nothrow) {
  installed.store(true, std::memory_order_relaxed);
  note(size);
  std::size_t align = static_cast<std::size_t>(alignment);
  if (align < sizeof(void*)) align = sizeof(void*);
  // aligned_alloc wants a whole number of alignments.
  const std::size_t rounded = size == 0 ? align : (size + align - 1) / align * align;
  for (;;) {
#if defined(_WIN32)
    void* p = _aligned_malloc(rounded, align);
#else
    void* p = rounded >= size ? std::aligned_alloc(align, rounded) : nullptr;
#endif
    if (p != nullptr) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) {
      if (nothrow) return nullptr;
      out_of_memory();
    }
    handler();
  }
}

inline void release(void* p) noexcept { std::free(p); }

inline void release_aligned(void* p) noexcept {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

}  // namespace allocation_probe_detail
}  // namespace bora_test

// Replaceable global allocation functions ([new.delete]); they must not be inline, hence one .cpp.
void* operator new(std::size_t size) { return bora_test::allocation_probe_detail::allocate(size, false); }
void* operator new[](std::size_t size) { return bora_test::allocation_probe_detail::allocate(size, false); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return bora_test::allocation_probe_detail::allocate(size, true);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return bora_test::allocation_probe_detail::allocate(size, true);
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  return bora_test::allocation_probe_detail::allocate_aligned(size, alignment, false);
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return bora_test::allocation_probe_detail::allocate_aligned(size, alignment, false);
}
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return bora_test::allocation_probe_detail::allocate_aligned(size, alignment, true);
}
void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return bora_test::allocation_probe_detail::allocate_aligned(size, alignment, true);
}

void operator delete(void* p) noexcept { bora_test::allocation_probe_detail::release(p); }
void operator delete[](void* p) noexcept { bora_test::allocation_probe_detail::release(p); }
void operator delete(void* p, std::size_t) noexcept { bora_test::allocation_probe_detail::release(p); }
void operator delete[](void* p, std::size_t) noexcept { bora_test::allocation_probe_detail::release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { bora_test::allocation_probe_detail::release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { bora_test::allocation_probe_detail::release(p); }
void operator delete(void* p, std::align_val_t) noexcept { bora_test::allocation_probe_detail::release_aligned(p); }
void operator delete[](void* p, std::align_val_t) noexcept { bora_test::allocation_probe_detail::release_aligned(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  bora_test::allocation_probe_detail::release_aligned(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  bora_test::allocation_probe_detail::release_aligned(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  bora_test::allocation_probe_detail::release_aligned(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  bora_test::allocation_probe_detail::release_aligned(p);
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif
#endif  // BORA_TEST_ALLOCATION_PROBE_OPERATORS
