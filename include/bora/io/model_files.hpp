// Why this file exists: "a model" is a .gguf file, a Hugging Face folder (config.json plus one or
// more .safetensors shards) or a Mistral folder (params.json plus consolidated*.safetensors); this
// opens whichever it is, keeps every file mapped, and answers "where is tensor X" across all of them.
#ifndef BORA_IO_MODEL_FILES_HPP
#define BORA_IO_MODEL_FILES_HPP

#include <simdjson.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/json_config.hpp"
#include "bora/io/model_config.hpp"
#include "bora/io/safetensors.hpp"
#include "bora/io/tensor_view.hpp"

namespace bora {

enum class ModelFormat { kGguf, kHuggingFace, kConsolidated };

inline const char* model_format_name(ModelFormat format) {
  switch (format) {
    case ModelFormat::kGguf: return "GGUF";
    case ModelFormat::kHuggingFace: return "Hugging Face safetensors";
    case ModelFormat::kConsolidated: return "Mistral consolidated safetensors";
  }
  return "unknown";
}

namespace model_files_detail {

// Small JSON files (configs, shard indexes) are read whole; anything bigger is not such a file.
constexpr uint64_t kMaxJsonFileBytes = uint64_t{64} << 20;

inline Expected<std::string> read_small_file(const std::string& path) {
  Expected<MappedFile> mapped = MappedFile::open(path);
  if (!mapped) return mapped.error();
  if (mapped->size() > kMaxJsonFileBytes) {
    return make_error(ErrorCode::kFormat, "%s: %" PRIu64 " bytes is too large for a JSON configuration file",
                      path.c_str(), mapped->size());
  }
  if (mapped->size() == 0) return std::string();
  return std::string(reinterpret_cast<const char*>(mapped->data()), static_cast<size_t>(mapped->size()));
}

inline std::string join_path(const std::string& folder, const std::string& file) {
  if (folder.empty()) return file;
  const char last = folder.back();
  if (last == '/' || last == '\\') return folder + file;
  return folder + "/" + file;
}

inline bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec) && !ec;
}

inline bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// A shard name from an index file must be a plain file name inside the model folder.
inline bool is_plain_file_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\\') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

}  // namespace model_files_detail

class ModelFiles {
 public:
  ModelFiles(ModelFiles&&) noexcept = default;
  ModelFiles& operator=(ModelFiles&&) noexcept = default;
  ModelFiles(const ModelFiles&) = delete;
  ModelFiles& operator=(const ModelFiles&) = delete;

