// Why this file exists: model files are gigabytes; mapping them read-only lets tensors be views into
// the page cache (zero copy, opened in milliseconds) on POSIX and Windows alike.
#ifndef BORA_BASE_MAPPED_FILE_HPP
#define BORA_BASE_MAPPED_FILE_HPP

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "bora/base/expected.hpp"
#include "bora/base/system.hpp"


namespace bora {

namespace detail {

// A file opened for reading, with its size; closed when this goes out of scope, so every error path
// of the two ways to load a file below closes it.
class ReadableFile {
 public:
  ReadableFile() = default;
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;
#if defined(_WIN32)
  ~ReadableFile() {
    if (handle_ != INVALID_HANDLE_VALUE) CloseHandle(handle_);
  }
  Status open(const std::string& path) {
    handle_ = CreateFileA(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL,
                          nullptr);
    if (handle_ == INVALID_HANDLE_VALUE) return make_error(ErrorCode::kIo, "%s: cannot open", path.c_str());
    LARGE_INTEGER size;
    if (!GetFileSizeEx(handle_, &size)) return make_error(ErrorCode::kIo, "%s: cannot read its size", path.c_str());
    size_ = static_cast<uint64_t>(size.QuadPart);
    return Status();
  }
  HANDLE handle() const { return handle_; }
#else
  ~ReadableFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status open(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return make_error(ErrorCode::kIo, "%s: cannot open: %s", path.c_str(), std::strerror(errno));
    struct stat st;
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) return make_error(ErrorCode::kIo, "%s: not a regular file", path.c_str());
    size_ = static_cast<uint64_t>(st.st_size);
    return Status();
  }
  int fd() const { return fd_; }
#endif
  uint64_t size() const { return size_; }

 private:
#if defined(_WIN32)
  HANDLE handle_ = INVALID_HANDLE_VALUE;
#else
  int fd_ = -1;
#endif
  uint64_t size_ = 0;
};

}  // namespace detail

// How a model file's bytes reach memory. Mapping is instant and shares the page cache between
// processes; reading into private memory takes a moment at load but, backed by huge pages, it
// streams several times faster on machines where page-cache mappings are slow (VMs with 4 KiB
// nested pages: measured 2-7 GB/s mapped vs 33-37 GB/s read, see README), which decoding feels
// directly. Reading is the default, as llama.cpp's `--no-mmap`.
enum class FileAccess { kRead, kMap };

