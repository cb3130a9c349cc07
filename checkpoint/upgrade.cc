#include "checkpoint/upgrade.h"

#include <sys/stat.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "tools/base/status.h"

namespace checkpoint {

absl::StatusOr<int> UpgradeCheckpoint(const std::string& old_path,
                                      const std::string& new_path) {
  if (CheckpointReader::Open(old_path).ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        old_path, " is already in format version ", kFormatVersion));
  }
  struct stat info;
  if (::lstat(new_path.c_str(), &info) == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(new_path, " exists; upgrade writes a new checkpoint"));
  }
  ReaderOptions options;
  options.read_format_v1 = true;
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader,
                   CheckpointReader::Open(old_path, options));
  RETURN_IF_ERROR(reader->VerifyAll());
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer,
                   CheckpointWriter::Create(new_path));
  const proto::Manifest& manifest = reader->manifest();
  std::vector<char> bytes;
  for (const proto::TensorEntry& entry : manifest.tensors()) {
    bytes.resize(entry.size_bytes());
    RETURN_IF_ERROR(reader->ReadTensor(entry, absl::MakeSpan(bytes)));
    RETURN_IF_ERROR(writer->AddTensor(
        entry.name(), entry.dtype(),
        std::vector<int64_t>(entry.shape().begin(), entry.shape().end()), bytes,
        entry.saved_device()));
  }
  *writer->mutable_metadata() = manifest.metadata();
  *writer->mutable_training_state() = manifest.training_state();
  RETURN_IF_ERROR(writer->Commit());
  return manifest.tensors_size();
}

}  // namespace checkpoint
