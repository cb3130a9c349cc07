#include "runner/inputs.h"

#include <stb/stb_image_write.h>
#include <zlib.h>

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runner/data/npy.h"
#include "testing/test_paths.h"

namespace runner {
namespace {

using test_paths::TempPath;
using test_paths::WriteFile;
using ::testing::HasSubstr;

constexpr float kMean = 0.25f;
constexpr float kStd = 0.5f;

models::ModelMetadata FashionMetadata() {
  models::ModelMetadata metadata;
  metadata.input_shape = {1, 28, 28};
  metadata.input_dtype = "float32";
  metadata.normalization_mean = {kMean};
  metadata.normalization_std = {kStd};
  return metadata;
}

float Normalized(int pixel) { return (pixel / 255.0f - kMean) / kStd; }

std::string IdxImagesBytes(int count, int rows, int cols,
                           const std::vector<uint8_t>& pixels) {
  std::string bytes = {0, 0, 8, 3};
  for (int value : {count, rows, cols}) {
    for (int shift : {24, 16, 8, 0}) {
      bytes.push_back(static_cast<char>((value >> shift) & 0xff));
    }
  }
  return bytes + std::string(pixels.begin(), pixels.end());
}

TEST(InputsTest, Float32NpyPassesAsIsWithBatchAdded) {
  models::ModelMetadata metadata = FashionMetadata();
  std::vector<float> values(28 * 28);
  for (size_t i = 0; i < values.size(); ++i) values[i] = i * 0.5f;
  std::string bytes(reinterpret_cast<const char*>(values.data()),
                    values.size() * 4);
  struct Case {
    std::vector<int64_t> stored;
    std::vector<int64_t> decoded;
  };
  for (const Case& c : std::vector<Case>{{{1, 28, 28}, {1, 1, 28, 28}},
                                         {{28, 28}, {1, 1, 28, 28}},
                                         {{1, 1, 28, 28}, {1, 1, 28, 28}},
                                         {{1, 28, 28, 1}, {1, 28, 28, 1}}}) {
    std::string path = TempPath("f32.npy");
    ASSERT_TRUE(WriteNpy(path, NpyDtype::kFloat32, c.stored, bytes).ok());
    absl::StatusOr<DecodedInput> input = DecodeInputFile(path, &metadata);
    ASSERT_TRUE(input.ok()) << input.status();
    EXPECT_EQ(input->shape, c.decoded);
    EXPECT_EQ(input->values, values);
    EXPECT_EQ(input->format, "npy");
  }
}

TEST(InputsTest, Uint8NpyIsScaledAndNormalized) {
  models::ModelMetadata metadata = FashionMetadata();
  std::string pixels(2 * 28 * 28, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>(i);
  std::string path = TempPath("u8.npy");
  ASSERT_TRUE(WriteNpy(path, NpyDtype::kUint8, {2, 28, 28}, pixels).ok());
  absl::StatusOr<DecodedInput> input = DecodeInputFile(path, &metadata);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->shape, (std::vector<int64_t>{2, 1, 28, 28}));
  for (size_t i : {0, 1, 255, 256, 1000}) {
    EXPECT_FLOAT_EQ(input->values[i], Normalized(i % 256));
  }
  ASSERT_TRUE(WriteNpy(path, NpyDtype::kUint8, {2, 14, 56}, pixels).ok());
  input = DecodeInputFile(path, &metadata);
  EXPECT_THAT(input.status().message(),
              HasSubstr("uint8 pixels of shape [2, 14, 56] do not fit the "
                        "model's input [N, 1, 28, 28]"));
}

TEST(InputsTest, ReadsRealFashionMnistIdx) {
  models::ModelMetadata metadata = FashionMetadata();
  std::string path =
      test_paths::ExternalRunfile("fashion_mnist", "t10k-images-idx3-ubyte.gz");
  absl::StatusOr<DecodedInput> input = DecodeInputFile(path, &metadata);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->shape, (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(input->format, "idx");
  // Every value is a normalised pixel.
  float low = Normalized(0), high = Normalized(255);
  for (float value : input->values) {
    ASSERT_GE(value, low);
    ASSERT_LE(value, high);
  }
}

TEST(InputsTest, ReadsPlainAndGzippedIdx) {
  models::ModelMetadata metadata = FashionMetadata();
  std::vector<uint8_t> pixels(3 * 28 * 28);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = (i * 7) % 256;
  std::string bytes = IdxImagesBytes(3, 28, 28, pixels);
  WriteFile(TempPath("plain-idx3-ubyte"), bytes);
  gzFile gz = gzopen(TempPath("zipped-idx3-ubyte.gz").c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  gzwrite(gz, bytes.data(), bytes.size());
  gzclose(gz);
  for (const char* name : {"plain-idx3-ubyte", "zipped-idx3-ubyte.gz"}) {
    absl::StatusOr<DecodedInput> input =
        DecodeInputFile(TempPath(name), &metadata);
    ASSERT_TRUE(input.ok()) << input.status();
    EXPECT_EQ(input->shape, (std::vector<int64_t>{3, 1, 28, 28}));
    for (size_t i = 0; i < pixels.size(); ++i) {
      ASSERT_FLOAT_EQ(input->values[i], Normalized(pixels[i])) << i;
    }
  }
  // IDX images of another size than the model's.
  WriteFile(TempPath("small-idx3-ubyte"),
            IdxImagesBytes(1, 2, 2, {1, 2, 3, 4}));
  absl::StatusOr<DecodedInput> input =
      DecodeInputFile(TempPath("small-idx3-ubyte"), &metadata);
  EXPECT_THAT(input.status().message(),
              HasSubstr("IDX images of shape [1, 1, 2, 2] do not fit"));
  // Truncated: the reader's error, naming the file.
  WriteFile(TempPath("short-idx3-ubyte"), bytes.substr(0, 100));
  input = DecodeInputFile(TempPath("short-idx3-ubyte"), &metadata);
  ASSERT_FALSE(input.ok());
  EXPECT_THAT(input.status().message(), HasSubstr("short-idx3-ubyte"));
}

TEST(InputsTest, PngAndJpegAreGrayscaledResizedAndNormalized) {
  models::ModelMetadata metadata = FashionMetadata();
  // A 56x56 RGB image, left half black, right half white.
  std::vector<uint8_t> rgb(56 * 56 * 3);
  for (int y = 0; y < 56; ++y) {
    for (int x = 0; x < 56; ++x) {
      for (int c = 0; c < 3; ++c) rgb[(y * 56 + x) * 3 + c] = x < 28 ? 0 : 255;
    }
  }
  ASSERT_TRUE(stbi_write_png(TempPath("image.png").c_str(), 56, 56, 3,
                             rgb.data(), 56 * 3));
  ASSERT_TRUE(
      stbi_write_jpg(TempPath("image.jpg").c_str(), 56, 56, 3, rgb.data(), 95));
  for (const char* name : {"image.png", "image.jpg"}) {
    absl::StatusOr<DecodedInput> input =
        DecodeInputFile(TempPath(name), &metadata);
    ASSERT_TRUE(input.ok()) << input.status();
    EXPECT_EQ(input->shape, (std::vector<int64_t>{1, 1, 28, 28}));
    EXPECT_EQ(input->format, "image");
    // Far from the edge, the halves keep their values.
    EXPECT_NEAR(input->values[10 * 28 + 3], Normalized(0), 0.05) << name;
    EXPECT_NEAR(input->values[10 * 28 + 24], Normalized(255), 0.05) << name;
  }
  // Without metadata: the image's own size, one channel, no normalisation.
  absl::StatusOr<DecodedInput> input =
      DecodeInputFile(TempPath("image.png"), nullptr);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->shape, (std::vector<int64_t>{1, 1, 56, 56}));
  EXPECT_FLOAT_EQ(input->values[55], 1.0f);
}

TEST(InputsTest, UnreadableFilesGiveErrorsNamingThem) {
  models::ModelMetadata metadata = FashionMetadata();
  std::vector<uint8_t> gray(8 * 8, 128);
  ASSERT_TRUE(
      stbi_write_png(TempPath("ok.png").c_str(), 8, 8, 1, gray.data(), 8));
  const std::string bytes = test_paths::ReadFile(TempPath("ok.png"));
  WriteFile(TempPath("truncated.png"), bytes.substr(0, bytes.size() / 2));
  WriteFile(TempPath("text.txt"), "hello, I am not an image\n");
  WriteFile(TempPath("empty.png"), "");
  WriteFile(TempPath("labels-idx1-ubyte"), std::string("\0\0\x08\x01", 4));
  struct Case {
    std::string name;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"truncated.png", "cannot decode image"},
           {"text.txt", "not a readable image, IDX or .npy file"},
           {"empty.png", "empty file"},
           {"missing.png", "no such file"},
           {"labels-idx1-ubyte", "an IDX labels file"},
       }) {
    absl::StatusOr<DecodedInput> input =
        DecodeInputFile(TempPath(c.name), &metadata);
    ASSERT_FALSE(input.ok()) << c.name;
    EXPECT_THAT(input.status().message(), HasSubstr(TempPath(c.name)));
    EXPECT_THAT(input.status().message(), HasSubstr(c.message));
  }
  models::ModelMetadata flat;
  flat.input_shape = {784};
  absl::StatusOr<DecodedInput> input =
      DecodeInputFile(TempPath("ok.png"), &flat);
  EXPECT_THAT(input.status().message(), HasSubstr("is not an image shape"));
}

}  // namespace
}  // namespace runner
