#include "checkpoint/interop/tensor_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "checkpoint/digest.h"
#include "checkpoint/interop/pt_file.h"
#include "checkpoint/interop/safetensors.h"
#include "checkpoint/reader.h"
#include "tools/base/endian.h"
#include "tools/base/files.h"
#include "tools/base/status.h"

namespace interop {
namespace {

// safetensors dtypes that torch knows by another name; the rest keep theirs.
std::string TorchNameOfSafetensorsDtype(const SafetensorsEntry& entry) {
  if (entry.checkpoint_dtype.has_value()) {
    return TorchDtypeOf(*entry.checkpoint_dtype).name;
  }
  static const std::pair<const char*, const char*> kNames[] = {
      {"U16", "uint16"},
      {"U32", "uint32"},
      {"U64", "uint64"},
      {"C64", "complex64"},
      {"F8_E4M3", "float8_e4m3fn"},
      {"F8_E5M2", "float8_e5m2"},
      {"F8_E8M0", "float8_e8m0fnu"},
  };
  for (const auto& [safetensors, torch] : kNames) {
    if (entry.dtype == safetensors) return torch;
  }
  return entry.dtype;
}

bool LooksLikeSafetensors(absl::string_view start) {
  return start.size() > 8 && start[8] == '{' &&
         base::GetLittleEndian(start.data(), 8) >= 2;
}

SourceValue ToSourceValue(std::string name, const PickleValue& value) {
  SourceValue out;
  out.name = std::move(name);
  out.repr = PythonRepr(value);
  switch (value.kind) {
    case PickleValue::Kind::kNone:
      out.kind = SourceValue::Kind::kNone;
      break;
    case PickleValue::Kind::kBool:
      out.kind = SourceValue::Kind::kBool;
      out.integer = value.boolean ? 1 : 0;
      break;
    case PickleValue::Kind::kInt:
      out.kind = SourceValue::Kind::kInt;
      out.integer = value.integer;
      break;
    case PickleValue::Kind::kFloat:
      out.kind = SourceValue::Kind::kFloat;
      out.number = value.number;
      break;
    case PickleValue::Kind::kString:
      out.kind = SourceValue::Kind::kString;
      out.text = value.text;
      break;
    default:
      out.kind = SourceValue::Kind::kOther;
      out.text = DescribeKind(value);
      break;
  }
  return out;
}

// The inverse of PythonRepr for what ForeignMetadata keeps of a training
// dict's values in our checkpoint (user["python/<name>"]): None, bools,
// 64-bit ints, floats and strings come back typed; anything else does not.
std::optional<SourceValue> ParsePythonRepr(std::string name,
                                           const std::string& repr) {
  SourceValue value;
  value.name = std::move(name);
  value.repr = repr;
  if (repr == "None") {
    value.kind = SourceValue::Kind::kNone;
  } else if (repr == "True" || repr == "False") {
    value.kind = SourceValue::Kind::kBool;
    value.integer = repr == "True";
  } else if (absl::SimpleAtoi(repr, &value.integer)) {
    value.kind = SourceValue::Kind::kInt;
  } else if (repr.size() >= 2 && repr.front() == '\'' && repr.back() == '\'') {
    value.kind = SourceValue::Kind::kString;
    value.text = repr.substr(1, repr.size() - 2);
  } else if (repr.find_first_of(".eni") != std::string::npos &&
             absl::SimpleAtod(repr, &value.number)) {
    value.kind = SourceValue::Kind::kFloat;
  } else {
    return std::nullopt;
  }
  return value;
}

constexpr char kPythonValuePrefix[] = "python/";
constexpr char kModelKeyField[] = "torch.save/model_key";

}  // namespace

struct TensorSource::Formats {
  std::unique_ptr<PtFile> pt;
  std::unique_ptr<SafetensorsFile> safetensors;
};

absl::string_view SourceFormatName(SourceFormat format) {
  switch (format) {
    case SourceFormat::kCheckpoint:
      return "checkpoint";
    case SourceFormat::kTorchSave:
      return "torch.save";
    case SourceFormat::kSafetensors:
      return "safetensors";
  }
  return "?";
}

TensorSource::~TensorSource() = default;

absl::StatusOr<std::unique_ptr<TensorSource>> TensorSource::Open(
    const std::string& path, const SourceOptions& options) {
  std::unique_ptr<TensorSource> source(new TensorSource());
  source->path_ = path;
  source->formats_ = std::make_unique<Formats>();
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    return base::ErrnoToStatus(errno, "open", path);
  }
  if (S_ISDIR(info.st_mode)) {
    checkpoint::ReaderOptions reader_options;
    reader_options.use_mmap = true;
    ASSIGN_OR_RETURN(source->checkpoint_,
                     checkpoint::CheckpointReader::Open(path, reader_options));
    const checkpoint::proto::Manifest& manifest =
        source->checkpoint_->manifest();
    for (const checkpoint::proto::TensorEntry& entry : manifest.tensors()) {
      source->tensors_.push_back(
          {entry.name(), TorchDtypeOf(entry.dtype()).name, entry.dtype(),
           std::vector<int64_t>(entry.shape().begin(), entry.shape().end()),
           entry.size_bytes()});
    }
    source->metadata_.insert(manifest.metadata().user().begin(),
                             manifest.metadata().user().end());
    if (auto it = source->metadata_.find(kModelKeyField);
        it != source->metadata_.end()) {
      source->model_key_ = it->second;
    }
    // Values a training dict brought with it (`ckpt convert`), in order.
    for (const auto& [key, repr] : source->metadata_) {
      absl::string_view name = key;
      if (!absl::ConsumePrefix(&name, kPythonValuePrefix)) continue;
      std::optional<SourceValue> value =
          ParsePythonRepr(std::string(name), repr);
      if (value.has_value()) source->values_.push_back(*std::move(value));
    }
  } else {
    // The file's first bytes, through a mapping that follows symlinks (a
    // Hugging Face cache is made of them) and refuses FIFOs without
    // blocking; the format's own reader maps it again.
    ASSIGN_OR_RETURN(std::unique_ptr<base::MappedFile> file,
                     base::MappedFile::Open(path));
    const absl::string_view start = file->bytes().substr(0, 9);
    // safetensors before the pickle byte: a header length's low byte may
    // be 0x80.
    if (LooksLikeSafetensors(start) && !LooksLikeZip(start)) {
      source->format_ = SourceFormat::kSafetensors;
      ASSIGN_OR_RETURN(source->formats_->safetensors,
                       SafetensorsFile::Open(path));
      const SafetensorsFile& file = *source->formats_->safetensors;
      for (const SafetensorsEntry& entry : file.entries()) {
        source->tensors_.push_back(
            {entry.name, TorchNameOfSafetensorsDtype(entry),
             entry.checkpoint_dtype, entry.shape, entry.end - entry.begin});
      }
      source->metadata_ = file.metadata();
    } else if (LooksLikeZip(start) ||
               (!start.empty() && static_cast<uint8_t>(start[0]) == 0x80)) {
      source->format_ = SourceFormat::kTorchSave;
      PtReadOptions pt_options;
      pt_options.pickle.lenient = options.lenient;
      ASSIGN_OR_RETURN(source->formats_->pt, PtFile::Open(path, pt_options));
      const PtFile& pt = *source->formats_->pt;
      absl::StatusOr<PtNames> names = NameContents(pt.pickle());
      if (!names.ok()) return base::Annotate(names.status(), path);
      for (const PtNamedTensor& named : names->tensors) {
        const TorchTensor& tensor = pt.pickle().tensors()[named.tensor];
        source->tensors_.push_back(
            {named.name, tensor.dtype->name, tensor.dtype->checkpoint_dtype,
             tensor.shape,
             static_cast<uint64_t>(tensor.numel()) *
                 static_cast<uint64_t>(tensor.dtype->itemsize)});
        source->pt_tensor_index_.push_back(named.tensor);
      }
      for (const PtNamedValue& named : names->values) {
        source->values_.push_back(ToSourceValue(named.name, *named.value));
      }
      source->model_key_ = names->model_key;
      source->placeholders_ = pt.pickle().placeholders();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          path,
          ": not a checkpoint: neither a checkpoint directory, a torch.save "
          "file (.pt, .pth, .ckpt) nor a safetensors file"));
    }
  }
  for (size_t i = 0; i < source->tensors_.size(); ++i) {
    if (!source->by_name_.emplace(source->tensors_[i].name, i).second) {
      return absl::DataLossError(absl::StrCat(path, ": two tensors are named '",
                                              source->tensors_[i].name, "'"));
    }
  }
  return source;
}

