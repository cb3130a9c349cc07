#include "export/models/architectures.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace models {
namespace {

// PyTorch's reset_parameters() for Linear and Conv2d: kaiming_uniform_ with
// a=sqrt(5) gives bound gain*sqrt(3/fan_in) with gain = sqrt(2/(1+5)), i.e.
// 1/sqrt(fan_in); the bias uses the same bound.
torch::Tensor UniformInit(at::IntArrayRef shape, int64_t fan_in,
                          at::Generator& generator) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::Tensor tensor = torch::empty(shape, torch::kFloat32);
  tensor.uniform_(-bound, bound, generator);
  tensor.set_requires_grad(true);
  return tensor;
}

// Each module gets its own class name: types with the same qualified name
// but different definitions must not meet in one serialized archive.
using CompilationUnitPtr = std::shared_ptr<torch::jit::CompilationUnit>;

torch::jit::Module MakeLinear(const CompilationUnitPtr& unit,
                              const std::string& class_name,
                              int64_t in_features, int64_t out_features,
                              at::Generator& generator) {
  torch::jit::Module module(class_name, unit);
  // Draw order matches PyTorch: weight first, then bias.
  module.register_parameter(
      "weight",
      UniformInit({out_features, in_features}, in_features, generator),
      /*is_buffer=*/false);
  module.register_parameter("bias",
                            UniformInit({out_features}, in_features, generator),
                            /*is_buffer=*/false);
  module.define(R"(
def forward(self, x: Tensor) -> Tensor:
    return torch.linear(x, self.weight, self.bias)
)");
  return module;
}

torch::jit::Module MakeConv3x3(const CompilationUnitPtr& unit,
                               const std::string& class_name,
                               int64_t in_channels, int64_t out_channels,
                               at::Generator& generator) {
  torch::jit::Module module(class_name, unit);
  const int64_t fan_in = in_channels * 3 * 3;
  module.register_parameter(
      "weight",
      UniformInit({out_channels, in_channels, 3, 3}, fan_in, generator),
      /*is_buffer=*/false);
  module.register_parameter("bias",
                            UniformInit({out_channels}, fan_in, generator),
                            /*is_buffer=*/false);
  module.define(R"(
def forward(self, x: Tensor) -> Tensor:
    return torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1], [1, 1], 1)
)");
  return module;
}

torch::jit::Module BuildMlp(const ArchitectureConfig& config,
                            at::Generator& generator) {
  const int64_t in_features =
      config.input_channels * config.input_height * config.input_width;
  // One compilation unit holds all classes of a model. Submodule calls are
  // written self.fc1.forward(x): a module defined from C++ sees `self` as a
  // plain object, whose attributes have no __call__.
  auto unit = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module model("FashionMlp", unit);
  model.register_module("fc1", MakeLinear(unit, "FashionMlp_fc1", in_features,
                                          config.hidden_units, generator));
  model.register_module("fc2",
                        MakeLinear(unit, "FashionMlp_fc2", config.hidden_units,
                                   config.num_classes, generator));
  model.define(R"(
def forward(self, x: Tensor) -> Tensor:
    x = torch.flatten(x, 1)
    x = torch.relu(self.fc1.forward(x))
    return self.fc2.forward(x)
)");
  return model;
}

torch::jit::Module BuildCnn(const ArchitectureConfig& config,
                            at::Generator& generator) {
  const int64_t pooled_height = config.input_height / 2 / 2;
  const int64_t pooled_width = config.input_width / 2 / 2;
  auto unit = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module model("FashionCnn", unit);
  model.register_module(
      "conv1", MakeConv3x3(unit, "FashionCnn_conv1", config.input_channels,
                           config.conv1_channels, generator));
  model.register_module(
      "conv2", MakeConv3x3(unit, "FashionCnn_conv2", config.conv1_channels,
                           config.conv2_channels, generator));
  model.register_module(
      "fc1", MakeLinear(unit, "FashionCnn_fc1",
                        config.conv2_channels * pooled_height * pooled_width,
                        config.hidden_units, generator));
  model.register_module("fc2",
                        MakeLinear(unit, "FashionCnn_fc2", config.hidden_units,
                                   config.num_classes, generator));
  model.define(R"(
def forward(self, x: Tensor) -> Tensor:
    x = torch.max_pool2d(torch.relu(self.conv1.forward(x)), [2, 2])
    x = torch.max_pool2d(torch.relu(self.conv2.forward(x)), [2, 2])
    x = torch.flatten(x, 1)
    x = torch.relu(self.fc1.forward(x))
    return self.fc2.forward(x)
)");
  return model;
}

