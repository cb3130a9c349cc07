#include "checkpoint/interop/convert.h"

#include <sys/stat.h>

#include <deque>
#include <map>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "checkpoint/digest.h"
#include "checkpoint/interop/pt_writer.h"
#include "checkpoint/interop/safetensors.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "tools/base/files.h"
#include "tools/base/status.h"
#include "tools/base/version.h"

namespace interop {
namespace {

// One tensor to write: where it comes from and what it is called now.
struct Planned {
  size_t index;  // in the source
  std::string name;
  absl::string_view bytes;
};

// Nested dicts along "/" paths for a training dict in a .pt.
class PathTree {
 public:
  PathTree(PickleTree* tree, PickleValue* root) : tree_(tree), root_(root) {}

  // Puts `leaf` at `path`; false when the path runs into another leaf.
  bool Put(const std::string& path, const PickleValue* leaf) {
    std::vector<std::string> parts = absl::StrSplit(path, '/');
    PickleValue* dict = root_;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto [it, inserted] = nodes_.try_emplace({dict, parts[i]}, nullptr);
      if (inserted) {
        it->second = tree_->Dict();
        Insert(dict, parts[i], it->second);
      } else if (it->second == nullptr) {
        return false;  // a leaf is there
      }
      dict = it->second;
    }
    auto [it, inserted] = nodes_.try_emplace({dict, parts.back()}, nullptr);
    if (!inserted) return false;
    Insert(dict, parts.back(), leaf);
    return true;
  }

 private:
  void Insert(PickleValue* dict, const std::string& part,
              const PickleValue* value) {
    int64_t number;
    bool integer =
        !part.empty() && part.size() < 19 && absl::ascii_isdigit(part[0]) &&
        (part == "0" || part[0] != '0') && absl::SimpleAtoi(part, &number);
    dict->entries.emplace_back(
        integer ? tree_->Int(number) : tree_->String(part), value);
  }
  PickleTree* tree_;
  PickleValue* root_;
  // (dict, key) -> child dict, or null for a leaf.
  std::map<std::pair<const PickleValue*, std::string>, PickleValue*> nodes_;
};

const PickleValue* ValueLeaf(PickleTree& tree, const SourceValue& value) {
  switch (value.kind) {
    case SourceValue::Kind::kNone:
      return tree.None();
    case SourceValue::Kind::kBool:
      return tree.Bool(value.integer != 0);
    case SourceValue::Kind::kInt:
      return tree.Int(value.integer);
    case SourceValue::Kind::kFloat:
      return tree.Float(value.number);
    case SourceValue::Kind::kString:
      return tree.String(value.text);
    case SourceValue::Kind::kOther:
      return nullptr;
  }
  return nullptr;
}

bool IsModelName(const std::string& name) {
  return name.find('/') == std::string::npos;
}

absl::Status WriteOurs(const TensorSource& source,
                       const std::vector<Planned>& planned,
                       const std::vector<const SourceValue*>& values,
                       bool keep_state, const std::string& out,
                       ConvertReport* report) {
  ASSIGN_OR_RETURN(std::unique_ptr<checkpoint::CheckpointWriter> writer,
                   checkpoint::CheckpointWriter::Create(out));
  checkpoint::proto::Metadata* metadata = writer->mutable_metadata();
  if (source.checkpoint() != nullptr) {
    *metadata = source.checkpoint()->manifest().metadata();
    if (keep_state) {
      *writer->mutable_training_state() =
          source.checkpoint()->manifest().training_state();
    } else if (source.checkpoint()->manifest().has_training_state()) {
      report->dropped.emplace_back(
          "(training state)",
          "it names tensors, and names were changed or dropped");
    }
  } else {
    // model_only leaves the file's values behind.
    *metadata = ForeignMetadata(source, /*include_values=*/!values.empty());
  }
  metadata->mutable_producer()->set_tool("ckpt convert");
  metadata->mutable_producer()->set_version(project::kVersion);
  (*metadata->mutable_user())["converted_from"] = source.path();
  for (const Planned& tensor : planned) {
    const SourceTensor& from = source.tensors()[tensor.index];
    RETURN_IF_ERROR(writer->AddTensor(
        tensor.name, *from.checkpoint_dtype, from.shape,
        absl::MakeConstSpan(tensor.bytes.data(), tensor.bytes.size())));
  }
  return writer->Commit();
}

absl::Status WriteTorchSave(const TensorSource& source,
                            const std::vector<Planned>& planned,
                            const std::vector<const SourceValue*>& values,
                            const std::string& out) {
  PickleTree tree;
  std::vector<PtTensorData> tensors;
  PickleValue* state_dict = tree.Dict();
  bool training_dict = !values.empty();
  for (const Planned& tensor : planned) {
    training_dict = training_dict || !IsModelName(tensor.name);
  }
  PickleValue* root = training_dict ? tree.Dict() : state_dict;
  PathTree paths(&tree, root);
  if (training_dict) {
    std::string key =
        source.model_key().empty() ? "state_dict" : source.model_key();
    if (!paths.Put(key, state_dict)) {
      return absl::InternalError("model key placed twice");
    }
  }
  for (const Planned& tensor : planned) {
    const SourceTensor& from = source.tensors()[tensor.index];
    PickleValue* leaf = tree.Tensor(static_cast<int>(tensors.size()));
    tensors.push_back({FindTorchDtype(from.dtype), from.shape, tensor.bytes});
    if (IsModelName(tensor.name)) {
      PickleTree::Set(state_dict, tree.String(tensor.name), leaf);
    } else if (!paths.Put(tensor.name, leaf)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", tensor.name,
                       "' cannot be written as a nested dict: a part of its "
                       "path is already a value"));
    }
  }
  for (const SourceValue* value : values) {
    const PickleValue* leaf = ValueLeaf(tree, *value);
    if (!paths.Put(value->name, leaf)) {
      return absl::InvalidArgumentError(
          absl::StrCat("value '", value->name,
                       "' cannot be written as a nested dict: a part of its "
                       "path is already a value"));
    }
  }
  return WritePt(out, *root, tensors);
}

