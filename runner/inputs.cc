#include "runner/inputs.h"

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runner/data/idx_reader.h"
#include "runner/data/npy.h"
#include "tools/base/shape.h"

namespace runner {
namespace {

bool StartsWith(const std::string& bytes, const char* prefix, size_t size) {
  return bytes.size() >= size && std::memcmp(bytes.data(), prefix, size) == 0;
}

// The model's per-item shape, when the metadata gives one.
const std::vector<int64_t>* ItemShape(const models::ModelMetadata* metadata) {
  if (metadata == nullptr || metadata->input_shape.empty()) return nullptr;
  return &metadata->input_shape;
}

// Adds the batch dimension (and a single channel dimension) that an array
// may leave out. Anything else is left for the Session to judge, which
// names the expected shape.
std::vector<int64_t> CompleteShape(std::vector<int64_t> shape,
                                   const models::ModelMetadata* metadata) {
  const std::vector<int64_t>* item = ItemShape(metadata);
  if (item == nullptr) return shape;
  if (shape == *item) {
    shape.insert(shape.begin(), 1);
    return shape;
  }
  // Grayscale arrays often come without their channel: [H, W], [N, H, W].
  if ((*item)[0] == 1 && item->size() >= 2) {
    std::vector<int64_t> planes(item->begin() + 1, item->end());
    if (shape == planes) {
      shape.insert(shape.begin(), {1, 1});
    } else if (shape.size() == planes.size() + 1 &&
               std::equal(planes.begin(), planes.end(), shape.begin() + 1)) {
      shape.insert(shape.begin() + 1, 1);
    }
  }
  return shape;
}

absl::Status CheckItemShape(const std::string& path, absl::string_view what,
                            const std::vector<int64_t>& shape,
                            const models::ModelMetadata* metadata) {
  const std::vector<int64_t>* item = ItemShape(metadata);
  if (item == nullptr) return absl::OkStatus();
  if (shape.size() != item->size() + 1 ||
      !std::equal(item->begin(), item->end(), shape.begin() + 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", what, " of shape ", base::ShapeToString(shape),
                     " do not fit the model's input [N, ",
                     base::ShapeToString(*item).substr(1)));
  }
  return absl::OkStatus();
}

absl::StatusOr<DecodedInput> DecodeNpy(const std::string& path,
                                       const std::string& bytes,
                                       const models::ModelMetadata* metadata) {
  absl::StatusOr<NpyArray> array = ParseNpy(bytes, path);
  if (!array.ok()) return array.status();
  DecodedInput input;
  input.format = "npy";
  input.shape = CompleteShape(array->shape, metadata);
  if (array->dtype == NpyDtype::kFloat32) {
    input.values.resize(static_cast<size_t>(array->num_elements()));
    std::memcpy(input.values.data(), array->data.data(), array->data.size());
    return input;
  }
  // uint8: pixels, per channel planes of the completed shape.
  if (absl::Status fits =
          CheckItemShape(path, "uint8 pixels", input.shape, metadata);
      !fits.ok()) {
    return fits;
  }
  int64_t count = input.shape.empty() ? 1 : input.shape[0];
  int64_t channels = input.shape.size() >= 2 ? input.shape[1] : 1;
  int64_t plane =
      count * channels == 0 ? 0 : array->num_elements() / (count * channels);
  input.values =
      NormalizePixels(array->uint8_data(), count, channels, plane, metadata);
  return input;
}

absl::StatusOr<DecodedInput> DecodeIdx(const std::string& path,
                                       const models::ModelMetadata* metadata) {
  absl::StatusOr<datasets::IdxImages> images = datasets::ReadIdxImages(path);
  if (!images.ok()) return images.status();
  DecodedInput input;
  input.format = "idx";
  input.shape = {images->count, 1, images->rows, images->cols};
  if (absl::Status fits =
          CheckItemShape(path, "IDX images", input.shape, metadata);
      !fits.ok()) {
    return fits;
  }
  input.values = NormalizePixels(images->pixels.data(), images->count, 1,
                                 images->rows * images->cols, metadata);
  return input;
}

absl::StatusOr<DecodedInput> DecodeImage(
    const std::string& path, const std::string& bytes,
    const models::ModelMetadata* metadata) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": image file too large"));
  }
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size = static_cast<int>(bytes.size());
  int width = 0, height = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, size, &width, &height, &file_channels)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a readable image, IDX or .npy file (",
                     stbi_failure_reason(), ")"));
  }
  if (width > kMaxImageSide || height > kMaxImageSide) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": image of ", width, "x", height,
                     " is larger than ", kMaxImageSide, " pixels a side"));
  }
  int channels = 1;
  int target_height = height, target_width = width;
  if (const std::vector<int64_t>* item = ItemShape(metadata)) {
    if (item->size() != 3 || ((*item)[0] != 1 && (*item)[0] != 3)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": the model's input ", base::ShapeToString(*item),
          " is not an image shape [C, H, W] with 1 or 3 channels"));
    }
    channels = static_cast<int>((*item)[0]);
    target_height = static_cast<int>((*item)[1]);
    target_width = static_cast<int>((*item)[2]);
  }
  int loaded_width = 0, loaded_height = 0, ignored = 0;
  stbi_uc* pixels = stbi_load_from_memory(data, size, &loaded_width,
                                          &loaded_height, &ignored, channels);
  if (pixels == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": cannot decode image (", stbi_failure_reason(), ")"));
  }
  // Resize in float, after scaling to [0, 1], so that only one rounding
  // happens (none, in fact: the model takes floats).
  const size_t loaded_count =
      static_cast<size_t>(loaded_width) * loaded_height * channels;
  std::vector<float> scaled(loaded_count);
  for (size_t i = 0; i < loaded_count; ++i) scaled[i] = pixels[i] / 255.0f;
  stbi_image_free(pixels);
  std::vector<float> resized(static_cast<size_t>(target_width) * target_height *
                             channels);
  if (loaded_width == target_width && loaded_height == target_height) {
    resized = std::move(scaled);
  } else if (!stbir_resize_float(scaled.data(), loaded_width, loaded_height, 0,
                                 resized.data(), target_width, target_height, 0,
                                 channels)) {
    return absl::InternalError(
        absl::StrCat(path, ": resizing ", loaded_width, "x", loaded_height,
                     " to ", target_width, "x", target_height, " failed"));
  }
  // Interleaved HWC to planar CHW, then normalisation per channel.
  DecodedInput input;
  input.format = "image";
  input.shape = {1, channels, target_height, target_width};
  const size_t plane = static_cast<size_t>(target_width) * target_height;
  input.values.resize(plane * channels);
  for (int c = 0; c < channels; ++c) {
    float mean = 0, std_dev = 1;
    if (metadata != nullptr && !metadata->normalization_mean.empty()) {
      size_t index = metadata->normalization_mean.size() == 1 ? 0 : c;
      mean = metadata->normalization_mean[index];
      std_dev = metadata->normalization_std[index];
    }
    for (size_t i = 0; i < plane; ++i) {
      float value = std::clamp(resized[i * channels + c], 0.0f, 1.0f);
      input.values[c * plane + i] = (value - mean) / std_dev;
    }
  }
  return input;
}

}  // namespace

