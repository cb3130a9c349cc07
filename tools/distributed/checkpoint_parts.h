// Checkpoints of a data-parallel job: every process writes only what it
// alone holds, rank 0 commits the checkpoint last, atomically, after every
// process has reported its part written.
//
// The protocol, for one save that every process makes at the same step:
//   - rank r >= 1: SavePart writes its tensors into a data file of its own
//     in the run directory (a `.tmp-` temporary), fsyncs it and posts a
//     report (the file, its tensors' offsets and checksums, and an opaque
//     `state` record of the caller's) to rank 0 under the save's id;
//   - rank 0 writes its own tensors (the replicated ones and its own) with
//     the CheckpointWriter, then, before committing (checkpoint::BeforeCommit,
//     on the saver's background thread), CollectParts waits for every
//     report, moves each part into the checkpoint as data-0000r.bin, and
//     the commit publishes one manifest that checksums every process's
//     bytes.
// A checkpoint with any part missing is therefore never committed, and so
// never `last` or `best`: a rank that fails to write reports the failure, a
// rank that dies or hangs is waited for at most the group's timeout, and
// rank 0 gives up at once when told to (`cancel`, e.g. its job is failing).
// Parts of an abandoned save are `.tmp-` files of their writer's pid, which
// CheckpointManager::Open removes once their writer is gone.
//
// Needs a run directory every process can reach (one machine or a shared
// filesystem, mounted anywhere): a part is written there and reported by
// its file name only, which rank 0 looks up in the directory that holds
// the checkpoint and renames into it.
//
//   // rank r >= 1, at the save:
//   RETURN_IF_ERROR(SavePart(group, run_dir, "step=120", own_tensors, state));
//   // rank 0:
//   saver.SaveAsync(path, state, on_committed,
//       [&](checkpoint::CheckpointWriter& writer) -> absl::Status {
//         ASSIGN_OR_RETURN(auto states,
//                          CollectParts(group, "step=120", writer, &cancel));
//         ...  // record `states` in writer.mutable_training_state()
//         return absl::OkStatus();
//       });
#ifndef TOOLS_DISTRIBUTED_CHECKPOINT_PARTS_H_
#define TOOLS_DISTRIBUTED_CHECKPOINT_PARTS_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/named_tensors.h"
#include "checkpoint/writer.h"
#include "tools/distributed/process_group.h"

namespace distributed {

// Rank r >= 1: writes `tensors` (names unique in the whole checkpoint, by
// convention under "rank/<r>/") into a new data file in `directory` (the
// one that will hold the checkpoint: the run directory), and
// posts its report with `state` to rank 0 under `save_id`. A failure to
// write is posted too (so rank 0 stops waiting at once) and returned.
absl::Status SavePart(ProcessGroup& group, const std::string& directory,
                      const std::string& save_id,
                      const checkpoint::NamedTensors& tensors,
                      const std::string& state);

// Rank 0: waits for every other rank's report of `save_id` and adds its
// part to `writer`. Returns the `state` each rank posted, by rank (rank 0's
// entry empty). Errors, each naming the rank: its own failure to write, a
// part that does not match its report or is not a `.tmp-` file name,
// kDeadlineExceeded when a rank does not report within the group's timeout,
// kCancelled when *cancel becomes true. The parts already taken in go with the
// abandoned checkpoint when `writer` is destroyed.
absl::StatusOr<std::vector<std::string>> CollectParts(
    ProcessGroup& group, const std::string& save_id,
    checkpoint::CheckpointWriter& writer,
    const std::atomic<bool>* cancel = nullptr);

}  // namespace distributed

#endif  // TOOLS_DISTRIBUTED_CHECKPOINT_PARTS_H_