absl::Status WriteSafetensorsFile(const TensorSource& source,
                                  const std::vector<Planned>& planned,
                                  const std::vector<const SourceValue*>& values,
                                  const std::string& out) {
  std::vector<SafetensorsTensor> tensors;
  for (const Planned& tensor : planned) {
    const SourceTensor& from = source.tensors()[tensor.index];
    tensors.push_back(
        {tensor.name, *from.checkpoint_dtype, from.shape,
         absl::MakeConstSpan(tensor.bytes.data(), tensor.bytes.size())});
  }
  std::map<std::string, std::string> metadata = source.metadata();
  metadata.emplace("format", "pt");  // what Hugging Face's loaders expect
  for (const SourceValue* value : values) metadata[value->name] = value->repr;
  return WriteSafetensors(out, tensors, metadata);
}

std::string Reason(const SourceTensor& tensor, SourceFormat to) {
  return absl::StrCat("dtype ", tensor.dtype, " cannot be written as ",
                      SourceFormatName(to));
}

}  // namespace

SourceFormat TargetFormatForPath(const std::string& path) {
  for (const char* suffix : {".pt", ".pth", ".ckpt", ".bin"}) {
    if (absl::EndsWith(path, suffix)) return SourceFormat::kTorchSave;
  }
  if (absl::EndsWith(path, ".safetensors")) return SourceFormat::kSafetensors;
  return SourceFormat::kCheckpoint;
}

std::string ConvertReport::Text() const {
  std::string text;
  for (const auto& [from, to] : renamed) {
    absl::StrAppend(&text, "renamed ", from, " -> ", to, "\n");
  }
  for (const auto& [name, why] : dropped) {
    absl::StrAppend(&text, "dropped ", name, ": ", why, "\n");
  }
  absl::StrAppend(&text, "converted ", SourceFormatName(from), " -> ",
                  SourceFormatName(to), ": ", kept.size() + renamed.size(),
                  " tensors written (", kept.size(), " kept, ", renamed.size(),
                  " renamed), ", dropped.size(), " dropped, ", values_kept,
                  " values kept; digest ", digest, "\n");
  return text;
}

