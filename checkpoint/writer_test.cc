#include "checkpoint/writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::set<std::string> ListDir(const std::string& path) {
  std::set<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return names;
  while (struct dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.insert(name);
  }
  ::closedir(dir);
  return names;
}

std::vector<char> Bytes(size_t size, int seed) {
  std::vector<char> bytes(size);
  for (size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<char>((i * 131 + seed * 7 + 1) & 0xff);
  }
  return bytes;
}

// Writes one float32 tensor named `name` of `count` elements.
absl::Status WriteSimple(const std::string& path, const std::string& name,
                         int64_t count, int seed) {
  auto writer = CheckpointWriter::Create(path);
  if (!writer.ok()) return writer.status();
  std::vector<char> bytes = Bytes(count * 4, seed);
  absl::Status status =
      (*writer)->AddTensor(name, proto::FLOAT32, {count}, bytes);
  if (!status.ok()) return status;
  return (*writer)->Commit();
}

TEST(WriterTest, LayoutIsManifestPlusOneAlignedZeroPaddedDataFile) {
  const std::string dir = test_paths::EmptyDir("layout");
  const std::string path = dir + "/ckpt";
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  std::vector<char> a = Bytes(3, 1);        // 3 bytes: next needs padding
  std::vector<char> b = Bytes(40, 2);       // 10 floats
  std::vector<char> c = Bytes(3 << 20, 3);  // large: written directly
  std::vector<char> d = {0, 1, 1, 0, 1};
  ASSERT_TRUE((*writer)->AddTensor("a", proto::UINT8, {3}, a).ok());
  ASSERT_TRUE((*writer)->AddTensor("b", proto::FLOAT32, {2, 5}, b).ok());
  ASSERT_TRUE((*writer)->AddTensor("c", proto::INT8, {3 << 20}, c).ok());
  ASSERT_TRUE((*writer)->AddTensor("d", proto::BOOL, {5}, d).ok());
  ASSERT_TRUE((*writer)->Commit().ok());

  EXPECT_THAT(ListDir(dir), ElementsAre("ckpt"));
  EXPECT_THAT(ListDir(path), ElementsAre("data-00000.bin", "manifest.pb"));
  absl::StatusOr<proto::Manifest> decoded =
      DecodeManifestFile(test_paths::ReadFile(path + "/manifest.pb"));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const proto::Manifest& manifest = *decoded;
  EXPECT_EQ(manifest.format_version(), kFormatVersion);
  EXPECT_EQ(manifest.alignment(), 64u);
  ASSERT_EQ(manifest.data_files_size(), 1);
  EXPECT_EQ(manifest.data_files(0).name(), "data-00000.bin");
  const std::string data = test_paths::ReadFile(path + "/data-00000.bin");
  EXPECT_EQ(data.size(), manifest.data_files(0).size_bytes());

  std::vector<uint64_t> offsets;
  for (const proto::TensorEntry& entry : manifest.tensors()) {
    EXPECT_EQ(entry.offset() % 64, 0u) << entry.name();
    offsets.push_back(entry.offset());
  }
  EXPECT_THAT(offsets, ElementsAre(0, 64, 128, 128 + (3 << 20)));
  // Padding is zeros; tensor bytes are where the manifest says.
  for (size_t i = 3; i < 64; ++i) EXPECT_EQ(data[i], 0) << i;
  EXPECT_EQ(data.substr(64, 40), std::string(b.begin(), b.end()));
  EXPECT_EQ(data.substr(128, 3 << 20), std::string(c.begin(), c.end()));
  EXPECT_EQ(data.size(), 128u + (3 << 20) + 5);
}

