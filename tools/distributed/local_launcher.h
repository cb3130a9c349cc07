// `train --nproc=N`: runs N copies of a program on this machine as one
// data-parallel job, as `torchrun --standalone --nproc_per_node=N
// --no-python` would, without Python. Torch-free.
//
//   distributed::LocalJob job;
//   job.argv = {"/path/to/train", "--run_dir=runs/a", "--nproc=1"};
//   job.nproc = 2;
//   absl::StatusOr<int> exit_code = distributed::RunLocalJob(job, &stop);
//
// Each process gets the variables torchrun sets (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK=0, MASTER_ADDR=127.0.0.1 and
// MASTER_PORT, a port free when the job starts), CKPT_LAUNCHER=nproc so
// that launch_env names the launcher, and none of torchrun's agent
// variables. It runs in a process group of its own, so that a terminal's
// Ctrl-C reaches it once, through the launcher, and gets SIGTERM if the
// launcher dies.
//
// Not thread-safe; call it from the main thread before any other thread
// exists that could hold a lock across fork.
#ifndef TOOLS_DISTRIBUTED_LOCAL_LAUNCHER_H_
#define TOOLS_DISTRIBUTED_LOCAL_LAUNCHER_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace distributed {

struct LocalJob {
  // The program (argv[0], a path) and its arguments, for every process.
  std::vector<std::string> argv;
  int nproc = 1;
  // Once one process has failed, how long the others get to end by
  // themselves (they notice a lost peer within their collective timeout)
  // before they get SIGTERM, and SIGKILL after as long again.
  absl::Duration grace = absl::Seconds(60);
};

// A port on 127.0.0.1 that nobody listens on now (the kernel's choice for
// an ephemeral bind; another program may take it before it is used, as
// with torchrun's own choice). An error from socket or bind otherwise.
absl::StatusOr<int> FreeLoopbackPort();

// Starts the processes and waits for all of them. When *stop_signal
// becomes non-zero (the caller's SIGINT/SIGTERM handler sets it), that
// signal is passed on to every process once. Returns the job's exit code:
// 0 when every process exited 0, else the first failure's (128 + N for a
// process ended by signal N; 127 for one that could not be started).
// kInvalidArgument for an empty argv or nproc < 1; FreeLoopbackPort's
// error, or fork's (the processes already started are killed first).
absl::StatusOr<int> RunLocalJob(const LocalJob& job,
                                const std::atomic<int>* stop_signal);

}  // namespace distributed

#endif  // TOOLS_DISTRIBUTED_LOCAL_LAUNCHER_H_
