// Exports checkpoints written here with the real checkpoint runtime and the
// trainer's architectures, then loads the results the ways users do: C++
// torch::jit::load, the lite interpreter, Python's torch.jit.load, and the
// `export` binary itself.
#include "export/exporter.h"

#include <ATen/Parallel.h>
#include <sys/stat.h>
#include <torch/csrc/jit/mobile/import.h>
#include <torch/csrc/jit/mobile/module.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "checkpoint/digest.h"
#include "checkpoint/module_loading.h"
#include "checkpoint/reader.h"
#include "checkpoint/tensors.h"
#include "export/models/architectures.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/test_paths.h"

namespace model_export {
namespace {

using test_paths::CommandResult;
using test_paths::ReadFile;
using test_paths::RunCommand;
using test_paths::Runfile;
using test_paths::TempDir;
using test_paths::WriteFile;
using ::testing::HasSubstr;

bool Exists(const std::string& path) {
  struct stat file_stat;
  return ::lstat(path.c_str(), &file_stat) == 0;
}

std::string TensorBytes(const torch::Tensor& tensor) {
  torch::Tensor contiguous = tensor.contiguous();
  return std::string(static_cast<const char*>(contiguous.data_ptr()),
                     contiguous.nbytes());
}

// A trained-looking model: the architecture with its seeded initial weights.
torch::jit::Module BuildModel(const std::string& architecture, uint64_t seed) {
  absl::StatusOr<torch::jit::Module> module = models::BuildArchitecture(
      architecture, models::DefaultArchitectureConfig(), seed);
  EXPECT_TRUE(module.ok()) << module.status();
  return *module;
}

checkpoint::CheckpointState StateFor(const torch::jit::Module& module,
                                     const std::string& architecture) {
  checkpoint::CheckpointState state;
  state.tensors = checkpoint::NamedParametersAndBuffers(module);
  // Training state travels in the same checkpoint; export must ignore it.
  state.tensors.emplace_back("optimizer/momentum_buffer/fc1.weight",
                             torch::ones({3}));
  checkpoint::proto::Metadata& metadata = state.metadata;
  metadata.set_architecture(architecture);
  for (const auto& [key, value] :
       models::ArchitectureConfigToMap(models::DefaultArchitectureConfig())) {
    (*metadata.mutable_architecture_config())[key] = value;
  }
  metadata.mutable_progress()->set_epoch(2);
  metadata.mutable_progress()->set_global_step(340);
  (*metadata.mutable_metrics())["val_accuracy"] = 0.8125;
  metadata.mutable_monitored()->set_name("val_accuracy");
  metadata.mutable_monitored()->set_mode(
      checkpoint::proto::MonitoredMetric::MAX);
  metadata.mutable_monitored()->set_value(0.8125);
  return state;
}

std::string SaveModel(const std::string& directory,
                      const torch::jit::Module& module,
                      const std::string& architecture) {
  std::string path = directory + "/epoch=2";
  absl::Status saved =
      checkpoint::SaveCheckpoint(path, StateFor(module, architecture));
  EXPECT_TRUE(saved.ok()) << saved;
  return path;
}

class ExporterTest : public ::testing::Test {
 protected:
  void SetUp() override { at::set_num_threads(1); }
};

TEST_F(ExporterTest, ExportedModelsGiveTheTrainedModulesOutputsBitForBit) {
  for (const std::string& architecture : models::ArchitectureNames()) {
    SCOPED_TRACE(architecture);
    std::string directory = TempDir("roundtrip_" + architecture);
    torch::jit::Module trained = BuildModel(architecture, 5);
    std::string checkpoint_path = SaveModel(directory, trained, architecture);

    ExportOptions options;
    options.checkpoint_path = checkpoint_path;
    options.output_path = directory + "/model.pt";
    options.lite_output_path = directory + "/model.ptl";
    absl::StatusOr<ExportSummary> summary = ExportCheckpoint(options);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->max_abs_difference, 0);

    trained.eval();
    torch::NoGradGuard no_grad;
    torch::Tensor input = torch::randn({5, 1, 28, 28});
    std::string expected = TensorBytes(trained.forward({input}).toTensor());

    torch::jit::ExtraFilesMap extra = {{"metadata.json", ""}};
    torch::jit::Module loaded =
        torch::jit::load(options.output_path, c10::nullopt, extra);
    EXPECT_EQ(TensorBytes(loaded.forward({input}).toTensor()), expected);
    EXPECT_EQ(loaded.parameters().size(), 0u) << "weights are frozen in";

    torch::jit::mobile::Module mobile =
        torch::jit::_load_for_mobile(options.lite_output_path);
    EXPECT_EQ(TensorBytes(mobile.forward({input}).toTensor()), expected);

    nlohmann::json metadata = nlohmann::json::parse(extra["metadata.json"]);
    absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
        checkpoint::CheckpointReader::Open(checkpoint_path);
    ASSERT_TRUE(reader.ok());
    absl::StatusOr<std::string> digest = checkpoint::TensorDigest(**reader);
    ASSERT_TRUE(digest.ok());
    EXPECT_EQ(metadata["source_checkpoint"]["tensor_digest"], *digest);
    EXPECT_EQ(metadata["epoch"], 2);
    EXPECT_EQ(metadata["global_step"], 340);
    EXPECT_EQ(metadata["monitored"]["name"], "val_accuracy");
    EXPECT_EQ(metadata["metrics"]["val_accuracy"], 0.8125);
    EXPECT_EQ(metadata["class_labels"].size(), 10u);
    EXPECT_EQ(metadata["class_labels"][0], "T-shirt/top");
    EXPECT_EQ(metadata["input_shape"], nlohmann::json({1, 28, 28}));
    EXPECT_EQ(metadata["input_dtype"], "float32");
    EXPECT_EQ(metadata["normalization"]["mean"], nlohmann::json({0.2860}));
    EXPECT_EQ(metadata["normalization"]["std"], nlohmann::json({0.3530}));
    EXPECT_EQ(metadata["architecture"]["name"], architecture);
    EXPECT_EQ(metadata["producer"]["tool"], "export");

    absl::StatusOr<std::string> inspected = InspectModel(options.output_path);
    ASSERT_TRUE(inspected.ok()) << inspected.status();
    EXPECT_EQ(nlohmann::json::parse(*inspected), metadata);
  }
}

TEST_F(ExporterTest, PythonTorchJitLoadGivesTheSameBytes) {
  std::string directory = TempDir("python");
  torch::jit::Module trained = BuildModel("cnn", 11);
  ExportOptions options;
  options.checkpoint_path = SaveModel(directory, trained, "cnn");
  options.output_path = directory + "/model.pt";
  ASSERT_TRUE(ExportCheckpoint(options).ok());

  trained.eval();
  torch::NoGradGuard no_grad;
  torch::Tensor input = torch::randn({6, 1, 28, 28});
  WriteFile(directory + "/input.raw", TensorBytes(input));
  CommandResult python = RunCommand(
      test_paths::TorchPython() + " " +
      Runfile("export/testdata/run_torchscript.py") + " " +
      options.output_path + " " + directory + "/input.raw 6,1,28,28 " +
      directory + "/output.raw " + directory + "/metadata.json");
  ASSERT_EQ(python.exit_code, 0) << python.stderr_text;

  std::string expected = TensorBytes(trained.forward({input}).toTensor());
  ASSERT_EQ(expected.size(), 6u * 10u * sizeof(float));
  EXPECT_EQ(ReadFile(directory + "/output.raw"), expected);
  nlohmann::json metadata =
      nlohmann::json::parse(ReadFile(directory + "/metadata.json"));
  EXPECT_EQ(metadata["architecture"]["name"], "cnn");
}

TEST_F(ExporterTest, ResolvesTheBestSymlinkOnce) {
  std::string directory = TempDir("symlink");
  std::string checkpoint_path =
      SaveModel(directory, BuildModel("mlp", 1), "mlp");
  ASSERT_EQ(::symlink("epoch=2", (directory + "/best").c_str()), 0);
  ExportOptions options;
  options.checkpoint_path = directory + "/best";
  options.output_path = directory + "/model.pt";
  absl::StatusOr<ExportSummary> summary = ExportCheckpoint(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_THAT(summary->resolved_checkpoint_path, HasSubstr("/epoch=2"));
  nlohmann::json metadata =
      nlohmann::json::parse(*InspectModel(options.output_path));
  EXPECT_EQ(metadata["source_checkpoint"]["path"], options.checkpoint_path);
  EXPECT_THAT(metadata["source_checkpoint"]["resolved_path"].get<std::string>(),
              HasSubstr("/epoch=2"));
}

// Each refusal leaves nothing at the output paths.
class ExporterRefusalTest : public ExporterTest {
 protected:
  absl::Status Export(const std::string& checkpoint_path) {
    output_path_ = TempDir("refusal_out") + "/model.pt";
    lite_path_ = TempDir("refusal_out") + "/model.ptl";
    ExportOptions options;
    options.checkpoint_path = checkpoint_path;
    options.output_path = output_path_;
    options.lite_output_path = lite_path_;
    absl::Status status = ExportCheckpoint(options).status();
    EXPECT_FALSE(Exists(output_path_));
    EXPECT_FALSE(Exists(lite_path_));
    return status;
  }
  std::string output_path_;
  std::string lite_path_;
};

TEST_F(ExporterRefusalTest, MissingCheckpoint) {
  absl::Status status = Export(TempDir("missing") + "/no_such_ckpt");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr("no_such_ckpt"));
}

TEST_F(ExporterRefusalTest, CorruptCheckpoint) {
  std::string directory = TempDir("corrupt");
  std::string path = SaveModel(directory, BuildModel("cnn", 2), "cnn");
  std::string data_file = path + "/data-00000.bin";
  std::string bytes = ReadFile(data_file);
  ASSERT_GT(bytes.size(), 1000u);
  bytes[bytes.size() / 2] ^= 0x20;
  WriteFile(data_file, bytes);
  absl::Status status = Export(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
}

TEST_F(ExporterRefusalTest, MismatchedWeightsListEveryKey) {
  std::string directory = TempDir("mismatch");
  torch::jit::Module module = BuildModel("cnn", 3);
  checkpoint::CheckpointState state = StateFor(module, "cnn");
  checkpoint::NamedTensors tensors;
  for (auto& [name, tensor] : state.tensors) {
    if (name == "fc2.bias") continue;  // missing
    if (name == "conv1.weight") {
      tensors.emplace_back(name, torch::zeros({2, 2}));  // wrong shape
      continue;
    }
    tensors.emplace_back(name, tensor);
  }
  tensors.emplace_back("head.weight", torch::zeros({1}));  // unexpected
  state.tensors = tensors;
  ASSERT_TRUE(checkpoint::SaveCheckpoint(directory + "/ckpt", state).ok());

  absl::Status status = Export(directory + "/ckpt");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("fc2.bias"));
  EXPECT_THAT(status.message(), HasSubstr("conv1.weight"));
  EXPECT_THAT(status.message(), HasSubstr("head.weight"));
}

TEST_F(ExporterRefusalTest, UnknownOrMissingArchitecture) {
  std::string directory = TempDir("unknown_architecture");
  checkpoint::CheckpointState state = StateFor(BuildModel("mlp", 4), "mlp");
  state.metadata.set_architecture("resnet9000");
  ASSERT_TRUE(checkpoint::SaveCheckpoint(directory + "/unknown", state).ok());
  absl::Status unknown = Export(directory + "/unknown");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument) << unknown;
  EXPECT_THAT(unknown.message(), HasSubstr("resnet9000"));

