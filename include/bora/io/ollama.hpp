// Why this file exists: people already have models pulled with Ollama; `ollama:NAME[:TAG]` finds
// the GGUF blob in Ollama's store (manifest -> model layer digest -> blob) so bora can load it as is.
#ifndef BORA_IO_OLLAMA_HPP
#define BORA_IO_OLLAMA_HPP

#include <simdjson.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/base/mapped_file.hpp"

namespace bora {

namespace detail {
// Name parts become path components: allow only what Ollama allows, never "." or "..".
inline bool is_safe_ollama_component(const std::string& part) {
  if (part.empty() || part == "." || part == ".." || part.size() > 200) return false;
  for (char ch : part) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                    ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}
}  // namespace detail

// The directory of Ollama's store: $OLLAMA_MODELS, else ~/.ollama/models.
inline std::string ollama_models_directory() {
  if (const char* dir = std::getenv("OLLAMA_MODELS")) {
    if (*dir) return dir;
  }
#if defined(_WIN32)
  const char* home = std::getenv("USERPROFILE");
#else
  const char* home = std::getenv("HOME");
#endif
  return std::string(home ? home : ".") + "/.ollama/models";
}

// "mistral", "mistral:7b", "user/model:tag", "host/namespace/model:tag" -> path of the GGUF blob.
inline Expected<std::string> resolve_ollama_model(const std::string& name, const std::string& store = ollama_models_directory()) {
  std::string model = name, tag = "latest";
  const size_t slash = name.rfind('/');
  const size_t colon = name.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    model = name.substr(0, colon);
    tag = name.substr(colon + 1);
  }
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t end = model.find('/', begin);
    parts.push_back(model.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  if (parts.size() == 1) parts.insert(parts.begin(), "library");
  if (parts.size() == 2) parts.insert(parts.begin(), "registry.ollama.ai");
  parts.push_back(tag);
  if (parts.size() != 4) return make_error(ErrorCode::kInvalidArgument, "ollama:%s: expected NAME[:TAG] or NAMESPACE/NAME[:TAG]", name.c_str());
  std::string manifest_path = store + "/manifests";
  for (const std::string& part : parts) {
    if (!detail::is_safe_ollama_component(part))
      return make_error(ErrorCode::kInvalidArgument, "ollama:%s: '%s' is not a valid model name part", name.c_str(), part.c_str());
    manifest_path += "/" + part;
  }
  auto manifest = MappedFile::open(manifest_path);
  if (!manifest) {
    return make_error(ErrorCode::kIo, "ollama:%s: no manifest at %s (is the model pulled, and OLLAMA_MODELS right?)",
                      name.c_str(), manifest_path.c_str());
  }
  if (manifest->size() > (1u << 24)) return make_error(ErrorCode::kFormat, "%s: manifest too large", manifest_path.c_str());
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string json(reinterpret_cast<const char*>(manifest->data()), manifest->size());
  if (parser.parse(json).get(root)) return make_error(ErrorCode::kFormat, "%s: manifest is not valid JSON", manifest_path.c_str());
  simdjson::dom::array layers;
  if (root["layers"].get_array().get(layers))
    return make_error(ErrorCode::kFormat, "%s: manifest has no \"layers\" array", manifest_path.c_str());
  for (simdjson::dom::element layer : layers) {
    std::string_view media_type, digest;
    if (layer["mediaType"].get_string().get(media_type) || media_type != "application/vnd.ollama.image.model") continue;
    if (layer["digest"].get_string().get(digest))
      return make_error(ErrorCode::kFormat, "%s: model layer has no \"digest\"", manifest_path.c_str());
    // "sha256:<64 hex>"; blobs are stored as sha256-<hex> (older stores: sha256:<hex>).
    bool valid = digest.size() == 71 && digest.substr(0, 7) == "sha256:";
    for (size_t i = 7; valid && i < digest.size(); ++i) {
      const char ch = digest[i];
      valid = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    }
    if (!valid) return make_error(ErrorCode::kFormat, "%s: bad model digest '%.80s'", manifest_path.c_str(), std::string(digest).c_str());
    const std::string hex(digest.substr(7));
    for (const char* separator : {"-", ":"}) {
      const std::string blob = store + "/blobs/sha256" + separator + hex;
      if (std::FILE* probe = std::fopen(blob.c_str(), "rb")) {
        std::fclose(probe);
        return blob;
      }
    }
    return make_error(ErrorCode::kIo, "ollama:%s: blob sha256-%s named by the manifest is missing from %s/blobs",
                      name.c_str(), hex.c_str(), store.c_str());
  }
  return make_error(ErrorCode::kFormat, "%s: manifest lists no model layer (application/vnd.ollama.image.model)",
                    manifest_path.c_str());
}

}  // namespace bora

#endif  // BORA_IO_OLLAMA_HPP
