#include "checkpoint/interop/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tools/base/endian.h"
#include "tools/base/files.h"
#include "tools/base/status.h"

namespace interop {
namespace {

using checkpoint::proto::DType;
using Json = nlohmann::json;

struct DtypeInfo {
  const char* name;
  int bits;
  std::optional<DType> checkpoint_dtype;
};

// Every dtype of the reference implementation (0.8), with its size.
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 8, checkpoint::proto::BOOL},
    {"U8", 8, checkpoint::proto::UINT8},
    {"I8", 8, checkpoint::proto::INT8},
    {"I16", 16, checkpoint::proto::INT16},
    {"U16", 16, std::nullopt},
    {"F16", 16, checkpoint::proto::FLOAT16},
    {"BF16", 16, checkpoint::proto::BFLOAT16},
    {"I32", 32, checkpoint::proto::INT32},
    {"U32", 32, std::nullopt},
    {"F32", 32, checkpoint::proto::FLOAT32},
    {"F64", 64, checkpoint::proto::FLOAT64},
    {"I64", 64, checkpoint::proto::INT64},
    {"U64", 64, std::nullopt},
    {"C64", 64, std::nullopt},
    {"F8_E5M2", 8, std::nullopt},
    {"F8_E4M3", 8, std::nullopt},
    {"F8_E8M0", 8, std::nullopt},
    {"F8_E4M3FNUZ", 8, std::nullopt},
    {"F8_E5M2FNUZ", 8, std::nullopt},
    {"F6_E2M3", 6, std::nullopt},
    {"F6_E3M2", 6, std::nullopt},
    {"F4", 4, std::nullopt},
};

const DtypeInfo* FindDtype(absl::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* FindDtype(DType dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.checkpoint_dtype == dtype) return &info;
  }
  return nullptr;
}

absl::Status Bad(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("safetensors: ", what));
}

// The byte size of `shape` at `bits` per element, or an error.
absl::StatusOr<uint64_t> ByteSize(const std::vector<int64_t>& shape, int bits,
                                  absl::string_view name) {
  uint64_t elements = 1;
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dim),
                               &elements)) {
      return Bad(absl::StrCat("tensor '", name, "': shape overflows"));
    }
  }
  uint64_t total_bits = 0;
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(bits),
                             &total_bits)) {
    return Bad(absl::StrCat("tensor '", name, "': byte size overflows"));
  }
  if (total_bits % 8 != 0) {
    return Bad(absl::StrCat("tensor '", name, "': ", elements,
                            " sub-byte elements do not fill whole bytes"));
  }
  return total_bits / 8;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name,
                                            const Json& value) {
  auto rule = [&](absl::string_view what) {
    return Bad(absl::StrCat("tensor '", name, "': ", what));
  };
  if (!value.is_object()) return rule("entry is not an object");
  SafetensorsEntry entry;
  entry.name = name;
  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) {
    return rule("no \"dtype\" string");
  }
  entry.dtype = dtype->get<std::string>();
  const DtypeInfo* info = FindDtype(entry.dtype);
  if (info == nullptr) return rule(absl::StrCat("unknown dtype ", entry.dtype));
  entry.checkpoint_dtype = info->checkpoint_dtype;
  auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) {
    return rule("no \"shape\" list");
  }
  for (const Json& dim : *shape) {
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return rule("\"shape\" must hold non-negative integers");
    }
    entry.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }
  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return rule("\"data_offsets\" must be two non-negative integers");
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.end < entry.begin) return rule("data_offsets end before begin");
  ASSIGN_OR_RETURN(uint64_t size, ByteSize(entry.shape, info->bits, name));
  if (entry.end - entry.begin != size) {
    return rule(absl::StrCat("data_offsets span ", entry.end - entry.begin,
                             " bytes, dtype and shape need ", size));
  }
  return entry;
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(
    absl::string_view file_start, uint64_t file_size) {
  if (file_size < 8 || file_start.size() < 8) {
    return Bad("shorter than the 8-byte header length");
  }
  const uint64_t header_size = base::GetLittleEndian(file_start.data(), 8);
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Bad(absl::StrCat("header length ", header_size,
                            " is above the limit of ",
                            kMaxSafetensorsHeaderBytes));
  }
  if (header_size > file_size - 8 || header_size > file_start.size() - 8) {
    return Bad(absl::StrCat("header length ", header_size,
                            " runs past the end of the file (", file_size,
                            " bytes)"));
  }
  const absl::string_view text = file_start.substr(8, header_size);
  if (text.empty() || text[0] != '{') {
    return Bad("the header does not begin with '{'");
  }
  // Duplicate keys and nesting deeper than an entry's shape list are
  // refused; nlohmann would keep the last duplicate silently.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  int deepest = 0;
  auto watch = [&](int depth, Json::parse_event_t event, Json& parsed) {
    deepest = std::max(deepest, depth);
    if (event == Json::parse_event_t::object_start) keys.emplace_back();
    if (event == Json::parse_event_t::object_end && !keys.empty()) {
      keys.pop_back();
    }
    if (event == Json::parse_event_t::key && !keys.empty() &&
        !keys.back().insert(parsed.get<std::string>()).second &&
        duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  Json document = Json::parse(text.begin(), text.end(), watch,
                              /*allow_exceptions=*/false);
  if (document.is_discarded() || !document.is_object()) {
    return Bad("the header is not a JSON object (or not valid UTF-8)");
  }
  if (!duplicate.empty()) {
    return Bad(absl::StrCat("the header names '", duplicate, "' twice"));
  }
  if (deepest > 3) return Bad("the header nests deeper than its schema");

  SafetensorsHeader header;
  header.data_start = 8 + header_size;
  for (const auto& [name, value] : document.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Bad("__metadata__ is not an object");
      for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) {
          return Bad(absl::StrCat("__metadata__[", key, "] is not a string"));
        }
        header.metadata[key] = item.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry entry, ParseEntry(name, value));
    header.entries.push_back(std::move(entry));
  }
  std::sort(header.entries.begin(), header.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return std::tie(a.begin, a.end, a.name) <
                     std::tie(b.begin, b.end, b.name);
            });
  uint64_t expected_begin = 0;
  for (const SafetensorsEntry& entry : header.entries) {
    if (entry.begin != expected_begin) {
      return Bad(absl::StrCat(
          "tensor '", entry.name, "' begins at ", entry.begin, ", not at ",
          expected_begin,
          entry.begin < expected_begin ? " (overlap)" : " (a hole)"));
    }
    expected_begin = entry.end;
  }
  if (expected_begin != file_size - header.data_start) {
    return Bad(absl::StrCat(
        "the tensors hold ", expected_begin, " bytes but the file has ",
        file_size - header.data_start, " after the header"));
  }
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  auto annotate = [&path](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat(path, ": ", status.message()));
  };
  // Symlinks are followed (MappedFile): Hugging Face's cache is made of
  // them (snapshots/<rev>/model.safetensors -> ../../blobs/<hash>).
  absl::StatusOr<std::unique_ptr<base::MappedFile>> file =
      base::MappedFile::Open(path);
  if (!file.ok()) return file.status();
  // The parser reads the length field and the header only, each checked
  // against the file's size first.
  absl::StatusOr<SafetensorsHeader> header =
      ParseSafetensorsHeader((*file)->bytes(), (*file)->bytes().size());
  if (!header.ok()) return annotate(header.status());
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, *std::move(header), *std::move(file)));
}

