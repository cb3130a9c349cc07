#include "checkpoint/tensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/digest.h"
#include "checkpoint/huge_pages.h"
#include "checkpoint/interop/convert.h"
#include "checkpoint/reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "torch/torch.h"

namespace checkpoint {
namespace {

using ::testing::HasSubstr;

// TEST_TMPDIR/name-N with N counting calls: a path no other call returns.
std::string UniqueTempPath(const std::string& name) {
  static int counter = 0;
  return test_paths::TempPath(name + "-" + std::to_string(counter++));
}

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

// Bitwise: torch::equal on the bytes, so NaNs and -0.0 count too.
bool SameTensor(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) {
    return false;
  }
  torch::Tensor ca = a.contiguous().cpu();
  torch::Tensor cb = b.contiguous().cpu();
  // A zero-size tensor has no data pointer, which memcmp must not see.
  return ca.nbytes() == 0 ||
         std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

CheckpointState MixedState() {
  torch::manual_seed(3);
  CheckpointState state;
  torch::Tensor base = torch::randn({4, 6});
  state.tensors = {
      {"float32", base},
      {"float64", torch::randn({3}, torch::kFloat64)},
      {"float16", torch::randn({5}).to(torch::kFloat16)},
      {"bfloat16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"int8", torch::tensor({-128, 0, 127}, torch::kInt8)},
      {"uint8", torch::tensor({0, 255}, torch::kUInt8)},
      {"int16", torch::tensor({-3, 30000}, torch::kInt16)},
      {"int32", torch::tensor({1, -2, 3}, torch::kInt32)},
      {"int64", torch::tensor({int64_t{1} << 40}, torch::kInt64)},
      {"bool", torch::tensor({true, false, true}, torch::kBool)},
      {"transposed", base.t()},
      {"strided_slice", base.index({torch::indexing::Slice(), 1})},
      {"empty", torch::zeros({0, 3})},
      {"scalar", torch::tensor(2.5)},
      {"requires_grad", torch::ones({2}, torch::requires_grad())},
      {"optimizer/exp_avg/float32", torch::randn({4, 6})},
  };
  state.metadata.mutable_progress()->set_epoch(7);
  state.metadata.set_architecture("mlp");
  state.training_state.mutable_optimizer()->set_type("sgd");
  return state;
}

void ExpectSameTensors(const NamedTensors& expected, const NamedTensors& got) {
  ASSERT_EQ(expected.size(), got.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i].first, got[i].first);
    EXPECT_TRUE(SameTensor(expected[i].second, got[i].second))
        << expected[i].first;
  }
}

TEST(TensorsTest, RoundTripsEveryDtypeLayoutAndSize) {
  CheckpointState state = MixedState();
  const std::string path = UniqueTempPath("roundtrip");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameTensors(state.tensors, loaded->tensors);
  EXPECT_EQ(loaded->tensors[13].second.dim(), 0);
  EXPECT_EQ(loaded->metadata.progress().epoch(), 7);
  EXPECT_EQ(loaded->metadata.architecture(), "mlp");
  EXPECT_EQ(loaded->training_state.optimizer().type(), "sgd");
  // Filled in by SaveCheckpoint.
  EXPECT_EQ(loaded->metadata.libtorch_version(), TORCH_VERSION);
  EXPECT_EQ(loaded->metadata.producer().tool(), "ckpt_project");
  EXPECT_FALSE(loaded->metadata.host().empty());
  EXPECT_GT(loaded->metadata.created_unix_micros(), 0);
}

TEST(TensorsTest, RecordsShapesAndDevicesInTheManifest) {
  CheckpointState state = MixedState();
  const std::string path = UniqueTempPath("manifest");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const proto::TensorEntry* transposed = (*reader)->FindTensor("transposed");
  ASSERT_NE(transposed, nullptr);
  EXPECT_THAT(transposed->shape(), ::testing::ElementsAre(6, 4));
  EXPECT_EQ(transposed->dtype(), proto::FLOAT32);
  EXPECT_EQ(transposed->saved_device(), "cpu");
  EXPECT_EQ((*reader)->FindTensor("bfloat16")->dtype(), proto::BFLOAT16);
}

TEST(TensorsTest, MmapLoadGivesZeroCopyViewsThatOutliveTheReader) {
  CheckpointState state = MixedState();
  const std::string path = UniqueTempPath("mmap");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  for (bool verify : {true, false}) {
    LoadOptions options;
    options.use_mmap = true;
    options.verify_checksums = verify;
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, options);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectSameTensors(state.tensors, loaded->tensors);
    // A view of the file mapping, not a LibTorch allocation.
    EXPECT_FALSE(loaded->tensors[0].second.storage().resizable());
    EXPECT_EQ(
        reinterpret_cast<uintptr_t>(loaded->tensors[1].second.data_ptr()) %
            kTensorAlignment,
        0u);
  }
  // A cast makes private, writable copies.
  LoadOptions cast;
  cast.use_mmap = true;
  cast.dtype = torch::kFloat64;
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, cast);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->tensors[0].second.storage().resizable());
  loaded->tensors[0].second.fill_(1.0);
}

