// Who this process is in a data-parallel job, and where its peers meet:
// read from the environment that torchrun or Slurm sets, or from flags.
// Torch-free.
//
//   absl::StatusOr<distributed::LaunchEnv> env =
//       distributed::LaunchEnvFrom(distributed::ProcessEnvironment(), {});
//   if (env.ok() && env->world_size > 1) { /* connect: process_group.h */ }
//
// Sources, first match wins:
//   1. flags (LaunchFlags with world_size set): rank, world size, address,
//      port given by the caller;
//   2. torchrun: RANK and WORLD_SIZE (with LOCAL_RANK, LOCAL_WORLD_SIZE,
//      GROUP_RANK, MASTER_ADDR, MASTER_PORT); under torchrun's agent store
//      (TORCHELASTIC_USE_AGENT_STORE=True) the store is the agent's, joined
//      as a client under the prefix "/worker/attempt_<RESTART_COUNT>";
//   3. Slurm: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID,
//      SLURM_NTASKS_PER_NODE (its first count), the first host of
//      SLURM_NODELIST (or SLURM_JOB_NODELIST) as the address unless
//      MASTER_ADDR is set, and MASTER_PORT or 15000 plus the last four
//      digits of SLURM_JOB_ID as the port (Lightning's rule);
//   4. nothing: one process (rank 0 of 1).
// Every value is checked: a variable that is not a number, a rank outside
// the world, a world of more than one without an address or port, RANK
// without WORLD_SIZE, are each a kInvalidArgument naming the variable.
#ifndef TOOLS_DISTRIBUTED_LAUNCH_ENV_H_
#define TOOLS_DISTRIBUTED_LAUNCH_ENV_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace distributed {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  std::string master_addr;  // empty for one process
  int master_port = 0;
  // torchrun's agent hosts the store: join it as a client, under
  // store_prefix.
  bool use_agent_store = false;
  std::string store_prefix;
  // "flags", "torchrun", "slurm" or "single process"; under torchrun's
  // variables, CKPT_LAUNCHER when set ("--nproc": local_launcher.h).
  std::string source = "single process";
};

struct LaunchFlags {
  std::optional<int> rank;
  std::optional<int> world_size;
  std::string master_addr;
  std::optional<int> master_port;
};

// The process's environment as a map (for LaunchEnvFrom).
std::map<std::string, std::string> ProcessEnvironment();

absl::StatusOr<LaunchEnv> LaunchEnvFrom(
    const std::map<std::string, std::string>& environment,
    const LaunchFlags& flags);

// The first host of a Slurm node list: "node[05-09,12],gpu1" -> "node05".
// kInvalidArgument for an empty or malformed list.
absl::StatusOr<std::string> FirstSlurmHost(absl::string_view node_list);

// "rank 1 of 2 (torchrun), store 127.0.0.1:29500".
std::string Describe(const LaunchEnv& env);

}  // namespace distributed

#endif  // TOOLS_DISTRIBUTED_LAUNCH_ENV_H_
