// Turns the files a user hands to `run` into the model's input values, as
// the model's metadata describes them. Torch-free: the result is a float
// buffer and a shape; the caller wraps it into a tensor.
//
// Formats, recognised by content (not by file name):
//   - .npy float32: taken as the model's input as it is (already scaled and
//     normalised); a missing batch dimension is added, and a missing
//     channel dimension when the model has one channel.
//   - .npy uint8: raw pixels, scaled and normalised like IDX images.
//   - IDX image files (Fashion-MNIST style, gzipped or not): every image,
//     scaled to [0, 1] and normalised with the metadata's mean and std.
//   - PNG, JPEG (and the other formats stb_image reads): loaded with the
//     model's channel count (1 = grayscale), resized to the model's
//     height and width (stb_image_resize), scaled to [0, 1], normalised.
// Errors name the file and say what is wrong with it.
//
// Example:
//   absl::StatusOr<runner::DecodedInput> input =
//       runner::DecodeInputFile("shoe.png", session->metadata());
//   torch::from_blob(input->values.data(), input->shape, torch::kFloat);
#ifndef RUNNER_INPUTS_H_
#define RUNNER_INPUTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "export/models/metadata.h"

namespace runner {

struct DecodedInput {
  // [N, *item shape]; N >= 1 except for an empty file of items.
  std::vector<int64_t> shape;
  // product(shape) float32 values, C order.
  std::vector<float> values;
  // "npy", "idx" or "image", for messages.
  std::string format;
};

// Largest image side DecodeInputFile accepts, so that a hostile header
// cannot make it allocate gigabytes.
inline constexpr int kMaxImageSide = 16384;

// `metadata` may be null (a model without metadata): arrays then pass as
// they are, images keep their size in one channel, and nothing is
// normalised.
absl::StatusOr<DecodedInput> DecodeInputFile(
    const std::string& path, const models::ModelMetadata* metadata);

// Scales pixels to [0, 1] and applies the metadata's normalisation, channel
// by channel; `pixels` holds N items of `channels` planes of
// `plane_size` values each.
std::vector<float> NormalizePixels(const uint8_t* pixels, int64_t count,
                                   int64_t channels, int64_t plane_size,
                                   const models::ModelMetadata* metadata);

}  // namespace runner

#endif  // RUNNER_INPUTS_H_