TEST(TensorsTest, CastsOnlyFloatingModelTensors) {
  CheckpointState state = MixedState();
  const std::string path = UniqueTempPath("cast");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  LoadOptions options;
  options.dtype = torch::kFloat16;
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (const auto& [name, tensor] : loaded->tensors) {
    const bool floating =
        name == "float32" || name == "float64" || name == "bfloat16" ||
        name == "float16" || name == "transposed" || name == "strided_slice" ||
        name == "empty" || name == "scalar" || name == "requires_grad";
    if (floating) {
      EXPECT_EQ(tensor.scalar_type(), torch::kFloat16) << name;
    }
  }
  EXPECT_EQ(loaded->tensors[4].second.scalar_type(), torch::kInt8);
  EXPECT_EQ(loaded->tensors[9].second.scalar_type(), torch::kBool);
  EXPECT_EQ(loaded->tensors.back().second.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(loaded->tensors[0].second.to(torch::kFloat32),
                              state.tensors[0].second, 1e-2, 1e-2));

  options.dtype = torch::kInt32;
  absl::StatusOr<CheckpointState> bad = LoadCheckpoint(path, options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TensorsTest, CudaDeviceWithoutCudaIsAClearError) {
  CheckpointState state = MixedState();
  const std::string path = UniqueTempPath("device");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  LoadOptions options;
  options.device = torch::Device("cuda:0");
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, options);
  if (torch::cuda::is_available()) {
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(loaded->tensors[0].second.is_cuda());
    ExpectSameTensors(state.tensors, loaded->tensors);
    options.device =
        torch::Device(torch::kCUDA, torch::cuda::device_count() + 1);
    EXPECT_EQ(LoadCheckpoint(path, options).status().code(),
              absl::StatusCode::kFailedPrecondition);
  } else {
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(loaded.status().message(), HasSubstr(path));
    EXPECT_THAT(loaded.status().message(),
                HasSubstr("cannot load onto cuda:0: CUDA is not available"));
  }
  options.device = torch::Device("meta");
  EXPECT_EQ(LoadCheckpoint(path, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorsTest, VerificationCatchesCorruptionAndCanBeTurnedOff) {
  CheckpointState state;
  state.tensors = {{"a", torch::arange(64, torch::kFloat32)},
                   {"b", torch::ones({16})}};
  const std::string path = UniqueTempPath("corrupt");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  uint64_t offset = 0;
  std::string data_file;
  {
    auto reader = CheckpointReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    offset = (*reader)->FindTensor("a")->offset();
    data_file = path + "/" +
                (*reader)
                    ->manifest()
                    .data_files((*reader)->FindTensor("a")->data_file())
                    .name();
  }
  test_paths::FlipByte(data_file, offset + 5, 0x7f);  // a 0 byte becomes 0x7f
  absl::StatusOr<CheckpointState> verified = LoadCheckpoint(path);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(verified.status().message(), HasSubstr("'a'"));
  LoadOptions mmap;
  mmap.use_mmap = true;
  EXPECT_EQ(LoadCheckpoint(path, mmap).status().code(),
            absl::StatusCode::kDataLoss);

  LoadOptions unverified;
  unverified.verify_checksums = false;
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, unverified);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(SameTensor(loaded->tensors[0].second, state.tensors[0].second));
  EXPECT_TRUE(SameTensor(loaded->tensors[1].second, state.tensors[1].second));
}

TEST(TensorsTest, SaveErrorsNameThePathAndTensor) {
  CheckpointState state;
  state.tensors = {{"fine", torch::ones({2})}, {"undefined", torch::Tensor()}};
  const std::string path = UniqueTempPath("errors");
  absl::Status undefined = SaveCheckpoint(path, state);
  EXPECT_EQ(undefined.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(undefined.message(), HasSubstr(path));
  EXPECT_THAT(undefined.message(), HasSubstr("tensor 'undefined'"));
  EXPECT_FALSE(Exists(path));

  state.tensors = {{"complex", torch::ones({2}, torch::kComplexFloat)}};
  absl::Status complex = SaveCheckpoint(path, state);
  EXPECT_EQ(complex.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(complex.message(), HasSubstr("unsupported dtype"));

  absl::Status no_parent =
      SaveCheckpoint(UniqueTempPath("missing") + "/child", MixedState());
  EXPECT_FALSE(no_parent.ok());
  EXPECT_THAT(no_parent.message(), HasSubstr("missing"));

  absl::StatusOr<CheckpointState> absent =
      LoadCheckpoint(UniqueTempPath("absent"));
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
}

// Every test of the saver runs with each snapshot: a copy, a forked child
// sharing the caller's memory copy-on-write, and write-protected pages.
class AsyncCheckpointSaverTest : public testing::TestWithParam<SnapshotMode> {
 protected:
  AsyncCheckpointSaver MakeSaver() {
    return AsyncCheckpointSaver({}, /*keep_staging_buffers=*/true, GetParam());
  }
};

INSTANTIATE_TEST_SUITE_P(Snapshots, AsyncCheckpointSaverTest,
                         testing::Values(SnapshotMode::kCopy,
                                         SnapshotMode::kFork,
                                         SnapshotMode::kWriteProtect),
                         [](const testing::TestParamInfo<SnapshotMode>& info) {
                           switch (info.param) {
                             case SnapshotMode::kCopy:
                               return "Copy";
                             case SnapshotMode::kFork:
                               return "Fork";
                             case SnapshotMode::kWriteProtect:
                               return "WriteProtect";
                           }
                           return "Unknown";
                         });

// The contract: a checkpoint holds the values at the moment SaveAsync was
// called, whatever the caller does to its tensors afterwards.
// The TensorDigest of the checkpoint at `path`, after checking every
// tensor's checksum; a test failure (and "") if it does not open or check.
std::string VerifiedDigest(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(path);
  if (!reader.ok()) {
    ADD_FAILURE() << reader.status();
    return "";
  }
  absl::Status verified = (*reader)->VerifyAll();
  EXPECT_TRUE(verified.ok()) << verified;
  absl::StatusOr<std::string> digest = TensorDigest(**reader);
  if (!digest.ok()) {
    ADD_FAILURE() << digest.status();
    return "";
  }
  return *digest;
}

TEST_P(AsyncCheckpointSaverTest, KeepsTheValuesOfTheMomentOfTheCall) {
  CheckpointState state;
  for (int i = 0; i < 64; ++i) {
    state.tensors.emplace_back(absl::StrCat("t", i),
                               torch::rand({1000 + i * 37}));
  }
  state.tensors.emplace_back("transposed", torch::rand({50, 70}).t());
  state.tensors.emplace_back("ints", torch::arange(999, torch::kInt64));
  // Larger than the writer's buffer and than a copied block, on 4 KiB
  // pages and on huge pages (MoveToHugePages moves only the second). The
  // first 32 small tensors share heap blocks collapsed onto huge pages.
  state.tensors.emplace_back("large", torch::rand({5 << 20}));
  state.tensors.emplace_back("tied", state.tensors[0].second);
  state.tensors.emplace_back("huge", torch::rand({3 << 20}));
  NamedTensors to_huge_pages(state.tensors.begin(), state.tensors.begin() + 32);
  to_huge_pages.push_back(state.tensors.back());
  ASSERT_TRUE(MoveToHugePages(to_huge_pages).ok());
  const std::string sync_path = UniqueTempPath("moment-sync");
  ASSERT_TRUE(SaveCheckpoint(sync_path, state).ok());
  const std::string async_path = UniqueTempPath("moment-async");
  AsyncCheckpointSaver saver = MakeSaver();
  ASSERT_TRUE(saver.SaveAsync(async_path, state).ok());
  // Taken as asked: running as root or with the right to use userfaultfd.
  EXPECT_EQ(saver.last_snapshot(), GetParam());
  // Every tensor changes right after the call, while the save runs.
  for (auto& [name, tensor] : state.tensors) tensor.add_(1);
  {
    absl::Status waited = saver.Wait();
    ASSERT_TRUE(waited.ok()) << waited;
  }
  EXPECT_EQ(VerifiedDigest(async_path), VerifiedDigest(sync_path));
}

// Enough tensors for the saver's worker to share the gathering, and a
// large one on 4 KiB pages (above 16 protection pieces of 8 MiB) for it to
// share the protection too: the values are still those of the call.
TEST_P(AsyncCheckpointSaverTest, SharedGatherAndProtectionKeepTheMoment) {
  CheckpointState state;
  for (int i = 0; i < 2000; ++i) {
    state.tensors.emplace_back(absl::StrCat("small", i),
                               torch::rand({100 + i % 7}));
  }
  state.tensors.emplace_back("large", torch::rand({35 << 20}));  // 140 MiB
  const std::string sync_path = UniqueTempPath("shared-sync");
  ASSERT_TRUE(SaveCheckpoint(sync_path, state).ok());
  const std::string async_path = UniqueTempPath("shared-async");
  AsyncCheckpointSaver saver = MakeSaver();
  for (int save = 0; save < 2; ++save) {
    SCOPED_TRACE(save);
    const std::string path = absl::StrCat(async_path, save);
    ASSERT_TRUE(saver.SaveAsync(path, state).ok());
    EXPECT_EQ(saver.last_snapshot(), GetParam());
    // A sign flip changes every value and, done twice, restores it
    // exactly for the next save.
    for (auto& [name, tensor] : state.tensors) tensor.neg_();
    absl::Status waited = saver.Wait();
    ASSERT_TRUE(waited.ok()) << waited;
    for (auto& [name, tensor] : state.tensors) tensor.neg_();
    EXPECT_EQ(VerifiedDigest(path), VerifiedDigest(sync_path));
  }
}

// One saver, lists of changing length, names and kinds (every third
// tensor of the third save is a transposed view where the second had a
// contiguous one; the second is the longest, so the third reuses its
// memory): what the save before left in the saver's memory never leaks
// into the next.
TEST_P(AsyncCheckpointSaverTest, SavesOfChangingListsKeepTheirOwnMoment) {
  AsyncCheckpointSaver saver = MakeSaver();
  int save = 0;
  for (const int count : {10, 4000, 3000, 5}) {
    SCOPED_TRACE(count);
    CheckpointState state;
    for (int i = 0; i < count; ++i) {
      const std::string name =
          absl::StrCat(std::string(save * 7 + i % 5, 'n'), save, "/", i);
      if (save == 2 && i % 3 == 0) {
        state.tensors.emplace_back(name, torch::rand({9, 11 + save}).t());
      } else {
        state.tensors.emplace_back(name, torch::rand({100 + i % 9 + save}));
      }
    }
    const std::string sync_path = UniqueTempPath("changing-sync");
    ASSERT_TRUE(SaveCheckpoint(sync_path, state).ok());
    const std::string path = UniqueTempPath("changing-async");
    ASSERT_TRUE(saver.SaveAsync(path, state).ok());
    for (auto& [name, tensor] : state.tensors) tensor.add_(1);
    absl::Status waited = saver.Wait();
    ASSERT_TRUE(waited.ok()) << waited;
    EXPECT_EQ(VerifiedDigest(path), VerifiedDigest(sync_path));
    ++save;
  }
}

TEST_P(AsyncCheckpointSaverTest, SnapshotsBeforeReturningAndCommitsInOrder) {
  CheckpointState state;
  torch::Tensor weight = torch::zeros({256, 256});
  state.tensors = {{"w", weight}, {"t", weight.t()}};
  std::mutex mutex;
  std::vector<std::string> committed;
  auto record = [&](const std::string& name) {
    return [&, name](const absl::Status& status) {
      std::lock_guard<std::mutex> lock(mutex);
      committed.push_back(name + (status.ok() ? ":ok" : ":error"));
    };
  };
  const std::string first = UniqueTempPath("async-first");
  const std::string second = UniqueTempPath("async-second");
  AsyncCheckpointSaver saver = MakeSaver();
  ASSERT_TRUE(saver.SaveAsync(first, state, record("first")).ok());
  // Training goes on while the first save is written.
  weight.fill_(1.0);
  ASSERT_TRUE(saver.SaveAsync(second, state, record("second")).ok());
  weight.fill_(2.0);
  {
    absl::Status waited = saver.Wait();
    ASSERT_TRUE(waited.ok()) << waited;
  }
  EXPECT_THAT(committed, ::testing::ElementsAre("first:ok", "second:ok"));

  absl::StatusOr<CheckpointState> a = LoadCheckpoint(first);
  absl::StatusOr<CheckpointState> b = LoadCheckpoint(second);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal(a->tensors[0].second, torch::zeros({256, 256})));
  EXPECT_TRUE(torch::equal(b->tensors[0].second, torch::ones({256, 256})));
  EXPECT_TRUE(torch::equal(b->tensors[1].second, torch::ones({256, 256})));
}

TEST_P(AsyncCheckpointSaverTest, FailedSaveIsReturnedByTheNextSave) {
  CheckpointState state;
  state.tensors = {{"w", torch::ones({8})}};
  const std::string bad = UniqueTempPath("no-such-dir") + "/ckpt";
  const std::string good = UniqueTempPath("after-failure");
  absl::Status callback_status;
  AsyncCheckpointSaver saver = MakeSaver();
  ASSERT_TRUE(saver
                  .SaveAsync(bad, state,
                             [&](const absl::Status& status) {
                               callback_status = status;
                             })
                  .ok());
  absl::Status next = saver.SaveAsync(good, state);
  EXPECT_FALSE(next.ok());
  EXPECT_THAT(next.message(), HasSubstr("previous asynchronous save failed"));
  EXPECT_THAT(next.message(), HasSubstr(bad));
  EXPECT_FALSE(callback_status.ok());
  EXPECT_FALSE(Exists(good));
  // Reported once: the saver works again.
  EXPECT_TRUE(saver.Wait().ok());
  ASSERT_TRUE(saver.SaveAsync(good, state).ok());
  EXPECT_TRUE(saver.Wait().ok());
  EXPECT_TRUE(Exists(good));
}

TEST_P(AsyncCheckpointSaverTest, WaitReturnsTheErrorAndDestructorNeverLosesIt) {
  CheckpointState state;
  state.tensors = {{"w", torch::ones({8})}};
  {
    AsyncCheckpointSaver saver = MakeSaver();
    ASSERT_TRUE(saver.SaveAsync(UniqueTempPath("gone") + "/x", state).ok());
    absl::Status waited = saver.Wait();
    EXPECT_FALSE(waited.ok());
    EXPECT_TRUE(saver.Wait().ok());
  }
  const std::string lost = UniqueTempPath("lost") + "/x";
  testing::internal::CaptureStderr();
  {
    AsyncCheckpointSaver saver = MakeSaver();
    ASSERT_TRUE(saver.SaveAsync(lost, state).ok());
  }
  std::string printed = testing::internal::GetCapturedStderr();
  EXPECT_THAT(printed, HasSubstr("AsyncCheckpointSaver"));
  EXPECT_THAT(printed, HasSubstr(lost));
  // Nothing to print after a successful save.
  testing::internal::CaptureStderr();
  {
    AsyncCheckpointSaver saver = MakeSaver();
    ASSERT_TRUE(saver.SaveAsync(UniqueTempPath("fine"), state).ok());
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

// Tensors over a file mapping (an mmap load) cannot be write-protected:
// the save falls back to a fork, says so once, and still saves.
TEST(TensorsTest, WriteProtectFallsBackToForkAndSaysSo) {
  CheckpointState state = MixedState();
  const std::string source = UniqueTempPath("fallback-source");
  ASSERT_TRUE(SaveCheckpoint(source, state).ok());
  LoadOptions options;
  options.use_mmap = true;
  absl::StatusOr<CheckpointState> mapped = LoadCheckpoint(source, options);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  AsyncCheckpointSaver saver({}, true, SnapshotMode::kWriteProtect);
  testing::internal::CaptureStderr();
  for (int i = 0; i < 2; ++i) {
    const std::string path = UniqueTempPath("fallback");
    ASSERT_TRUE(saver.SaveAsync(path, *mapped).ok());
    EXPECT_EQ(saver.last_snapshot(), SnapshotMode::kFork);
    ASSERT_TRUE(saver.Wait().ok());
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectSameTensors(state.tensors, loaded->tensors);
  }
  const std::string printed = testing::internal::GetCapturedStderr();
  EXPECT_THAT(printed,
              HasSubstr("write-protected snapshots are not available"));
  EXPECT_THAT(printed, HasSubstr("forked snapshots instead"));
  // Once.
  EXPECT_EQ(printed.find("not available"), printed.rfind("not available"));
}

TEST(TensorsTest, MoveToHugePagesKeepsTheTensorsAndTheirValues) {
  torch::Tensor big = torch::rand({1 << 20});  // 4 MiB
  big.set_requires_grad(true);
  torch::Tensor small = torch::rand({1000});
  torch::Tensor base = torch::rand({2 << 20});
  torch::Tensor view = base.narrow(0, 0, 1 << 20);
  torch::Tensor shared = torch::rand({1 << 20});
  torch::Tensor alias = shared.view({1024, 1024});
  const torch::Tensor big_values = big.detach().clone();
  const c10::TensorImpl* big_impl = big.unsafeGetTensorImpl();
  std::map<std::string, const void*> before;
  const NamedTensors tensors = {{"big", big},       {"tied", big},
                                {"small", small},   {"view", view},
                                {"shared", shared}, {"alias", alias}};
  for (const auto& [name, tensor] : tensors) before[name] = tensor.data_ptr();

  absl::StatusOr<HugePagesMoved> moved = MoveToHugePages(tensors);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->moved_bytes, uint64_t{4} << 20);
  // The same tensor object, with its values and autograd flag, elsewhere.
  EXPECT_EQ(big.unsafeGetTensorImpl(), big_impl);
  EXPECT_TRUE(big.requires_grad());
  EXPECT_TRUE(torch::equal(big.detach(), big_values));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data_ptr()) % (2 << 20), 0u);
  // Resizable, as the memory it left was.
  EXPECT_TRUE(big.storage().resizable());
  // The rest is left where it was: too small, a view, shared storage.
  for (const char* name : {"small", "view", "shared", "alias"}) {
    const auto it =
        std::find_if(tensors.begin(), tensors.end(),
                     [&](const auto& named) { return named.first == name; });
    EXPECT_EQ(it->second.data_ptr(), before[name]) << name;
  }
  // Still a working parameter.
  torch::optim::SGD sgd({big}, torch::optim::SGDOptions(0.5));
  big.sum().backward();
  sgd.step();
  EXPECT_TRUE(torch::allclose(big.detach(), big_values - 0.5));
  // A second call finds nothing more to move.
  absl::StatusOr<HugePagesMoved> again = MoveToHugePages(tensors);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->moved_bytes, 0u);
}

