// Reads IDX files (the MNIST / Fashion-MNIST format), gzipped or not.
// Torch-free.
//
// Format: a big-endian header, then raw unsigned bytes in row-major order.
//   images: magic 0x00000803, count, rows, cols, count*rows*cols pixels
//   labels: magic 0x00000801, count, count labels
// Everything is validated before it is trusted: the magic, the number of
// dimensions, sizes within caps (so a hostile header cannot make us allocate
// gigabytes), the exact amount of data (truncated or trailing bytes are
// errors), and that images and labels have the same count. Every error is
// an absl::Status naming the file.
//
// Example:
//   ASSIGN_OR_RETURN(IdxDataset train,
//                    ReadIdxDataset(dir + "/train-images-idx3-ubyte.gz",
//                                   dir + "/train-labels-idx1-ubyte.gz"));
//   const uint8_t* first_image = train.images.pixels.data();
#ifndef RUNNER_DATA_IDX_READER_H_
#define RUNNER_DATA_IDX_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace datasets {

inline constexpr uint32_t kIdxImagesMagic = 0x00000803;
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;

// Caps on what a header may declare.
inline constexpr int64_t kIdxMaxCount = 10'000'000;
inline constexpr int64_t kIdxMaxSide = 4096;
inline constexpr int64_t kIdxMaxBytes = int64_t{1} << 31;

struct IdxImages {
  int64_t count = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  // count * rows * cols bytes, image after image.
  std::vector<uint8_t> pixels;
};

struct IdxDataset {
  IdxImages images;
  std::vector<uint8_t> labels;  // images.count entries
};

// Errors: kNotFound (cannot open), kInvalidArgument (bad magic, dims,
// sizes over the caps), kDataLoss (truncated, trailing bytes, corrupt gzip).
absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path);
absl::StatusOr<std::vector<uint8_t>> ReadIdxLabels(const std::string& path);

// Both files, plus: counts agree; when num_classes > 0, every label is
// below it.
absl::StatusOr<IdxDataset> ReadIdxDataset(const std::string& images_path,
                                          const std::string& labels_path,
                                          int num_classes = 0);

// The four Fashion-MNIST files of `directory`, each named like the
// originals ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte") with or
// without ".gz" (the gzipped name wins when both exist).
struct FashionMnistPaths {
  std::string train_images;
  std::string train_labels;
  std::string test_images;
  std::string test_labels;
};
// Errors: kNotFound naming the first missing file.
absl::StatusOr<FashionMnistPaths> FindFashionMnistFiles(
    const std::string& directory);

}  // namespace datasets

#endif  // RUNNER_DATA_IDX_READER_H_
