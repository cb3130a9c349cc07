#include "trainer/metrics_log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace trainer {
namespace {

std::string Contents(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(MetricsLogTest, AResumeDropsTheRecordsAfterItsCheckpoint) {
  const std::string run_dir = test_paths::FreshDir("truncate");
  ASSERT_EQ(::mkdir(run_dir.c_str(), 0755), 0);
  for (int step : {8, 16, 24}) {
    ASSERT_TRUE(AppendMetrics(run_dir, {{"step", step}}).ok());
  }
  ASSERT_TRUE(TruncateMetricsAfter(run_dir, 16).ok());
  EXPECT_EQ(Contents(MetricsPath(run_dir)), "{\"step\":8}\n{\"step\":16}\n");
  // Nothing after step 16 left: the file is not rewritten again.
  ASSERT_TRUE(TruncateMetricsAfter(run_dir, 16).ok());
  EXPECT_EQ(Contents(MetricsPath(run_dir)), "{\"step\":8}\n{\"step\":16}\n");
  // No file yet is not an error.
  const std::string fresh = test_paths::FreshDir("no_file");
  ASSERT_EQ(::mkdir(fresh.c_str(), 0755), 0);
  EXPECT_TRUE(TruncateMetricsAfter(fresh, 0).ok());
}

TEST(MetricsLogTest, AFifoOrSymlinkIsRefusedWithoutBlocking) {
  const std::string run_dir = test_paths::FreshDir("fifo");
  ASSERT_EQ(::mkdir(run_dir.c_str(), 0755), 0);
  ASSERT_EQ(::mkfifo(MetricsPath(run_dir).c_str(), 0644), 0);
  absl::Status appended = AppendMetrics(run_dir, {{"step", 1}});
  EXPECT_FALSE(appended.ok());
  EXPECT_NE(appended.message().find("metrics.jsonl"), std::string::npos)
      << appended;
  EXPECT_FALSE(TruncateMetricsAfter(run_dir, 0).ok());

  const std::string linked = test_paths::FreshDir("symlink");
  ASSERT_EQ(::mkdir(linked.c_str(), 0755), 0);
  const std::string elsewhere = linked + "/elsewhere";
  std::ofstream(elsewhere) << "{\"step\":5}\n";
  ASSERT_EQ(::symlink(elsewhere.c_str(), MetricsPath(linked).c_str()), 0);
  EXPECT_FALSE(AppendMetrics(linked, {{"step", 6}}).ok());
  EXPECT_EQ(Contents(elsewhere), "{\"step\":5}\n");
}

}  // namespace
}  // namespace trainer
