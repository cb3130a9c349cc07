// Child process of kill_during_save_test: resumes from the run directory's
// newest valid checkpoint and saves one checkpoint per step, with fsync, in
// an endless loop, until the test SIGKILLs it. Exits 1 with a message on any
// error, which the test reports (a killed child never exits by itself).
//
// Usage: kill_during_save_child RUN_DIR
#include <sys/prctl.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/kill_during_save_content.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"

namespace checkpoint {
namespace {

absl::StatusOr<int64_t> ResumeStep(const std::string& run_dir) {
  absl::StatusOr<std::string> resume = FindResumeCheckpoint(run_dir);
  if (absl::IsNotFound(resume.status())) return 0;
  if (!resume.ok()) return resume.status();
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(*resume);
  if (!reader.ok()) return reader.status();
  return (*reader)->manifest().metadata().progress().global_step();
}

absl::Status SaveStep(CheckpointManager& manager, int64_t step) {
  proto::Metadata metadata = kill_during_save::MetadataForStep(step);
  absl::StatusOr<std::string> path = manager.PathForNew(metadata);
  if (!path.ok()) return path.status();
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> writer =
      CheckpointWriter::Create(*path, WriterOptions{/*sync=*/true});
  if (!writer.ok()) return writer.status();
  std::vector<kill_during_save::TensorSpec> tensors =
      kill_during_save::Tensors();
  for (size_t index = 0; index < tensors.size(); ++index) {
    int64_t elements = 1;
    for (int64_t dim : tensors[index].shape) elements *= dim;
    std::string bytes = kill_during_save::ExpectedBytes(
        step, index, elements * ElementSize(tensors[index].dtype));
    absl::Status status = (*writer)->AddTensor(
        tensors[index].name, tensors[index].dtype, tensors[index].shape,
        absl::Span<const char>(bytes.data(), bytes.size()));
    if (!status.ok()) return status;
  }
  *(*writer)->mutable_metadata() = metadata;
  if (absl::Status status = (*writer)->Commit(); !status.ok()) return status;
  return manager.OnCommitted(*path);
}

int Run(const std::string& run_dir) {
  absl::StatusOr<int64_t> step = ResumeStep(run_dir);
  if (!step.ok()) {
    std::fprintf(stderr, "child: resume: %s\n",
                 std::string(step.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<CheckpointManager>> manager =
      CheckpointManager::Open(run_dir, kill_during_save::ManagerOptions());
  if (!manager.ok()) {
    std::fprintf(stderr, "child: open: %s\n",
                 std::string(manager.status().message()).c_str());
    return 1;
  }
  for (int64_t next = *step + 1;; ++next) {
    if (absl::Status status = SaveStep(**manager, next); !status.ok()) {
      std::fprintf(stderr, "child: step %lld: %s\n",
                   static_cast<long long>(next),
                   std::string(status.message()).c_str());
      return 1;
    }
  }
}

}  // namespace
}  // namespace checkpoint

int main(int argc, char** argv) {
  // Never outlive the test that drives us.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc != 2) {
    std::fprintf(stderr, "usage: kill_during_save_child RUN_DIR\n");
    return 2;
  }
  return checkpoint::Run(argv[1]);
}
