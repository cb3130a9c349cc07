// Damaged and hostile checkpoints: every broken rule is a clean Status
// naming the checkpoint and the rule, never a crash or an out-of-bounds
// read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace checkpoint {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/" + info->name();
    ASSERT_EQ(std::system(("rm -rf '" + dir_ + "'").c_str()), 0);
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    path_ = dir_ + "/ckpt";
    auto writer = CheckpointWriter::Create(path_);
    ASSERT_TRUE(writer.ok());
    std::vector<char> weight(4 * 6, 'w');
    std::vector<char> bias(4 * 3, 'b');
    ASSERT_TRUE(
        (*writer)->AddTensor("fc.weight", proto::FLOAT32, {2, 3}, weight).ok());
    ASSERT_TRUE(
        (*writer)->AddTensor("fc.bias", proto::FLOAT32, {3}, bias).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }

  std::string DataPath() const { return path_ + "/data-00000.bin"; }
  std::string ManifestPath() const { return path_ + "/manifest.pb"; }

  proto::Manifest Manifest() const {
    proto::Manifest manifest;
    EXPECT_TRUE(manifest.ParseFromString(ReadFile(ManifestPath())));
    return manifest;
  }

  void EditManifest(const std::function<void(proto::Manifest&)>& edit) {
    proto::Manifest manifest = Manifest();
    edit(manifest);
    WriteFile(ManifestPath(), manifest.SerializeAsString());
  }

  // Open() must fail with `code` and a message containing `text`.
  void ExpectOpenFails(absl::StatusCode code, const std::string& text) {
    for (bool use_mmap : {false, true}) {
      ReaderOptions options;
      options.use_mmap = use_mmap;
      auto reader = CheckpointReader::Open(path_, options);
      ASSERT_FALSE(reader.ok()) << "mmap=" << use_mmap;
      EXPECT_EQ(reader.status().code(), code) << reader.status();
      EXPECT_THAT(reader.status().message(), HasSubstr(text));
      EXPECT_THAT(reader.status().message(), HasSubstr(path_));
    }
  }

  std::string dir_;
  std::string path_;
};

