// Train() in-process: the usage errors a user can make, each a
// kInvalidArgument naming the flag, before anything is written. (train_test
// checks, with real processes, that `train` turns these into one line and
// exit code 2.)
#include "trainer/trainer.h"

#include <sys/stat.h>
#include <torch/cuda.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace trainer {
namespace {

using ::testing::HasSubstr;

TrainOptions SmallRun(const std::string& name) {
  TrainOptions options;
  options.run_dir = test_paths::FreshDir(name);
  options.data_dir = test_paths::ExternalRunfile("fashion_mnist");
  options.epochs = 1;
  options.max_train_examples = 64;
  options.max_val_examples = 64;
  options.max_test_examples = 64;
  options.batch_size = 64;
  options.threads = 1;
  options.progress = "none";
  return options;
}

struct UsageCase {
  const char* name;
  void (*edit)(TrainOptions&);
  const char* message;
};

TEST(TrainerTest, UsageErrorsNameTheFlagAndWriteNothing) {
  const std::vector<UsageCase> cases = {
      {"no_run_dir", [](TrainOptions& o) { o.run_dir.clear(); }, "--run_dir"},
      {"bad_model", [](TrainOptions& o) { o.model = "resnet"; }, "--model"},
      {"bad_epochs", [](TrainOptions& o) { o.epochs = 0; }, "--epochs"},
      {"bad_optimizer", [](TrainOptions& o) { o.optimizer = "rmsprop"; },
       "--optimizer"},
      {"bad_momentum", [](TrainOptions& o) { o.momentum = 1; }, "--momentum"},
      {"bad_keep", [](TrainOptions& o) { o.keep_last = -2; }, "--keep_last"},
      {"bad_monitor", [](TrainOptions& o) { o.monitor = "accuracy"; },
       "--monitor"},
      {"no_dataset", [](TrainOptions& o) { o.data_dir = "/nonexistent"; },
       "dataset not found"},
      {"bad_device", [](TrainOptions& o) { o.device = "tpu"; }, "--device"},
      {"amp_on_cpu",
       [](TrainOptions& o) {
         o.device = "cpu";
         o.amp = true;
       },
       "--amp"},
      {"rank_outside",
       [](TrainOptions& o) {
         o.world_size = 2;
         o.rank = 2;
       },
       "--rank in [0, --world_size)"},
      {"no_meeting_point",
       [](TrainOptions& o) {
         o.device = "cpu";
         o.world_size = 2;
         o.rank = 1;
       },
       "needs the address and port where they meet"},
      {"bad_timeout", [](TrainOptions& o) { o.dist_timeout_seconds = 0; },
       "--dist_timeout_s"},
  };
  for (const UsageCase& c : cases) {
    SCOPED_TRACE(c.name);
    TrainOptions options = SmallRun(c.name);
    c.edit(options);
    absl::StatusOr<TrainSummary> summary = Train(options, nullptr);
    ASSERT_FALSE(summary.ok());
    EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument)
        << summary.status();
    EXPECT_THAT(summary.status().message(), HasSubstr(c.message));
    struct stat info;
    if (!options.run_dir.empty()) {
      EXPECT_NE(::stat((options.run_dir + "/last").c_str(), &info), 0);
    }
  }
  if (!torch::cuda::is_available()) {
    TrainOptions options = SmallRun("no_cuda");
    options.device = "cuda";
    absl::StatusOr<TrainSummary> summary = Train(options, nullptr);
    EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(summary.status().message(), HasSubstr("CUDA is not available"));
  }
}

TEST(TrainerTest, ARunDirectoryOfAnotherRunIsRefusedWithoutResume) {
  TrainOptions first = SmallRun("mixed");
  ASSERT_TRUE(Train(first, nullptr).ok());
  TrainOptions second = first;
  absl::StatusOr<TrainSummary> summary = Train(second, nullptr);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(), HasSubstr("--resume"));
}

}  // namespace
}  // namespace trainer
