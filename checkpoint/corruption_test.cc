// Damaged and hostile checkpoints: every broken rule is a clean Status
// naming the checkpoint and the rule, never a crash or an out-of-bounds
// read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "checkpoint/manifest_file.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "gmock/gmock.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace {

using ::testing::HasSubstr;

class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = test_paths::EmptyDir(info->name());
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
    absl::StatusOr<proto::Manifest> manifest =
        DecodeManifestFile(test_paths::ReadFile(ManifestPath()));
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    return manifest.ok() ? *manifest : proto::Manifest();
  }

  void EditManifest(const std::function<void(proto::Manifest&)>& edit) {
    proto::Manifest manifest = Manifest();
    edit(manifest);
    // Re-encoded with a valid checksum: the reader's rules, not the
    // checksum, must catch what the edit broke.
    absl::StatusOr<std::string> encoded = EncodeManifestFile(manifest);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    test_paths::WriteFile(ManifestPath(), *encoded);
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
  test_paths::FlipByte(DataPath(), manifest.tensors(1).offset() + 5,
                       0x10);  // inside fc.bias

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

// A tensor larger than kVerifiedReadPieceBytes is read and hashed piece by
// piece: a flipped byte in its first piece, in a middle one, or in the
// short last one is caught.
TEST_F(CorruptionTest, FlippedByteInAnyPieceOfALargeTensorIsDataLoss) {
  const std::string path = dir_ + "/large";
  const size_t size = 3 * kVerifiedReadPieceBytes + 100;
  {
    auto writer = CheckpointWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)
                    ->AddTensor("big", proto::UINT8,
                                {static_cast<int64_t>(size)},
                                std::vector<char>(size, 'x'))
                    .ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  const std::string data = path + "/data-00000.bin";
  std::vector<char> bytes(size);
  auto read = [&] {
    auto reader = CheckpointReader::Open(path);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (!reader.ok()) return reader.status();
    return (*reader)->ReadTensor(*(*reader)->FindTensor("big"),
                                 absl::MakeSpan(bytes));
  };
  ASSERT_TRUE(read().ok());
  EXPECT_EQ(bytes, std::vector<char>(size, 'x'));
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok());
  const uint64_t offset = (*reader)->FindTensor("big")->offset();
  for (const uint64_t at :
       {uint64_t{0}, kVerifiedReadPieceBytes + 7, uint64_t{size} - 1}) {
    SCOPED_TRACE(at);
    test_paths::FlipByte(data, offset + at, 0x01);
    absl::Status status = read();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(status.message(), HasSubstr("'big'"));
    EXPECT_THAT(status.message(), HasSubstr("checksum mismatch"));
    test_paths::FlipByte(data, offset + at, 0x01);
    EXPECT_TRUE(read().ok());
  }
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
  test_paths::WriteFile(ManifestPath(), std::string(64, '\xff'));
  ExpectOpenFails(absl::StatusCode::kDataLoss, "bad magic");
}

TEST_F(CorruptionTest, WellFramedGarbageDoesNotParse) {
  test_paths::WriteFile(ManifestPath(),
                        FrameManifestPayload("\xff\xff\xff\xff garbage"));
  ExpectOpenFails(absl::StatusCode::kDataLoss, "does not parse");
}

TEST_F(CorruptionTest, InvalidUtf8NameIsRefusedWithoutLogSpam) {
  proto::Manifest manifest = Manifest();
  manifest.mutable_tensors(0)->set_name("fc.\xff\xfe");
  std::string payload;
  {
    // Serialization only logs invalid UTF-8; parsing (proto3) refuses it.
    ::testing::internal::CaptureStderr();
    payload = manifest.SerializeAsString();
    ::testing::internal::GetCapturedStderr();
  }
  test_paths::WriteFile(ManifestPath(), FrameManifestPayload(payload));
  ::testing::internal::CaptureStderr();
  auto reader = CheckpointReader::Open(path_);
  const std::string logged = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(reader.status().message(), HasSubstr("invalid UTF-8"));
  EXPECT_EQ(logged, "");
}