TEST(TensorsTest, SnapshotCopiesIntoReusableStagingMemory) {
  CheckpointState state;
  torch::Tensor big = torch::randn({3, 1 << 20});  // Several copy pieces.
  state.tensors = {{"big", big},
                   {"transposed", torch::ones({3, 2}).t()},
                   {"empty", torch::zeros({0})},
                   {"int", torch::arange(7)}};
  std::shared_ptr<StagingBuffer> staging;
  const void* first_memory = nullptr;
  {
    absl::StatusOr<CheckpointState> snapshot = SnapshotToCpu(state, &staging);
    ASSERT_TRUE(snapshot.ok()) << snapshot.status();
    ASSERT_NE(staging, nullptr);
    ExpectSameTensors(state.tensors, snapshot->tensors);
    first_memory = snapshot->tensors[0].second.data_ptr();
    // Independent of the source.
    big.fill_(5);
    EXPECT_FALSE(torch::equal(snapshot->tensors[0].second, big));
    // In use: a second snapshot now must not reuse the slab.
    std::shared_ptr<StagingBuffer> copy_of_staging = staging;
    absl::StatusOr<CheckpointState> other = SnapshotToCpu(state, &staging);
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->tensors[0].second.data_ptr(), first_memory);
    staging = copy_of_staging;
  }
  // Every view is gone: the slab is reused.
  absl::StatusOr<CheckpointState> again = SnapshotToCpu(state, &staging);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tensors[0].second.data_ptr(), first_memory);
  ExpectSameTensors(state.tensors, again->tensors);
}