  state.metadata.clear_architecture();
  ASSERT_TRUE(checkpoint::SaveCheckpoint(directory + "/none", state).ok());
  absl::Status none = Export(directory + "/none");
  EXPECT_EQ(none.code(), absl::StatusCode::kInvalidArgument) << none;
  EXPECT_THAT(none.message(), HasSubstr("no architecture"));
}

TEST_F(ExporterRefusalTest, UnwritableOutputLeavesNothing) {
  std::string directory = TempDir("unwritable");
  std::string path = SaveModel(directory, BuildModel("mlp", 6), "mlp");
  ExportOptions options;
  options.checkpoint_path = path;
  options.output_path = directory + "/no/such/dir/model.pt";
  absl::Status status = ExportCheckpoint(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_FALSE(Exists(options.output_path));

  // The .pt is writable, the .ptl is not: neither appears.
  options.output_path = directory + "/model.pt";
  options.lite_output_path = directory + "/no/model.ptl";
  EXPECT_FALSE(ExportCheckpoint(options).ok());
  EXPECT_FALSE(Exists(options.output_path));
}

// The binary: one-line errors, exit codes, --inspect.
TEST_F(ExporterTest, CommandLine) {
  std::string binary = Runfile("export/export");
  std::string directory = TempDir("cli");
  std::string checkpoint_path =
      SaveModel(directory, BuildModel("cnn", 8), "cnn");
  std::string out = directory + "/model.pt";

  CommandResult exported =
      RunCommand(binary + " --checkpoint=" + checkpoint_path + " --out=" + out +
                 " --lite=" + directory + "/model.ptl");
  ASSERT_EQ(exported.exit_code, 0) << exported.stderr_text;
  EXPECT_THAT(exported.stdout_text, HasSubstr("max abs difference 0"));

  CommandResult inspected = RunCommand(binary + " --inspect=" + out);
  ASSERT_EQ(inspected.exit_code, 0) << inspected.stderr_text;
  nlohmann::json metadata = nlohmann::json::parse(inspected.stdout_text);
  EXPECT_EQ(metadata["architecture"]["name"], "cnn");
  CommandResult inspected_lite =
      RunCommand(binary + " --inspect=" + directory + "/model.ptl");
  ASSERT_EQ(inspected_lite.exit_code, 0) << inspected_lite.stderr_text;
  EXPECT_EQ(nlohmann::json::parse(inspected_lite.stdout_text), metadata);

  // Under `bazel run`, relative paths are the caller's, not the runfiles'.
  CommandResult relative =
      RunCommand("cd / && BUILD_WORKING_DIRECTORY=" + directory + " " + binary +
                 " --checkpoint=epoch=2 --out=relative.pt");
  ASSERT_EQ(relative.exit_code, 0) << relative.stderr_text;
  EXPECT_TRUE(Exists(directory + "/relative.pt"));

  struct Refusal {
    std::string arguments;
    int exit_code;
    std::string message;
  };
  std::vector<Refusal> refusals = {
      {"--out=" + directory + "/x.pt", 2, "--checkpoint is required"},
      {"--checkpoint=" + checkpoint_path, 2, "--out is required"},
      {"--bogus=1", 2, "unknown flag --bogus"},
      {"--checkpoint=" + directory + "/nope --out=" + directory + "/x.pt", 1,
       "nope"},
      {"--checkpoint=" + checkpoint_path + " --out=" + directory +
           "/missing_dir/x.pt",
       1, "missing_dir"},
      {"--inspect=" + directory + "/nope.pt", 1, "nope.pt"},
      {"--inspect=" + checkpoint_path + "/manifest.pb", 1,
       "not a readable TorchScript archive"},
  };
  for (const Refusal& refusal : refusals) {
    SCOPED_TRACE(refusal.arguments);
    CommandResult result = RunCommand(binary + " " + refusal.arguments);
    EXPECT_EQ(result.exit_code, refusal.exit_code);
    EXPECT_THAT(result.stderr_text, ::testing::StartsWith("export: error: "));
    EXPECT_THAT(result.stderr_text, HasSubstr(refusal.message));
    EXPECT_EQ(
        std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'),
        1)
        << result.stderr_text;
  }
  EXPECT_FALSE(Exists(directory + "/x.pt"));
}

}  // namespace
}  // namespace model_export
