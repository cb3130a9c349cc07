// The model architectures of the Fashion-MNIST trainer, defined once.
//
// Each architecture is a TorchScript-defined torch::jit::Module built in C++:
// submodules carry parameters named like PyTorch's (`conv1.weight`,
// `fc2.bias`) and forward() is TorchScript source over torch ops. The trainer
// trains these modules directly; the exporter rebuilds the same module from a
// checkpoint's Metadata.architecture + architecture_config, loads the weights
// strictly, calls eval() and freezes. Defining the network once means a
// checkpoint's tensor names always match the module that reads them.
//
// Inputs are float tensors of shape [N, 1, 28, 28], already normalised:
// (pixel / 255 - normalization_mean) / normalization_std. Outputs are logits
// [N, num_classes].
//
// Example:
//   ArchitectureConfig config = DefaultArchitectureConfig();
//   ASSIGN_OR_RETURN(torch::jit::Module model,
//                    BuildArchitecture("cnn", config, /*seed=*/1));
//   metadata.set_architecture("cnn");
//   for (const auto& [key, value] : ArchitectureConfigToMap(config))
//     (*metadata.mutable_architecture_config())[key] = value;
//
//   // Later, from a checkpoint's metadata (protobuf Map converts directly):
//   ASSIGN_OR_RETURN(ArchitectureConfig config,
//                    ArchitectureConfigFromMap({m.architecture_config().begin(),
//                                               m.architecture_config().end()}));
#ifndef EXPORT_MODELS_ARCHITECTURES_H_
#define EXPORT_MODELS_ARCHITECTURES_H_

#include <torch/script.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace models {

// Hyper-parameters of an architecture plus what a consumer of the model needs
// to feed it and read its output. Every field round-trips exactly through
// ArchitectureConfigToMap / ArchitectureConfigFromMap.
struct ArchitectureConfig {
  // Input shape without the batch dimension: [channels, height, width].
  int64_t input_channels = 1;
  int64_t input_height = 28;
  int64_t input_width = 28;
  int64_t num_classes = 10;
  // Normalisation applied to pixel values scaled to [0, 1].
  double normalization_mean = 0.2860;
  double normalization_std = 0.3530;
  // One label per class, in class-index order.
  std::vector<std::string> class_labels;
  // "mlp": width of the hidden layer (fc1). "cnn": width of fc1.
  int64_t hidden_units = 128;
  // "cnn" only: output channels of conv1 and conv2 (3x3, padding 1, each
  // followed by ReLU and 2x2 max pooling).
  int64_t conv1_channels = 16;
  int64_t conv2_channels = 32;
};

// The ten Fashion-MNIST class names, index = label.
const std::vector<std::string>& FashionMnistLabels();

// Fashion-MNIST input, normalisation and labels with default layer sizes.
ArchitectureConfig DefaultArchitectureConfig();

// Names BuildArchitecture accepts: {"cnn", "mlp"}.
std::vector<std::string> ArchitectureNames();

// Builds architecture `name` with PyTorch's default initialisation
// (kaiming_uniform(a=sqrt(5)) weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
// biases) drawn from a CPU generator seeded with `seed`: the same seed gives
// bitwise the same parameters. Parameters are float32 on CPU and require
// grad; the module is in training mode.
// Errors: kInvalidArgument for an unknown name or an invalid config.
absl::StatusOr<torch::jit::Module> BuildArchitecture(
    absl::string_view name, const ArchitectureConfig& config, uint64_t seed);

// The config as strings, for Metadata.architecture_config. Keys:
// input_shape ("1,28,28"), num_classes, normalization_mean,
// normalization_std (shortest exact decimal), class_labels (joined by ','),
// hidden_units, conv1_channels, conv2_channels.
std::map<std::string, std::string> ArchitectureConfigToMap(
    const ArchitectureConfig& config);

// Parses what ArchitectureConfigToMap wrote. Missing keys keep the defaults
// of DefaultArchitectureConfig(); unknown keys and malformed values are
// kInvalidArgument naming the key.
absl::StatusOr<ArchitectureConfig> ArchitectureConfigFromMap(
    const std::map<std::string, std::string>& map);

}  // namespace models

#endif  // EXPORT_MODELS_ARCHITECTURES_H_
