// Why this file exists: Mistral ships its tokenizers as SentencePiece tokenizer.model files, which are
// protobuf messages; this small wire-format reader takes the pieces and flags bora needs, without a
// protobuf dependency, and turns hostile bytes into errors rather than crashes.
#ifndef BORA_IO_SENTENCEPIECE_MODEL_HPP
#define BORA_IO_SENTENCEPIECE_MODEL_HPP

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/bytes.hpp"
#include "bora/base/expected.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/vocabulary.hpp"

namespace bora {

namespace sentencepiece_detail {

// Field numbers from sentencepiece_model.proto (proto2).
namespace model_proto {
constexpr uint32_t kPieces = 1;
constexpr uint32_t kTrainerSpec = 2;
constexpr uint32_t kNormalizerSpec = 3;
constexpr uint32_t kDenormalizerSpec = 5;
}  // namespace model_proto
namespace piece_proto {
constexpr uint32_t kPiece = 1;
constexpr uint32_t kScore = 2;
constexpr uint32_t kType = 3;
}  // namespace piece_proto
namespace trainer_proto {
constexpr uint32_t kModelType = 3;  // 1 UNIGRAM (the default), 2 BPE, 3 WORD, 4 CHAR
constexpr uint32_t kTreatWhitespaceAsSuffix = 24;
constexpr uint32_t kSplitDigits = 25;
constexpr uint32_t kByteFallback = 35;
constexpr uint32_t kUnkSurface = 44;
constexpr uint32_t kUnkPiece = 45;
constexpr uint32_t kBosPiece = 46;
constexpr uint32_t kEosPiece = 47;
constexpr uint32_t kPadPiece = 48;
}  // namespace trainer_proto
namespace normalizer_proto {
constexpr uint32_t kName = 1;
constexpr uint32_t kPrecompiledCharsmap = 2;
constexpr uint32_t kAddDummyPrefix = 3;
constexpr uint32_t kRemoveExtraWhitespaces = 4;
constexpr uint32_t kEscapeWhitespaces = 5;
}  // namespace normalizer_proto

constexpr int kModelTypeBpe = 2;

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Reads one message's bytes; every read is checked against the end of that message, and errors name
// the offset in the whole file.
class WireReader {
 public:
  WireReader(const uint8_t* begin, const uint8_t* end, const uint8_t* file_start, const std::string* file_name)
      : cursor_(begin), end_(end), file_start_(file_start), file_name_(file_name) {}

  bool at_end() const { return cursor_ >= end_; }

  Status read_varint(uint64_t* value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (cursor_ >= end_) return error("a varint runs past the end of its message");
      const uint8_t byte = *cursor_++;
      result |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return {};
      }
      if (shift == 63) break;
    }
    return error("a varint is longer than 10 bytes");
  }

  Status read_tag(uint32_t* field, uint32_t* wire_type) {
    uint64_t tag = 0;
    BORA_RETURN_IF_ERROR(read_varint(&tag));
    *wire_type = static_cast<uint32_t>(tag & 7);
    const uint64_t number = tag >> 3;
    if (number == 0 || number > 0x1FFFFFFF) return error("invalid field number");
    *field = static_cast<uint32_t>(number);
    return {};
  }

  Status read_length_delimited(const uint8_t** data, size_t* size) {
    uint64_t length = 0;
    BORA_RETURN_IF_ERROR(read_varint(&length));
    const uint64_t available = static_cast<uint64_t>(end_ - cursor_);
    if (length > available) {
      return error_with_numbers("a field claims %llu bytes but its message has %llu left", length, available);
    }
    *data = cursor_;
    *size = static_cast<size_t>(length);
    cursor_ += length;
    return {};
  }

  Status read_fixed32(uint32_t* value) {
    const uint8_t* bytes = nullptr;
    BORA_RETURN_IF_ERROR(take_fixed32(&bytes));
    *value = bytes_detail::load_le_u32(bytes);
    return {};
  }