const SourceTensor* TensorSource::Find(absl::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<absl::string_view> TensorSource::TensorBytes(
    size_t index, std::string* scratch) const {
  const SourceTensor& tensor = tensors_.at(index);
  switch (format_) {
    case SourceFormat::kCheckpoint: {
      const checkpoint::proto::TensorEntry* entry =
          checkpoint_->FindTensor(tensor.name);
      ASSIGN_OR_RETURN(absl::Span<const char> bytes,
                       checkpoint_->MappedTensor(*entry));
      return absl::string_view(bytes.data(), bytes.size());
    }
    case SourceFormat::kTorchSave: {
      const PtFile& pt = *formats_->pt;
      return pt.TensorBytes(pt.pickle().tensors()[pt_tensor_index_[index]],
                            scratch);
    }
    case SourceFormat::kSafetensors: {
      const SafetensorsFile& file = *formats_->safetensors;
      absl::Span<const char> bytes = file.Bytes(*file.Find(tensor.name));
      return absl::string_view(bytes.data(), bytes.size());
    }
  }
  return absl::InternalError("unknown format");
}

absl::StatusOr<std::string> TensorSource::Verify() const {
  uint64_t bytes = 0;
  for (const SourceTensor& tensor : tensors_) bytes += tensor.size_bytes;
  switch (format_) {
    case SourceFormat::kCheckpoint:
      RETURN_IF_ERROR(checkpoint_->VerifyAll());
      return absl::StrCat("OK: ", tensors_.size(), " tensors, ", bytes,
                          " bytes verified\n");
    case SourceFormat::kTorchSave:
      // Open checked the CRC-32 of data.pkl and of every storage record,
      // and every tensor against its storage.
      return absl::StrCat(
          "OK: ", tensors_.size(), " tensors, ", bytes,
          " bytes (torch.save file: the CRC-32 of every record and the "
          "structure verified; the format has no stronger checksum)\n");
    case SourceFormat::kSafetensors:
      return absl::StrCat(
          "OK: ", tensors_.size(), " tensors, ", bytes,
          " bytes (safetensors file: header rules and exact layout verified; "
          "the format carries no checksum, so the tensor bytes cannot be)\n");
  }
  return absl::InternalError("unknown format");
}

absl::StatusOr<std::string> TensorSource::Digest() const {
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [this](size_t a, size_t b) {
    return tensors_[a].name < tensors_[b].name;
  });
  checkpoint::TensorDigester digester(order.size());
  std::string scratch;
  for (size_t index : order) {
    const SourceTensor& tensor = tensors_[index];
    BeginDigest(digester, tensor.name, tensor);
    absl::StatusOr<absl::string_view> bytes = TensorBytes(index, &scratch);
    if (!bytes.ok()) {
      return base::Annotate(bytes.status(), absl::StrCat("digest: ", path_));
    }
    digester.Update(absl::MakeConstSpan(bytes->data(), bytes->size()));
  }
  return digester.Finish();
}

