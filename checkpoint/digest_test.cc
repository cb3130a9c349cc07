#include "checkpoint/digest.h"

#include <string>
#include <vector>

#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

struct TestTensor {
  std::string name;
  proto::DType dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

class DigestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = test_paths::EmptyDir(info->name());
    std::vector<char> big(3 << 20);  // crosses the digest's chunk size
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    tensors_ = {
        {"conv.weight", proto::FLOAT32, {2, 3}, std::vector<char>(24, 'a')},
        {"conv.bias", proto::FLOAT32, {2}, std::vector<char>(8, 'b')},
        {"big", proto::UINT8, {3 << 20}, big},
        {"empty", proto::INT64, {0}, {}},
        {"step", proto::INT64, {}, std::vector<char>(8, 1)},
    };
  }

  std::string Write(const std::string& name,
                    const std::vector<TestTensor>& tensors,
                    const std::string& note = "") {
    const std::string path = dir_ + "/" + name;
    auto writer = CheckpointWriter::Create(path);
    EXPECT_TRUE(writer.ok());
    (*writer)->mutable_metadata()->mutable_progress()->set_epoch(note.size());
    if (!note.empty())
      (*(*writer)->mutable_metadata()->mutable_user())["note"] = note;
    for (const TestTensor& tensor : tensors) {
      EXPECT_TRUE(
          (*writer)
              ->AddTensor(tensor.name, tensor.dtype, tensor.shape, tensor.bytes)
              .ok());
    }
    EXPECT_TRUE((*writer)->Commit().ok());
    return path;
  }

  std::string Digest(const std::string& path, bool use_mmap = false) {
    ReaderOptions options;
    options.use_mmap = use_mmap;
    auto reader = CheckpointReader::Open(path, options);
    EXPECT_TRUE(reader.ok()) << reader.status();
    absl::StatusOr<std::string> digest = TensorDigest(**reader);
    EXPECT_TRUE(digest.ok()) << digest.status();
    return digest.value_or("");
  }

  std::string dir_;
  std::vector<TestTensor> tensors_;
};

TEST_F(DigestTest, IndependentOfOrderLayoutMetadataAndReadMode) {
  const std::string digest = Digest(Write("a", tensors_));
  EXPECT_THAT(digest, MatchesRegex("[0-9a-f]{32}"));
  std::vector<TestTensor> reversed(tensors_.rbegin(), tensors_.rend());
  // Different order means different offsets and padding too.
  EXPECT_EQ(Digest(Write("b", reversed, "other metadata")), digest);
  EXPECT_EQ(Digest(dir_ + "/a", /*use_mmap=*/true), digest);
}

TEST_F(DigestTest, ChangesWithAnyByteNameShapeOrDtype) {
  const std::string digest = Digest(Write("base", tensors_));
  std::vector<TestTensor> changed = tensors_;
  changed[2].bytes[(2 << 20) + 5] ^= 1;
  EXPECT_NE(Digest(Write("byte", changed)), digest);

  changed = tensors_;
  changed[0].name = "conv.weights";
  EXPECT_NE(Digest(Write("name", changed)), digest);

  changed = tensors_;
  changed[0].shape = {3, 2};
  EXPECT_NE(Digest(Write("shape", changed)), digest);

  changed = tensors_;
  changed[0].dtype = proto::INT32;
  EXPECT_NE(Digest(Write("dtype", changed)), digest);

  changed = tensors_;
  changed.pop_back();
  EXPECT_NE(Digest(Write("fewer", changed)), digest);

  // Moving a byte between the name and the data of adjacent fields must
  // not collide: fields are length-prefixed.
  EXPECT_NE(Digest(Write("x", {{"ab", proto::UINT8, {1}, {'c'}}})),
            Digest(Write("y", {{"a", proto::UINT8, {1}, {'b'}}})));
}

TEST_F(DigestTest, CorruptTensorFailsInsteadOfHashingBadBytes) {
  const std::string path = Write("corrupt", tensors_);
  auto reader = CheckpointReader::Open(path);
  ASSERT_TRUE(reader.ok());
  const uint64_t offset = (*reader)->FindTensor("big")->offset();
  test_paths::FlipByte(path + "/data-00000.bin", offset + 100, 0x01);
  absl::StatusOr<std::string> digest = TensorDigest(**reader);
  EXPECT_EQ(digest.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(digest.status().message(), HasSubstr("'big'"));
}

// Pins the algorithm: `ckpt digest` output is compared across machines,
// versions and (per FORMAT.md) other languages' implementations.
TEST_F(DigestTest, GoldenValue) {
  const std::string path = Write(
      "golden", {{"w", proto::FLOAT32, {2}, {0, 0, -128, 63, 0, 0, 0, 64}},
                 {"n", proto::INT64, {}, {5, 0, 0, 0, 0, 0, 0, 0}}});
  EXPECT_EQ(Digest(path), "179b4a96e453024683a83ed707714980");
}

}  // namespace
}  // namespace checkpoint
