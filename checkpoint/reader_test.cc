#include "checkpoint/reader.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::vector<char> Bytes(size_t size, int seed) {
  std::vector<char> bytes(size);
  uint32_t state = 2463534242u + seed;
  for (char& byte : bytes) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    byte = static_cast<char>(state);
  }
  return bytes;
}

struct TestTensor {
  std::string name;
  proto::DType dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

// Every dtype in three shapes: a matrix, a scalar and an empty tensor.
std::vector<TestTensor> AllDtypeTensors() {
  std::vector<TestTensor> tensors;
  int seed = 0;
  for (int value = proto::DType_MIN; value <= proto::DType_MAX; ++value) {
    const auto dtype = static_cast<proto::DType>(value);
    if (ElementSize(dtype) == 0) continue;
    const std::string name(DTypeName(dtype));
    const std::vector<std::vector<int64_t>> shapes = {{3, 5}, {}, {0, 4}};
    const std::vector<std::string> suffixes = {".matrix", ".scalar", ".empty"};
    for (size_t i = 0; i < shapes.size(); ++i) {
      int64_t count = 1;
      for (int64_t dim : shapes[i]) count *= dim;
      std::vector<char> bytes = Bytes(count * ElementSize(dtype), ++seed);
      if (dtype == proto::BOOL) {
        for (char& byte : bytes) byte &= 1;
      }
      tensors.push_back({name + suffixes[i], dtype, shapes[i], bytes});
    }
  }
  return tensors;
}

void WriteTensors(const std::string& path,
                  const std::vector<TestTensor>& tensors) {
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const TestTensor& tensor : tensors) {
    ASSERT_TRUE(
        (*writer)
            ->AddTensor(tensor.name, tensor.dtype, tensor.shape, tensor.bytes)
            .ok());
  }
  ASSERT_TRUE((*writer)->Commit().ok());
}

class ReaderModeTest : public ::testing::TestWithParam<bool> {
 protected:
  ReaderOptions Options() const {
    ReaderOptions options;
    options.use_mmap = GetParam();
    return options;
  }
};

TEST_P(ReaderModeTest, RoundTripsEveryDtypeIncludingScalarsAndEmpty) {
  const std::string path = test_paths::EmptyDir("round_trip") + "/ckpt";
  const std::vector<TestTensor> tensors = AllDtypeTensors();
  ASSERT_EQ(tensors.size(), 30u);
  WriteTensors(path, tensors);

  auto reader = CheckpointReader::Open(path, Options());
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_TRUE((*reader)->VerifyAll().ok());
  ASSERT_EQ((*reader)->manifest().tensors_size(), 30);
  for (const TestTensor& tensor : tensors) {
    SCOPED_TRACE(tensor.name);
    const proto::TensorEntry* entry = (*reader)->FindTensor(tensor.name);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->dtype(), tensor.dtype);
    EXPECT_THAT(entry->shape(), ElementsAreArray(tensor.shape));
    EXPECT_EQ(entry->size_bytes(), tensor.bytes.size());
    EXPECT_EQ(entry->offset() % kTensorAlignment, 0u);
    EXPECT_EQ(entry->saved_device(), "cpu");

    std::vector<char> read(tensor.bytes.size());
    ASSERT_TRUE((*reader)->ReadTensor(*entry, absl::MakeSpan(read)).ok());
    EXPECT_EQ(read, tensor.bytes);

    if (GetParam()) {
      auto view = (*reader)->MappedTensor(*entry);
      ASSERT_TRUE(view.ok()) << view.status();
      EXPECT_EQ(std::vector<char>(view->begin(), view->end()), tensor.bytes);
      // Aligned offsets in a page-aligned mapping: zero-copy views are
      // aligned for any dtype (and for SIMD loads).
      if (!view->empty()) {
        EXPECT_EQ(reinterpret_cast<uintptr_t>(view->data()) % 64, 0u);
      }
    }
  }
}

TEST_P(ReaderModeTest, ReadTensorChunksStreamsBoundedPieces) {
  const std::string path = test_paths::EmptyDir("chunks") + "/ckpt";
  const std::vector<char> bytes = Bytes(10000, 1);
  WriteTensors(path, {{"t", proto::UINT8, {10000}, bytes}});
  auto reader = CheckpointReader::Open(path, Options());
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<size_t> sizes;
  std::vector<char> joined;
  ASSERT_TRUE((*reader)
                  ->ReadTensorChunks(
                      *(*reader)->FindTensor("t"), 4096,
                      [&](absl::Span<const char> chunk) {
                        sizes.push_back(chunk.size());
                        joined.insert(joined.end(), chunk.begin(), chunk.end());
                        return absl::OkStatus();
                      })
                  .ok());
  EXPECT_THAT(sizes, ElementsAre(4096, 4096, 1808));
  EXPECT_EQ(joined, bytes);
  // The consumer's error stops the stream and comes back unchanged.
  absl::Status stop = (*reader)->ReadTensorChunks(
      *(*reader)->FindTensor("t"), 4096,
      [](absl::Span<const char>) { return absl::CancelledError("enough"); });
  EXPECT_EQ(stop, absl::CancelledError("enough"));
}