// Small tensors are read into one block per batch, yet each must behave as
// if allocated alone: its own storage of its own size (torch::save and our
// save write only its bytes), aligned, resizable, writable without
// touching its neighbours, an autograd leaf, and alive after the rest of
// the batch is gone.
TEST(TensorsTest, SmallTensorsLoadedTogetherBehaveAsIfAlone) {
  CheckpointState state;
  for (int i = 0; i < 300; ++i) {
    state.tensors.emplace_back("t" + std::to_string(i),
                               torch::full({1 + i % 7, 3}, i, torch::kFloat));
  }
  const std::string path = UniqueTempPath("block");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameTensors(state.tensors, loaded->tensors);
  std::set<const void*> storages;
  for (const auto& [name, tensor] : loaded->tensors) {
    SCOPED_TRACE(name);
    EXPECT_EQ(tensor.storage().nbytes(), tensor.nbytes());
    EXPECT_EQ(tensor.storage_offset(), 0);
    EXPECT_TRUE(tensor.storage().resizable());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data_ptr()) % kTensorAlignment,
              0u);
    storages.insert(tensor.storage().unsafeGetStorageImpl());
  }
  EXPECT_EQ(storages.size(), loaded->tensors.size());

  torch::Tensor& grown = loaded->tensors[10].second;
  grown.resize_({1000, 3});
  grown.fill_(-1);
  loaded->tensors[11].second.fill_(-2);
  EXPECT_TRUE(loaded->tensors[9].second.equal(state.tensors[9].second));
  EXPECT_TRUE(loaded->tensors[12].second.equal(state.tensors[12].second));

  torch::Tensor leaf = loaded->tensors[5].second;
  leaf.set_requires_grad(true);
  (leaf * 2).sum().backward();
  EXPECT_TRUE(leaf.grad().equal(torch::full_like(leaf, 2)));

  const torch::Tensor kept = loaded->tensors[200].second;
  loaded->tensors.clear();
  EXPECT_TRUE(kept.equal(state.tensors[200].second));
  std::vector<torch::Tensor> round_trip;
  std::stringstream pickled;
  torch::save(std::vector<torch::Tensor>{kept}, pickled);
  torch::load(round_trip, pickled);
  ASSERT_EQ(round_trip.size(), 1u);
  EXPECT_TRUE(round_trip[0].equal(kept));
}