  Status read_float(uint32_t wire_type, const char* field_name, float* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kFixed32, field_name));
    const uint8_t* bytes = nullptr;
    BORA_RETURN_IF_ERROR(take_fixed32(&bytes));
    *value = bytes_detail::load_le_f32(bytes);
    return {};
  }

  Status skip(uint32_t wire_type) {
    switch (wire_type) {
      case kVarint: {
        uint64_t ignored = 0;
        return read_varint(&ignored);
      }
      case kFixed64:
        if (end_ - cursor_ < 8) return error("a 64-bit field runs past the end of its message");
        cursor_ += 8;
        return {};
      case kLengthDelimited: {
        const uint8_t* data = nullptr;
        size_t size = 0;
        return read_length_delimited(&data, &size);
      }
      case kFixed32: {
        uint32_t ignored = 0;
        return read_fixed32(&ignored);
      }
      default:
        return error("unsupported wire type (groups or garbage)");
    }
  }

  Status expect(uint32_t wire_type, uint32_t expected, const char* field_name) {
    if (wire_type == expected) return {};
    return error(std::string("field '") + field_name + "' has the wrong wire type");
  }

  Status read_bool(uint32_t wire_type, const char* field_name, bool* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kVarint, field_name));
    uint64_t raw = 0;
    BORA_RETURN_IF_ERROR(read_varint(&raw));
    *value = raw != 0;
    return {};
  }

  Status read_int32(uint32_t wire_type, const char* field_name, int64_t* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kVarint, field_name));
    uint64_t raw = 0;
    BORA_RETURN_IF_ERROR(read_varint(&raw));
    *value = static_cast<int64_t>(raw);  // negative int32 values are sign-extended to 64 bits
    return {};
  }

  Status read_string(uint32_t wire_type, const char* field_name, std::string* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kLengthDelimited, field_name));
    const uint8_t* data = nullptr;
    size_t size = 0;
    BORA_RETURN_IF_ERROR(read_length_delimited(&data, &size));
    value->assign(reinterpret_cast<const char*>(data), size);
    return {};
  }

  WireReader sub_reader(const uint8_t* data, size_t size) const {
    return WireReader(data, data + size, file_start_, file_name_);
  }

  Error error(const std::string& what) const {
    return make_error(ErrorCode::kFormat, "%s: SentencePiece model, offset %lld: %s", file_name_->c_str(),
                      static_cast<long long>(cursor_ - file_start_), what.c_str());
  }

 private:
  Status take_fixed32(const uint8_t** bytes) {
    if (end_ - cursor_ < 4) return error("a 32-bit field runs past the end of its message");
    *bytes = cursor_;
    cursor_ += 4;
    return {};
  }

  Error error_with_numbers(const char* fmt, uint64_t a, uint64_t b) const {
    char buffer[160];
    std::snprintf(buffer, sizeof(buffer), fmt, static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
    return error(buffer);
  }

  const uint8_t* cursor_;
  const uint8_t* end_;
  const uint8_t* file_start_;
  const std::string* file_name_;
};

inline Status parse_piece(WireReader reader, Vocabulary* vocab) {
  std::string piece;
  float score = 0.0f;
  int64_t type = token_type::kNormal;  // proto default
  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    if (field == piece_proto::kPiece) {
      BORA_RETURN_IF_ERROR(reader.read_string(wire, "piece", &piece));
    } else if (field == piece_proto::kScore) {
      BORA_RETURN_IF_ERROR(reader.read_float(wire, "score", &score));
    } else if (field == piece_proto::kType) {
      BORA_RETURN_IF_ERROR(reader.read_int32(wire, "type", &type));
      if (!token_type::is_valid(static_cast<int32_t>(type)) || type != static_cast<int32_t>(type)) {
        return reader.error("piece " + std::to_string(vocab->pieces.size()) + " has unknown type " +
                            std::to_string(type));
      }
    } else {
      BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }
  vocab->pieces.push_back(std::move(piece));
  vocab->scores.push_back(score);
  vocab->types.push_back(static_cast<int32_t>(type));
  return {};
}

