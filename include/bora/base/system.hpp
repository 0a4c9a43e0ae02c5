// Why this file exists: the few operating-system facts bora needs (file mapping, page and memory
// sizes) come from different headers on POSIX and Windows; they are included here once, with the
// macros that keep <windows.h> from breaking standard C++ (min/max).
#ifndef BORA_BASE_SYSTEM_HPP
#define BORA_BASE_SYSTEM_HPP

#include <cstdint>

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace bora {

// The machine's physical memory in bytes (0 when the system does not say). A buffer larger than this
// is refused before it is attempted: overcommitting systems would otherwise hand out address space
// that fails only when touched, and sanitizers abort on such sizes.
inline uint64_t physical_memory_bytes() {
#if defined(_WIN32)
  MEMORYSTATUSEX status;
  status.dwLength = sizeof(status);
  return GlobalMemoryStatusEx(&status) ? static_cast<uint64_t>(status.ullTotalPhys) : 0;
#else
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
#endif
}

}  // namespace bora

#endif  // BORA_BASE_SYSTEM_HPP
