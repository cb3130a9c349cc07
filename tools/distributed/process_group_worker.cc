// One process of process_group_test: joins the job its environment (or
// flags) describes and checks the collectives' results, printing
// "ok: rank R of W" and exiting 0, or one error line and exiting 1.
//
//   process_group_worker [--timeout_ms=N] [--exit_after_join]
//                        [--hang_after_join] [--train_out=FILE]
//                        [--parts_dir=DIR [--failing_rank=R]]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "tools/base/files.h"
#include "tools/cli/flags.h"
#include "tools/distributed/checkpoint_parts.h"
#include "tools/distributed/data_parallel.h"
#include "tools/distributed/launch_env.h"
#include "tools/distributed/process_group.h"
#include "torch/torch.h"

ABSL_FLAG(int, timeout_ms, 20000, "Join and collective timeout.");
ABSL_FLAG(bool, exit_after_join, false,
          "Leave right after joining, as a crashed peer would.");
ABSL_FLAG(bool, hang_after_join, false,
          "Sleep after joining until killed, as a hung peer would.");
ABSL_FLAG(std::string, train_out, "",
          "Instead of the collectives: train a small MLP data-parallel and "
          "write its final parameters (float32, in order) to this file.");

ABSL_FLAG(std::string, parts_dir, "",
          "Instead of the collectives: save a checkpoint DIR/ckpt of one "
          "part per rank (rank r's tensor rank/<r>/x holds r), rank 0 "
          "committing it.");
ABSL_FLAG(int, failing_rank, -1,
          "With --parts_dir: this rank's part cannot be written.");

namespace {

void Check(bool ok, const std::string& what) {
  if (!ok) cli::ExitWithError(absl::StrCat("wrong result: ", what), 1);
}

// Two epochs of SGD with momentum over 23 examples in global batches of 10
// (10, 10, 3: uneven over 2 and 3 ranks), each rank taking its slice of
// every batch; the parameters must come out as one process's.
void TrainDataParallel(distributed::ProcessGroup& group,
                       const std::string& out) {
  torch::manual_seed(7);
  torch::nn::Sequential model(torch::nn::Linear(6, 16), torch::nn::Tanh(),
                              torch::nn::Linear(16, 3));
  const torch::Tensor inputs = torch::randn({23, 6});
  const torch::Tensor labels = torch::randint(0, 3, {23});
  std::vector<torch::Tensor> parameters = model->parameters();
  // Rank 0's initial values everywhere (here they agree anyway).
  cli::ExitIfError(group.Broadcast(parameters, /*root=*/0));
  torch::optim::SGD optimizer(parameters,
                              torch::optim::SGDOptions(0.1).momentum(0.9));
  constexpr int64_t kBatch = 10;
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (int64_t begin = 0; begin < inputs.size(0); begin += kBatch) {
      const int64_t end = std::min<int64_t>(begin + kBatch, inputs.size(0));
      const distributed::Slice slice = distributed::SliceOfBatch(
          begin, end, group.world_size(), group.rank());
      optimizer.zero_grad();
      if (slice.size() > 0) {
        torch::Tensor loss = torch::nn::functional::cross_entropy(
            model->forward(inputs.slice(0, slice.begin, slice.end)),
            labels.slice(0, slice.begin, slice.end));
        loss.backward();
      }
      cli::ExitIfError(distributed::AverageGradients(
          group, parameters, slice.size(), end - begin));
      optimizer.step();
    }
  }
  std::string bytes;
  for (const torch::Tensor& parameter : parameters) {
    torch::Tensor flat = parameter.detach().contiguous();
    bytes.append(static_cast<const char*>(flat.data_ptr()), flat.nbytes());
  }
  cli::ExitIfError(base::WriteFileAtomically(out, bytes));
  std::printf("ok: rank %d of %d trained\n", group.rank(), group.world_size());
}