struct SpecialPieces {
  std::string unk = "<unk>";
  std::string bos = "<s>";
  std::string eos = "</s>";
  std::string pad = "<pad>";
};

inline Status parse_trainer_spec(WireReader reader, Vocabulary* vocab, SpecialPieces* specials, int64_t* model_type,
                                 bool* whitespace_as_suffix) {
  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    switch (field) {
      case trainer_proto::kModelType:
        BORA_RETURN_IF_ERROR(reader.read_int32(wire, "model_type", model_type));
        break;
      case trainer_proto::kTreatWhitespaceAsSuffix:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "treat_whitespace_as_suffix", whitespace_as_suffix));
        break;
      case trainer_proto::kSplitDigits:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "split_digits", &vocab->split_digits));
        break;
      case trainer_proto::kByteFallback:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "byte_fallback", &vocab->byte_fallback));
        break;
      case trainer_proto::kUnkSurface:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "unk_surface", &vocab->unk_surface));
        break;
      case trainer_proto::kUnkPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "unk_piece", &specials->unk));
        break;
      case trainer_proto::kBosPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "bos_piece", &specials->bos));
        break;
      case trainer_proto::kEosPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "eos_piece", &specials->eos));
        break;
      case trainer_proto::kPadPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "pad_piece", &specials->pad));
        break;
      default:
        BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }
  return {};
}

struct NormalizerSpec {
  std::string name;
  size_t charsmap_bytes = 0;
  bool add_dummy_prefix = true;  // proto2 defaults
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

inline Status parse_normalizer_spec(WireReader reader, NormalizerSpec* spec) {
  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    switch (field) {
      case normalizer_proto::kName:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "name", &spec->name));
        break;
      case normalizer_proto::kPrecompiledCharsmap: {
        BORA_RETURN_IF_ERROR(reader.expect(wire, kLengthDelimited, "precompiled_charsmap"));
        const uint8_t* data = nullptr;
        BORA_RETURN_IF_ERROR(reader.read_length_delimited(&data, &spec->charsmap_bytes));
        break;
      }
      case normalizer_proto::kAddDummyPrefix:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "add_dummy_prefix", &spec->add_dummy_prefix));
        break;
      case normalizer_proto::kRemoveExtraWhitespaces:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "remove_extra_whitespaces", &spec->remove_extra_whitespaces));
        break;
      case normalizer_proto::kEscapeWhitespaces:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "escape_whitespaces", &spec->escape_whitespaces));
        break;
      default:
        BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }
  return {};
}

// SentencePiece finds its special ids by piece string and type, not from the trainer's *_id fields.
inline int32_t find_piece_of_type(const Vocabulary& vocab, const std::string& piece, int32_t type) {
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == type && vocab.pieces[i] == piece) return static_cast<int32_t>(i);
  }
  return -1;
}

}  // namespace sentencepiece_detail