// Small tensors that end exactly at the end of the write buffer, after a
// flush at an unaligned file offset, followed by a large tensor whose
// padding must not be written past the buffer (ASan checks this).
TEST(WriterTest, PaddingAtTheBufferBoundaryBeforeALargeTensor) {
  const std::string path = test_paths::EmptyDir("boundary") + "/ckpt";
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  std::vector<std::vector<char>> tensors;
  tensors.push_back(Bytes(1, 0));
  for (int i = 1; i <= 7; ++i) tensors.push_back(Bytes((1 << 20) - 1, i));
  tensors.push_back(Bytes(2 << 20, 8));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t size = static_cast<int64_t>(tensors[i].size());
    ASSERT_TRUE((*writer)
                    ->AddTensor("t" + std::to_string(i), proto::UINT8, {size},
                                tensors[i])
                    .ok());
  }
  ASSERT_TRUE((*writer)->Commit().ok());
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_TRUE((*reader)->VerifyAll().ok());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const proto::TensorEntry* entry =
        (*reader)->FindTensor("t" + std::to_string(i));
    std::vector<char> read(entry->size_bytes());
    ASSERT_TRUE((*reader)->ReadTensor(*entry, absl::MakeSpan(read)).ok());
    EXPECT_EQ(read, tensors[i]) << i;
  }
}

TEST(WriterTest, AddTensorFromWritesWhatAddTensorWrites) {
  const std::string dir = test_paths::EmptyDir("add_from");
  // A small tensor, then one larger than the write buffer (several pieces).
  const std::vector<char> small = Bytes(100, 1);
  const std::vector<char> large = Bytes(9 << 20, 2);
  std::vector<proto::TensorEntry> entries[2];
  for (int from = 0; from < 2; ++from) {
    const std::string path = dir + (from ? "/from" : "/span");
    auto writer = CheckpointWriter::Create(path);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (const std::vector<char>* bytes : {&small, &large}) {
      const std::string name = bytes == &small ? "small" : "large";
      const int64_t size = static_cast<int64_t>(bytes->size());
      if (!from) {
        ASSERT_TRUE(
            (*writer)->AddTensor(name, proto::UINT8, {size}, *bytes).ok());
        continue;
      }
      uint64_t expected_offset = 0;
      auto source = [&](uint64_t offset, absl::Span<char> out) {
        EXPECT_EQ(offset, expected_offset);  // in order, no gaps
        std::memcpy(out.data(), bytes->data() + offset, out.size());
        expected_offset += out.size();
        return absl::OkStatus();
      };
      ASSERT_TRUE(
          (*writer)
              ->AddTensorFrom(name, proto::UINT8, {size}, bytes->size(), source)
              .ok());
      EXPECT_EQ(expected_offset, bytes->size());
    }
    ASSERT_TRUE((*writer)->Commit().ok());
    auto reader = CheckpointReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE((*reader)->VerifyAll().ok());
    entries[from] = {(*reader)->manifest().tensors().begin(),
                     (*reader)->manifest().tensors().end()};
  }
  ASSERT_EQ(entries[0].size(), 2u);
  ASSERT_EQ(entries[1].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(entries[0][i].offset(), entries[1][i].offset());
    EXPECT_EQ(entries[0][i].xxh3_64(), entries[1][i].xxh3_64());
  }
}

TEST(WriterTest, AddTensorFromRefusesBadShapesAndAbortsOnSourceErrors) {
  const std::string dir = test_paths::EmptyDir("add_from_errors");
  auto writer = CheckpointWriter::Create(dir + "/ckpt");
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto zeros = [](uint64_t, absl::Span<char> out) {
    std::memset(out.data(), 0, out.size());
    return absl::OkStatus();
  };
  // Checked before any byte: the writer stays usable.
  EXPECT_THAT(
      (*writer)->AddTensorFrom("t", proto::FLOAT32, {3}, 8, zeros).message(),
      HasSubstr("got 8 bytes, shape and float32 need 12"));
  ASSERT_TRUE(
      (*writer)->AddTensorFrom("t", proto::FLOAT32, {3}, 12, zeros).ok());
  // A bool byte that is not 0 or 1, seen only as it is read: aborts.
  auto twos = [](uint64_t, absl::Span<char> out) {
    std::memset(out.data(), 2, out.size());
    return absl::OkStatus();
  };
  EXPECT_THAT(
      (*writer)->AddTensorFrom("b", proto::BOOL, {5}, 5, twos).message(),
      HasSubstr("element 0 of a bool tensor is 2"));
  EXPECT_FALSE((*writer)->Commit().ok());
  EXPECT_THAT(ListDir(dir), ElementsAre());

  auto second = CheckpointWriter::Create(dir + "/ckpt");
  ASSERT_TRUE(second.ok()) << second.status();
  auto failing = [](uint64_t offset, absl::Span<char>) {
    return absl::DataLossError(absl::StrCat("no bytes at ", offset));
  };
  EXPECT_THAT(
      (*second)->AddTensorFrom("t", proto::UINT8, {10}, 10, failing).message(),
      HasSubstr("tensor 't': no bytes at 0"));
  EXPECT_THAT(
      (*second)->AddTensor("u", proto::UINT8, {1}, Bytes(1, 0)).message(),
      HasSubstr("no bytes at 0"));
  EXPECT_FALSE((*second)->Commit().ok());
  EXPECT_THAT(ListDir(dir), ElementsAre());
}

