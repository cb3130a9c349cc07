// The collectives a data-parallel trainer needs, over LibTorch's own c10d
// (ProcessGroupGloo on the CPU, ProcessGroupNCCL on CUDA devices), with errors
// as absl::Status and time limits on everything: a peer that never comes, dies
// or hangs makes the others fail within the timeout instead of waiting forever.
//
//   ASSIGN_OR_RETURN(distributed::LaunchEnv env,
//                    distributed::LaunchEnvFrom(
//                        distributed::ProcessEnvironment(), {}));
//   ASSIGN_OR_RETURN(std::unique_ptr<distributed::ProcessGroup> group,
//                    distributed::ProcessGroup::Connect(env, {}));
//   RETURN_IF_ERROR(group->Broadcast(parameters, /*root=*/0));
//   ...  // backward
//   RETURN_IF_ERROR(group->AllReduceMean(gradients));
//
// The store where the processes meet is a c10d TCPStore at
// env.master_addr:master_port, hosted by rank 0, or torchrun's agent store
// joined as a client under env.store_prefix. A world of one needs no store
// and every collective returns at once, so the same code serves N = 1 and
// N > 1.
//
// Gradients are averaged in flattened buckets (one allreduce per bucket of
// up to bucket_bytes of one dtype, not one call per tensor). Sums over
// ranks are done in Gloo's order, so results may differ from a one-process
// sum in the last bits.
//
// Which backend: Options::device. The CPU takes Gloo (both builds, with
// Debian's libgloo-dev headers); a CUDA device takes NCCL, which only a
// build against a CUDA LibTorch has (--config=torch2: the pinned wheel and
// the CUDA toolkit's NCCL headers of the same version). Each process then
// uses its own device, usually cuda:LOCAL_RANK, and its collectives' tensors
// live there. Under NCCL a failed or timed-out collective is reported by
// wait() (TORCH_NCCL_BLOCKING_WAIT=1 unless the user set it); NCCL's
// watchdog may still end the process itself with its own message. NCCL
// refuses two ranks on one GPU, so it needs a GPU per process.
//
// Not thread-safe: call the collectives from one thread, in the same order
// on every rank (Post and Await excepted).
#ifndef TOOLS_DISTRIBUTED_PROCESS_GROUP_H_
#define TOOLS_DISTRIBUTED_PROCESS_GROUP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/distributed/launch_env.h"
#include "torch/types.h"

namespace distributed {

// Whether this build can connect several processes on the CPU (Gloo) and
// on CUDA devices (NCCL).
bool HasGloo();
bool HasNccl();

class ProcessGroup {
 public:
  struct Options {
    // How long to wait for the peers to join, and for any collective.
    absl::Duration timeout = absl::Seconds(60);
    int gloo_threads = 2;
    // Where the collectives' tensors live: the CPU (Gloo) or one CUDA
    // device with its index (NCCL; Connect makes it the current device).
    torch::Device device = torch::kCPU;
  };

  // Errors (each naming this rank and the store): kInvalidArgument for an
  // env without an address or a device that is neither CPU nor CUDA;
  // kDeadlineExceeded when the peers do not all join within the timeout;
  // kUnavailable when the store cannot be reached; kUnimplemented when this
  // build lacks the device's backend; kFailedPrecondition for a CUDA device
  // that is not there.
  static absl::StatusOr<std::unique_ptr<ProcessGroup>> Connect(
      const LaunchEnv& env, const Options& options);
  ~ProcessGroup();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // The tensors passed to the collectives must be on Options::device.
  //
  // Every rank's `tensors` become root's, in place (bucketed like
  // AllReduceMean).
  absl::Status Broadcast(std::vector<torch::Tensor>& tensors, int root);
  // Element-wise mean over ranks, in place. Undefined tensors (a parameter
  // without a gradient) are skipped; every rank must pass the same shapes
  // and dtypes in the same order.
  absl::Status AllReduceMean(std::vector<torch::Tensor>& tensors,
                             int64_t bucket_bytes = int64_t{25} << 20);
  // Element-wise sum over ranks, in place (metrics: loss sums, counts).
  absl::Status AllReduceSum(std::vector<torch::Tensor>& tensors,
                            int64_t bucket_bytes = int64_t{25} << 20);
  // The same for a few numbers (a loss sum, a count, a stop vote), summed
  // in float64; with one process they are left exactly as they are.
  absl::Status AllReduceSum(std::vector<double>& values);
  absl::Status Barrier();

  // Small messages beside the collectives, through the store where the
  // processes met: for exchanges that must not take a place in the
  // collectives' order, such as a checkpoint's commit on a background
  // thread. Unlike the collectives these two may be called from any thread.
  // A key is posted once per job. With one process there are no peers:
  // kFailedPrecondition.
  absl::Status Post(const std::string& key, const std::string& value);
  // Waits until `key` is posted and returns its value. kDeadlineExceeded
  // after the group's timeout, kCancelled as soon as *cancel becomes true.
  absl::StatusOr<std::string> Await(const std::string& key,
                                    const std::atomic<bool>* cancel = nullptr);

 private:
  struct Impl;
  ProcessGroup(int rank, int world_size, std::unique_ptr<Impl> impl);
  int rank_;
  int world_size_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distributed

#endif  // TOOLS_DISTRIBUTED_PROCESS_GROUP_H_
