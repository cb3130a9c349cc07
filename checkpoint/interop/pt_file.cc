#include "checkpoint/interop/pt_file.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace interop {
namespace {

using Kind = PickleValue::Kind;

absl::Status Annotate(const absl::Status& status, absl::string_view path,
                      absl::string_view where = "") {
  return absl::Status(status.code(),
                      absl::StrCat(path, ": ", where, status.message()));
}

bool IsStateDict(const PickleValue& value) {
  if (value.kind != Kind::kDict || value.entries.empty()) return false;
  for (const auto& [key, item] : value.entries) {
    if (key->kind != Kind::kString || item->kind != Kind::kTensor) {
      return false;
    }
  }
  return true;
}

std::string KeyName(const PickleValue& key) {
  if (key.kind == Kind::kString) return key.text;
  if (key.kind == Kind::kInt) return absl::StrCat(key.integer);
  return PythonRepr(key);
}

// Names cost their length; a hostile pickle can make few values with long
// paths, so the total is bounded.
constexpr uint64_t kMaxNameBytes = uint64_t{1} << 28;

struct Namer {
  PtNames* names;
  uint64_t bytes = 0;
  bool Charge(const std::string& name) {
    bytes += name.size();
    return bytes <= kMaxNameBytes;
  }
};

bool Walk(const PickleValue& value, const std::string& path, Namer* namer) {
  PtNames* names = namer->names;
  auto join = [&path](absl::string_view part) {
    return path.empty() ? std::string(part) : absl::StrCat(path, "/", part);
  };
  switch (value.kind) {
    case Kind::kTensor:
      names->tensors.push_back({path, value.tensor});
      return namer->Charge(path);
    case Kind::kDict:
    case Kind::kOpaque:
      for (size_t i = 0; i < value.items.size(); ++i) {
        if (!Walk(*value.items[i], join(absl::StrCat(i)), namer)) return false;
      }
      for (const auto& [key, item] : value.entries) {
        if (!Walk(*item, join(KeyName(*key)), namer)) return false;
      }
      return true;
    case Kind::kList:
    case Kind::kTuple:
    case Kind::kSet:
      for (size_t i = 0; i < value.items.size(); ++i) {
        if (!Walk(*value.items[i], join(absl::StrCat(i)), namer)) return false;
      }
      return true;
    default:
      names->values.push_back({path, &value});
      return namer->Charge(path);
  }
}

}  // namespace

bool LooksLikeZip(absl::string_view bytes) {
  return absl::StartsWith(bytes, absl::string_view("PK\x03\x04", 4)) ||
         absl::StartsWith(bytes, absl::string_view("PK\x05\x06", 4));
}

absl::StatusOr<std::unique_ptr<PtFile>> PtFile::Open(
    const std::string& path, const PtReadOptions& options) {
  absl::StatusOr<std::unique_ptr<base::MappedFile>> mapped =
      base::MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  const absl::string_view bytes = (*mapped)->bytes();
  if (!LooksLikeZip(bytes)) {
    if (!bytes.empty() && static_cast<uint8_t>(bytes[0]) == 0x80) {
      return absl::FailedPreconditionError(absl::StrCat(
          path,
          ": a pickle without the zip container: torch.save's legacy format "
          "(PyTorch before 1.6, or _use_new_zipfile_serialization=False), "
          "which is not supported; load it in Python and torch.save it again"));
    }
    return absl::DataLossError(absl::StrCat(
        path, ": not a torch.save file (it does not start as a zip archive)"));
  }
  absl::StatusOr<ZipDirectory> zip = ParseZipArchive(bytes);
  if (!zip.ok()) return Annotate(zip.status(), path);
  if (zip->entries.empty()) {
    return absl::DataLossError(absl::StrCat(path, ": an empty zip archive"));
  }
  auto file = std::unique_ptr<PtFile>(new PtFile());
  file->file_ = *std::move(mapped);
  const std::string& first = zip->entries.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    return absl::DataLossError(absl::StrCat(
        path, ": entry '", first, "' is not inside a root directory"));
  }
  file->root_ = first.substr(0, slash);
  const std::string prefix = file->root_ + "/";
  for (const ZipEntry& entry : zip->entries) {
    if (!absl::StartsWith(entry.name, prefix)) {
      return absl::DataLossError(
          absl::StrCat(path, ": entry '", entry.name,
                       "' lies outside the archive's root '", prefix, "'"));
    }
  }
  auto record = [&](absl::string_view name) -> const ZipEntry* {
    return zip->Find(absl::StrCat(prefix, name));
  };
  auto payload = [&](const ZipEntry& entry) {
    return bytes.substr(entry.data_offset, entry.size);
  };
  auto checked = [&](const ZipEntry& entry) -> absl::Status {
    if (!options.check_crc) return absl::OkStatus();
    return CheckZipEntryCrc(entry, payload(entry));
  };
  const ZipEntry* data_pkl = record("data.pkl");
  if (data_pkl == nullptr) {
    if (record("constants.pkl") != nullptr ||
        zip->Find(absl::StrCat(prefix, "code/")) != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          path,
          ": a TorchScript module, not torch.save data (load it with "
          "torch::jit::load, or export's --architecture)"));
    }
    return absl::DataLossError(
        absl::StrCat(path, ": no record '", prefix, "data.pkl'"));
  }
  for (const ZipEntry& entry : zip->entries) {
    if (absl::StartsWith(entry.name, prefix + "code/")) {
      return absl::FailedPreconditionError(absl::StrCat(
          path,
          ": a TorchScript module, not torch.save data (load it with "
          "torch::jit::load, or export's --architecture)"));
    }
  }
  if (data_pkl->size > kMaxPtPickleBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": data.pkl has ", data_pkl->size,
                     " bytes, more than the limit of ", kMaxPtPickleBytes));
  }
  for (absl::string_view small : {"version", "byteorder"}) {
    const ZipEntry* entry = record(small);
    if (entry == nullptr) continue;
    if (entry->size > 64) {
      return absl::DataLossError(absl::StrCat(path, ": record '", small,
                                              "' has ", entry->size, " bytes"));
    }
    absl::Status status = checked(*entry);
    if (!status.ok()) return Annotate(status, path);
    const std::string text(absl::StripAsciiWhitespace(payload(*entry)));
    if (small == "version") {
      file->version_ = text;
    } else if (text != "little") {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": byte order '", text,
                       "': only little-endian files are supported"));
    }
  }
  absl::Status status = checked(*data_pkl);
  if (!status.ok()) return Annotate(status, path);
  absl::StatusOr<TorchPickle> pickle =
      UnpickleTorch(payload(*data_pkl), options.pickle);
  if (!pickle.ok()) return Annotate(pickle.status(), path, "data.pkl ");
  file->pickle_ = *std::move(pickle);
  for (const TorchStorage& storage : file->pickle_.storages()) {
    const ZipEntry* entry = record(absl::StrCat("data/", storage.key));
    if (entry == nullptr) {
      return absl::DataLossError(absl::StrCat(path, ": storage '", storage.key,
                                              "' has no record '", prefix,
                                              "data/", storage.key, "'"));
    }
    if (entry->size != storage.bytes) {
      return absl::DataLossError(absl::StrCat(
          path, ": storage '", storage.key, "' should hold ", storage.bytes,
          " bytes but its record has ", entry->size));
    }
    status = checked(*entry);
    if (!status.ok()) return Annotate(status, path);
    file->storage_bytes_.push_back(payload(*entry));
  }
  return file;
}