// Many size mixes around the buffer and direct-write thresholds, so the
// buffering logic meets every alignment of every boundary.
TEST(WriterTest, RandomSizeSequencesRoundTrip) {
  const std::string dir = test_paths::EmptyDir("random_sizes");
  uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  for (int round = 0; round < 4; ++round) {
    const std::string path = dir + "/ckpt" + std::to_string(round);
    WriterOptions options;
    options.sync = false;
    auto writer = CheckpointWriter::Create(path, options);
    ASSERT_TRUE(writer.ok());
    std::vector<std::vector<char>> tensors;
    for (int i = 0; i < 24; ++i) {
      size_t size = 0;
      switch (next() % 4) {
        case 0:
          size = next() % 200;
          break;
        case 1:
          size = (1 << 20) - 100 + next() % 200;
          break;
        case 2:
          size = (next() % 4) << 20;
          break;
        default:
          size = next() % (1 << 20);
      }
      tensors.push_back(Bytes(size, round * 100 + i));
      ASSERT_TRUE((*writer)
                      ->AddTensor("t" + std::to_string(i), proto::UINT8,
                                  {static_cast<int64_t>(size)}, tensors.back())
                      .ok());
    }
    ASSERT_TRUE((*writer)->Commit().ok());
    auto reader = CheckpointReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE((*reader)->VerifyAll().ok()) << "round " << round;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const proto::TensorEntry* entry =
          (*reader)->FindTensor("t" + std::to_string(i));
      std::vector<char> read(entry->size_bytes());
      ASSERT_TRUE((*reader)->ReadTensor(*entry, absl::MakeSpan(read)).ok());
      ASSERT_EQ(read, tensors[i]) << "round " << round << " tensor " << i;
    }
  }
}

TEST(WriterTest, MetadataAndTrainingStateAreRecorded) {
  const std::string path = test_paths::EmptyDir("metadata") + "/ckpt";
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  (*writer)->mutable_metadata()->mutable_progress()->set_epoch(7);
  (*writer)->mutable_metadata()->set_architecture("mlp");
  (*writer)->mutable_training_state()->mutable_optimizer()->set_type("adam");
  ASSERT_TRUE((*writer)->Commit().ok());
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->manifest().metadata().progress().epoch(), 7);
  EXPECT_EQ((*reader)->manifest().metadata().architecture(), "mlp");
  EXPECT_EQ((*reader)->manifest().training_state().optimizer().type(), "adam");
  EXPECT_EQ((*reader)->manifest().tensors_size(), 0);
}

TEST(WriterTest, RejectsBadTensorsWithoutBreakingTheWriter) {
  const std::string path = test_paths::EmptyDir("bad_tensors") + "/ckpt";
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  std::vector<char> bytes = Bytes(8, 0);
  EXPECT_EQ((*writer)->AddTensor("", proto::FLOAT32, {2}, bytes).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*writer)->AddTensor("x", proto::FLOAT32, {3}, bytes).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*writer)->AddTensor("x", proto::FLOAT32, {-2}, bytes).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      (*writer)->AddTensor("x", proto::DTYPE_UNSPECIFIED, {2}, bytes).code(),
      absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*writer)->AddTensor("x", proto::FLOAT32, {2}, bytes).ok());
  absl::Status duplicate = (*writer)->AddTensor("x", proto::INT64, {1}, bytes);
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(duplicate.message(), HasSubstr("'x'"));
  ASSERT_TRUE((*writer)->Commit().ok());
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->manifest().tensors_size(), 1);
}

