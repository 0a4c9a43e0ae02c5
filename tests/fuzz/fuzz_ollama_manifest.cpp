// Why this file exists: `ollama:NAME[:TAG]` turns a user-supplied name and a JSON manifest from Ollama's
// store into a file path; this feeds both arbitrary bytes (the name is the input's first line, the
// manifest the rest) and requires that a resolved path is always a blob inside the store, named by a
// well-formed digest — never a path the name or the manifest smuggled in.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "bora/io/ollama.hpp"
#include "fuzz_support.hpp"

namespace {

// The digest the seed manifests name; its blob exists, so resolution can succeed.
constexpr char kBlobHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const std::string& make_store() {
  static const std::string store = [] {
    const std::string root = bora_fuzz::scratch_directory() + "/ollama";
    std::filesystem::create_directories(root + "/manifests/registry.ollama.ai/library/fuzz");
    std::filesystem::create_directories(root + "/blobs");
    const uint8_t blob[4] = {'G', 'G', 'U', 'F'};
    bora_fuzz::write_file(root + "/blobs/sha256-" + kBlobHex, blob, sizeof(blob));
    return root;
  }();
  return store;
}

bool is_lower_hex(std::string_view text) {
  for (char ch : text) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& store = make_store();
  const char* text = reinterpret_cast<const char*>(data);
  const void* newline = std::memchr(data, '\n', size);
  const size_t name_size = newline ? static_cast<size_t>(static_cast<const char*>(newline) - text) : size;
  const std::string name(text, name_size);
  const size_t manifest_begin = newline ? name_size + 1 : size;
  const std::string manifest_path = store + "/manifests/registry.ollama.ai/library/fuzz/latest";
  bora_fuzz::write_file(manifest_path, data + manifest_begin, size - manifest_begin);

  auto blob = bora::resolve_ollama_model(name, store);
  if (!blob) {
    BORA_FUZZ_CHECK(!blob.error().str().empty());
    return 0;
  }
  // "<store>/blobs/sha256-<64 lower-case hex>" or the older "sha256:" spelling, nothing else.
  const std::string prefix = store + "/blobs/sha256";
  BORA_FUZZ_CHECK(blob->size() == prefix.size() + 1 + 64);
  BORA_FUZZ_CHECK(blob->compare(0, prefix.size(), prefix) == 0);
  const char separator = (*blob)[prefix.size()];
  BORA_FUZZ_CHECK(separator == '-' || separator == ':');
  BORA_FUZZ_CHECK(is_lower_hex(std::string_view(*blob).substr(prefix.size() + 1)));
  return 0;
}
