#include "runner/data/idx_reader.h"

#include <zlib.h>

#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace datasets {
namespace {

using test_paths::TempPath;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string FashionMnistDir() {
  return test_paths::ExternalRunfile("fashion_mnist");
}

void AppendBigEndian(std::string& out, uint32_t value) {
  out.push_back(static_cast<char>(value >> 24));
  out.push_back(static_cast<char>(value >> 16));
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value));
}

std::string ImagesFile(uint32_t magic, uint32_t count, uint32_t rows,
                       uint32_t cols, size_t pixel_bytes) {
  std::string out;
  AppendBigEndian(out, magic);
  AppendBigEndian(out, count);
  AppendBigEndian(out, rows);
  AppendBigEndian(out, cols);
  for (size_t i = 0; i < pixel_bytes; ++i) out.push_back(static_cast<char>(i));
  return out;
}

std::string LabelsFile(uint32_t count, size_t label_bytes, char value = 1) {
  std::string out;
  AppendBigEndian(out, kIdxLabelsMagic);
  AppendBigEndian(out, count);
  out.append(label_bytes, value);
  return out;
}

std::string Write(const std::string& name, const std::string& contents) {
  const std::string path = TempPath(name);
  test_paths::WriteFile(path, contents);
  return path;
}

std::string WriteGzip(const std::string& name, const std::string& contents) {
  const std::string path = TempPath(name);
  gzFile file = gzopen(path.c_str(), "wb");
  EXPECT_EQ(gzwrite(file, contents.data(), contents.size()),
            static_cast<int>(contents.size()));
  gzclose(file);
  return path;
}

std::string ErrorOf(const absl::Status& status) {
  return std::string(status.message());
}

TEST(IdxReaderTest, ReadsRealFashionMnistTraining) {
  auto paths = FindFashionMnistFiles(FashionMnistDir());
  ASSERT_TRUE(paths.ok()) << paths.status();
  auto train = ReadIdxDataset(paths->train_images, paths->train_labels, 10);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->images.count, 60000);
  EXPECT_EQ(train->images.rows, 28);
  EXPECT_EQ(train->images.cols, 28);
  ASSERT_EQ(train->labels.size(), 60000u);
  // The first training example is an ankle boot (9), then a T-shirt (0).
  EXPECT_EQ(train->labels[0], 9);
  EXPECT_EQ(train->labels[1], 0);
  const auto& pixels = train->images.pixels;
  EXPECT_EQ(std::accumulate(pixels.begin(), pixels.begin() + 784, 0), 76247);
  // Balanced classes: 6000 of each.
  std::vector<int> per_class(10);
  for (uint8_t label : train->labels) ++per_class[label];
  for (int n : per_class) EXPECT_EQ(n, 6000);
}

TEST(IdxReaderTest, ReadsRealFashionMnistTest) {
  auto paths = FindFashionMnistFiles(FashionMnistDir());
  ASSERT_TRUE(paths.ok()) << paths.status();
  auto test = ReadIdxDataset(paths->test_images, paths->test_labels, 10);
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->images.count, 10000);
  EXPECT_EQ(test->labels[0], 9);
  EXPECT_EQ(test->labels[1], 2);
}

TEST(IdxReaderTest, PlainAndGzippedGiveTheSameData) {
  const std::string contents = ImagesFile(kIdxImagesMagic, 3, 2, 2, 12);
  auto plain = ReadIdxImages(Write("plain-images", contents));
  auto gzipped = ReadIdxImages(WriteGzip("gz-images.gz", contents));
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(gzipped.ok()) << gzipped.status();
  EXPECT_EQ(plain->pixels, gzipped->pixels);
  EXPECT_EQ(plain->count, 3);
  EXPECT_EQ(plain->pixels[11], 11);
}