TEST(WriterTest, EmptyTensorWithHugeOtherDimsIsAccepted) {
  const std::string path = test_paths::EmptyDir("empty_huge") + "/ckpt";
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  const int64_t huge = int64_t{1} << 40;
  ASSERT_TRUE(
      (*writer)->AddTensor("e", proto::FLOAT64, {huge, huge, 0}, {}).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->FindTensor("e")->size_bytes(), 0u);
}

// The writer never commits a checkpoint its reader would refuse.
TEST(WriterTest, InvalidUtf8IsRefusedAtCommit) {
  const std::string dir = test_paths::EmptyDir("utf8");
  auto writer = CheckpointWriter::Create(dir + "/ckpt");
  ASSERT_TRUE(writer.ok());
  (*(*writer)->mutable_metadata()->mutable_user())["note"] = "\xff\xfe";
  absl::Status status = (*writer)->Commit();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("UTF-8"));
  EXPECT_TRUE(ListDir(dir).empty());
}

TEST(WriterTest, MissingParentDirectoryIsNotFound) {
  const std::string dir = test_paths::EmptyDir("missing_parent");
  auto writer = CheckpointWriter::Create(dir + "/no/such/ckpt");
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(writer.status().message(), HasSubstr(dir + "/no/such"));
}

TEST(WriterTest, OverwriteReplacesTheOldCheckpointAndLeavesNoTemporary) {
  const std::string dir = test_paths::EmptyDir("overwrite");
  const std::string path = dir + "/ckpt";
  ASSERT_TRUE(WriteSimple(path, "old", 100, 1).ok());
  // An extra file in the old checkpoint must disappear with it.
  test_paths::WriteFile(path + "/stray.txt", "old");
  ASSERT_TRUE(WriteSimple(path + "/", "new", 10, 2).ok());
  EXPECT_THAT(ListDir(dir), ElementsAre("ckpt"));
  EXPECT_THAT(ListDir(path), ElementsAre("data-00000.bin", "manifest.pb"));
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->FindTensor("old"), nullptr);
  ASSERT_NE((*reader)->FindTensor("new"), nullptr);
  EXPECT_TRUE((*reader)->VerifyAll().ok());
}

TEST(WriterTest, AbandonedWriterRemovesItsTemporary) {
  const std::string dir = test_paths::EmptyDir("abandoned");
  {
    auto writer = CheckpointWriter::Create(dir + "/ckpt");
    ASSERT_TRUE(writer.ok());
    std::vector<char> bytes = Bytes(4 << 20, 1);
    ASSERT_TRUE((*writer)->AddTensor("t", proto::UINT8, {4 << 20}, bytes).ok());
    EXPECT_EQ(ListDir(dir).size(), 1u);
    EXPECT_EQ(ListDir(dir).begin()->rfind(kTemporaryPrefix, 0), 0u);
  }
  EXPECT_TRUE(ListDir(dir).empty());
}

TEST(WriterTest, RemoveStaleTemporariesKeepsLiveWritersAndCheckpoints) {
  const std::string dir = test_paths::EmptyDir("stale");
  ASSERT_TRUE(WriteSimple(dir + "/kept", "t", 4, 1).ok());
  // What a writer killed mid-save leaves behind.
  ASSERT_EQ(::mkdir((dir + "/.tmp-epoch=3-123-abc").c_str(), 0755), 0);
  test_paths::WriteFile(dir + "/.tmp-epoch=3-123-abc/data-00000.bin",
                        "partial");
  auto live = CheckpointWriter::Create(dir + "/in_progress");
  ASSERT_TRUE(live.ok());

  absl::StatusOr<int> removed = RemoveStaleTemporaries(dir);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_EQ(ListDir(dir).count(".tmp-epoch=3-123-abc"), 0u);
  EXPECT_EQ(ListDir(dir).count("kept"), 1u);
  EXPECT_EQ(ListDir(dir).size(), 2u);  // kept + the live temporary
  ASSERT_TRUE((*live)->Commit().ok());
  EXPECT_THAT(ListDir(dir), ElementsAre("in_progress", "kept"));
  EXPECT_EQ(RemoveStaleTemporaries(dir + "/nope").status().code(),
            absl::StatusCode::kNotFound);
}

