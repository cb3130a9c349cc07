// Replays the fuzzer's seed corpus through the fuzz function (so every
// `bazel test`, and --config=asan, exercises the hostile-input paths) and
// checks that valid_* inputs open and verify while broken_* ones are
// refused with a Status.
#include <dirent.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/digest.h"
#include "checkpoint/reader.h"
#include "checkpoint/reader_fuzzer_input.h"
#include "checkpoint/upgrade.h"
#include "checkpoint/writer.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace checkpoint {
namespace {

std::string CorpusDir() {
  return test_paths::Runfile("checkpoint/testdata/fuzz_corpus");
}

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(CorpusDir().c_str());
  if (dir == nullptr) return names;
  while (struct dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
  }
  ::closedir(dir);
  return names;
}

// Unpacks one corpus input into a checkpoint directory, as the fuzzer does.
std::string Unpack(const std::string& name, const std::string& input) {
  const std::string dir = test_paths::TempDir(name);
  const FuzzerInput split = SplitFuzzerInput(input);
  test_paths::WriteFile(dir + "/manifest.pb", std::string(split.manifest));
  test_paths::WriteFile(dir + "/data-00000.bin", std::string(split.data));
  return dir;
}

TEST(ReaderFuzzerCorpusTest, EveryInputReplaysWithoutCrashing) {
  const std::vector<std::string> files = CorpusFiles();
  ASSERT_GE(files.size(), 10u) << "corpus missing at " << CorpusDir();
  for (const std::string& name : files) {
    SCOPED_TRACE(name);
    const std::string input = test_paths::ReadFile(CorpusDir() + "/" + name);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                           input.size());
  }
}

TEST(ReaderFuzzerCorpusTest, ValidInputsOpenAndBrokenOnesAreRefused) {
  int valid = 0;
  int broken = 0;
  for (const std::string& name : CorpusFiles()) {
    SCOPED_TRACE(name);
    const std::string dir =
        Unpack(name, test_paths::ReadFile(CorpusDir() + "/" + name));
    auto reader = CheckpointReader::Open(dir);
    absl::Status status =
        reader.ok() ? (*reader)->VerifyAll() : reader.status();
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_TRUE(status.ok()) << status;
      ++valid;
    } else if (name.rfind("broken_", 0) == 0) {
      EXPECT_FALSE(status.ok());
      ++broken;
    }
  }
  EXPECT_GE(valid, 4);
  EXPECT_GE(broken, 10);
}

// The tensors of valid_small (reader_fuzzer_corpus_gen.cc), as a golden
// file of each format version holds them.
void ExpectSmallCheckpoint(const CheckpointReader& reader,
                           uint32_t format_version) {
  const proto::Manifest& manifest = reader.manifest();
  EXPECT_EQ(manifest.format_version(), format_version);
  EXPECT_EQ(manifest.alignment(), 64u);
  EXPECT_EQ(manifest.metadata().progress().epoch(), 2);
  EXPECT_EQ(manifest.metadata().architecture(), "mlp");
  struct Expected {
    const char* name;
    proto::DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset;
    uint64_t size;
    int seed;
  };
  const std::vector<Expected> expected = {
      {"fc.weight", proto::FLOAT32, {3, 4}, 0, 48, 0},
      {"fc.bias", proto::FLOAT32, {3}, 64, 12, 1},
      {"step", proto::INT64, {}, 128, 8, 2},
      {"mask", proto::BOOL, {0, 5}, 192, 0, 3},
  };
  ASSERT_EQ(manifest.tensors_size(), 4);
  // The empty tensor is aligned too: the padding before it is written.
  EXPECT_EQ(manifest.data_files(0).size_bytes(), 192u);
  for (const Expected& tensor : expected) {
    SCOPED_TRACE(tensor.name);
    const proto::TensorEntry* entry = reader.FindTensor(tensor.name);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->dtype(), tensor.dtype);
    EXPECT_EQ(
        std::vector<int64_t>(entry->shape().begin(), entry->shape().end()),
        tensor.shape);
    EXPECT_EQ(entry->offset(), tensor.offset);
    ASSERT_EQ(entry->size_bytes(), tensor.size);
    std::vector<char> bytes(tensor.size);
    ASSERT_TRUE(reader.ReadTensor(*entry, absl::MakeSpan(bytes)).ok());
    for (size_t i = 0; i < bytes.size(); ++i) {
      // The generator's pattern (reader_fuzzer_corpus_gen.cc).
      EXPECT_EQ(bytes[i], static_cast<char>(i * 37 + tensor.seed)) << i;
    }
  }
}