TEST(IdxReaderTest, FindsUncompressedFilesToo) {
  const std::string dir = test_paths::TempDir("plain_dir");
  for (const char* name :
       {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    test_paths::WriteFile(dir + "/" + name, "x");
  }
  auto paths = FindFashionMnistFiles(dir);
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(paths->test_labels, dir + "/t10k-labels-idx1-ubyte");
  auto missing = FindFashionMnistFiles(TempPath("nowhere"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ErrorOf(missing.status()), HasSubstr("train-images-idx3-ubyte"));
}

TEST(IdxReaderTest, RejectsBadMagic) {
  const std::string path =
      Write("bad-magic", ImagesFile(0x12345678, 1, 2, 2, 4));
  auto images = ReadIdxImages(path);
  EXPECT_EQ(images.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ErrorOf(images.status()),
              AllOf(HasSubstr(path), HasSubstr("bad magic 0x12345678")));
}

TEST(IdxReaderTest, RejectsLabelsFileReadAsImagesForItsDimensions) {
  const std::string path = Write("labels-as-images", LabelsFile(4, 4));
  auto images = ReadIdxImages(path);
  EXPECT_THAT(ErrorOf(images.status()),
              AllOf(HasSubstr(path), HasSubstr("need 3 dimensions"),
                    HasSubstr("file has 1")));
  auto labels = ReadIdxLabels(
      Write("images-as-labels", ImagesFile(kIdxImagesMagic, 1, 2, 2, 4)));
  EXPECT_THAT(ErrorOf(labels.status()), HasSubstr("need 1 dimensions"));
}

TEST(IdxReaderTest, RejectsZeroAndAbsurdDimensions) {
  EXPECT_THAT(
      ErrorOf(ReadIdxImages(
                  Write("zero-rows", ImagesFile(kIdxImagesMagic, 1, 0, 2, 0)))
                  .status()),
      HasSubstr("rows 0 out of range"));
  // 2^32-1 images of 4096x4096 would be petabytes: refused before any
  // allocation.
  auto huge = ReadIdxImages(
      Write("huge", ImagesFile(kIdxImagesMagic, 0xFFFFFFFF, 28, 28, 0)));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ErrorOf(huge.status()), HasSubstr("count 4294967295"));
  auto over_cap = ReadIdxImages(
      Write("over-cap", ImagesFile(kIdxImagesMagic, 1000000, 4096, 4096, 0)));
  EXPECT_THAT(ErrorOf(over_cap.status()), HasSubstr("over the cap"));
  auto huge_labels =
      ReadIdxLabels(Write("huge-labels", LabelsFile(0xFFFFFFF0, 0)));
  EXPECT_THAT(ErrorOf(huge_labels.status()), HasSubstr("out of range"));
}

TEST(IdxReaderTest, RejectsTruncatedData) {
  const std::string path =
      Write("truncated", ImagesFile(kIdxImagesMagic, 2, 28, 28, 784 + 100));
  auto images = ReadIdxImages(path);
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(ErrorOf(images.status()),
              AllOf(HasSubstr(path), HasSubstr("truncated")));
  auto gz = ReadIdxLabels(WriteGzip("truncated-labels.gz", LabelsFile(10, 9)));
  EXPECT_THAT(ErrorOf(gz.status()), HasSubstr("truncated"));
  auto header_only = ReadIdxImages(Write("header-only", "\0\0\x08"));
  EXPECT_THAT(ErrorOf(header_only.status()), HasSubstr("truncated"));
}

TEST(IdxReaderTest, RejectsTruncatedGzipStream) {
  // A gzip file cut in the middle of its compressed stream.
  const std::string full = TempPath("full.gz");
  WriteGzip("full.gz", ImagesFile(kIdxImagesMagic, 50, 28, 28, 50 * 784));
  const std::string bytes = test_paths::ReadFile(full);
  const std::string cut = Write("cut.gz", bytes.substr(0, bytes.size() / 2));
  auto images = ReadIdxImages(cut);
  EXPECT_EQ(images.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(ErrorOf(images.status()), HasSubstr(cut));
}

TEST(IdxReaderTest, RejectsTrailingBytes) {
  auto labels = ReadIdxLabels(Write("trailing", LabelsFile(3, 4)));
  EXPECT_EQ(labels.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(ErrorOf(labels.status()), HasSubstr("trailing bytes"));
}

TEST(IdxReaderTest, RejectsCountMismatchBetweenImagesAndLabels) {
  const std::string images =
      Write("three-images", ImagesFile(kIdxImagesMagic, 3, 2, 2, 12));
  const std::string labels = Write("four-labels", LabelsFile(4, 4));
  auto dataset = ReadIdxDataset(images, labels);
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ErrorOf(dataset.status()),
              AllOf(HasSubstr("3 images"), HasSubstr("4 labels"),
                    HasSubstr(images), HasSubstr(labels)));
}

TEST(IdxReaderTest, RejectsLabelsOutOfClassRange) {
  const std::string images =
      Write("two-images", ImagesFile(kIdxImagesMagic, 2, 2, 2, 8));
  const std::string labels = Write("bad-labels", LabelsFile(2, 2, 12));
  EXPECT_TRUE(ReadIdxDataset(images, labels).ok());
  EXPECT_THAT(ErrorOf(ReadIdxDataset(images, labels, 10).status()),
              HasSubstr("label 12 at index 0"));
}

TEST(IdxReaderTest, MissingFileAndDirectoryAreErrorsNamingThePath) {
  const std::string missing = TempPath("does-not-exist");
  auto images = ReadIdxImages(missing);
  EXPECT_EQ(images.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ErrorOf(images.status()), HasSubstr(missing));
  EXPECT_THAT(ErrorOf(ReadIdxLabels(TempPath("")).status()),
              HasSubstr("directory"));
}

}  // namespace
}  // namespace datasets