// A real I/O error in the middle of a save (the file size limit stands in
// for a full disk: both fail write(2) with a Status naming the file). The
// temporary goes away and the previous checkpoint is untouched.
TEST(WriterTest, WriteErrorKeepsThePreviousCheckpoint) {
  const std::string dir = test_paths::EmptyDir("write_error");
  const std::string path = dir + "/ckpt";
  ASSERT_TRUE(WriteSimple(path, "old", 1000, 1).ok());
  const std::string old_data = test_paths::ReadFile(path + "/data-00000.bin");

  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto previous_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limited = saved;
  limited.rlim_cur = 1 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  absl::Status status = WriteSimple(path, "new", 1 << 20, 2);  // 4 MiB
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  ::signal(SIGXFSZ, previous_handler);

  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("data-00000.bin"));
  EXPECT_THAT(status.message(), HasSubstr("File too large"));
  EXPECT_THAT(ListDir(dir), ElementsAre("ckpt"));
  EXPECT_EQ(test_paths::ReadFile(path + "/data-00000.bin"), old_data);
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_NE((*reader)->FindTensor("old"), nullptr);
  EXPECT_TRUE((*reader)->VerifyAll().ok());
}

TEST(WriterTest, UnwritableParentFails) {
  // /proc accepts no new directories, even for root.
  auto writer = CheckpointWriter::Create("/proc/ckpt");
  ASSERT_FALSE(writer.ok());
  EXPECT_THAT(writer.status().message(), HasSubstr("/proc/.tmp-ckpt-"));
}

TEST(WriterTest, ElementSizesAndNames) {
  EXPECT_EQ(ElementSize(proto::FLOAT32), 4u);
  EXPECT_EQ(ElementSize(proto::FLOAT64), 8u);
  EXPECT_EQ(ElementSize(proto::FLOAT16), 2u);
  EXPECT_EQ(ElementSize(proto::BFLOAT16), 2u);
  EXPECT_EQ(ElementSize(proto::INT8), 1u);
  EXPECT_EQ(ElementSize(proto::UINT8), 1u);
  EXPECT_EQ(ElementSize(proto::INT16), 2u);
  EXPECT_EQ(ElementSize(proto::INT32), 4u);
  EXPECT_EQ(ElementSize(proto::INT64), 8u);
  EXPECT_EQ(ElementSize(proto::BOOL), 1u);
  EXPECT_EQ(ElementSize(proto::DTYPE_UNSPECIFIED), 0u);
  EXPECT_EQ(ElementSize(static_cast<proto::DType>(99)), 0u);
  EXPECT_EQ(DTypeName(proto::BFLOAT16), "bfloat16");
  EXPECT_EQ(DTypeName(static_cast<proto::DType>(99)), "unknown");
}

TEST(WriterTest, RefusesAnExtensionTwiceAndKeepsNothing) {
  const std::string path =
      test_paths::EmptyDir("duplicate_extension") + "/ckpt";
  auto writer = CheckpointWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  for (int i = 0; i < 2; ++i) {
    proto::Extension* extension =
        (*writer)->mutable_training_state()->add_extensions();
    extension->set_type("mytool.State");
    extension->set_version(1);
  }
  absl::Status status = (*writer)->Commit();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("mytool.State appears twice"),
            std::string::npos)
      << status;
  struct stat info;
  EXPECT_NE(::stat(path.c_str(), &info), 0);
}