void BeginDigest(checkpoint::TensorDigester& digester, absl::string_view name,
                 const SourceTensor& tensor) {
  digester.Begin(
      name,
      tensor.checkpoint_dtype.value_or(checkpoint::proto::DTYPE_UNSPECIFIED),
      tensor.dtype, tensor.shape, tensor.size_bytes);
}

checkpoint::proto::Metadata ForeignMetadata(const TensorSource& source,
                                            bool include_values) {
  checkpoint::proto::Metadata metadata;
  auto& user = *metadata.mutable_user();
  if (source.format() == SourceFormat::kSafetensors) {
    for (const auto& [key, text] : source.metadata()) {
      user[absl::StrCat("safetensors/", key)] = text;
    }
  }
  if (!source.model_key().empty()) user[kModelKeyField] = source.model_key();
  if (!include_values) return metadata;
  for (const SourceValue& value : source.values()) {
    user[absl::StrCat(kPythonValuePrefix, value.name)] = value.repr;
    if (value.kind != SourceValue::Kind::kInt) continue;
    if (value.name == "epoch") {
      metadata.mutable_progress()->set_epoch(value.integer);
    } else if (value.name == "global_step") {
      metadata.mutable_progress()->set_global_step(value.integer);
    }
  }
  return metadata;
}

}  // namespace interop