absl::string_view PtFile::TensorBytes(const TorchTensor& tensor,
                                      std::string* scratch) const {
  const absl::string_view storage = storage_bytes_[tensor.storage];
  const uint64_t itemsize = tensor.dtype->itemsize;
  const uint64_t numel = static_cast<uint64_t>(tensor.numel());
  if (tensor.contiguous()) {
    return storage.substr(tensor.offset * itemsize, numel * itemsize);
  }
  scratch->resize(numel * itemsize);
  // An odometer over the index; the last dimension is the innermost loop.
  const size_t rank = tensor.shape.size();
  std::vector<int64_t> index(rank, 0);
  char* out = scratch->data();
  const int64_t inner = tensor.shape[rank - 1];
  const int64_t inner_stride = tensor.strides[rank - 1];
  for (uint64_t done = 0; done < numel; done += inner) {
    int64_t element = tensor.offset;
    for (size_t d = 0; d + 1 < rank; ++d) {
      element += index[d] * tensor.strides[d];
    }
    for (int64_t i = 0; i < inner; ++i) {
      std::memcpy(out, storage.data() + (element + i * inner_stride) * itemsize,
                  itemsize);
      out += itemsize;
    }
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < tensor.shape[d]) break;
      index[d] = 0;
    }
  }
  return *scratch;
}

absl::StatusOr<PtNames> NameContents(const TorchPickle& pickle) {
  PtNames names;
  Namer namer{&names};
  const PickleValue& root = pickle.root();
  const PickleValue* model = nullptr;
  if (root.kind == Kind::kDict && !IsStateDict(root)) {
    for (const char* key : {"state_dict", "model_state_dict", "model",
                            "model_state", "net", "network"}) {
      const PickleValue* candidate = root.Get(key);
      if (candidate != nullptr && IsStateDict(*candidate)) {
        model = candidate;
        names.model_key = key;
        break;
      }
    }
  }
  bool ok = true;
  if (model == nullptr) {
    ok = Walk(root, "", &namer);
  } else {
    ok = Walk(*model, "", &namer);
    for (const auto& [key, item] : root.entries) {
      if (!ok) break;
      if (item != model) ok = Walk(*item, KeyName(*key), &namer);
    }
  }
  if (!ok) {
    return absl::DataLossError(absl::StrCat(
        "the names of the file's values exceed ", kMaxNameBytes, " bytes"));
  }
  return names;
}

std::string PythonRepr(const PickleValue& value) {
  switch (value.kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return value.boolean ? "True" : "False";
    case Kind::kInt:
      return absl::StrCat(value.integer);
    case Kind::kBigInt:
      return value.text;
    case Kind::kFloat: {
      if (std::isnan(value.number)) return "nan";
      if (std::isinf(value.number)) return value.number > 0 ? "inf" : "-inf";
      // Shortest text that reads back as the same double, as Python's repr.
      for (int precision = 1; precision <= 17; ++precision) {
        std::string text = absl::StrFormat("%.*g", precision, value.number);
        if (std::strtod(text.c_str(), nullptr) == value.number) {
          if (text.find_first_of(".en") == std::string::npos) text += ".0";
          return text;
        }
      }
      return absl::StrFormat("%.17g", value.number);
    }
    case Kind::kString:
      return absl::StrCat("'", value.text, "'");
    case Kind::kBytes:
      return absl::StrCat("<", value.text.size(), " bytes>");
    case Kind::kDtype:
      return absl::StrCat("torch.", value.dtype->name);
    case Kind::kDevice:
      return absl::StrCat("device('", value.text, "')");
    default:
      return absl::StrCat("<", DescribeKind(value), ">");
  }
}

}  // namespace interop