// Told how many bytes of a file are in memory so far, on the thread that opens it; returns false to
// stop reading (the open then fails with kCancelled). A multi-gigabyte read takes seconds from disk,
// so a loading screen needs to show it and a user needs to be able to cancel it.
struct ReadProgress {
  bool (*callback)(uint64_t bytes_done, uint64_t bytes_total, void* user_data) = nullptr;
  void* user_data = nullptr;
  bool report(uint64_t done, uint64_t total) const { return callback == nullptr || callback(done, total, user_data); }
};

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

  static Expected<MappedFile> open(const std::string& path, FileAccess access = FileAccess::kMap,
                                   const ReadProgress& progress = {}) {
    detail::ReadableFile in;
    BORA_RETURN_IF_ERROR(in.open(path));
    MappedFile file;
    file.path_ = path;
    file.size_ = in.size();
    if (file.size_ == 0) return file;
    BORA_RETURN_IF_ERROR(access == FileAccess::kRead ? file.read_from(in, progress) : file.map_from(in));
    if (!progress.report(file.size_, file.size_)) return file.cancelled(file.size_);
    return file;
  }

  // The whole file in private memory (huge pages where the system offers them), read with two
  // threads so that a warm page cache fills it at memory speed.
  static Expected<MappedFile> read_into_memory(const std::string& path, const ReadProgress& progress = {}) {
    return open(path, FileAccess::kRead, progress);
  }

  const uint8_t* data() const { return data_; }
  // The bytes when they were read into private memory (this object's to rewrite), else null.
  uint8_t* writable_data() { return writable_ ? const_cast<uint8_t*>(data_) : nullptr; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  // Maps the opened file read-only (the system pages it in on demand).
  Status map_from(const detail::ReadableFile& in) {
#if defined(_WIN32)
    HANDLE mapping = CreateFileMappingA(in.handle(), nullptr, PAGE_READONLY, 0, 0, nullptr);
    if (mapping == nullptr) return make_error(ErrorCode::kIo, "%s: cannot map", path_.c_str());
    data_ = static_cast<const uint8_t*>(MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0));
    CloseHandle(mapping);
    if (data_ == nullptr) return make_error(ErrorCode::kIo, "%s: cannot map", path_.c_str());
#else
    void* address = mmap(nullptr, size_, PROT_READ, MAP_SHARED, in.fd(), 0);
    if (address == MAP_FAILED) {
      return make_error(ErrorCode::kIo, "%s: cannot map: %s", path_.c_str(), std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(address);
#endif
    return Status();
  }

  // Reads the opened file into private memory, reporting progress and stopping when it says so.
  Status read_from(const detail::ReadableFile& in, const ReadProgress& progress) {
#if defined(_WIN32)
    void* buffer = VirtualAlloc(nullptr, size_, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (buffer == nullptr) {
      return make_error(ErrorCode::kIo, "%s: cannot allocate %llu bytes", path_.c_str(), (unsigned long long)size_);
    }
    data_ = static_cast<const uint8_t*>(buffer);
    owned_ = true;
    writable_ = true;
    if (!progress.report(0, size_)) return cancelled(0);
    uint64_t done = 0;
    while (done < size_) {
      const DWORD want = static_cast<DWORD>(size_ - done < (1u << 30) ? size_ - done : (1u << 30));
      DWORD got = 0;
      if (!ReadFile(in.handle(), static_cast<uint8_t*>(buffer) + done, want, &got, nullptr) || got == 0) {
        return make_error(ErrorCode::kIo, "%s: read failed at byte %llu", path_.c_str(), (unsigned long long)done);
      }
      done += got;
      if (!progress.report(done, size_)) return cancelled(done);
    }
#else
    void* address = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address == MAP_FAILED) {
      return make_error(ErrorCode::kIo, "%s: cannot allocate %llu bytes: %s", path_.c_str(),
                        (unsigned long long)size_, std::strerror(errno));
    }
#if defined(MADV_HUGEPAGE)
    madvise(address, size_, MADV_HUGEPAGE);
#endif
    data_ = static_cast<const uint8_t*>(address);
    writable_ = true;
    const int fd = in.fd();
    // Two threads each read half in 64 MiB chunks; only this thread calls the progress callback, and
    // the helper stops at its next chunk once the callback has said stop.
    std::atomic<uint64_t> done{0};
    std::atomic<bool> stop{false};
    auto read_range = [&](uint64_t begin, uint64_t end, int* error, bool reports) {
      while (begin < end && !stop.load(std::memory_order_relaxed)) {
        const size_t want = static_cast<size_t>(end - begin < (1u << 26) ? end - begin : (1u << 26));
        const ssize_t got = pread(fd, static_cast<uint8_t*>(address) + begin, want, static_cast<off_t>(begin));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
          *error = got < 0 ? errno : EIO;
          stop.store(true);
          return;
        }
        begin += static_cast<uint64_t>(got);
        const uint64_t so_far = done.fetch_add(static_cast<uint64_t>(got)) + static_cast<uint64_t>(got);
        if (reports && !progress.report(so_far, size_)) stop.store(true);
      }
    };
    if (!progress.report(0, size_)) return cancelled(0);
    int first_error = 0, second_error = 0;
    const uint64_t half = size_ / 2 / 4096 * 4096;
    std::thread helper(read_range, half, size_, &second_error, false);
    read_range(0, half, &first_error, true);
    helper.join();
    if (first_error != 0 || second_error != 0) {
      return make_error(ErrorCode::kIo, "%s: read failed: %s", path_.c_str(),
                        std::strerror(first_error != 0 ? first_error : second_error));
    }
    if (stop.load()) return cancelled(done.load());
#endif
    return Status();
  }

  Error cancelled(uint64_t done) const {
    return make_error(ErrorCode::kCancelled, "%s: loading cancelled after %llu of %llu bytes", path_.c_str(),
                      (unsigned long long)done, (unsigned long long)size_);
  }
  void swap(MappedFile& other) {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
    std::swap(owned_, other.owned_);
    std::swap(writable_, other.writable_);
  }
  void release() {
    if (data_ == nullptr) return;
#if defined(_WIN32)
    if (owned_) VirtualFree(const_cast<uint8_t*>(data_), 0, MEM_RELEASE);
    else UnmapViewOfFile(data_);
#else
    munmap(const_cast<uint8_t*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
  bool owned_ = false;  // Windows: VirtualAlloc'd copy rather than a view
  bool writable_ = false;  // read into private memory allocated writable
};

}  // namespace bora

#endif  // BORA_BASE_MAPPED_FILE_HPP
