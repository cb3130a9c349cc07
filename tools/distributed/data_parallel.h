// The arithmetic of data parallelism, so that N processes take the same
// optimizer steps as one (up to the order of floating-point sums):
//
//   - every process walks the same global batches (the trainer's
//     EpochPermutation(seed, epoch) cut into --batch_size pieces) and takes
//     one contiguous slice of each: SliceOfBatch;
//   - each computes the mean loss over its slice and its gradients, then
//     AverageGradients weighs them by slice size and sums them over the
//     ranks: the mean over the whole global batch, whatever the split
//     (a batch of 10 over 3 ranks is 4 + 3 + 3; a rank may get nothing).
//
//   distributed::Slice slice = distributed::SliceOfBatch(
//       begin, end, group->world_size(), group->rank());
//   ... forward and backward over order[slice.begin, slice.end) ...
//   RETURN_IF_ERROR(distributed::AverageGradients(
//       *group, parameters, slice.size(), end - begin));
//   optimizer.step();
#ifndef TOOLS_DISTRIBUTED_DATA_PARALLEL_H_
#define TOOLS_DISTRIBUTED_DATA_PARALLEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "tools/distributed/process_group.h"
#include "torch/types.h"

namespace distributed {

struct Slice {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Rank `rank`'s part of the global batch [begin, end): the first
// (end - begin) % world ranks take one item more. Torch-free arithmetic.
Slice SliceOfBatch(int64_t begin, int64_t end, int world, int rank);

// Turns each parameter's gradient of this rank's mean loss over
// `local_count` examples into the gradient of the mean loss over all
// `global_count` examples of the step, on every rank: grad * local_count /
// global_count, summed over the ranks in buckets. A parameter without a
// gradient (an empty slice) contributes zeros, so that every rank sends
// the same tensors. Errors: those of ProcessGroup::AllReduceSum;
// kInvalidArgument when global_count < 1.
absl::Status AverageGradients(ProcessGroup& group,
                              const std::vector<torch::Tensor>& parameters,
                              int64_t local_count, int64_t global_count);

}  // namespace distributed

#endif  // TOOLS_DISTRIBUTED_DATA_PARALLEL_H_