absl::Status ValidateConfig(absl::string_view name,
                            const ArchitectureConfig& config) {
  auto positive = [&](const char* field, int64_t value) -> absl::Status {
    if (value <= 0 || value > (int64_t{1} << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat("architecture '", name, "': ", field, " must be in [1, ",
                       int64_t{1} << 20, "], got ", value));
    }
    return absl::OkStatus();
  };
  for (const auto& [field, value] :
       std::vector<std::pair<const char*, int64_t>>{
           {"input_channels", config.input_channels},
           {"input_height", config.input_height},
           {"input_width", config.input_width},
           {"num_classes", config.num_classes},
           {"hidden_units", config.hidden_units},
           {"conv1_channels", config.conv1_channels},
           {"conv2_channels", config.conv2_channels}}) {
    if (absl::Status status = positive(field, value); !status.ok()) {
      return status;
    }
  }
  if (name == "cnn" && (config.input_height < 4 || config.input_width < 4)) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture 'cnn' needs inputs of at least 4x4, got ",
                     config.input_height, "x", config.input_width));
  }
  if (!config.class_labels.empty() &&
      static_cast<int64_t>(config.class_labels.size()) != config.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture '", name, "': ", config.class_labels.size(),
                     " class labels for ", config.num_classes, " classes"));
  }
  for (const std::string& label : config.class_labels) {
    if (label.empty() || label.find(',') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("architecture '", name, "': class label '", label,
                       "' must be non-empty and contain no ','"));
    }
  }
  if (!(config.normalization_std > 0) ||
      !std::isfinite(config.normalization_mean)) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture '", name,
                     "': normalization_std must be > 0 and mean finite"));
  }
  return absl::OkStatus();
}

// Shortest decimal that parses back to exactly `value`.
std::string ExactDouble(double value) {
  char buffer[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

}  // namespace

const std::vector<std::string>& FashionMnistLabels() {
  static const std::vector<std::string>* const labels =
      new std::vector<std::string>{
          "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return *labels;
}

ArchitectureConfig DefaultArchitectureConfig() {
  ArchitectureConfig config;
  config.class_labels = FashionMnistLabels();
  return config;
}

std::vector<std::string> ArchitectureNames() { return {"cnn", "mlp"}; }

absl::StatusOr<torch::jit::Module> BuildArchitecture(
    absl::string_view name, const ArchitectureConfig& config, uint64_t seed) {
  if (name != "cnn" && name != "mlp") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown architecture '", name,
        "' (known: ", absl::StrJoin(ArchitectureNames(), ", "), ")"));
  }
  if (absl::Status status = ValidateConfig(name, config); !status.ok()) {
    return status;
  }
  try {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    torch::NoGradGuard no_grad;
    torch::jit::Module model = name == "cnn" ? BuildCnn(config, generator)
                                             : BuildMlp(config, generator);
    model.train(true);
    return model;
  } catch (const c10::Error& error) {
    return absl::InternalError(
        absl::StrCat("building architecture '", name,
                     "': ", error.what_without_backtrace()));
  }
}

std::map<std::string, std::string> ArchitectureConfigToMap(
    const ArchitectureConfig& config) {
  return {
      {"input_shape",
       absl::StrCat(config.input_channels, ",", config.input_height, ",",
                    config.input_width)},
      {"num_classes", absl::StrCat(config.num_classes)},
      {"normalization_mean", ExactDouble(config.normalization_mean)},
      {"normalization_std", ExactDouble(config.normalization_std)},
      {"class_labels", absl::StrJoin(config.class_labels, ",")},
      {"hidden_units", absl::StrCat(config.hidden_units)},
      {"conv1_channels", absl::StrCat(config.conv1_channels)},
      {"conv2_channels", absl::StrCat(config.conv2_channels)},
  };
}

absl::StatusOr<ArchitectureConfig> ArchitectureConfigFromMap(
    const std::map<std::string, std::string>& map) {
  ArchitectureConfig config = DefaultArchitectureConfig();
  auto bad = [](const std::string& key, const std::string& value) {
    return absl::InvalidArgumentError(absl::StrCat(
        "architecture_config: malformed value for '", key, "': '", value, "'"));
  };
  for (const auto& [key, value] : map) {
    if (key == "input_shape") {
      std::vector<std::string> parts = absl::StrSplit(value, ',');
      if (parts.size() != 3 ||
          !absl::SimpleAtoi(parts[0], &config.input_channels) ||
          !absl::SimpleAtoi(parts[1], &config.input_height) ||
          !absl::SimpleAtoi(parts[2], &config.input_width)) {
        return bad(key, value);
      }
    } else if (key == "num_classes") {
      if (!absl::SimpleAtoi(value, &config.num_classes)) return bad(key, value);
    } else if (key == "normalization_mean") {
      if (!absl::SimpleAtod(value, &config.normalization_mean)) {
        return bad(key, value);
      }
    } else if (key == "normalization_std") {
      if (!absl::SimpleAtod(value, &config.normalization_std)) {
        return bad(key, value);
      }
    } else if (key == "class_labels") {
      config.class_labels.clear();
      if (!value.empty()) config.class_labels = absl::StrSplit(value, ',');
    } else if (key == "hidden_units") {
      if (!absl::SimpleAtoi(value, &config.hidden_units))
        return bad(key, value);
    } else if (key == "conv1_channels") {
      if (!absl::SimpleAtoi(value, &config.conv1_channels)) {
        return bad(key, value);
      }
    } else if (key == "conv2_channels") {
      if (!absl::SimpleAtoi(value, &config.conv2_channels)) {
        return bad(key, value);
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("architecture_config: unknown key '", key, "'"));
    }
  }
  return config;
}

}  // namespace models