TEST_F(CorruptionTest, FlippedDataByteIsDataLossNamingTheTensor) {
  const proto::Manifest manifest = Manifest();
  std::string data = ReadFile(DataPath());
  data[manifest.tensors(1).offset() + 5] ^= 0x10;  // inside fc.bias
  WriteFile(DataPath(), data);

  for (bool use_mmap : {false, true}) {
    SCOPED_TRACE(use_mmap ? "mmap" : "pread");
    ReaderOptions options;
    options.use_mmap = use_mmap;
    auto reader = CheckpointReader::Open(path_, options);
    ASSERT_TRUE(reader.ok()) << reader.status();  // data is checked lazily
    const proto::TensorEntry& bias = *(*reader)->FindTensor("fc.bias");
    std::vector<char> bytes(bias.size_bytes());
    absl::Status read = (*reader)->ReadTensor(bias, absl::MakeSpan(bytes));
    EXPECT_EQ(read.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(read.message(), HasSubstr("'fc.bias'"));
    EXPECT_THAT(read.message(), HasSubstr("checksum mismatch"));
    std::vector<char> weight(24);
    EXPECT_TRUE((*reader)
                    ->ReadTensor(*(*reader)->FindTensor("fc.weight"),
                                 absl::MakeSpan(weight))
                    .ok());
    absl::Status all = (*reader)->VerifyAll();
    EXPECT_EQ(all.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(all.message(), HasSubstr("'fc.bias'"));
    if (use_mmap) {
      for (int attempt = 0; attempt < 2; ++attempt) {
        auto view = (*reader)->MappedTensor(bias);
        EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
      }
    }
  }
  // Verification off: the caller asked for the bytes as they are.
  ReaderOptions unchecked;
  unchecked.verify_checksums = false;
  auto reader = CheckpointReader::Open(path_, unchecked);
  ASSERT_TRUE(reader.ok());
  std::vector<char> bytes(12);
  EXPECT_TRUE(
      (*reader)
          ->ReadTensor(*(*reader)->FindTensor("fc.bias"), absl::MakeSpan(bytes))
          .ok());
  EXPECT_EQ((*reader)->VerifyAll().code(), absl::StatusCode::kDataLoss);
}

TEST_F(CorruptionTest, TruncatedDataFile) {
  ASSERT_EQ(::truncate(DataPath().c_str(), 70), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "has 70 bytes");
}

TEST_F(CorruptionTest, DataFileTruncatedAfterOpen) {
  auto reader = CheckpointReader::Open(path_);
  ASSERT_TRUE(reader.ok());
  ASSERT_EQ(::truncate(DataPath().c_str(), 70), 0);
  std::vector<char> bytes(12);
  absl::Status status = (*reader)->ReadTensor(*(*reader)->FindTensor("fc.bias"),
                                              absl::MakeSpan(bytes));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("truncated"));
}

TEST_F(CorruptionTest, MissingDataFile) {
  ASSERT_EQ(::unlink(DataPath().c_str()), 0);
  ExpectOpenFails(absl::StatusCode::kNotFound,
                  "data file data-00000.bin is missing");
}

TEST_F(CorruptionTest, MissingManifest) {
  ASSERT_EQ(::unlink(ManifestPath().c_str()), 0);
  ExpectOpenFails(absl::StatusCode::kNotFound, "no manifest.pb");
}

TEST_F(CorruptionTest, MissingDirectory) {
  path_ = dir_ + "/nothing_here";
  ExpectOpenFails(absl::StatusCode::kNotFound, "No such file");
}

TEST_F(CorruptionTest, GarbageManifest) {
  WriteFile(ManifestPath(), "\xff\xff\xff\xff garbage \x01\x02");
  ExpectOpenFails(absl::StatusCode::kDataLoss, "does not parse");
}

TEST_F(CorruptionTest, InvalidUtf8NameIsRefusedWithoutLogSpam) {
  EditManifest([](proto::Manifest& m) {
    // Serialization does not check; parsing (proto3) does.
    m.mutable_tensors(0)->set_name("fc.\xff\xfe");
  });
  ::testing::internal::CaptureStderr();
  auto reader = CheckpointReader::Open(path_);
  const std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(reader.status().message(), HasSubstr("invalid UTF-8"));
  EXPECT_EQ(logged, "");
}

TEST_F(CorruptionTest, EmptyManifestHasNoFormatVersion) {
  WriteFile(ManifestPath(), "");
  ExpectOpenFails(absl::StatusCode::kDataLoss, "format_version 0");
}

TEST_F(CorruptionTest, OversizedManifestIsRefusedBeforeReading) {
  // Sparse: costs no disk, and the reader must not allocate 300 MiB.
  ASSERT_EQ(::truncate(ManifestPath().c_str(), int64_t{300} << 20), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "more than the limit");
}

TEST_F(CorruptionTest, NewerFormatVersion) {
  EditManifest([](proto::Manifest& m) { m.set_format_version(7); });
  ExpectOpenFails(absl::StatusCode::kFailedPrecondition,
                  "written by a newer format version 7; this reader "
                  "supports up to 1");
}

TEST_F(CorruptionTest, AlignmentNotAPowerOfTwo) {
  EditManifest([](proto::Manifest& m) { m.set_alignment(48); });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "not a power of two");
}