TEST(TensorsTest, LoadsTheSameOnOneOrManyThreads) {
  CheckpointState state;
  for (int i = 0; i < 50; ++i) {
    state.tensors.emplace_back("t" + std::to_string(i), torch::randn({i, 3}));
  }
  const std::string path = UniqueTempPath("threads");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  for (int threads : {1, 3, 16}) {
    for (bool mmap : {false, true}) {
      LoadOptions options;
      options.num_threads = threads;
      options.use_mmap = mmap;
      absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, options);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      ExpectSameTensors(state.tensors, loaded->tensors);
    }
  }
}

// With LoadOptions::huge_pages, tensors of 2 MiB or more are loaded onto
// memory of their own, on huge pages (2 MiB-aligned), from our checkpoints
// and from foreign files, unless cast; they behave as tensors from
// torch::empty.
TEST(TensorsTest, LargeTensorsAreLoadedOntoHugePagesUnlessCast) {
  auto on_huge_pages = [](const torch::Tensor& tensor) {
    return reinterpret_cast<uintptr_t>(tensor.data_ptr()) % kHugePageBytes == 0;
  };
  CheckpointState state;
  state.tensors = {{"big", torch::randn({1 << 20})},  // 4 MiB
                   {"optimizer/state/0/exp_avg", torch::randn({640, 1024})},
                   {"small", torch::randn({100})}};
  const std::string ours = UniqueTempPath("huge_load");
  ASSERT_TRUE(SaveCheckpoint(ours, state).ok());
  const std::string foreign = UniqueTempPath("huge_load") + ".safetensors";
  ASSERT_TRUE(interop::Convert(ours, foreign, {}).ok());
  for (const std::string& path : {ours, foreign}) {
    SCOPED_TRACE(path);
    LoadOptions huge;
    huge.huge_pages = true;
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, huge);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    std::map<std::string, torch::Tensor> by_name(loaded->tensors.begin(),
                                                 loaded->tensors.end());
    EXPECT_TRUE(on_huge_pages(by_name["big"]));
    EXPECT_TRUE(on_huge_pages(by_name["optimizer/state/0/exp_avg"]));
    for (const auto& [name, tensor] : state.tensors) {
      EXPECT_TRUE(by_name[name].equal(tensor)) << name;
    }
    torch::Tensor& big = by_name["big"];
    EXPECT_TRUE(big.storage().resizable());
    big.set_requires_grad(true);
    (big * 3).sum().backward();
    EXPECT_TRUE(big.grad().equal(torch::full_like(big, 3)));
    torch::Tensor grown = big.detach();
    grown.resize_({3 << 20}).fill_(1);  // moves off its mapping
    EXPECT_EQ(grown.sum().item<float>(), float{3 << 20});

    loaded = LoadCheckpoint(path);  // the default: LibTorch's allocator
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    for (const auto& [name, tensor] : loaded->tensors) {
      EXPECT_FALSE(on_huge_pages(tensor)) << name;
    }

    // A cast model tensor is a new tensor; the training state keeps its
    // dtype and its huge pages.
    huge.dtype = torch::kFloat64;
    loaded = LoadCheckpoint(path, huge);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    by_name = {loaded->tensors.begin(), loaded->tensors.end()};
    EXPECT_EQ(by_name["big"].scalar_type(), torch::kFloat64);
    EXPECT_TRUE(on_huge_pages(by_name["optimizer/state/0/exp_avg"]));
  }
}

}  // namespace
}  // namespace checkpoint

