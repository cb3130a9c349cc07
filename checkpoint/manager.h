// The policy over a run directory: where each new checkpoint goes, which one
// is `best` and which is `last`, which old ones are deleted, and which one a
// restarted job resumes from. Torch-free: it reads manifests through
// CheckpointReader and never touches tensor bytes except to verify them.
//
// Run-directory layout (checkpoint/RUN_DIRECTORY.md has the rationale):
//
//   RUN_DIR/epoch=0001-step=000500-val_loss=0.4123/   checkpoint directories
//   RUN_DIR/epoch=0002-step=001000-val_loss=0.3870/   (names from a template)
//   RUN_DIR/best -> epoch=0002-step=001000-val_loss=0.3870   relative symlink
//   RUN_DIR/last -> epoch=0002-step=001000-val_loss=0.3870   relative symlink
//   RUN_DIR/.tmp-*                                    in-flight or dead writes
//
// Why symlinks and not copies or a state file: a symlink is switched with one
// rename(2), which is atomic, so `best` and `last` always name a complete
// checkpoint; it costs no bytes (a copy doubles the disk use and is itself
// not atomic); and any tool that opens RUN_DIR/best just works, without
// knowing about the manager. Targets are relative so that the run directory
// can be moved or copied as a whole.
//
// Crash safety, in the order OnCommitted() runs:
//   1. the new checkpoint is already committed (CheckpointWriter renamed it
//      into place and fsync'ed the run directory);
//   2. `last` (then `best` if it improved) is switched: a temporary symlink
//      `.tmp-link-*` is created and renamed over the link, then the run
//      directory is fsync'ed;
//   3. only then are checkpoints outside the retention set deleted, each by
//      renaming it to `.tmp-delete-*` (atomic: it stops being a checkpoint at
//      once) and removing that tree. A crash part-way leaves a `.tmp-*`
//      entry that the next Open() removes, never a half-deleted checkpoint
//      under a real name.
// So a crash at any instant leaves `best` and `last` resolving to complete
// checkpoints (or not existing yet, before the first commit).
// Crash points for tests (tools/base/stop_point.h), in that order:
// "manager.committed", "manager.link_temporary_created" (each link),
// "manager.last_switched", "manager.links_switched",
// "manager.victims_renamed"; kill_during_save_test kills at each.
//
// Example:
//   CheckpointManager::Options options;
//   options.monitor = "val_loss";
//   options.mode = proto::MonitoredMetric::MIN;
//   options.keep_last = 2;
//   options.keep_top_k = 3;
//   ASSIGN_OR_RETURN(auto manager, CheckpointManager::Open(run_dir, options));
//   ASSIGN_OR_RETURN(std::string path, manager->PathForNew(metadata));
//   ... write the checkpoint at `path` (CheckpointWriter, AsyncCheckpointSaver)
//   RETURN_IF_ERROR(manager->OnCommitted(path));
//
//   // On restart:
//   absl::StatusOr<std::string> resume = FindResumeCheckpoint(run_dir);
//   if (absl::IsNotFound(resume.status())) { /* fresh start */ }
#ifndef CHECKPOINT_MANAGER_H_
#define CHECKPOINT_MANAGER_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "checkpoint/manifest.pb.h"
#include "checkpoint/name_template.h"
#include "checkpoint/retention.h"
#include "checkpoint/run_directory.h"

namespace checkpoint {

class CheckpointManager {
 public:
  struct Options {
    // Metric that decides `best` and top-K. Empty: no `best` link and
    // keep_top_k is ignored.
    std::string monitor;
    proto::MonitoredMetric::Mode mode = proto::MonitoredMetric::MIN;
    // N most recent checkpoints by global step to keep; -1: rule unset.
    int keep_last = -1;
    // K best checkpoints by the monitored metric to keep; -1: rule unset,
    // 0 keeps none besides best and last. With both rules unset nothing is
    // deleted (SelectForDeletion).
    int keep_top_k = -1;
    std::string name_template = NameTemplate::kDefault;
  };

  // Creates `run_dir` (and missing parents), removes stale `.tmp-*`
  // entries, and scans the existing checkpoints; a checkpoint whose manifest
  // does not open is skipped (never deleted) with a warning naming it on
  // stderr. Recomputes `best` from the scanned metrics and repairs `best`
  // and `last` when they are missing or dangling.
  static absl::StatusOr<std::unique_ptr<CheckpointManager>> Open(
      std::string run_dir, Options options);

  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // The path where the checkpoint described by `metadata` should be
  // written: RUN_DIR/<rendered template>, with `-v1`, `-v2`, ... appended
  // when the name is taken (on disk, or handed out earlier and not yet
  // committed).
  absl::StatusOr<std::string> PathForNew(const proto::Metadata& metadata)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // Records a committed checkpoint at `path` (inside the run directory):
  // points `last` at it, `best` too when the metric improves, then deletes
  // what retention no longer keeps. Thread-safe; meant to be called from a
  // saver's background thread. On error the links are left as they were
  // before (or at `last` switched only) and nothing is deleted.
  absl::Status OnCommitted(const std::string& path) ABSL_LOCKS_EXCLUDED(mutex_);

  // RUN_DIR/<name> of the current best / last, or "" when there is none.
  std::string BestPath() const ABSL_LOCKS_EXCLUDED(mutex_);
  std::string LastPath() const ABSL_LOCKS_EXCLUDED(mutex_);

  // Known checkpoints, by ascending step.
  std::vector<CheckpointEntry> List() const ABSL_LOCKS_EXCLUDED(mutex_);

  const std::string& run_dir() const { return run_dir_; }
  const Options& options() const { return options_; }

 private:
  CheckpointManager(std::string run_dir, Options options,
                    NameTemplate name_template);

  absl::Status Scan() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status PointLink(const char* link_name, const std::string& target)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status ApplyRetention() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void RecomputeBest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool NameTaken(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const std::string run_dir_;
  const Options options_;
  const NameTemplate name_template_;

  mutable absl::Mutex mutex_;
  std::vector<CheckpointEntry> entries_ ABSL_GUARDED_BY(mutex_);
  // Names handed out by PathForNew() and not yet committed.
  std::set<std::string> reserved_ ABSL_GUARDED_BY(mutex_);
  std::string best_name_ ABSL_GUARDED_BY(mutex_);
  std::string last_name_ ABSL_GUARDED_BY(mutex_);
  uint64_t temporary_counter_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace checkpoint

#endif  // CHECKPOINT_MANAGER_H_
