#include "checkpoint/manager.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

using test_paths::FreshDir;

proto::Metadata MakeMetadata(
    int64_t epoch, int64_t step, double value,
    proto::MonitoredMetric::Mode mode = proto::MonitoredMetric::MIN) {
  proto::Metadata metadata;
  metadata.mutable_progress()->set_epoch(epoch);
  metadata.mutable_progress()->set_global_step(step);
  metadata.mutable_monitored()->set_name("val_loss");
  metadata.mutable_monitored()->set_mode(mode);
  metadata.mutable_monitored()->set_value(value);
  (*metadata.mutable_metrics())["val_loss"] = value;
  return metadata;
}

// A real checkpoint: one small float tensor whose bytes derive from `step`.
void WriteCheckpoint(const std::string& path, const proto::Metadata& metadata) {
  auto writer = CheckpointWriter::Create(path, WriterOptions{/*sync=*/false});
  ASSERT_TRUE(writer.ok()) << writer.status();
  std::vector<float> values(16);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<float>(metadata.progress().global_step() * 100 + i);
  }
  ASSERT_TRUE((*writer)
                  ->AddTensor("w", proto::FLOAT32, {4, 4},
                              absl::Span<const char>(
                                  reinterpret_cast<const char*>(values.data()),
                                  values.size() * sizeof(float)))
                  .ok());
  *(*writer)->mutable_metadata() = metadata;
  absl::Status status = (*writer)->Commit();
  ASSERT_TRUE(status.ok()) << status;
}

// PathForNew + write + OnCommitted, as a training loop does. Returns the
// checkpoint's name.
std::string Save(CheckpointManager& manager, const proto::Metadata& metadata) {
  absl::StatusOr<std::string> path = manager.PathForNew(metadata);
  EXPECT_TRUE(path.ok()) << path.status();
  if (!path.ok()) return "";
  WriteCheckpoint(*path, metadata);
  absl::Status status = manager.OnCommitted(*path);
  EXPECT_TRUE(status.ok()) << status;
  return fs::path(*path).filename().string();
}

std::string LinkTarget(const std::string& run_dir, const std::string& link) {
  std::error_code error;
  fs::path target = fs::read_symlink(fs::path(run_dir) / link, error);
  return error ? "" : target.string();
}

std::vector<std::string> CheckpointNamesOnDisk(const std::string& run_dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(run_dir)) {
    std::string name = item.path().filename().string();
    if (name == "best" || name == "last") continue;
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

CheckpointManager::Options MonitorOptions(proto::MonitoredMetric::Mode mode) {
  CheckpointManager::Options options;
  options.monitor = "val_loss";
  options.mode = mode;
  options.name_template = "step={step:03}";
  return options;
}

// ---------------------------------------------------------------------------
// Name template

TEST(NameTemplateTest, DefaultTemplateRendersEpochStepAndMetric) {
  auto name_template = NameTemplate::Parse(NameTemplate::kDefault);
  ASSERT_TRUE(name_template.ok()) << name_template.status();
  auto name = name_template->Render(MakeMetadata(3, 42, 0.123456), "val_loss");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "epoch=0003-step=000042-val_loss=0.1235");
}

TEST(NameTemplateTest, FieldsSpecsAndEscapes) {
  proto::Metadata metadata = MakeMetadata(7, 1234, 2.5);
  (*metadata.mutable_metrics())["acc"] = 0.98765;
  struct Case {
    const char* text;
    const char* monitor;
    const char* expected;
  } cases[] = {
      {"{epoch}-{step}", "val_loss", "7-1234"},
      {"s{step:2}", "val_loss", "s1234"},
      {"s{step:6}", "val_loss", "s  1234"},
      {"{acc:.2f}", "val_loss", "0.99"},
      {"{acc:.1e}", "val_loss", "9.9e-01"},
      {"{value}", "val_loss", "2.5"},
      {"{{literal}}-{step}", "val_loss", "{literal}-1234"},
      {"{missing:.3f}", "val_loss", "nan"},
      {"{monitor}={value:.1f}", "val/loss", "val_loss=nan"},
      {"{monitor}={value:.1f}", "acc", "acc=1.0"},
  };
  for (const Case& test_case : cases) {
    auto name_template = NameTemplate::Parse(test_case.text);
    ASSERT_TRUE(name_template.ok())
        << test_case.text << ": " << name_template.status();
    auto name = name_template->Render(metadata, test_case.monitor);
    ASSERT_TRUE(name.ok()) << test_case.text << ": " << name.status();
    EXPECT_EQ(*name, test_case.expected) << test_case.text;
  }
}

