#include "checkpoint/upgrade.h"

#include <sys/stat.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "google/protobuf/unknown_field_set.h"
#include "tools/base/status.h"

namespace checkpoint {
namespace {

// Format version 1's TrainingState also held the trainer's scheduler (2),
// loss scaler (3) and data order (5). Version 2 no longer knows those
// fields, so they parse as unknown fields; their bytes move, unchanged, into
// an extension that the trainer reads (trainer/trainer_state.proto).
absl::Status UpgradeTrainingState(const proto::TrainingState& old_state,
                                  proto::TrainingState* new_state) {
  *new_state = old_state;
  const google::protobuf::Reflection* reflection = new_state->GetReflection();
  const google::protobuf::UnknownFieldSet& unknown =
      reflection->GetUnknownFields(*new_state);
  if (unknown.empty()) return absl::OkStatus();
  for (int i = 0; i < unknown.field_count(); ++i) {
    const int number = unknown.field(i).number();
    if (number != 2 && number != 3 && number != 5) {
      return absl::DataLossError(absl::StrCat("training_state has field ",
                                              number,
                                              ", unknown to format version 1"));
    }
  }
  proto::Extension* legacy = new_state->add_extensions();
  legacy->set_type(kVersion1TrainingStateExtension);
  legacy->set_version(1);
  unknown.SerializeToString(legacy->mutable_payload());
  reflection->MutableUnknownFields(new_state)->Clear();
  return absl::OkStatus();
}

}  // namespace

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
  RETURN_IF_ERROR(UpgradeTrainingState(manifest.training_state(),
                                       writer->mutable_training_state()));
  RETURN_IF_ERROR(writer->Commit());
  return manifest.tensors_size();
}

}  // namespace checkpoint