void SaveParts(distributed::ProcessGroup& group, const std::string& dir) {
  const int rank = group.rank();
  const torch::Tensor own = torch::full({3}, rank, torch::kInt64);
  const std::string id = "step=1";
  if (rank > 0) {
    const std::string where = rank == absl::GetFlag(FLAGS_failing_rank)
                                  ? dir + "/no such directory"
                                  : dir;
    cli::ExitIfError(distributed::SavePart(
        group, where, id, {{absl::StrCat("rank/", rank, "/x"), own}},
        absl::StrCat("state of ", rank)));
    std::printf("ok: rank %d wrote its part\n", rank);
    return;
  }
  absl::StatusOr<std::unique_ptr<checkpoint::CheckpointWriter>> writer =
      checkpoint::CheckpointWriter::Create(dir + "/ckpt");
  cli::ExitIfError(writer.status());
  cli::ExitIfError((*writer)->AddTensor(
      "rank/0/x", checkpoint::proto::INT64, {3},
      {static_cast<const char*>(own.data_ptr()), own.nbytes()}));
  absl::StatusOr<std::vector<std::string>> states =
      distributed::CollectParts(group, id, **writer);
  if (!states.ok()) writer->reset();  // the abandoned checkpoint goes first
  cli::ExitIfError(states.status());
  for (int r = 1; r < group.world_size(); ++r) {
    Check((*states)[r] == absl::StrCat("state of ", r), "a rank's state");
  }
  cli::ExitIfError((*writer)->Commit());
  std::printf("ok: rank 0 committed %d parts\n", group.world_size());
}

}  // namespace

int main(int argc, char** argv) {
  cli::ParseFlagsOrExit(argc, argv, "process_group_worker [flags]");
  absl::StatusOr<distributed::LaunchEnv> env =
      distributed::LaunchEnvFrom(distributed::ProcessEnvironment(), {});
  cli::ExitIfError(env.status());
  distributed::ProcessGroup::Options options;
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  absl::StatusOr<std::unique_ptr<distributed::ProcessGroup>> group =
      distributed::ProcessGroup::Connect(*env, options);
  cli::ExitIfError(group.status());
  if (absl::GetFlag(FLAGS_exit_after_join)) std::_Exit(3);
  if (!absl::GetFlag(FLAGS_train_out).empty()) {
    TrainDataParallel(**group, absl::GetFlag(FLAGS_train_out));
    return 0;
  }
  if (!absl::GetFlag(FLAGS_parts_dir).empty()) {
    SaveParts(**group, absl::GetFlag(FLAGS_parts_dir));
    return 0;
  }
  while (absl::GetFlag(FLAGS_hang_after_join)) ::pause();
  const int rank = (*group)->rank();
  const double world = (*group)->world_size();

  // Means over ranks, in buckets smaller than the tensors: a contiguous
  // vector, a transposed (non-contiguous) matrix, a parameter without a
  // gradient, and a tiny tensor sharing a bucket.
  std::vector<torch::Tensor> tensors = {
      torch::full({1000}, rank + 1.0f),
      torch::full({4, 3}, 2.0 * rank, torch::kFloat64).t(),
      torch::Tensor(),
      torch::full({5}, static_cast<float>(rank)),
  };
  cli::ExitIfError((*group)->AllReduceMean(tensors, /*bucket_bytes=*/1024));
  Check(torch::allclose(tensors[0], torch::full({1000}, (world + 1) / 2)),
        "mean of rank + 1");
  Check(torch::allclose(tensors[1],
                        torch::full({3, 4}, world - 1, torch::kFloat64)),
        "mean of 2 * rank (transposed)");
  Check(torch::allclose(tensors[3], torch::full({5}, (world - 1) / 2)),
        "mean of rank");

  std::vector<torch::Tensor> counts = {torch::full({2}, rank, torch::kInt64)};
  cli::ExitIfError((*group)->AllReduceSum(counts));
  Check(torch::equal(
            counts[0],
            torch::full({2}, static_cast<int64_t>(world * (world - 1) / 2),
                        torch::kInt64)),
        "sum of ranks");

  std::vector<double> numbers = {static_cast<double>(rank), 0.5};
  cli::ExitIfError((*group)->AllReduceSum(numbers));
  Check(numbers == std::vector<double>{world * (world - 1) / 2, 0.5 * world},
        "sum of numbers");

  std::vector<torch::Tensor> parameters = {torch::full({3, 3}, rank + 10.0f),
                                           torch::full({7}, rank + 20.0f)};
  cli::ExitIfError((*group)->Broadcast(parameters, /*root=*/0));
  Check(torch::equal(parameters[0], torch::full({3, 3}, 10.0f)) &&
            torch::equal(parameters[1], torch::full({7}, 20.0f)),
        "broadcast from rank 0");
  cli::ExitIfError((*group)->Barrier());
  std::printf("ok: rank %d of %d\n", rank, static_cast<int>(world));
  return 0;
}