TEST_F(CorruptionTest, EmptyManifestIsShorterThanTheHeader) {
  test_paths::WriteFile(ManifestPath(), "");
  ExpectOpenFails(absl::StatusCode::kDataLoss, "shorter than the 32-byte");
}

// What "parses" means is fixed by the format, not by protobuf's leniency:
// only the canonical encoding of a message is accepted.
TEST_F(CorruptionTest, NonCanonicalEncodingsAreRefused) {
  const std::string payload = Manifest().SerializeAsString();
  proto::Manifest unknown_in_entry = Manifest();
  ASSERT_GT(unknown_in_entry.tensors_size(), 0);
  proto::TensorEntry* entry = unknown_in_entry.mutable_tensors(0);
  entry->GetReflection()->MutableUnknownFields(entry)->AddVarint(99, 1);
  const std::vector<std::pair<std::string, std::string>> cases = {
      // Unknown field 99 inside a tensor entry (checked apart from the
      // rest of the manifest).
      {"unknown field in a tensor entry", unknown_in_entry.SerializeAsString()},
      // Unknown field 99 (varint 1) appended.
      {"unknown field", payload + std::string("\x98\x06\x01", 3)},
      // format_version repeated: protobuf keeps the last one.
      {"repeated field", payload + std::string("\x08\x02", 2)},
      // format_version moved to the end: the same message, and the same
      // size, so only the bytes tell.
      {"reordered fields", payload.substr(2) + payload.substr(0, 2)},
      // format_version = 2^32 + 2, which a uint32 reads as 2.
      {"over-long varint",
       std::string("\x08\x82\x80\x80\x80\x10", 6) + payload.substr(2)},
  };
  for (const auto& [what, bytes] : cases) {
    SCOPED_TRACE(what);
    test_paths::WriteFile(ManifestPath(), FrameManifestPayload(bytes));
    ExpectOpenFails(absl::StatusCode::kDataLoss, "canonical encoding");
  }
}

TEST_F(CorruptionTest, FormatVersion1IsRefusedNamingTheConversion) {
  proto::Manifest manifest = Manifest();
  manifest.set_format_version(1);
  test_paths::WriteFile(ManifestPath(), manifest.SerializeAsString());
  ExpectOpenFails(absl::StatusCode::kFailedPrecondition, "ckpt upgrade");
}

TEST_F(CorruptionTest, OversizedManifestIsRefusedBeforeReading) {
  // Sparse: costs no disk, and the reader must not allocate 300 MiB.
  ASSERT_EQ(::truncate(ManifestPath().c_str(), int64_t{300} << 20), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "more than the limit");
}

TEST_F(CorruptionTest, NewerFormatVersion) {
  proto::Manifest manifest = Manifest();
  manifest.set_format_version(7);
  test_paths::WriteFile(ManifestPath(),
                        FrameManifestPayload(manifest.SerializeAsString(), 7));
  ExpectOpenFails(absl::StatusCode::kFailedPrecondition,
                  "written by a newer format version 7; this reader "
                  "supports up to 2");
}

TEST_F(CorruptionTest, PayloadVersionMustMatchTheHeader) {
  EditManifest([](proto::Manifest& m) { m.set_format_version(1); });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "differs from the header");
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