  // `path` is a .gguf file or a model folder (a config.json / params.json inside one also works).
  // `access`: read the weights into private memory (default, fastest to compute with) or map them.
  // `progress` hears the bytes read so far over all of the model's weight files together.
  static Expected<ModelFiles> open(const std::string& path, FileAccess access = FileAccess::kRead,
                                   const ReadProgress& progress = {}) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
      return make_error(ErrorCode::kIo, "%s: no such file or folder", path.c_str());
    }
    if (fs::is_directory(status)) return open_folder(path, access, progress);
    const std::string file_name = fs::path(path).filename().string();
    if (file_name == "config.json" || file_name == "params.json") {
      return open_folder(fs::path(path).parent_path().string(), access, progress);
    }
    if (model_files_detail::ends_with(file_name, ".safetensors")) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: a .safetensors file has no model configuration; open the folder that holds it with "
                        "config.json or params.json", path.c_str());
    }
    return open_gguf(path, access, progress);
  }

  ModelFormat format() const { return format_; }
  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }

  const TensorView* find_tensor(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : it->second;
  }

  // A GGUF tensor the loader may rewrite in place (GgufFile::writable_tensor), or null.
  TensorView* writable_tensor(std::string_view name) { return gguf_ ? gguf_->writable_tensor(name) : nullptr; }

  // In file order (shard by shard).
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> names;
    if (gguf_) {
      for (const TensorView& t : gguf_->tensors()) names.push_back(t.name);
    }
    for (const SafetensorsFile& shard : shards_) {
      for (const TensorView& t : shard.tensors()) names.push_back(t.name);
    }
    return names;
  }

  const GgufFile* gguf() const { return gguf_.get(); }
  const std::vector<SafetensorsFile>& safetensors_files() const { return shards_; }

  uint64_t total_bytes() const {
    uint64_t total = gguf_ ? gguf_->file_size() : 0;
    for (const SafetensorsFile& shard : shards_) total += shard.file_size();
    return total;
  }

  // A GGUF image already in memory (synthetic benchmark models, assets embedded in a program).
  // The bytes are kept alive by the returned object; tensor views point into them.
  static Expected<ModelFiles> from_gguf_bytes(std::shared_ptr<const uint8_t> bytes, uint64_t size,
                                              const std::string& name) {
    if (!bytes) return make_error(ErrorCode::kInvalidArgument, "%s: no bytes", name.c_str());
    Expected<GgufFile> gguf = GgufFile::parse(bytes.get(), size, name);
    if (!gguf) return gguf.error();
    Expected<ModelFiles> model = from_gguf(std::move(gguf.value()), name);
    if (model) model->owned_bytes_ = std::move(bytes);
    return model;
  }

 private:
  ModelFiles() = default;

  static Expected<ModelFiles> open_gguf(const std::string& path, FileAccess access, const ReadProgress& progress) {
    Expected<GgufFile> gguf = GgufFile::open(path, access, progress);
    if (!gguf) return gguf.error();
    return from_gguf(std::move(gguf.value()), path);
  }

  static Expected<ModelFiles> from_gguf(GgufFile gguf, const std::string& path) {
    ModelFiles model;
    model.format_ = ModelFormat::kGguf;
    model.path_ = path;
    model.gguf_ = std::make_unique<GgufFile>(std::move(gguf));
    Expected<ModelConfig> config = config_from_gguf(*model.gguf_);
    if (!config) return config.error();
    model.config_ = std::move(config.value());
    for (const TensorView& t : model.gguf_->tensors()) model.index_.emplace(t.name, &t);
    return model;
  }

  static Expected<ModelFiles> open_folder(const std::string& folder, FileAccess access, const ReadProgress& progress) {
    using model_files_detail::is_regular_file;
    using model_files_detail::join_path;
    const std::string hf_config = join_path(folder, "config.json");
    const std::string hf_index = join_path(folder, "model.safetensors.index.json");
    const std::string hf_single = join_path(folder, "model.safetensors");
    const std::string params = join_path(folder, "params.json");
    const bool has_hf_weights = is_regular_file(hf_index) || is_regular_file(hf_single);
    if (is_regular_file(hf_config) && has_hf_weights) return open_hugging_face(folder, access, progress);
    if (is_regular_file(params)) return open_consolidated(folder, access, progress);
    if (is_regular_file(hf_config)) {
      return make_error(ErrorCode::kMissing, "%s: has config.json but neither model.safetensors nor "
                        "model.safetensors.index.json (PyTorch .bin checkpoints are not supported)", folder.c_str());
    }
    return make_error(ErrorCode::kMissing, "%s: not a model folder (no config.json or params.json)", folder.c_str());
  }

  static Expected<ModelFiles> open_hugging_face(const std::string& folder, FileAccess access,
                                               const ReadProgress& progress) {
    using model_files_detail::join_path;
    ModelFiles model;
    model.format_ = ModelFormat::kHuggingFace;
    model.path_ = folder;
    const std::string config_path = join_path(folder, "config.json");
    Expected<std::string> config_text = model_files_detail::read_small_file(config_path);
    if (!config_text) return config_text.error();
    Expected<ModelConfig> config = parse_hf_config(*config_text, config_path);
    if (!config) return config.error();
    model.config_ = std::move(config.value());

    const std::string index_path = join_path(folder, "model.safetensors.index.json");
    if (!model_files_detail::is_regular_file(index_path)) {
      BORA_RETURN_IF_ERROR(model.add_shards({join_path(folder, "model.safetensors")}, access, progress));
      BORA_RETURN_IF_ERROR(model.build_index());
      return model;
    }
    // Sharded: the index maps each tensor to its shard; each shard is opened once.
    std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard file
    std::vector<std::string> shard_files;
    BORA_RETURN_IF_ERROR(read_weight_map(index_path, &weight_map, &shard_files));
    std::vector<std::string> shard_paths;
    for (const std::string& shard : shard_files) shard_paths.push_back(join_path(folder, shard));
    BORA_RETURN_IF_ERROR(model.add_shards(shard_paths, access, progress));
    BORA_RETURN_IF_ERROR(model.build_index());
    for (const auto& entry : weight_map) {
      const TensorView* view = model.find_tensor(entry.first);
      if (view == nullptr || !model.shard_holds(join_path(folder, entry.second), view)) {
        return make_error(ErrorCode::kMissing, "%s: tensor '%s' is listed in shard '%s', which does not contain it",
                          index_path.c_str(), entry.first.c_str(), entry.second.c_str());
      }
    }
    return model;
  }

  static Status read_weight_map(const std::string& index_path, std::vector<std::pair<std::string, std::string>>* map,
                                std::vector<std::string>* shard_files) {
    Expected<std::string> text = model_files_detail::read_small_file(index_path);
    if (!text) return text.error();
    const char* file = index_path.c_str();
    simdjson::padded_string padded(text->data(), text->size());
    if (padded.data() == nullptr) return make_error(ErrorCode::kIo, "%s: out of memory", file);
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    const simdjson::error_code parse_error = parser.parse(padded).get(root);
    if (parse_error != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: malformed JSON: %s", file, simdjson::error_message(parse_error));
    }
    simdjson::dom::object weight_map;
    if (root.at_key("weight_map").get_object().get(weight_map) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: key 'weight_map' is missing or not an object", file);
    }
    for (simdjson::dom::key_value_pair entry : weight_map) {
      std::string_view shard;
      if (entry.value.get_string().get(shard) != simdjson::SUCCESS) {
        return make_error(ErrorCode::kFormat, "%s: weight_map entry '%.*s' is not a file name string", file,
                          static_cast<int>(entry.key.size()), entry.key.data());
      }
      if (!model_files_detail::is_plain_file_name(shard)) {
        return make_error(ErrorCode::kFormat, "%s: weight_map entry '%.*s' names '%.*s', not a plain file name in the "
                          "model folder", file, static_cast<int>(entry.key.size()), entry.key.data(),
                          static_cast<int>(shard.size()), shard.data());
      }
      map->emplace_back(std::string(entry.key), std::string(shard));
      if (std::find(shard_files->begin(), shard_files->end(), shard) == shard_files->end()) {
        shard_files->emplace_back(shard);
      }
    }
    if (shard_files->empty()) return make_error(ErrorCode::kFormat, "%s: weight_map is empty", file);
    return {};
  }

  static Expected<ModelFiles> open_consolidated(const std::string& folder, FileAccess access,
                                                const ReadProgress& progress) {
    using model_files_detail::join_path;
    ModelFiles model;
    model.format_ = ModelFormat::kConsolidated;
    model.path_ = folder;
    const std::string params_path = join_path(folder, "params.json");
    Expected<std::string> params_text = model_files_detail::read_small_file(params_path);
    if (!params_text) return params_text.error();
    Expected<ModelConfig> config = parse_mistral_params(*params_text, params_path);
    if (!config) return config.error();
    model.config_ = std::move(config.value());

    // consolidated.safetensors, or consolidated.00.safetensors, consolidated.01.safetensors, ...
    std::vector<std::string> shard_names;
    std::error_code ec;
    std::filesystem::directory_iterator it(folder, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.compare(0, 12, "consolidated") == 0 && model_files_detail::ends_with(name, ".safetensors") &&
          model_files_detail::is_regular_file(it->path().string())) {
        shard_names.push_back(name);
      }
    }
    if (ec) return make_error(ErrorCode::kIo, "%s: cannot list the folder: %s", folder.c_str(), ec.message().c_str());
    if (shard_names.empty()) {
      return make_error(ErrorCode::kMissing, "%s: has params.json but no consolidated*.safetensors (PyTorch .pth "
                        "checkpoints are not supported)", folder.c_str());
    }
    std::sort(shard_names.begin(), shard_names.end());
    std::vector<std::string> shard_paths;
    for (const std::string& name : shard_names) shard_paths.push_back(join_path(folder, name));
    BORA_RETURN_IF_ERROR(model.add_shards(shard_paths, access, progress));
    BORA_RETURN_IF_ERROR(model.build_index());
    return model;
  }

  // Opens every shard; progress counts bytes over all of them, so a caller sees one total.
  Status add_shards(const std::vector<std::string>& paths, FileAccess access, const ReadProgress& progress) {
    struct Shifted {
      const ReadProgress* whole;
      uint64_t before, total;
    } shifted{&progress, 0, 0};
    for (const std::string& path : paths) {
      std::error_code ec;
      const uintmax_t size = std::filesystem::file_size(path, ec);
      if (!ec) shifted.total += static_cast<uint64_t>(size);
    }
    ReadProgress per_file;
    if (progress.callback != nullptr) {
      per_file.user_data = &shifted;
      per_file.callback = [](uint64_t done, uint64_t file_total, void* user_data) {
        const Shifted* s = static_cast<const Shifted*>(user_data);
        const uint64_t so_far = s->before + done;
        return s->whole->report(so_far, std::max(s->total, s->before + file_total));
      };
    }
    for (const std::string& path : paths) {
      Expected<SafetensorsFile> shard = SafetensorsFile::open(path, access, per_file);
      if (!shard) return shard.error();
      shifted.before += shard->file_size();
      shards_.push_back(std::move(shard.value()));
    }
    return {};
  }

  // Called once all shards are in place: the pointers stored here point into each shard's tensor
  // vector, whose storage survives moves of the shard and of this object.
  Status build_index() {
    index_.clear();
    for (const SafetensorsFile& shard : shards_) {
      for (const TensorView& t : shard.tensors()) {
        if (!index_.emplace(t.name, &t).second) {
          return make_error(ErrorCode::kFormat, "%s: tensor '%s' also appears in another shard", shard.name().c_str(),
                            t.name.c_str());
        }
      }
    }
    return {};
  }

  bool shard_holds(const std::string& shard_path, const TensorView* view) const {
    for (const SafetensorsFile& shard : shards_) {
      if (shard.name() == shard_path) return shard.find_tensor(view->name) == view;
    }
    return false;
  }

  ModelFormat format_ = ModelFormat::kGguf;
  ModelConfig config_;
  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::vector<SafetensorsFile> shards_;
  std::unordered_map<std::string, const TensorView*> index_;
  std::shared_ptr<const uint8_t> owned_bytes_;  // from_gguf_bytes() only
};

}  // namespace bora

#endif  // BORA_IO_MODEL_FILES_HPP
