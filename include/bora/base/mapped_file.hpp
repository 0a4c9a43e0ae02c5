// Why this file exists: model files are gigabytes; mapping them read-only lets tensors be views into
// the page cache (zero copy, opened in milliseconds) on POSIX and Windows alike.
#ifndef BORA_BASE_MAPPED_FILE_HPP
#define BORA_BASE_MAPPED_FILE_HPP

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "bora/base/expected.hpp"

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

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { swap(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  static Expected<MappedFile> open(const std::string& path) {
    MappedFile file;
    file.path_ = path;
#if defined(_WIN32)
    HANDLE handle = CreateFileA(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                                FILE_ATTRIBUTE_NORMAL, nullptr);
    if (handle == INVALID_HANDLE_VALUE) return make_error(ErrorCode::kIo, "%s: cannot open", path.c_str());
    LARGE_INTEGER size;
    if (!GetFileSizeEx(handle, &size)) {
      CloseHandle(handle);
      return make_error(ErrorCode::kIo, "%s: cannot read its size", path.c_str());
    }
    file.size_ = static_cast<uint64_t>(size.QuadPart);
    if (file.size_ > 0) {
      HANDLE mapping = CreateFileMappingA(handle, nullptr, PAGE_READONLY, 0, 0, nullptr);
      if (mapping == nullptr) {
        CloseHandle(handle);
        return make_error(ErrorCode::kIo, "%s: cannot map", path.c_str());
      }
      file.data_ = static_cast<const uint8_t*>(MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0));
      CloseHandle(mapping);
      if (file.data_ == nullptr) {
        CloseHandle(handle);
        return make_error(ErrorCode::kIo, "%s: cannot map", path.c_str());
      }
    }
    CloseHandle(handle);
#else
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error(ErrorCode::kIo, "%s: cannot open: %s", path.c_str(), std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return make_error(ErrorCode::kIo, "%s: not a regular file", path.c_str());
    }
    file.size_ = static_cast<uint64_t>(st.st_size);
    if (file.size_ > 0) {
      void* address = mmap(nullptr, file.size_, PROT_READ, MAP_SHARED, fd, 0);
      if (address == MAP_FAILED) {
        ::close(fd);
        return make_error(ErrorCode::kIo, "%s: cannot map: %s", path.c_str(), std::strerror(errno));
      }
      file.data_ = static_cast<const uint8_t*>(address);
    }
    ::close(fd);
#endif
    return file;
  }

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void swap(MappedFile& other) {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
  }
  void release() {
    if (data_ == nullptr) return;
#if defined(_WIN32)
    UnmapViewOfFile(data_);
#else
    munmap(const_cast<uint8_t*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

}  // namespace bora

#endif  // BORA_BASE_MAPPED_FILE_HPP