// valid_small is a version-2 checkpoint committed to the repository: a
// golden file. Reading it exactly as written guards the reader.
TEST(ReaderFuzzerCorpusTest, GoldenVersion2CheckpointReadsAsWritten) {
  const std::string dir =
      Unpack("golden", test_paths::ReadFile(CorpusDir() + "/valid_small"));
  auto reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectSmallCheckpoint(**reader, 2);
  EXPECT_TRUE((*reader)->VerifyAll().ok());
}

// And the writer: the same state must produce the same bytes, so that a
// change of the on-disk format is always a deliberate one (regenerate the
// corpus with reader_fuzzer_corpus_gen and say why in FORMAT.md).
TEST(ReaderFuzzerCorpusTest, WriterBytesForAFixedStateNeverChange) {
  const std::string path = test_paths::TempPath("again");
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  struct Tensor {
    const char* name;
    proto::DType dtype;
    std::vector<int64_t> shape;
    size_t size;
    int seed;
  };
  for (const Tensor& tensor :
       std::vector<Tensor>{{"fc.weight", proto::FLOAT32, {3, 4}, 48, 0},
                           {"fc.bias", proto::FLOAT32, {3}, 12, 1},
                           {"step", proto::INT64, {}, 8, 2},
                           {"mask", proto::BOOL, {0, 5}, 0, 3}}) {
    std::string bytes(tensor.size, '\0');
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = static_cast<char>(i * 37 + tensor.seed);
    }
    ASSERT_TRUE((*writer)
                    ->AddTensor(tensor.name, tensor.dtype, tensor.shape,
                                absl::Span<const char>(bytes))
                    .ok());
  }
  (*writer)->mutable_metadata()->mutable_progress()->set_epoch(2);
  (*writer)->mutable_metadata()->set_architecture("mlp");
  (*(*writer)->mutable_metadata()->mutable_metrics())["loss"] = 0.5;
  ASSERT_TRUE((*writer)->Commit().ok());
  const std::string golden = test_paths::ReadFile(CorpusDir() + "/valid_small");
  const std::string manifest = test_paths::ReadFile(path + "/manifest.pb");
  const std::string data = test_paths::ReadFile(path + "/data-00000.bin");
  const std::string written = JoinFuzzerInput(manifest, data);
  EXPECT_TRUE(written == golden)
      << "the writer's bytes changed: " << written.size() << " bytes vs "
      << golden.size() << " in the golden file";
}

// Format version 1 (no manifest header or checksum) is refused with the
// way out; `ckpt upgrade` alone opens it, and reads it as written.
TEST(ReaderFuzzerCorpusTest, GoldenVersion1CheckpointIsRefusedButUpgradable) {
  const std::string dir =
      Unpack("golden_v1", test_paths::ReadFile(test_paths::Runfile(
                              "checkpoint/testdata/v1/small.corpus")));
  auto refused = CheckpointReader::Open(dir);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("format version 1"),
            std::string::npos);
  EXPECT_NE(refused.status().message().find("ckpt upgrade"), std::string::npos)
      << refused.status();
  ReaderOptions v1;
  v1.read_format_v1 = true;
  auto reader = CheckpointReader::Open(dir, v1);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectSmallCheckpoint(**reader, 1);
  EXPECT_TRUE((*reader)->VerifyAll().ok());

  // `ckpt upgrade`: same tensors (same digest), current format.
  const std::string upgraded = dir + "-v2";
  absl::StatusOr<int> copied = UpgradeCheckpoint(dir, upgraded);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(*copied, 4);
  auto current = CheckpointReader::Open(upgraded);
  ASSERT_TRUE(current.ok()) << current.status();
  ExpectSmallCheckpoint(**current, 2);
  EXPECT_EQ(*TensorDigest(**current), *TensorDigest(**reader));
  EXPECT_EQ(UpgradeCheckpoint(dir, upgraded).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(UpgradeCheckpoint(upgraded, dir + "-again").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace checkpoint
