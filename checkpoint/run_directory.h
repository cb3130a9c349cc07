// Reading a run directory without changing it: its checkpoints, where the
// `best` and `last` links point, and which checkpoint a restarted job
// resumes from. The layout and its rules: checkpoint/RUN_DIRECTORY.md.
// Torch-free; opens manifests through CheckpointReader.
#ifndef CHECKPOINT_RUN_DIRECTORY_H_
#define CHECKPOINT_RUN_DIRECTORY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/manifest.pb.h"
#include "checkpoint/name_template.h"
#include "checkpoint/retention.h"

namespace checkpoint {

// The checkpoint name the link `link_name` of `run_dir` points at (its
// target's last component), or "" when the link is absent, dangling outside
// the run directory, or not a symlink.
std::string LinkedName(const std::string& run_dir, const char* link_name);

struct ScannedCheckpoint {
  CheckpointEntry entry;  // name, path, epoch and step filled in
  proto::Metadata metadata;
};

// Every checkpoint of `run_dir` that opens, by name; a corrupt one is
// skipped with a warning naming it (and left on disk for a person to look
// at). Errors: the directory cannot be listed.
absl::StatusOr<std::vector<ScannedCheckpoint>> ScanCheckpoints(
    const std::string& run_dir);

// Every checkpoint directory in `run_dir`, by ascending step, read-only (no
// cleanup, no link repair): for `ckpt ls`. The metric is each checkpoint's
// own Metadata.monitored; is_best / is_last come from the links. Corrupt
// checkpoints are skipped with a warning on stderr.
absl::StatusOr<std::vector<CheckpointEntry>> ListRunDirectory(
    const std::string& run_dir);

// The checkpoint a restarted job should load: RUN_DIR/last if it opens and
// every checksum verifies, otherwise the newest checkpoint (by global step)
// that does. Each corrupt checkpoint skipped is named in a warning on
// stderr. kNotFound when the run directory does not exist or holds no valid
// checkpoint. Returns RUN_DIR/<name> (the link resolved).
absl::StatusOr<std::string> FindResumeCheckpoint(const std::string& run_dir);

}  // namespace checkpoint

#endif  // CHECKPOINT_RUN_DIRECTORY_H_