TEST(NameTemplateTest, InfinityAndSlashInMetricName) {
  proto::Metadata metadata = MakeMetadata(0, 1, 0);
  (*metadata.mutable_metrics())["val/loss"] =
      -std::numeric_limits<double>::infinity();
  auto name_template = NameTemplate::Parse("{monitor}={value:.2f}");
  ASSERT_TRUE(name_template.ok());
  auto name = name_template->Render(metadata, "val/loss");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "val_loss=-inf");
}

TEST(NameTemplateTest, RejectsMalformedTemplates) {
  for (const char* text :
       {"", "step={step", "step=}", "{}", "a/b", "{step:x}", "{step:.2f}",
        "{value:4}", "{value:.f}", "{value:.2g}", "{monitor:.2f}", "{a{b}"}) {
    auto name_template = NameTemplate::Parse(text);
    EXPECT_FALSE(name_template.ok()) << "'" << text << "' was accepted";
    if (!name_template.ok()) {
      EXPECT_EQ(name_template.status().code(),
                absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(NameTemplateTest, RejectsNamesThatAreLinksOrHidden) {
  for (const char* text : {"last", "best", ".{step}"}) {
    auto name_template = NameTemplate::Parse(text);
    ASSERT_TRUE(name_template.ok()) << text;
    EXPECT_FALSE(name_template->Render(MakeMetadata(0, 1, 0), "m").ok())
        << text;
  }
}

// ---------------------------------------------------------------------------
// Pure policy

TEST(PolicyTest, IsImprovement) {
  using M = proto::MonitoredMetric;
  EXPECT_TRUE(IsImprovement(0.5, 1.0, M::MIN));
  EXPECT_FALSE(IsImprovement(1.0, 1.0, M::MIN));  // Tie keeps the incumbent.
  EXPECT_FALSE(IsImprovement(2.0, 1.0, M::MIN));
  EXPECT_TRUE(IsImprovement(2.0, 1.0, M::MAX));
  EXPECT_FALSE(IsImprovement(1.0, 1.0, M::MAX));
  EXPECT_FALSE(IsImprovement(0.5, 1.0, M::MAX));
  EXPECT_FALSE(IsImprovement(kNaN, 1.0, M::MIN));
  EXPECT_FALSE(IsImprovement(kNaN, 1.0, M::MAX));
  EXPECT_FALSE(IsImprovement(kNaN, kNaN, M::MIN));
  EXPECT_TRUE(IsImprovement(5.0, kNaN, M::MIN));
  EXPECT_TRUE(IsImprovement(-5.0, kNaN, M::MAX));
}

TEST(PolicyTest, MonitoredValuePrefersMonitoredThenMetrics) {
  proto::Metadata metadata = MakeMetadata(0, 1, 0.25);
  (*metadata.mutable_metrics())["acc"] = 0.9;
  EXPECT_EQ(MonitoredValue(metadata, "val_loss"), 0.25);
  EXPECT_EQ(MonitoredValue(metadata, "acc"), 0.9);
  EXPECT_TRUE(std::isnan(MonitoredValue(metadata, "nope")));
  EXPECT_TRUE(std::isnan(MonitoredValue(metadata, "")));
}

// ---------------------------------------------------------------------------
// Best and last

struct Step {
  double value;
  int expected_best_step;  // 0: no best yet.
};

void RunScript(const std::string& dir_name, proto::MonitoredMetric::Mode mode,
               const std::vector<Step>& script) {
  std::string run_dir = FreshDir(dir_name);
  auto manager = CheckpointManager::Open(run_dir, MonitorOptions(mode));
  ASSERT_TRUE(manager.ok()) << manager.status();
  for (size_t i = 0; i < script.size(); ++i) {
    int step = static_cast<int>(i) + 1;
    SCOPED_TRACE(absl::StrCat("step ", step, " value ", script[i].value));
    std::string name = Save(**manager, MakeMetadata(0, step, script[i].value));
    EXPECT_EQ(name, absl::StrFormat("step=%03d", step));
    EXPECT_EQ(LinkTarget(run_dir, "last"), name);
    EXPECT_EQ((*manager)->LastPath(), run_dir + "/" + name);
    if (script[i].expected_best_step == 0) {
      EXPECT_EQ((*manager)->BestPath(), "");
      EXPECT_EQ(LinkTarget(run_dir, "best"), "");
    } else {
      std::string best =
          absl::StrFormat("step=%03d", script[i].expected_best_step);
      EXPECT_EQ(LinkTarget(run_dir, "best"), best);
      EXPECT_EQ((*manager)->BestPath(), run_dir + "/" + best);
    }
  }
  // The links resolve to checkpoints a reader opens.
  EXPECT_TRUE(CheckpointReader::Open(run_dir + "/last").ok());
  // Reopening recomputes the same best and keeps last.
  std::string best_before = (*manager)->BestPath();
  std::string last_before = (*manager)->LastPath();
  manager->reset();
  auto reopened = CheckpointManager::Open(run_dir, MonitorOptions(mode));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->BestPath(), best_before);
  EXPECT_EQ((*reopened)->LastPath(), last_before);
}

TEST(CheckpointManagerTest, MinModeScript) {
  RunScript("min_script", proto::MonitoredMetric::MIN,
            {
                {1.0, 1},   // First finite value becomes best.
                {0.5, 2},   // Improves.
                {0.5, 2},   // Tie keeps the older best.
                {0.7, 2},   // Worse.
                {kNaN, 2},  // NaN never improves.
                {0.3, 6},   // Improves again.
                {-std::numeric_limits<double>::infinity(), 7},
            });
}

TEST(CheckpointManagerTest, MaxModeScript) {
  RunScript("max_script", proto::MonitoredMetric::MAX,
            {
                {0.5, 1},
                {0.8, 2},
                {0.8, 2},
                {0.6, 2},
                {kNaN, 2},
                {0.9, 6},
            });
}

TEST(CheckpointManagerTest, FirstNaNIsNotBest) {
  RunScript("first_nan", proto::MonitoredMetric::MIN,
            {
                {kNaN, 0},
                {kNaN, 0},
                {2.0, 3},
                {kNaN, 3},
                {3.0, 3},
            });
}

TEST(CheckpointManagerTest, NoMonitorMeansNoBest) {
  std::string run_dir = FreshDir("no_monitor");
  CheckpointManager::Options options;
  options.name_template = "step={step}";
  options.keep_last = 2;
  auto manager = CheckpointManager::Open(run_dir, options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  for (int step = 1; step <= 4; ++step)
    Save(**manager, MakeMetadata(0, step, 1));
  EXPECT_EQ((*manager)->BestPath(), "");
  EXPECT_EQ(LinkTarget(run_dir, "best"), "");
  EXPECT_EQ(LinkTarget(run_dir, "last"), "step=4");
  EXPECT_THAT(CheckpointNamesOnDisk(run_dir), ElementsAre("step=3", "step=4"));
}

TEST(CheckpointManagerTest, RejectsMonitorWithoutMode) {
  CheckpointManager::Options options;
  options.monitor = "val_loss";
  options.mode = proto::MonitoredMetric::MODE_UNSPECIFIED;
  EXPECT_EQ(
      CheckpointManager::Open(FreshDir("no_mode"), options).status().code(),
      absl::StatusCode::kInvalidArgument);
  options.mode = proto::MonitoredMetric::MIN;
  options.name_template = "{step";
  EXPECT_EQ(CheckpointManager::Open(FreshDir("bad_template"), options)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Retention

std::vector<std::string> RunRetention(const std::string& dir_name,
                                      int keep_last, int keep_top_k,
                                      const std::vector<double>& values) {
  std::string run_dir = FreshDir(dir_name);
  CheckpointManager::Options options =
      MonitorOptions(proto::MonitoredMetric::MIN);
  options.keep_last = keep_last;
  options.keep_top_k = keep_top_k;
  auto manager = CheckpointManager::Open(run_dir, options);
  EXPECT_TRUE(manager.ok()) << manager.status();
  if (!manager.ok()) return {};
  for (size_t i = 0; i < values.size(); ++i) {
    Save(**manager, MakeMetadata(0, static_cast<int>(i) + 1, values[i]));
  }
  std::vector<std::string> listed;
  for (const CheckpointEntry& entry : (*manager)->List()) {
    listed.push_back(entry.name);
  }
  // What the manager believes is what is on disk: no leftovers.
  EXPECT_EQ(listed, CheckpointNamesOnDisk(run_dir));
  EXPECT_TRUE(CheckpointReader::Open(run_dir + "/last").ok());
  if (!(*manager)->BestPath().empty()) {
    EXPECT_TRUE(CheckpointReader::Open(run_dir + "/best").ok());
  }
  return listed;
}

TEST(RetentionTest, KeepLastAndTopOneNeverDropsBest) {
  EXPECT_THAT(RunRetention("keep_2_1", 2, 1, {0.1, 0.5, 0.6, 0.7, 0.8}),
              ElementsAre("step=001", "step=004", "step=005"));
}

TEST(RetentionTest, TopKKeepsTheBestKNotTheFirstK) {
  EXPECT_THAT(RunRetention("keep_1_2", 1, 2, {0.9, 0.8, 0.1, 0.7, 0.2, 0.6}),
              ElementsAre("step=003", "step=005", "step=006"));
}

TEST(RetentionTest, TopKTiesKeepTheOlder) {
  EXPECT_THAT(RunRetention("keep_ties", 0, 2, {0.5, 0.5, 0.5, 0.9}),
              ElementsAre("step=001", "step=002", "step=004"));
}

TEST(RetentionTest, ZeroAndZeroKeepsOnlyBestAndLast) {
  EXPECT_THAT(RunRetention("keep_0_0", 0, 0, {0.3, 0.1, 0.4, 0.5}),
              ElementsAre("step=002", "step=004"));
}

TEST(RetentionTest, LastIsKeptEvenWhenItIsNaN) {
  EXPECT_THAT(RunRetention("keep_nan", 0, 0, {0.3, kNaN}),
              ElementsAre("step=001", "step=002"));
}

TEST(RetentionTest, MinusOneOnBothKeepsAll) {
  EXPECT_THAT(RunRetention("keep_all", -1, -1, {0.3, 0.4, 0.5}),
              ElementsAre("step=001", "step=002", "step=003"));
}

// --keep_last=N alone keeps N (plus best and last); it used to keep all,
// because the unset keep_top_k=-1 meant "keep everything".
TEST(RetentionTest, OneRuleAloneDecides) {
  EXPECT_THAT(RunRetention("keep_last_alone", 1, -1, {0.1, 0.4, 0.5, 0.6}),
              ElementsAre("step=001", "step=004"));
  EXPECT_THAT(RunRetention("keep_top_alone", -1, 2, {0.3, 0.1, 0.2, 0.5}),
              ElementsAre("step=002", "step=003", "step=004"));
}

TEST(RetentionTest, SelectForDeletionIsPure) {
  std::vector<CheckpointEntry> entries;
  for (int step = 1; step <= 5; ++step) {
    CheckpointEntry entry;
    entry.name = absl::StrCat("s", step);
    entry.step = step;
    entry.metric = step == 3 ? kNaN : step;
    entry.is_best = step == 2;  // Not the best by metric: still protected.
    entry.is_last = step == 3;
    entries.push_back(entry);
  }
  EXPECT_THAT(SelectForDeletion(entries, 1, 1, proto::MonitoredMetric::MAX),
              ElementsAre("s1", "s4"));
  EXPECT_THAT(SelectForDeletion(entries, 0, 2, proto::MonitoredMetric::MIN),
              ElementsAre("s4", "s5"));
  EXPECT_TRUE(
      SelectForDeletion(entries, -1, -1, proto::MonitoredMetric::MIN).empty());
  // One rule alone decides: --keep_last=N without --keep_top_k keeps the N
  // newest (plus best and last), it does not keep everything.
  EXPECT_THAT(SelectForDeletion(entries, 1, -1, proto::MonitoredMetric::MIN),
              ElementsAre("s1", "s4"));
  EXPECT_THAT(SelectForDeletion(entries, -1, 0, proto::MonitoredMetric::MIN),
              ElementsAre("s1", "s4", "s5"));
}

// ---------------------------------------------------------------------------
// Names

TEST(CheckpointManagerTest, NameClashesGetVersionSuffixes) {
  std::string run_dir = FreshDir("clash");
  CheckpointManager::Options options =
      MonitorOptions(proto::MonitoredMetric::MIN);
  options.name_template = "epoch={epoch:02}-{monitor}={value:.1f}";
  auto manager = CheckpointManager::Open(run_dir, options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  // Two names handed out before either commits (an async saver in flight).
  auto first = (*manager)->PathForNew(MakeMetadata(1, 10, 0.5));
  auto second = (*manager)->PathForNew(MakeMetadata(1, 20, 0.5));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, run_dir + "/epoch=01-val_loss=0.5");
  EXPECT_EQ(*second, run_dir + "/epoch=01-val_loss=0.5-v1");
  WriteCheckpoint(*first, MakeMetadata(1, 10, 0.5));
  WriteCheckpoint(*second, MakeMetadata(1, 20, 0.5));
  ASSERT_TRUE((*manager)->OnCommitted(*second).ok());
  ASSERT_TRUE((*manager)->OnCommitted(*first).ok());
  EXPECT_EQ(Save(**manager, MakeMetadata(1, 30, 0.5)),
            "epoch=01-val_loss=0.5-v2");
  // A directory that is not a checkpoint also takes the name.
  fs::create_directories(run_dir + "/epoch=02-val_loss=0.5");
  EXPECT_EQ(Save(**manager, MakeMetadata(2, 40, 0.5)),
            "epoch=02-val_loss=0.5-v1");
}

TEST(CheckpointManagerTest, OnCommittedRejectsPathsOutsideTheRunDirectory) {
  std::string run_dir = FreshDir("outside");
  std::string elsewhere = FreshDir("outside_other");
  fs::create_directories(elsewhere);
  WriteCheckpoint(elsewhere + "/ckpt", MakeMetadata(0, 1, 1));
  auto manager = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(manager.ok());
  EXPECT_EQ((*manager)->OnCommitted(elsewhere + "/ckpt").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE((*manager)->OnCommitted(run_dir + "/never-written").ok());
  EXPECT_EQ(LinkTarget(run_dir, "last"), "");
}

// ---------------------------------------------------------------------------
// Open: temporaries, corrupt checkpoints, link repair

TEST(CheckpointManagerTest, OpenRemovesStaleTemporaries) {
  std::string run_dir = FreshDir("stale");
  auto manager = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(manager.ok());
  Save(**manager, MakeMetadata(0, 1, 1.0));
  manager->reset();
  // What a writer, a link switch and a deletion killed mid-way leave: the
  // pid in their names is a process that has exited.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_EQ(waitpid(dead, nullptr, 0), dead);
  const std::string writer = absl::StrCat("/.tmp-step=002-", dead, "-1f");
  fs::create_directories(run_dir + writer + "/sub");
  test_paths::WriteFile(run_dir + writer + "/data-00000.bin", "partial");
  fs::create_directories(
      absl::StrCat(run_dir, "/.tmp-delete-step=000-", dead, "-0"));
  fs::create_symlink("step=001",
                     absl::StrCat(run_dir, "/.tmp-link-best-", dead, "-0"));
  // Another live process's save in progress is not ours to delete.
  const std::string live = absl::StrCat("/.tmp-step=003-", getppid(), "-2a");
  fs::create_directories(run_dir + live);
  auto reopened = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE(fs::exists(run_dir + live));
  EXPECT_FALSE(fs::exists(run_dir + writer));
  fs::remove_all(run_dir + live);
  EXPECT_THAT(CheckpointNamesOnDisk(run_dir), ElementsAre("step=001"));
  EXPECT_EQ((*reopened)->LastPath(), run_dir + "/step=001");
}

TEST(CheckpointManagerTest, OpenSkipsCorruptCheckpointWithWarning) {
  std::string run_dir = FreshDir("corrupt_open");
  auto manager = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(manager.ok());
  Save(**manager, MakeMetadata(0, 1, 1.0));
  Save(**manager, MakeMetadata(0, 2, 0.5));
  manager->reset();
  // The manifest of the best checkpoint is destroyed.
  test_paths::WriteFile(run_dir + "/step=002/manifest.pb", "garbage");
  ::testing::internal::CaptureStderr();
  auto reopened = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  std::string warnings = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_THAT(warnings, HasSubstr("step=002"));
  ASSERT_EQ((*reopened)->List().size(), 1u);
  // Links repaired to the surviving checkpoint; the corrupt one is kept.
  EXPECT_EQ(LinkTarget(run_dir, "best"), "step=001");
  EXPECT_EQ(LinkTarget(run_dir, "last"), "step=001");
  EXPECT_TRUE(fs::exists(run_dir + "/step=002"));
}

TEST(CheckpointManagerTest, ListRunDirectoryIsReadOnly) {
  std::string run_dir = FreshDir("list");
  auto manager = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(manager.ok());
  Save(**manager, MakeMetadata(1, 5, 0.5));
  Save(**manager, MakeMetadata(2, 10, 0.7));
  fs::create_directories(run_dir + "/.tmp-x-1");
  auto entries = ListRunDirectory(run_dir);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "step=005");
  EXPECT_EQ((*entries)[0].epoch, 1);
  EXPECT_EQ((*entries)[0].metric_name, "val_loss");
  EXPECT_EQ((*entries)[0].metric, 0.5);
  EXPECT_TRUE((*entries)[0].is_best);
  EXPECT_FALSE((*entries)[0].is_last);
  EXPECT_TRUE((*entries)[1].is_last);
  EXPECT_FALSE((*entries)[1].is_best);
  EXPECT_TRUE(fs::exists(run_dir + "/.tmp-x-1"));
  EXPECT_FALSE(ListRunDirectory(run_dir + "/missing").ok());
}

TEST(CheckpointManagerTest, ConcurrentCommitsKeepConsistentState) {
  std::string run_dir = FreshDir("concurrent");
  CheckpointManager::Options options =
      MonitorOptions(proto::MonitoredMetric::MIN);
  options.keep_last = 2;
  options.keep_top_k = 1;
  auto manager = CheckpointManager::Open(run_dir, options);
  ASSERT_TRUE(manager.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        int step = t * 100 + i + 1;
        Save(**manager, MakeMetadata(0, step, 1.0 / step));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::vector<std::string> listed;
  for (const CheckpointEntry& entry : (*manager)->List()) {
    listed.push_back(entry.name);
  }
  EXPECT_EQ(listed, CheckpointNamesOnDisk(run_dir));
  EXPECT_EQ(LinkTarget(run_dir, "best"), "step=305");
  EXPECT_TRUE(CheckpointReader::Open(run_dir + "/last").ok());
  EXPECT_LE(listed.size(), 4u);
}

// ---------------------------------------------------------------------------
// Resume

// Corrupts the first byte of tensor "w" in place (same size: the manifest
// still validates, the checksum does not).
void FlipFirstTensorByte(const std::string& checkpoint) {
  auto reader = CheckpointReader::Open(checkpoint);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const proto::TensorEntry* entry = (*reader)->FindTensor("w");
  ASSERT_NE(entry, nullptr);
  std::string data =
      checkpoint + "/" +
      (*reader)->manifest().data_files(entry->data_file()).name();
  test_paths::FlipByte(data, entry->offset(), 0x5a);
}

TEST(FindResumeCheckpointTest, ReturnsLast) {
  std::string run_dir = FreshDir("resume_last");
  auto manager = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(manager.ok());
  Save(**manager, MakeMetadata(0, 1, 1.0));
  Save(**manager, MakeMetadata(0, 2, 2.0));
  auto resume = FindResumeCheckpoint(run_dir);
  ASSERT_TRUE(resume.ok()) << resume.status();
  EXPECT_EQ(*resume, run_dir + "/step=002");
}

TEST(FindResumeCheckpointTest, SkipsCorruptNewestWithWarning) {
  std::string run_dir = FreshDir("resume_corrupt");
  auto manager = CheckpointManager::Open(
      run_dir, MonitorOptions(proto::MonitoredMetric::MIN));
  ASSERT_TRUE(manager.ok());
  Save(**manager, MakeMetadata(0, 1, 1.0));
  Save(**manager, MakeMetadata(0, 2, 2.0));
  Save(**manager, MakeMetadata(0, 3, 3.0));
  Save(**manager, MakeMetadata(0, 4, 4.0));
  FlipFirstTensorByte(run_dir + "/step=004");  // `last`: checksum mismatch.
  test_paths::WriteFile(run_dir + "/step=003/manifest.pb", "x");
  ::testing::internal::CaptureStderr();
  auto resume = FindResumeCheckpoint(run_dir);
  std::string warnings = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(resume.ok()) << resume.status();
  EXPECT_EQ(*resume, run_dir + "/step=002");
  EXPECT_THAT(warnings, HasSubstr("step=004"));
  EXPECT_THAT(warnings, HasSubstr("step=003"));
  EXPECT_THAT(warnings, ::testing::Not(HasSubstr("step=002")));
}

TEST(FindResumeCheckpointTest, WithoutLastLinkPicksNewestValidByStep) {
  std::string run_dir = test_paths::EmptyDir("resume_nolink");
  // Names sort opposite to steps: the step decides.
  WriteCheckpoint(run_dir + "/a", MakeMetadata(0, 30, 1));
  WriteCheckpoint(run_dir + "/b", MakeMetadata(0, 20, 1));
  WriteCheckpoint(run_dir + "/c", MakeMetadata(0, 10, 1));
  auto resume = FindResumeCheckpoint(run_dir);
  ASSERT_TRUE(resume.ok()) << resume.status();
  EXPECT_EQ(*resume, run_dir + "/a");
}

TEST(FindResumeCheckpointTest, NotFoundWhenNothingValid) {
  std::string run_dir = FreshDir("resume_empty");
  EXPECT_EQ(FindResumeCheckpoint(run_dir).status().code(),
            absl::StatusCode::kNotFound);
  fs::create_directories(run_dir);
  EXPECT_EQ(FindResumeCheckpoint(run_dir).status().code(),
            absl::StatusCode::kNotFound);
  WriteCheckpoint(run_dir + "/only", MakeMetadata(0, 1, 1));
  FlipFirstTensorByte(run_dir + "/only");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(FindResumeCheckpoint(run_dir).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("only"));
}

}  // namespace
}  // namespace checkpoint