TEST_F(CorruptionTest, ShapeProductOverflow) {
  EditManifest([](proto::Manifest& m) {
    auto* shape = m.mutable_tensors(0)->mutable_shape();
    shape->Clear();
    shape->Add(int64_t{1} << 32);
    shape->Add(int64_t{1} << 32);  // 2^64 elements
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "overflows");
}

TEST_F(CorruptionTest, ProductWrappingToTheRecordedSizeIsCaught) {
  // 2^62 + 6 elements of 4 bytes wraps to 24 bytes in 64-bit arithmetic.
  EditManifest([](proto::Manifest& m) {
    auto* shape = m.mutable_tensors(0)->mutable_shape();
    shape->Clear();
    shape->Add((int64_t{1} << 62) + 6);
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "overflows");
}

TEST_F(CorruptionTest, NegativeDimension) {
  EditManifest([](proto::Manifest& m) {
    m.mutable_tensors(0)->set_shape(0, -2);
    m.mutable_tensors(0)->set_shape(1, -3);
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "negative dimension -2");
}

TEST_F(CorruptionTest, SizeDisagreesWithShape) {
  EditManifest(
      [](proto::Manifest& m) { m.mutable_tensors(0)->set_shape(1, 4); });
  ExpectOpenFails(absl::StatusCode::kDataLoss,
                  "'fc.weight': size_bytes 24 does not match");
}

TEST_F(CorruptionTest, OffsetBeyondTheFile) {
  EditManifest(
      [](proto::Manifest& m) { m.mutable_tensors(1)->set_offset(1 << 20); });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "lie outside data-00000.bin");
}

TEST_F(CorruptionTest, OffsetPlusSizeWrapsAround) {
  EditManifest([](proto::Manifest& m) {
    m.mutable_tensors(1)->set_offset(std::numeric_limits<uint64_t>::max() - 63);
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "lie outside");
}

TEST_F(CorruptionTest, MisalignedOffset) {
  EditManifest([](proto::Manifest& m) { m.mutable_tensors(1)->set_offset(8); });
  ExpectOpenFails(absl::StatusCode::kDataLoss,
                  "not a multiple of the alignment");
}

TEST_F(CorruptionTest, OverlappingTensors) {
  EditManifest([](proto::Manifest& m) {
    m.mutable_tensors(1)->set_offset(m.tensors(0).offset());
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "overlap");
}

TEST_F(CorruptionTest, DuplicateNames) {
  EditManifest(
      [](proto::Manifest& m) { m.mutable_tensors(1)->set_name("fc.weight"); });
  ExpectOpenFails(absl::StatusCode::kDataLoss,
                  "'fc.weight': duplicate tensor name");
}

TEST_F(CorruptionTest, EmptyName) {
  EditManifest([](proto::Manifest& m) { m.mutable_tensors(1)->set_name(""); });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "empty name");
}

TEST_F(CorruptionTest, UnknownDtype) {
  EditManifest([](proto::Manifest& m) {
    m.mutable_tensors(0)->set_dtype(static_cast<proto::DType>(42));
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "unknown dtype 42");
}

TEST_F(CorruptionTest, DataFileIndexOutOfRange) {
  EditManifest(
      [](proto::Manifest& m) { m.mutable_tensors(0)->set_data_file(1); });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "data_file 1 out of range");
}

TEST_F(CorruptionTest, DataFileNameEscapingTheDirectory) {
  // A file with the right size outside the checkpoint must not be read.
  ASSERT_EQ(std::system(
                ("cp '" + DataPath() + "' '" + dir_ + "/outside.bin'").c_str()),
            0);
  for (const char* name :
       {"../outside.bin", "sub/data.bin", "/etc/passwd", "..", ".", ""}) {
    SCOPED_TRACE(name);
    EditManifest(
        [&](proto::Manifest& m) { m.mutable_data_files(0)->set_name(name); });
    ExpectOpenFails(absl::StatusCode::kDataLoss, "not a plain file name");
  }
}

TEST_F(CorruptionTest, DataFileListedTwice) {
  EditManifest(
      [](proto::Manifest& m) { *m.add_data_files() = m.data_files(0); });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "listed twice");
}

TEST_F(CorruptionTest, DataFileSymlinkIsNotFollowed) {
  ASSERT_EQ(::rename(DataPath().c_str(), (dir_ + "/real.bin").c_str()), 0);
  ASSERT_EQ(::symlink("../real.bin", DataPath().c_str()), 0);
  auto reader = CheckpointReader::Open(path_);
  EXPECT_FALSE(reader.ok());
}

}  // namespace
}  // namespace checkpoint