std::vector<float> NormalizePixels(const uint8_t* pixels, int64_t count,
                                   int64_t channels, int64_t plane_size,
                                   const models::ModelMetadata* metadata) {
  std::vector<float> values(static_cast<size_t>(count * channels * plane_size));
  // A table per channel: 256 entries replace a division per pixel.
  for (int64_t c = 0; c < channels; ++c) {
    float mean = 0, std_dev = 1;
    if (metadata != nullptr && !metadata->normalization_mean.empty()) {
      size_t index = metadata->normalization_mean.size() == 1 ? 0 : c;
      mean = metadata->normalization_mean[index];
      std_dev = metadata->normalization_std[index];
    }
    float table[256];
    for (int v = 0; v < 256; ++v) table[v] = (v / 255.0f - mean) / std_dev;
    for (int64_t n = 0; n < count; ++n) {
      const size_t offset =
          static_cast<size_t>((n * channels + c) * plane_size);
      for (int64_t i = 0; i < plane_size; ++i) {
        values[offset + i] = table[pixels[offset + i]];
      }
    }
  }
  return values;
}

absl::StatusOr<DecodedInput> DecodeInputFile(
    const std::string& path, const models::ModelMetadata* metadata) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
  }
  if (StartsWith(*bytes, "\x93NUMPY", 6)) {
    return DecodeNpy(path, *bytes, metadata);
  }
  // gzip (a gzipped IDX file), or the IDX image magic 00 00 08 03.
  if (StartsWith(*bytes, "\x1f\x8b", 2) ||
      StartsWith(*bytes, "\x00\x00\x08\x03", 4)) {
    return DecodeIdx(path, metadata);
  }
  if (StartsWith(*bytes, "\x00\x00\x08\x01", 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": an IDX labels file, not images (pass it as --labels)"));
  }
  return DecodeImage(path, *bytes, metadata);
}

}  // namespace runner
