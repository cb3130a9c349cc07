// One rank of allreduce_benchmark.sh: averages gradients of the shapes in
// --shapes (a JSON list of shapes) with ProcessGroup::AllReduceMean, and
// rank 0 prints the median seconds per step as one JSON line.
//
//   RANK=r WORLD_SIZE=n MASTER_ADDR=127.0.0.1 MASTER_PORT=p
//       allreduce_benchmark --shapes=shapes.json [--steps=20]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "nlohmann/json.hpp"
#include "tools/base/files.h"
#include "tools/cli/flags.h"
#include "tools/distributed/launch_env.h"
#include "tools/distributed/process_group.h"
#include "torch/torch.h"

ABSL_FLAG(std::string, shapes, "", "JSON list of gradient shapes.");
ABSL_FLAG(int, steps, 20, "Timed steps after 3 warm-up steps.");
ABSL_FLAG(int64_t, bucket_mb, 25, "Bucket size in MiB.");

int main(int argc, char** argv) {
  cli::ParseFlagsOrExit(argc, argv, "allreduce_benchmark --shapes=FILE");
  absl::StatusOr<std::string> text =
      base::ReadRegularFile(absl::GetFlag(FLAGS_shapes), 1 << 20);
  cli::ExitIfError(text.status());
  std::vector<torch::Tensor> gradients;
  for (const auto& shape : nlohmann::json::parse(*text)) {
    gradients.push_back(torch::randn(shape.get<std::vector<int64_t>>()));
  }
  absl::StatusOr<distributed::LaunchEnv> env =
      distributed::LaunchEnvFrom(distributed::ProcessEnvironment(), {});
  cli::ExitIfError(env.status());
  absl::StatusOr<std::unique_ptr<distributed::ProcessGroup>> group =
      distributed::ProcessGroup::Connect(*env, {});
  cli::ExitIfError(group.status());
  const int64_t bucket_bytes = absl::GetFlag(FLAGS_bucket_mb) << 20;
  std::vector<double> seconds;
  for (int step = -3; step < absl::GetFlag(FLAGS_steps); ++step) {
    cli::ExitIfError((*group)->Barrier());
    auto start = std::chrono::steady_clock::now();
    cli::ExitIfError((*group)->AllReduceMean(gradients, bucket_bytes));
    auto end = std::chrono::steady_clock::now();
    if (step >= 0) {
      seconds.push_back(std::chrono::duration<double>(end - start).count());
    }
  }
  std::sort(seconds.begin(), seconds.end());
  if ((*group)->rank() == 0) {
    std::printf("%s\n",
                nlohmann::json({{"median_s", seconds[seconds.size() / 2]},
                                {"tensors", gradients.size()}})
                    .dump()
                    .c_str());
  }
  return 0;
}