// A checkpoint of two processes: the second writes its own data file
// beside the checkpoint and the first adds it before committing. One
// manifest covers both, and the reader checks every byte of both.
TEST(WriterTest, DataFilesOfOtherWritersJoinTheCheckpoint) {
  const std::string dir = test_paths::EmptyDir("parts");
  std::vector<char> own = Bytes(100 * 4, 1);
  std::vector<char> theirs = Bytes(3, 2);
  auto part_writer = DataFileWriter::Create(dir + "/.tmp-part-1");
  ASSERT_TRUE(part_writer.ok()) << part_writer.status();
  ASSERT_TRUE(
      (*part_writer)->AddTensor("rank/1/x", proto::UINT8, {3}, theirs).ok());
  absl::StatusOr<DataFilePart> part = (*part_writer)->Finish();
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(part->size_bytes, 3u);

  auto writer = CheckpointWriter::Create(dir + "/ckpt");
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->AddTensor("w", proto::FLOAT32, {100}, own).ok());
  ASSERT_TRUE((*writer)->AddDataFile(*part).ok());
  ASSERT_TRUE((*writer)->Commit().ok());

  EXPECT_THAT(ListDir(dir), ElementsAre("ckpt"));
  EXPECT_THAT(ListDir(dir + "/ckpt"),
              ElementsAre("data-00000.bin", "data-00001.bin", "manifest.pb"));
  auto reader = CheckpointReader::Open(dir + "/ckpt");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->VerifyAll().ok());
  const proto::Manifest& manifest = (*reader)->manifest();
  ASSERT_EQ(manifest.tensors_size(), 2);
  EXPECT_EQ(manifest.tensors(1).name(), "rank/1/x");
  EXPECT_EQ(manifest.tensors(1).data_file(), 1u);

  // A flipped byte of the other writer's file is caught like any other.
  const std::string other = dir + "/ckpt/data-00001.bin";
  std::string bytes = test_paths::ReadFile(other);
  bytes[1] ^= 1;
  test_paths::WriteFile(other, bytes);
  auto damaged = CheckpointReader::Open(dir + "/ckpt");
  ASSERT_TRUE(damaged.ok()) << damaged.status();
  absl::Status verified = (*damaged)->VerifyAll();
  EXPECT_EQ(verified.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(verified.message(), HasSubstr("rank/1/x"));
}

TEST(WriterTest, ABadDataFileOfAnotherWriterAbortsTheCheckpoint) {
  const std::string dir = test_paths::EmptyDir("bad_parts");
  std::vector<char> bytes = Bytes(8, 1);
  auto part_writer = DataFileWriter::Create(dir + "/.tmp-part");
  ASSERT_TRUE(part_writer.ok());
  ASSERT_TRUE((*part_writer)->AddTensor("w", proto::UINT8, {8}, bytes).ok());
  absl::StatusOr<DataFilePart> part = (*part_writer)->Finish();
  ASSERT_TRUE(part.ok());

  {  // The file is not what its writer reported.
    DataFilePart wrong = *part;
    wrong.size_bytes = 9;
    auto writer = CheckpointWriter::Create(dir + "/a");
    ASSERT_TRUE(writer.ok());
    absl::Status status = (*writer)->AddDataFile(wrong);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(status.message(), HasSubstr("holds 8 bytes"));
    EXPECT_FALSE((*writer)->Commit().ok());
  }
  {  // The same name in two files.
    auto writer = CheckpointWriter::Create(dir + "/b");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->AddTensor("w", proto::UINT8, {8}, bytes).ok());
    ASSERT_TRUE((*writer)->AddDataFile(*part).ok());
    absl::Status status = (*writer)->Commit();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr("'w' of data file data-00001.bin"));
  }
  {  // A file that is not there.
    auto writer = CheckpointWriter::Create(dir + "/c");
    ASSERT_TRUE(writer.ok());
    EXPECT_EQ((*writer)->AddDataFile(*part).code(),
              absl::StatusCode::kNotFound);
  }
  // Nothing was committed and no temporary is left.
  EXPECT_THAT(ListDir(dir), ElementsAre());
}

TEST(WriterTest, AnUnfinishedDataFileIsRemoved) {
  const std::string dir = test_paths::EmptyDir("unfinished_part");
  {
    auto part_writer = DataFileWriter::Create(dir + "/part");
    ASSERT_TRUE(part_writer.ok());
    std::vector<char> bytes = Bytes(8, 1);
    ASSERT_TRUE((*part_writer)->AddTensor("w", proto::UINT8, {8}, bytes).ok());
    EXPECT_EQ(DataFileWriter::Create(dir + "/part").status().code(),
              absl::StatusCode::kAlreadyExists);
  }
  EXPECT_THAT(ListDir(dir), ElementsAre());
}

}  // namespace
}  // namespace checkpoint
