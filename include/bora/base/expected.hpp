// Why this file exists: bora reports every failure as a value (no exceptions required), so the
// library builds with -fno-exceptions and a broken file can never take the host program down.
#ifndef BORA_BASE_EXPECTED_HPP
#define BORA_BASE_EXPECTED_HPP

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

namespace bora {

enum class ErrorCode {
  kIo,               // the operating system refused (open, stat, mmap)
  kFormat,           // the bytes do not follow the file format
  kUnsupported,      // valid, but something bora does not implement (a type, an architecture)
  kMissing,          // a required tensor or key is absent
  kShape,            // a tensor's shape disagrees with the configuration
  kInvalidArgument,  // the caller asked for something impossible
  kContextFull,      // no room left in the KV cache
  kCancelled,        // a progress or abort callback said stop
  kOutOfMemory,      // a buffer the request needs could not be allocated
};

inline const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kIo: return "io";
    case ErrorCode::kFormat: return "format";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kMissing: return "missing";
    case ErrorCode::kShape: return "shape";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kContextFull: return "context full";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kOutOfMemory: return "out of memory";
  }
  return "unknown";
}

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  ErrorCode code() const { return code_; }
  const char* message() const { return message_.c_str(); }
  const std::string& str() const { return message_; }

 private:
  ErrorCode code_;
  std::string message_;
};

#if defined(__GNUC__) || defined(__clang__)
#define BORA_PRINTF_LIKE(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define BORA_PRINTF_LIKE(fmt_index, first_arg)
#endif

// printf-style construction, so messages can name the file, tensor, key and offset cheaply.
inline Error make_error(ErrorCode code, const char* fmt, ...) BORA_PRINTF_LIKE(2, 3);
inline Error make_error(ErrorCode code, const char* fmt, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  return Error(code, buffer);
}

[[noreturn]] inline void fatal_bad_access(const Error& error) {
  std::fprintf(stderr, "bora: value() called on an error: %s\n", error.message());
  std::abort();
}

// A value or an Error. Accessing the value of an error aborts with the message (there is no
// exception to throw); check `if (!result)` first.
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : has_value_(true) { new (&storage_.value) T(std::move(value)); }
  Expected(Error error) : has_value_(false) { new (&storage_.error) Error(std::move(error)); }
  Expected(const Expected& other) : has_value_(other.has_value_) {
    if (has_value_) new (&storage_.value) T(other.storage_.value);
    else new (&storage_.error) Error(other.storage_.error);
  }
  Expected(Expected&& other) noexcept : has_value_(other.has_value_) {
    if (has_value_) new (&storage_.value) T(std::move(other.storage_.value));
    else new (&storage_.error) Error(std::move(other.storage_.error));
  }
  Expected& operator=(Expected other) noexcept {
    destroy();
    has_value_ = other.has_value_;
    if (has_value_) new (&storage_.value) T(std::move(other.storage_.value));
    else new (&storage_.error) Error(std::move(other.storage_.error));
    return *this;
  }
  ~Expected() { destroy(); }

  bool has_value() const { return has_value_; }
  explicit operator bool() const { return has_value_; }

  T& value() & { if (!has_value_) fatal_bad_access(storage_.error); return storage_.value; }
  const T& value() const& { if (!has_value_) fatal_bad_access(storage_.error); return storage_.value; }
  T&& value() && { if (!has_value_) fatal_bad_access(storage_.error); return std::move(storage_.value); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return storage_.error; }

 private:
  void destroy() {
    if (has_value_) storage_.value.~T();
    else storage_.error.~Error();
  }
  union Storage {
    Storage() {}
    ~Storage() {}
    T value;
    Error error;
  } storage_;
  bool has_value_;
};

// Success or an Error, for operations that return nothing.
template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)), ok_(false) {}
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInvalidArgument, ""};
  bool ok_ = true;
};

using Status = Expected<void>;

}  // namespace bora

// Propagates an error from an expression returning Expected<...> or Status.
#define BORA_RETURN_IF_ERROR(expr)               \
  do {                                           \
    auto bora_status_ = (expr);                  \
    if (!bora_status_) return bora_status_.error(); \
  } while (0)

#endif  // BORA_BASE_EXPECTED_HPP