// ReadTensors reads runs of neighbouring tensors with one call each and
// gives what ReadTensor gives, in any order; a damaged tensor inside a run
// is named.
TEST_P(ReaderModeTest, ReadTensorsGivesWhatReadTensorGives) {
  const std::string path = test_paths::EmptyDir("read_tensors") + "/ckpt";
  std::vector<TestTensor> tensors = AllDtypeTensors();
  // A large one in the middle ends one run and starts another.
  tensors.insert(tensors.begin() + 10,
                 {"large", proto::UINT8, {3 << 20}, Bytes(3 << 20, 99)});
  WriteTensors(path, tensors);
  auto reader = CheckpointReader::Open(path, Options());
  ASSERT_TRUE(reader.ok()) << reader.status();

  auto read_all = [&](std::vector<const proto::TensorEntry*> entries) {
    std::vector<std::vector<char>> copies;
    std::vector<absl::Span<char>> destinations;
    copies.reserve(entries.size());
    for (const proto::TensorEntry* entry : entries) {
      copies.emplace_back(entry->size_bytes());
      destinations.push_back(absl::MakeSpan(copies.back()));
    }
    absl::Status status = (*reader)->ReadTensors(entries, destinations);
    EXPECT_TRUE(status.ok()) << status;
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto expected = std::find_if(
          tensors.begin(), tensors.end(),
          [&](const TestTensor& t) { return t.name == entries[i]->name(); });
      ASSERT_NE(expected, tensors.end());
      EXPECT_EQ(copies[i], expected->bytes) << entries[i]->name();
    }
  };
  std::vector<const proto::TensorEntry*> in_file_order;
  for (const proto::TensorEntry& entry : (*reader)->manifest().tensors()) {
    in_file_order.push_back(&entry);
  }
  read_all(in_file_order);
  read_all({in_file_order.rbegin(), in_file_order.rend()});

  std::vector<char> too_small(1);
  std::vector<absl::Span<char>> wrong = {absl::MakeSpan(too_small)};
  EXPECT_TRUE(absl::IsInvalidArgument(
      (*reader)->ReadTensors({in_file_order[0]}, wrong)));
  EXPECT_TRUE(
      absl::IsInvalidArgument((*reader)->ReadTensors(in_file_order, {})));

  // One byte of a tensor inside the first run, flipped on disk.
  const proto::TensorEntry* victim = (*reader)->FindTensor("float64.matrix");
  ASSERT_NE(victim, nullptr);
  const std::string data = path + "/data-00000.bin";
  const uint64_t at = victim->offset() + 1;
  reader->reset();
  {
    FILE* file = std::fopen(data.c_str(), "r+b");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(std::fseek(file, static_cast<long>(at), SEEK_SET), 0);
    const int byte = std::fgetc(file);
    ASSERT_EQ(std::fseek(file, static_cast<long>(at), SEEK_SET), 0);
    std::fputc(byte ^ 0x40, file);
    std::fclose(file);
  }
  auto damaged = CheckpointReader::Open(path, Options());
  ASSERT_TRUE(damaged.ok()) << damaged.status();
  std::vector<const proto::TensorEntry*> entries;
  std::vector<std::vector<char>> copies;
  std::vector<absl::Span<char>> destinations;
  for (const proto::TensorEntry& entry : (*damaged)->manifest().tensors()) {
    entries.push_back(&entry);
    copies.emplace_back(entry.size_bytes());
  }
  for (auto& copy : copies) destinations.push_back(absl::MakeSpan(copy));
  absl::Status status = (*damaged)->ReadTensors(entries, destinations);
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("float64.matrix"));
}

TEST_P(ReaderModeTest, RejectsWrongDestinationAndForeignEntries) {
  const std::string dir = test_paths::EmptyDir("misuse");
  WriteTensors(dir + "/a", {{"t", proto::FLOAT32, {4}, Bytes(16, 1)}});
  WriteTensors(dir + "/b", {{"t", proto::FLOAT32, {8}, Bytes(32, 2)}});
  auto a = CheckpointReader::Open(dir + "/a", Options());
  auto b = CheckpointReader::Open(dir + "/b", Options());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->FindTensor("missing"), nullptr);
  std::vector<char> small(8);
  EXPECT_EQ(
      (*a)->ReadTensor(*(*a)->FindTensor("t"), absl::MakeSpan(small)).code(),
      absl::StatusCode::kInvalidArgument);
  // An entry of another checkpoint must not steer reads of this one.
  std::vector<char> large(32);
  absl::Status foreign =
      (*a)->ReadTensor(*(*b)->FindTensor("t"), absl::MakeSpan(large));
  EXPECT_EQ(foreign.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(foreign.message(), HasSubstr("does not belong"));
}

INSTANTIATE_TEST_SUITE_P(PreadAndMmap, ReaderModeTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Mmap" : "Pread";
                         });

