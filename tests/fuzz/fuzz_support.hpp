// Why this file exists: every fuzz target needs the same few things — a way to report a broken property
// as a crash libFuzzer records, the test data folder, an exact-size heap copy of the input (so ASan sees
// any read past it), and a private temporary file for readers that only take a path.
#ifndef BORA_TESTS_FUZZ_FUZZ_SUPPORT_HPP
#define BORA_TESTS_FUZZ_FUZZ_SUPPORT_HPP

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <system_error>
#include <string>
#include <vector>

#include <unistd.h>

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

// A property that does not hold is a finding: print it and stop the way a crash does.
#define BORA_FUZZ_CHECK(condition)                                                            \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz property broken: %s\n", __FILE__, __LINE__, #condition); \
      __builtin_trap();                                                                       \
    }                                                                                         \
  } while (0)

// A setup step that must succeed (the fixed test data is missing or broken): not a finding.
#define BORA_FUZZ_REQUIRE_SETUP(condition)                                             \
  do {                                                                                 \
    if (!(condition)) {                                                                \
      std::fprintf(stderr, "%s:%d: fuzz setup failed: %s\n", __FILE__, __LINE__, #condition); \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

#ifndef BORA_FUZZ_CORPUS_DIR
#define BORA_FUZZ_CORPUS_DIR "tests/fuzz/corpus"
#endif

namespace bora_fuzz {

inline std::string data_path(const std::string& relative) { return std::string(BORA_TEST_DATA_DIR) + "/" + relative; }
inline std::string corpus_path(const std::string& relative) { return std::string(BORA_FUZZ_CORPUS_DIR) + "/" + relative; }

// The input in a heap block of exactly its size (libFuzzer's own buffer is exact too, but a parser that
// keeps views into it must not outlive the call).
inline std::unique_ptr<uint8_t[]> exact_copy(const uint8_t* data, size_t size) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[size == 0 ? 1 : size]);
  for (size_t i = 0; i < size; ++i) copy[i] = data[i];
  return copy;
}

// Reads one byte at each end of a view the reader handed out, so ASan checks it lies in the input.
inline uint8_t touch(const uint8_t* p, uint64_t bytes) {
  if (bytes == 0) return 0;
  const volatile uint8_t* v = p;
  return static_cast<uint8_t>(v[0] ^ v[bytes - 1]);
}

// A directory of this process's own under $TMPDIR, else /dev/shm, else /tmp, made once and removed at
// exit (a crash leaves it behind: it is small and its name says what made it). Memory-backed /dev/shm
// first: rewriting a file on ext4 waits for the disk at close, which made a file-reading target ~30x
// slower.
inline const std::string& scratch_directory() {
  // Never destroyed, so the exit handler can still read it after static destructors ran.
  static const std::string* directory = [] {
    const char* base = std::getenv("TMPDIR");
    std::error_code error;
    const bool shm = std::filesystem::is_directory("/dev/shm", error);
    std::string pattern = std::string(base && *base ? base : shm ? "/dev/shm" : "/tmp") + "/bora-fuzz-XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    const char* made = mkdtemp(buffer.data());
    BORA_FUZZ_REQUIRE_SETUP(made != nullptr);
    return new std::string(made);
  }();
  static const bool cleanup_registered = std::atexit([] {
    std::error_code ignored;
    std::filesystem::remove_all(*directory, ignored);
  }) == 0;
  (void)cleanup_registered;
  return *directory;
}

// Replaces the file at `path` with `size` bytes of `data`.
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  BORA_FUZZ_REQUIRE_SETUP(file != nullptr);
  const bool written = size == 0 || std::fwrite(data, 1, size, file) == size;
  BORA_FUZZ_REQUIRE_SETUP(std::fclose(file) == 0 && written);
}

}  // namespace bora_fuzz

#endif  // BORA_TESTS_FUZZ_FUZZ_SUPPORT_HPP
