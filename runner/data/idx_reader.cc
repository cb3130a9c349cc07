#include "runner/data/idx_reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace datasets {
namespace {

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFilePtr = std::unique_ptr<gzFile_s, GzCloser>;

// Reads gzipped and plain files alike: zlib passes non-gzip data through.
class IdxFile {
 public:
  static absl::StatusOr<IdxFile> Open(const std::string& path) {
    struct stat info;
    if (stat(path.c_str(), &info) != 0) {
      return absl::NotFoundError(
          absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
    }
    if (S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": is a directory, not an IDX file"));
    }
    gzFile file = gzopen(path.c_str(), "rb");
    if (file == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
    }
    return IdxFile(path, GzFilePtr(file));
  }

  // Reads exactly `size` bytes or fails (truncated file, corrupt gzip).
  absl::Status ReadExactly(void* destination, int64_t size, const char* what) {
    auto* out = static_cast<char*>(destination);
    while (size > 0) {
      const unsigned chunk =
          static_cast<unsigned>(std::min<int64_t>(size, 1 << 30));
      const int got = gzread(file_.get(), out, chunk);
      if (got < 0) {
        int code = 0;
        const char* message = gzerror(file_.get(), &code);
        return absl::DataLossError(
            absl::StrCat(path_, ": corrupt data while reading ", what, ": ",
                         message == nullptr ? "unknown error" : message));
      }
      if (got == 0) {
        return absl::DataLossError(absl::StrCat(path_, ": truncated: ", size,
                                                " bytes missing in ", what));
      }
      out += got;
      size -= got;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> ReadBigEndian32(const char* what) {
    unsigned char bytes[4];
    if (absl::Status status = ReadExactly(bytes, 4, what); !status.ok()) {
      return status;
    }
    return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) |
           (uint32_t{bytes[2]} << 8) | uint32_t{bytes[3]};
  }

  absl::Status ExpectEnd() {
    char byte;
    const int got = gzread(file_.get(), &byte, 1);
    if (got < 0) {
      return absl::DataLossError(
          absl::StrCat(path_, ": corrupt data at the end of the file"));
    }
    if (got > 0) {
      return absl::DataLossError(absl::StrCat(
          path_, ": trailing bytes after the data the header declares"));
    }
    return absl::OkStatus();
  }

  absl::Status ReadMagic(uint32_t expected, const char* kind) {
    absl::StatusOr<uint32_t> magic = ReadBigEndian32("the header");
    if (!magic.ok()) return magic.status();
    if (*magic != expected) {
      char buffer[64];
      std::snprintf(buffer, sizeof(buffer), "0x%08x, expected 0x%08x", *magic,
                    expected);
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": bad magic ", buffer, " (", kind,
          ((*magic & 0xFFFFFF00u) == 0x00000800u)
              ? absl::StrCat(" need ", expected & 0xFF,
                             " dimensions, file has ", *magic & 0xFF)
              : std::string(" file"),
          ")"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> ReadDimension(const char* name, int64_t cap) {
    absl::StatusOr<uint32_t> value = ReadBigEndian32("the header");
    if (!value.ok()) return value.status();
    if (*value == 0 || *value > cap) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": ", name, " ", *value, " out of range [1, ", cap, "]"));
    }
    return static_cast<int64_t>(*value);
  }

  const std::string& path() const { return path_; }

 private:
  IdxFile(std::string path, GzFilePtr file)
      : path_(std::move(path)), file_(std::move(file)) {}

  std::string path_;
  GzFilePtr file_;
};

}  // namespace

absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path) {
  absl::StatusOr<IdxFile> file = IdxFile::Open(path);
  if (!file.ok()) return file.status();
  if (absl::Status status = file->ReadMagic(kIdxImagesMagic, "IDX images");
      !status.ok()) {
    return status;
  }
  IdxImages images;
  absl::StatusOr<int64_t> count = file->ReadDimension("count", kIdxMaxCount);
  if (!count.ok()) return count.status();
  absl::StatusOr<int64_t> rows = file->ReadDimension("rows", kIdxMaxSide);
  if (!rows.ok()) return rows.status();
  absl::StatusOr<int64_t> cols = file->ReadDimension("cols", kIdxMaxSide);
  if (!cols.ok()) return cols.status();
  images.count = *count;
  images.rows = *rows;
  images.cols = *cols;
  // Each factor is capped, so the product cannot overflow int64.
  const int64_t bytes = images.count * images.rows * images.cols;
  if (bytes > kIdxMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header declares ", bytes,
                     " bytes of pixels, over the cap of ", kIdxMaxBytes));
  }
  images.pixels.resize(static_cast<size_t>(bytes));
  if (absl::Status status =
          file->ReadExactly(images.pixels.data(), bytes, "the pixels");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = file->ExpectEnd(); !status.ok()) return status;
  return images;
}

absl::StatusOr<std::vector<uint8_t>> ReadIdxLabels(const std::string& path) {
  absl::StatusOr<IdxFile> file = IdxFile::Open(path);
  if (!file.ok()) return file.status();
  if (absl::Status status = file->ReadMagic(kIdxLabelsMagic, "IDX labels");
      !status.ok()) {
    return status;
  }
  absl::StatusOr<int64_t> count = file->ReadDimension("count", kIdxMaxCount);
  if (!count.ok()) return count.status();
  std::vector<uint8_t> labels(static_cast<size_t>(*count));
  if (absl::Status status =
          file->ReadExactly(labels.data(), *count, "the labels");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = file->ExpectEnd(); !status.ok()) return status;
  return labels;
}

absl::StatusOr<IdxDataset> ReadIdxDataset(const std::string& images_path,
                                          const std::string& labels_path,
                                          int num_classes) {
  IdxDataset dataset;
  absl::StatusOr<IdxImages> images = ReadIdxImages(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::vector<uint8_t>> labels = ReadIdxLabels(labels_path);
  if (!labels.ok()) return labels.status();
  if (static_cast<int64_t>(labels->size()) != images->count) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, " has ", images->count, " images but ",
                     labels_path, " has ", labels->size(), " labels"));
  }
  if (num_classes > 0) {
    for (size_t i = 0; i < labels->size(); ++i) {
      if ((*labels)[i] >= num_classes) {
        return absl::InvalidArgumentError(
            absl::StrCat(labels_path, ": label ", (*labels)[i], " at index ", i,
                         " is not below the number of classes ", num_classes));
      }
    }
  }
  dataset.images = *std::move(images);
  dataset.labels = *std::move(labels);
  return dataset;
}

absl::StatusOr<FashionMnistPaths> FindFashionMnistFiles(
    const std::string& directory) {
  auto find = [&](const char* stem) -> absl::StatusOr<std::string> {
    for (const char* suffix : {".gz", ""}) {
      std::string path = absl::StrCat(directory, "/", stem, suffix);
      struct stat info;
      if (stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode)) return path;
    }
    return absl::NotFoundError(
        absl::StrCat("no ", stem, "[.gz] in ", directory));
  };
  FashionMnistPaths paths;
  for (auto [stem, out] :
       {std::pair{"train-images-idx3-ubyte", &paths.train_images},
        std::pair{"train-labels-idx1-ubyte", &paths.train_labels},
        std::pair{"t10k-images-idx3-ubyte", &paths.test_images},
        std::pair{"t10k-labels-idx1-ubyte", &paths.test_labels}}) {
    absl::StatusOr<std::string> path = find(stem);
    if (!path.ok()) return path.status();
    *out = *std::move(path);
  }
  return paths;
}

}  // namespace datasets