absl::StatusOr<ConvertReport> Convert(const std::string& in,
                                      const std::string& out,
                                      const ConvertOptions& options) {
  struct stat info;
  if (!options.overwrite && ::lstat(out.c_str(), &info) == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(out, ": already exists (remove it or pass --overwrite)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TensorSource> source,
                   TensorSource::Open(in, options.source));
  ConvertReport report;
  report.from = source->format();
  report.to = options.target.value_or(TargetFormatForPath(out));

  std::vector<Planned> planned;
  std::map<std::string, std::string> taken;  // new name -> old name
  std::deque<std::string> scratch;           // gathered strided tensors
  for (size_t i = 0; i < source->tensors().size(); ++i) {
    const SourceTensor& tensor = source->tensors()[i];
    if (options.model_only && !IsModelName(tensor.name)) {
      report.dropped.emplace_back(tensor.name, "not a model tensor");
      continue;
    }
    std::optional<std::string> name = options.rules.Apply(tensor.name);
    if (!name.has_value()) {
      report.dropped.emplace_back(tensor.name, "mapped to null");
      continue;
    }
    bool writable = report.to == SourceFormat::kTorchSave
                        ? FindTorchDtype(tensor.dtype) != nullptr
                        : tensor.checkpoint_dtype.has_value();
    if (!writable) {
      report.dropped.emplace_back(tensor.name, Reason(tensor, report.to));
      continue;
    }
    if (auto [it, inserted] = taken.emplace(*name, tensor.name); !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(in, ": '", it->second, "' and '", tensor.name,
                       "' would both be named '", *name, "'"));
    }
    scratch.emplace_back();
    ASSIGN_OR_RETURN(absl::string_view bytes,
                     source->TensorBytes(i, &scratch.back()));
    planned.push_back({i, *name, bytes});
    if (*name == tensor.name) {
      report.kept.push_back(tensor.name);
    } else {
      report.renamed.emplace_back(tensor.name, *name);
    }
  }
  if (planned.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(in, ": no tensor is left to write to ", out));
  }
  std::vector<const SourceValue*> values;
  if (!options.model_only) {
    for (const SourceValue& value : source->values()) {
      if (value.kind == SourceValue::Kind::kOther &&
          report.to == SourceFormat::kTorchSave) {
        report.dropped.emplace_back(value.name,
                                    absl::StrCat("a ", value.text, " value"));
        continue;
      }
      values.push_back(&value);
    }
  }
  report.values_kept = static_cast<int>(values.size());
  absl::Status written;
  switch (report.to) {
    case SourceFormat::kCheckpoint:
      written = WriteOurs(*source, planned, values,
                          report.renamed.empty() && report.dropped.empty() &&
                              !options.model_only,
                          out, &report);
      break;
    case SourceFormat::kTorchSave:
      written = WriteTorchSave(*source, planned, values, out);
      break;
    case SourceFormat::kSafetensors:
      written = WriteSafetensorsFile(*source, planned, values, out);
      break;
  }
  RETURN_IF_ERROR(base::Annotate(written, absl::StrCat("writing ", out)));

  // Read it back: the same tensors under the new names, nothing else.
  std::sort(planned.begin(), planned.end(),
            [](const Planned& a, const Planned& b) { return a.name < b.name; });
  checkpoint::TensorDigester expected(planned.size());
  for (const Planned& tensor : planned) {
    BeginDigest(expected, tensor.name, source->tensors()[tensor.index]);
    expected.Update(
        absl::MakeConstSpan(tensor.bytes.data(), tensor.bytes.size()));
  }
  absl::StatusOr<std::unique_ptr<TensorSource>> written_back =
      TensorSource::Open(out, {});
  absl::StatusOr<std::string> digest =
      written_back.ok() ? (*written_back)->Digest()
                        : absl::StatusOr<std::string>(written_back.status());
  if (!digest.ok() || *digest != expected.Finish()) {
    if (report.to == SourceFormat::kCheckpoint) {
      (void)base::RemoveTree(out);
    } else {
      ::unlink(out.c_str());
    }
    return absl::DataLossError(
        absl::StrCat(out, ": did not read back as written (",
                     digest.ok() ? "digest differs" : digest.status().message(),
                     "); removed"));
  }
  report.digest = *digest;
  return report;
}

}  // namespace interop