SafetensorsFile::SafetensorsFile(std::string path, SafetensorsHeader header,
                                 std::unique_ptr<base::MappedFile> file)
    : path_(std::move(path)),
      header_(std::move(header)),
      file_(std::move(file)) {}

SafetensorsFile::~SafetensorsFile() = default;

const SafetensorsEntry* SafetensorsFile::Find(absl::string_view name) const {
  for (const SafetensorsEntry& entry : header_.entries) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::Span<const char> SafetensorsFile::Bytes(
    const SafetensorsEntry& entry) const {
  // Offsets were checked against the file size in Open.
  return absl::Span<const char>(
      file_->bytes().data() + header_.data_start + entry.begin,
      entry.end - entry.begin);
}

absl::Status WriteSafetensors(
    const std::string& path, const std::vector<SafetensorsTensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  struct Placed {
    const SafetensorsTensor* tensor;
    const DtypeInfo* info;
  };
  std::vector<Placed> placed;
  std::set<std::string> names;
  for (const SafetensorsTensor& tensor : tensors) {
    auto invalid = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", tensor.name, "': ", what));
    };
    if (tensor.name.empty() || tensor.name == "__metadata__") {
      return invalid("is not a name a safetensors file can hold");
    }
    if (!names.insert(tensor.name).second) return invalid("given twice");
    const DtypeInfo* info = FindDtype(tensor.dtype);
    if (info == nullptr) return invalid("dtype has no safetensors name");
    for (int64_t dim : tensor.shape) {
      if (dim < 0) return invalid("negative dimension");
    }
    absl::StatusOr<uint64_t> size =
        ByteSize(tensor.shape, info->bits, tensor.name);
    if (!size.ok()) return invalid(size.status().message());
    if (*size != tensor.bytes.size()) {
      return invalid(
          absl::StrCat(tensor.bytes.size(), " bytes for a shape of ", *size));
    }
    placed.push_back({&tensor, info});
  }
  // As the reference writer: larger elements first (so each stays aligned
  // to its size), then by name.
  std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    if (a.info->bits != b.info->bits) return a.info->bits > b.info->bits;
    return a.tensor->name < b.tensor->name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Placed& entry : placed) {
    const uint64_t end = offset + entry.tensor->bytes.size();
    header[entry.tensor->name] = {{"dtype", entry.info->name},
                                  {"shape", entry.tensor->shape},
                                  {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": a tensor name or metadata string is not valid UTF-8"));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string file;
  base::AppendLittleEndian(text.size(), 8, &file);
  file += text;
  file.reserve(file.size() + offset);
  for (const Placed& entry : placed) {
    file.append(entry.tensor->bytes.data(), entry.tensor->bytes.size());
  }
  return base::WriteFileAtomically(path, file);
}

}  // namespace interop
