#include "tools/distributed/data_parallel.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "torch/torch.h"

namespace distributed {

Slice SliceOfBatch(int64_t begin, int64_t end, int world, int rank) {
  const int64_t count = end - begin;
  const int64_t base = count / world;
  const int64_t extra = count % world;
  Slice slice;
  slice.begin = begin + rank * base + std::min<int64_t>(rank, extra);
  slice.end = slice.begin + base + (rank < extra ? 1 : 0);
  return slice;
}

absl::Status AverageGradients(ProcessGroup& group,
                              const std::vector<torch::Tensor>& parameters,
                              int64_t local_count, int64_t global_count) {
  if (global_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a step over ", global_count, " examples"));
  }
  // One process: the weight is 1 and there is nothing to sum; gradients
  // stay exactly as backward left them.
  if (group.world_size() == 1) return absl::OkStatus();
  try {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> gradients;
    gradients.reserve(parameters.size());
    const double weight = static_cast<double>(local_count) / global_count;
    for (const torch::Tensor& parameter : parameters) {
      torch::Tensor gradient = parameter.grad();
      if (!gradient.defined() || local_count == 0) {
        gradient = torch::zeros_like(parameter);
        parameter.mutable_grad() = gradient;
      } else if (weight != 1.0) {
        gradient.mul_(weight);
      }
      gradients.push_back(gradient);
    }
    return group.AllReduceSum(gradients);
  } catch (const std::exception& error) {
    return absl::InternalError(
        absl::StrCat("averaging gradients: ", error.what()));
  }
}

}  // namespace distributed