namespace checkpoint {
namespace {

// LoadCheckpoint takes a torch.save file or a safetensors file as well, by
// content: the same tensors, copied or as views of the file.
TEST(LoadForeignTest, PtAndSafetensorsLoadTheSameTensorsAsOurs) {
  CheckpointState state = MixedState();
  state.tensors.emplace_back("optimizer/state/0/exp_avg", torch::ones({3}));
  const std::string ours = UniqueTempPath("foreign_ours");
  ASSERT_TRUE(SaveCheckpoint(ours, state).ok());
  for (const char* suffix : {".pt", ".safetensors", ".bin"}) {
    SCOPED_TRACE(suffix);
    const std::string file = UniqueTempPath("foreign") + suffix;
    absl::StatusOr<interop::ConvertReport> converted =
        interop::Convert(ours, file, {});
    ASSERT_TRUE(converted.ok()) << converted.status();
    for (bool use_mmap : {false, true}) {
      LoadOptions options;
      options.use_mmap = use_mmap;
      absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(file, options);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      ASSERT_EQ(loaded->tensors.size(), state.tensors.size());
      std::map<std::string, torch::Tensor> by_name(loaded->tensors.begin(),
                                                   loaded->tensors.end());
      for (const auto& [name, tensor] : state.tensors) {
        ASSERT_EQ(by_name.count(name), 1u) << name;
        EXPECT_TRUE(SameTensor(by_name[name], tensor)) << name;
      }
    }
    // A cast applies to model tensors only, as for our checkpoints.
    LoadOptions cast;
    cast.dtype = torch::kFloat64;
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(file, cast);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    for (const auto& [name, tensor] : loaded->tensors) {
      if (name == "float32") {
        EXPECT_EQ(tensor.scalar_type(), torch::kFloat64);
      }
      if (name == "optimizer/state/0/exp_avg") {
        EXPECT_EQ(tensor.scalar_type(), torch::kFloat32);
      }
    }
  }
  // Not a checkpoint of any kind: one clear error, by content.
  const std::string text = UniqueTempPath("foreign.pt");
  test_paths::WriteFile(text, "hello\n");
  absl::StatusOr<CheckpointState> refused = LoadCheckpoint(text, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("not a checkpoint"));
}

}  // namespace
}  // namespace checkpoint
