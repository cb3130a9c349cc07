#include "tools/distributed/checkpoint_parts.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/tensors.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/base/status.h"
#include "tools/distributed/part_report.pb.h"

namespace distributed {
namespace {

std::string ReportKey(const std::string& save_id, int rank) {
  return absl::StrCat("checkpoint/", save_id, "/rank/", rank);
}

}  // namespace

absl::Status SavePart(ProcessGroup& group, const std::string& directory,
                      const std::string& save_id,
                      const checkpoint::NamedTensors& tensors,
                      const std::string& state) {
  const std::string path = base::JoinPath(
      directory,
      base::TemporaryName(absl::StrCat(save_id, "-rank", group.rank())));
  absl::StatusOr<checkpoint::DataFilePart> part =
      checkpoint::WriteDataFile(path, tensors);
  proto::PartReport report;
  if (part.ok()) {
    report.set_file_name(base::BaseName(part->path));
    report.set_size_bytes(part->size_bytes);
    for (checkpoint::proto::TensorEntry& entry : part->tensors) {
      *report.add_tensors() = std::move(entry);
    }
    report.set_state(state);
  } else {
    report.set_error(std::string(part.status().message()));
  }
  std::string serialized;
  report.SerializeToString(&serialized);
  absl::Status posted =
      group.Post(ReportKey(save_id, group.rank()), serialized);
  if (!part.ok()) return part.status();
  if (!posted.ok()) {
    ::unlink(path.c_str());
    return posted;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> CollectParts(
    ProcessGroup& group, const std::string& save_id,
    checkpoint::CheckpointWriter& writer, const std::atomic<bool>* cancel) {
  std::vector<std::string> states(static_cast<size_t>(group.world_size()));
  for (int rank = 1; rank < group.world_size(); ++rank) {
    const std::string what =
        absl::StrCat("checkpoint ", writer.final_path(), ": rank ", rank);
    absl::StatusOr<std::string> serialized =
        group.Await(ReportKey(save_id, rank), cancel);
    if (!serialized.ok()) {
      return base::Annotate(serialized.status(),
                            absl::StrCat(what, " did not report its part"));
    }
    proto::PartReport report;
    if (!report.ParseFromString(*serialized)) {
      return absl::DataLossError(
          absl::StrCat(what, ": its report does not parse"));
    }
    if (!report.error().empty()) {
      return absl::AbortedError(
          absl::StrCat(what, " could not write its part: ", report.error()));
    }
    // Only a name, looked up beside the checkpoint: a report can neither
    // point outside the run directory nor depend on where each process
    // mounted it.
    const std::string& name = report.file_name();
    if (!absl::StartsWith(name, base::kTemporaryPrefix) ||
        name.find('/') != std::string::npos) {
      return absl::DataLossError(absl::StrCat(
          what, ": its part '", name, "' is not a temporary file name"));
    }
    checkpoint::DataFilePart part;
    part.path = base::JoinPath(base::DirectoryOf(writer.final_path()), name);
    part.size_bytes = report.size_bytes();
    part.tensors.assign(report.tensors().begin(), report.tensors().end());
    // A part that does not match its report is left where it is (a `.tmp-`
    // file of its writer's, removed at the next start): a path a peer
    // reported is not one to delete.
    if (absl::Status status = writer.AddDataFile(part); !status.ok()) {
      return base::Annotate(status, what);
    }
    states[static_cast<size_t>(rank)] = report.state();
  }
  return states;
}

}  // namespace distributed