TEST(ReaderTest, MetadataAndTrainingStateRoundTrip) {
  const std::string path = test_paths::EmptyDir("metadata") + "/ckpt";
  proto::Metadata metadata;
  metadata.set_created_unix_micros(1700000000123456);
  metadata.mutable_producer()->set_tool("train");
  metadata.mutable_producer()->set_version("0.1");
  metadata.set_libtorch_version("1.13.1");
  metadata.set_host("box");
  metadata.mutable_progress()->set_epoch(3);
  metadata.mutable_progress()->set_global_step(1234);
  metadata.mutable_progress()->set_step_in_epoch(17);
  (*metadata.mutable_metrics())["val_loss"] = 0.25;
  metadata.mutable_monitored()->set_name("val_loss");
  metadata.mutable_monitored()->set_mode(proto::MonitoredMetric::MIN);
  metadata.mutable_monitored()->set_value(0.25);
  (*metadata.mutable_user())["note"] = "hello";
  metadata.set_architecture("cnn");
  (*metadata.mutable_architecture_config())["channels"] = "32";
  proto::TrainingState training;
  training.mutable_optimizer()->set_type("adamw");
  auto* parameter = training.mutable_optimizer()->add_parameters();
  parameter->set_parameter_name("fc.weight");
  (*parameter->mutable_tensors())["exp_avg"] = "optimizer/exp_avg/fc.weight";
  (*parameter->mutable_counters())["step"] = 9;
  training.mutable_rng()->set_cpu_generator_tensor("rng/cpu");
  proto::Extension* extension = training.add_extensions();
  extension->set_type("mytool.LoaderState");
  extension->set_version(1);
  extension->set_payload(std::string("\x10\x11\x00", 3));

  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  *(*writer)->mutable_metadata() = metadata;
  *(*writer)->mutable_training_state() = training;
  ASSERT_TRUE((*writer)
                  ->AddTensor("optimizer/exp_avg/fc.weight", proto::FLOAT32,
                              {2}, Bytes(8, 1), "cuda:0")
                  .ok());
  ASSERT_TRUE((*writer)->Commit().ok());

  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->manifest().metadata().SerializeAsString(),
            metadata.SerializeAsString());
  EXPECT_EQ((*reader)->manifest().training_state().SerializeAsString(),
            training.SerializeAsString());
  EXPECT_EQ(
      (*reader)->FindTensor("optimizer/exp_avg/fc.weight")->saved_device(),
      "cuda:0");
}

TEST(ReaderTest, MappedViewsOutliveTheReader) {
  const std::string path = test_paths::EmptyDir("outlive") + "/ckpt";
  const std::vector<char> bytes = Bytes(1000, 3);
  WriteTensors(path, {{"t", proto::UINT8, {1000}, bytes}});
  ReaderOptions options;
  options.use_mmap = true;
  auto reader = CheckpointReader::Open(path, options);
  ASSERT_TRUE(reader.ok());
  auto view = (*reader)->MappedTensor(*(*reader)->FindTensor("t"));
  ASSERT_TRUE(view.ok());
  std::shared_ptr<const void> owner = (*reader)->mapping_owner();
  ASSERT_NE(owner, nullptr);
  reader->reset();
  EXPECT_EQ(std::vector<char>(view->begin(), view->end()), bytes);
}

TEST(ReaderTest, MappedTensorNeedsMmapMode) {
  const std::string path = test_paths::EmptyDir("no_mmap") + "/ckpt";
  WriteTensors(path, {{"t", proto::UINT8, {1}, Bytes(1, 1)}});
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(
      (*reader)->MappedTensor(*(*reader)->FindTensor("t")).status().code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->mapping_owner(), nullptr);
}

TEST(ReaderTest, OpensThroughASymlink) {
  const std::string dir = test_paths::EmptyDir("symlink");
  WriteTensors(dir + "/epoch=1", {{"t", proto::UINT8, {1}, Bytes(1, 1)}});
  ASSERT_EQ(::symlink("epoch=1", (dir + "/best").c_str()), 0);
  auto reader = CheckpointReader::Open(dir + "/best");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_NE((*reader)->FindTensor("t"), nullptr);
  EXPECT_EQ((*reader)->path(), dir + "/best");
}

TEST(ReaderTest, ConcurrentFirstAccessVerifiesSafely) {
  const std::string path = test_paths::EmptyDir("threads") + "/ckpt";
  std::vector<TestTensor> tensors;
  for (int i = 0; i < 16; ++i) {
    tensors.push_back(
        {"t" + std::to_string(i), proto::FLOAT32, {1024}, Bytes(4096, i)});
  }
  WriteTensors(path, tensors);
  ReaderOptions options;
  options.use_mmap = true;
  auto reader = CheckpointReader::Open(path, options);
  ASSERT_TRUE(reader.ok());
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (const TestTensor& tensor : tensors) {
        const proto::TensorEntry* entry = (*reader)->FindTensor(tensor.name);
        auto view = (*reader)->MappedTensor(*entry);
        std::vector<char> copy(tensor.bytes.size());
        if (!view.ok() ||
            std::memcmp(view->data(), tensor.bytes.data(), view->size()) != 0 ||
            !(*reader)->ReadTensor(*entry, absl::MakeSpan(copy)).ok()) {
          ++failures[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(failures, ElementsAre(0, 0, 0, 0));
}

}  // namespace
}  // namespace checkpoint