// Parses a serialized sentencepiece.ModelProto. Unknown fields are skipped; what bora cannot honour
// (a Unigram model, a precompiled normalization rule, whitespace-as-suffix) is reported as kUnsupported.
inline Expected<Vocabulary> parse_sentencepiece_model(const uint8_t* data, size_t size, const std::string& name) {
  using namespace sentencepiece_detail;
  if (data == nullptr && size != 0) return make_error(ErrorCode::kInvalidArgument, "%s: null data", name.c_str());
  static const uint8_t kEmpty[1] = {0};
  const uint8_t* begin = data != nullptr ? data : kEmpty;
  WireReader reader(begin, begin + size, begin, &name);

  Vocabulary vocab;
  vocab.source = name;
  vocab.byte_fallback = false;  // proto2 defaults until the trainer spec says otherwise
  vocab.split_digits = false;
  SpecialPieces specials;
  NormalizerSpec normalizer;
  NormalizerSpec denormalizer;
  int64_t model_type = 1;
  bool whitespace_as_suffix = false;
  bool saw_trainer_spec = false;

  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    if (field == model_proto::kPieces || field == model_proto::kTrainerSpec || field == model_proto::kNormalizerSpec ||
        field == model_proto::kDenormalizerSpec) {
      BORA_RETURN_IF_ERROR(reader.expect(wire, kLengthDelimited, "ModelProto message field"));
      const uint8_t* message = nullptr;
      size_t message_size = 0;
      BORA_RETURN_IF_ERROR(reader.read_length_delimited(&message, &message_size));
      WireReader sub = reader.sub_reader(message, message_size);
      if (field == model_proto::kPieces) {
        BORA_RETURN_IF_ERROR(parse_piece(sub, &vocab));
      } else if (field == model_proto::kTrainerSpec) {
        saw_trainer_spec = true;
        BORA_RETURN_IF_ERROR(parse_trainer_spec(sub, &vocab, &specials, &model_type, &whitespace_as_suffix));
      } else if (field == model_proto::kNormalizerSpec) {
        BORA_RETURN_IF_ERROR(parse_normalizer_spec(sub, &normalizer));
      } else {
        BORA_RETURN_IF_ERROR(parse_normalizer_spec(sub, &denormalizer));
      }
    } else {
      BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }

  if (vocab.pieces.empty()) return make_error(ErrorCode::kFormat, "%s: SentencePiece model has no pieces", name.c_str());
  if (!saw_trainer_spec) {
    return make_error(ErrorCode::kFormat, "%s: SentencePiece model has no trainer_spec", name.c_str());
  }
  if (model_type != kModelTypeBpe) {
    return make_error(ErrorCode::kUnsupported, "%s: SentencePiece model_type %lld; bora implements BPE (2) only",
                      name.c_str(), static_cast<long long>(model_type));
  }
  if (normalizer.charsmap_bytes != 0 || denormalizer.charsmap_bytes != 0) {
    return make_error(ErrorCode::kUnsupported, "%s: normalization rule '%s' (precompiled charsmap) is not supported",
                      name.c_str(), normalizer.name.c_str());
  }
  if (whitespace_as_suffix) {
    return make_error(ErrorCode::kUnsupported, "%s: treat_whitespace_as_suffix is not supported", name.c_str());
  }
  vocab.normalizer_name = normalizer.name.empty() ? "identity" : normalizer.name;
  vocab.add_dummy_prefix = normalizer.add_dummy_prefix;
  vocab.remove_extra_whitespaces = normalizer.remove_extra_whitespaces;
  vocab.escape_whitespaces = normalizer.escape_whitespaces;

  int32_t unknown_count = 0;
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == token_type::kUnknown) {
      if (unknown_count++ == 0) vocab.unk_id = static_cast<int32_t>(i);
    }
    if (vocab.types[i] == token_type::kByte && !vocab.byte_fallback) {
      return make_error(ErrorCode::kFormat, "%s: piece %zu is a byte piece but byte_fallback is off", name.c_str(), i);
    }
  }
  if (unknown_count != 1) {
    return make_error(ErrorCode::kFormat, "%s: SentencePiece model needs exactly one <unk> piece, found %d",
                      name.c_str(), unknown_count);
  }
  vocab.bos_id = find_piece_of_type(vocab, specials.bos, token_type::kControl);
  vocab.eos_id = find_piece_of_type(vocab, specials.eos, token_type::kControl);
  vocab.pad_id = find_piece_of_type(vocab, specials.pad, token_type::kControl);
  vocab.add_bos = vocab.bos_id >= 0;
  vocab.add_eos = false;
  BORA_RETURN_IF_ERROR(validate_vocabulary(vocab));
  return vocab;
}

inline Expected<Vocabulary> load_sentencepiece_model(const std::string& path) {
  Expected<MappedFile> file = MappedFile::open(path);
  if (!file) return file.error();
  return parse_sentencepiece_model(file->data(), static_cast<size_t>(file->size()), path);
}

}  // namespace bora

#endif  // BORA_IO_SENTENCEPIECE_MODEL_HPP