TEST_F(CorruptionTest, ExtensionsAreTypedVersionedAndUnique) {
  auto add = [](proto::Manifest& m, const std::string& type, uint32_t version) {
    proto::Extension* extension = m.mutable_training_state()->add_extensions();
    extension->set_type(type);
    extension->set_version(version);
  };
  EditManifest([&](proto::Manifest& m) {
    add(m, "mytool.State", 1);
    add(m, "mytool.State", 2);
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss,
                  "extension mytool.State appears twice");
  EditManifest([&](proto::Manifest& m) {
    m.mutable_training_state()->clear_extensions();
    add(m, "", 1);
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "empty type");
  EditManifest([&](proto::Manifest& m) {
    m.mutable_training_state()->clear_extensions();
    add(m, "mytool.State", 0);
  });
  ExpectOpenFails(absl::StatusCode::kDataLoss, "version 0");
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
  test_paths::WriteFile(dir_ + "/outside.bin",
                        test_paths::ReadFile(DataPath()));
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

// Readers never block on a FIFO and never follow a symlinked file.
TEST_F(CorruptionTest, FifoManifestIsRefusedWithoutBlocking) {
  ASSERT_EQ(::unlink(ManifestPath().c_str()), 0);
  ASSERT_EQ(::mkfifo(ManifestPath().c_str(), 0644), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "is a FIFO");
}

TEST_F(CorruptionTest, FifoDataFileIsRefusedWithoutBlocking) {
  ASSERT_EQ(::unlink(DataPath().c_str()), 0);
  ASSERT_EQ(::mkfifo(DataPath().c_str(), 0644), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "is a FIFO");
}

TEST_F(CorruptionTest, SymlinkedManifestIsNotFollowed) {
  ASSERT_EQ(::rename(ManifestPath().c_str(), (dir_ + "/real.pb").c_str()), 0);
  ASSERT_EQ(::symlink("../real.pb", ManifestPath().c_str()), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "is a symlink");
}

TEST_F(CorruptionTest, TemporaryDirectoryIsNeverACheckpoint) {
  const std::string temporary = dir_ + "/.tmp-ckpt-1-2";
  ASSERT_EQ(::rename(path_.c_str(), temporary.c_str()), 0);
  auto reader = CheckpointReader::Open(temporary);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(reader.status().message(), HasSubstr("uncommitted temporary"));
  // Nor through a symlink with an innocent name.
  ASSERT_EQ(::symlink(".tmp-ckpt-1-2", path_.c_str()), 0);
  EXPECT_EQ(CheckpointReader::Open(path_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CorruptionTest, BoolByteOtherThanZeroOrOneIsRefused) {
  const std::string path = dir_ + "/bools";
  {
    auto writer = CheckpointWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    const char bytes[] = {0, 1, 1};
    ASSERT_TRUE((*writer)->AddTensor("mask", proto::BOOL, {3}, bytes).ok());
    const char bad[] = {0, 2, 1};
    EXPECT_EQ((*writer)->AddTensor("bad", proto::BOOL, {3}, bad).code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  // A 2 with a matching checksum: only the bool rule can catch it.
  path_ = path;
  std::string data = test_paths::ReadFile(DataPath());
  data[Manifest().tensors(0).offset() + 1] = 2;
  test_paths::WriteFile(DataPath(), data);
  EditManifest([&](proto::Manifest& m) {
    m.mutable_tensors(0)->set_xxh3_64(XXH3_64bits(
        data.data() + m.tensors(0).offset(), m.tensors(0).size_bytes()));
  });
  for (bool use_mmap : {false, true}) {
    for (bool verify : {false, true}) {
      ReaderOptions options;
      options.use_mmap = use_mmap;
      options.verify_checksums = verify;
      auto reader = CheckpointReader::Open(path_, options);
      ASSERT_TRUE(reader.ok()) << reader.status();
      std::vector<char> bytes(3);
      absl::Status read = (*reader)->ReadTensor(*(*reader)->FindTensor("mask"),
                                                absl::MakeSpan(bytes));
      EXPECT_EQ(read.code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(read.message(), HasSubstr("element 1 of a bool tensor is 2"));
      EXPECT_EQ((*reader)->VerifyAll().code(), absl::StatusCode::kDataLoss);
    }
  }
}

TEST_F(CorruptionTest, NonZeroPaddingIsCaughtByVerifyAll) {
  // fc.weight is 24 bytes, fc.bias starts at the next multiple of 64.
  std::string data = test_paths::ReadFile(DataPath());
  ASSERT_GT(Manifest().tensors(1).offset(), 24u);
  data[30] = 'x';
  test_paths::WriteFile(DataPath(), data);
  for (bool use_mmap : {false, true}) {
    ReaderOptions options;
    options.use_mmap = use_mmap;
    auto reader = CheckpointReader::Open(path_, options);
    ASSERT_TRUE(reader.ok());
    absl::Status verified = (*reader)->VerifyAll();
    EXPECT_EQ(verified.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(verified.message(), HasSubstr("byte 30 of"));
    EXPECT_THAT(verified.message(), HasSubstr("zero padding"));
  }
}

// The format's promise (FORMAT.md section 6): any change of any single byte,
// any truncation and any appended bytes of a checkpoint are refused by a
// full verification (Open + VerifyAll, what `ckpt verify` runs).
class EveryByteTest : public CorruptionTest {
 protected:
  void SetUp() override {
    CorruptionTest::SetUp();
    // A richer checkpoint: metadata, training state, a bool and an empty
    // tensor, so that the manifest has every kind of field.
    path_ = dir_ + "/rich";
    auto writer = CheckpointWriter::Create(path_);
    ASSERT_TRUE(writer.ok());
    std::vector<char> weight(4 * 6, 'w');
    const char mask[] = {1, 0, 1};
    ASSERT_TRUE((*writer)
                    ->AddTensor("conv1.weight", proto::FLOAT32, {2, 3}, weight)
                    .ok());
    ASSERT_TRUE((*writer)->AddTensor("mask", proto::BOOL, {3}, mask).ok());
    ASSERT_TRUE((*writer)->AddTensor("empty", proto::INT64, {0, 4}, {}).ok());
    proto::Metadata* metadata = (*writer)->mutable_metadata();
    metadata->set_architecture("mlp");
    metadata->mutable_monitored()->set_name("val_accuracy");
    metadata->mutable_monitored()->set_mode(proto::MonitoredMetric::MAX);
    metadata->mutable_monitored()->set_value(0.875);
    (*metadata->mutable_metrics())["loss"] = 0.25;
    (*metadata->mutable_user())["note"] = "sweep";
    proto::TrainingState* training = (*writer)->mutable_training_state();
    training->mutable_optimizer()->set_type("sgd");
    auto* group = training->mutable_optimizer()->add_param_groups();
    (*group->mutable_hyperparameters())["lr"] = 0.1;
    group->add_parameter_names("conv1.weight");
    training->mutable_rng()->set_seed(7);
    ASSERT_TRUE((*writer)->Commit().ok());
  }

  // The error Open + VerifyAll give, or OK.
  absl::Status FullVerify() const {
    for (bool use_mmap : {false, true}) {
      ReaderOptions options;
      options.use_mmap = use_mmap;
      auto reader = CheckpointReader::Open(path_, options);
      if (!reader.ok()) return reader.status();
      if (absl::Status status = (*reader)->VerifyAll(); !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }

  void ExpectEveryChangeRefused(const std::string& file) {
    const std::string original = test_paths::ReadFile(file);
    ASSERT_TRUE(FullVerify().ok());
    int accepted = 0;
    for (size_t i = 0; i < original.size(); ++i) {
      for (unsigned char mask : {0x01, 0x80, 0xff}) {
        test_paths::FlipByte(file, i, mask);
        const bool verified = FullVerify().ok();
        test_paths::FlipByte(file, i, mask);  // the original again
        if (verified) {
          ++accepted;
          ADD_FAILURE() << file << ": byte " << i << " ^ " << int{mask}
                        << " accepted";
        }
      }
    }
    for (size_t length = 0; length < original.size(); ++length) {
      test_paths::WriteFile(file, original.substr(0, length));
      if (FullVerify().ok()) {
        ++accepted;
        ADD_FAILURE() << file << ": truncation to " << length << " accepted";
      }
    }
    for (const std::string& tail :
         {std::string(1, '\0'), std::string("\x08\x02", 2)}) {
      test_paths::WriteFile(file, original + tail);
      if (FullVerify().ok()) {
        ++accepted;
        ADD_FAILURE() << file << ": appended bytes accepted";
      }
    }
    test_paths::WriteFile(file, original);
    EXPECT_EQ(accepted, 0);
    EXPECT_TRUE(FullVerify().ok());
  }
};

TEST_F(EveryByteTest, EveryManifestChangeIsRefused) {
  ExpectEveryChangeRefused(ManifestPath());
}

TEST_F(EveryByteTest, EveryDataFileChangeIsRefused) {
  ExpectEveryChangeRefused(DataPath());
}

}  // namespace
}  // namespace checkpoint
