// export: a checkpoint to frozen TorchScript for edge applications.
//
//   export --checkpoint=RUN_DIR/best --out=model.pt [--lite=model.ptl]
//   export --checkpoint=weights.pth --architecture=scripted.pt
//       --input_shape=3,224,224 [--strip_prefix=module.] --out=model.pt
//   export --inspect=model.pt        # print the metadata a model carries
//
// Exit codes: 0 success, 1 the export or inspection failed, 2 usage error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "checkpoint/interop/name_rule_flags.h"
#include "checkpoint/interop/name_rules.h"
#include "export/exporter.h"
#include "export/models/metadata.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/cli/flags.h"

ABSL_FLAG(std::string, checkpoint, "",
          "Checkpoint to export: a checkpoint directory (or a symlink such as "
          "RUN_DIR/best), a torch.save .pt/.pth, a Lightning .ckpt or a "
          "safetensors file.");
ABSL_FLAG(std::string, architecture, "",
          "Your own model: a scripted (not frozen) TorchScript module file, "
          "torch.jit.script(model).save(path). Default: the built-in "
          "architecture the checkpoint records.");
ABSL_FLAG(std::vector<std::string>, input_shape, {},
          "One example's input shape without the batch dimension, e.g. "
          "3,224,224 (required with --architecture).");
ABSL_FLAG(std::vector<std::string>, mean, {},
          "Normalisation mean, one value or one per channel (inputs are "
          "scaled to [0, 1] first).");
ABSL_FLAG(std::vector<std::string>, std, {},
          "Normalisation standard deviation, as --mean.");
ABSL_FLAG(std::vector<std::string>, labels, {},
          "Class labels in output order, comma-separated.");
ABSL_FLAG(std::string, model_info, "",
          "A JSON file with any of metadata.json's input_shape, input_dtype, "
          "normalization {mean, std} and class_labels (and schema_version "
          "1); flags given as well win.");
ABSL_FLAG(std::string, out, "", "Path of the frozen TorchScript (.pt) file.");
ABSL_FLAG(std::string, lite, "",
          "Optional path of a lite-interpreter (.ptl) file, for mobile "
          "runtimes.");
ABSL_FLAG(std::string, inspect, "",
          "Print the metadata of an exported .pt/.ptl file and exit.");
ABSL_FLAG(int64_t, probe_batch, 8,
          "Examples in the parity probe batch (seeded random inputs).");
ABSL_FLAG(uint64_t, probe_seed, 0, "Seed of the parity probe batch.");
ABSL_FLAG(double, tolerance, 1e-5,
          "Largest absolute output difference accepted between the trained "
          "and the frozen model on the probe batch.");

namespace {

constexpr char kUsage[] =
    "export --checkpoint=RUN_DIR/best --out=model.pt [--lite=model.ptl]\n"
    "       export --checkpoint=FILE.pt|.ckpt|.safetensors "
    "--architecture=SCRIPTED.pt\n"
    "              --input_shape=C,H,W [--mean=.. --std=.. --labels=..]\n"
    "              [--strip_prefix=module.] --out=model.pt\n"
    "       export --inspect=model.pt";

// Paths the user typed mean the caller's directory under `bazel run`.
std::string UserPath(const std::string& path) {
  return base::ResolveUserPath(path);
}

// Errors can carry LibTorch messages over several lines; the CLI prints one.
void ExitIfFailed(const absl::Status& status) {
  if (status.ok()) return;
  std::string message = absl::StrReplaceAll(std::string(status.message()),
                                            {{"\r", ""}, {"\n", " "}});
  cli::ExitWithError(message, 1);
}

// "3,224,224" -> {3, 224, 224}; exits with a usage error naming `flag`.
template <typename T>
std::vector<T> ParseList(const std::vector<std::string>& items,
                         const char* flag) {
  std::vector<T> values;
  for (const std::string& item : items) {
    T value;
    bool ok;
    if constexpr (std::is_same_v<T, double>) {
      ok = absl::SimpleAtod(item, &value);
    } else {
      ok = absl::SimpleAtoi(item, &value);
    }
    if (!ok) {
      cli::ExitWithError(absl::StrCat("--", flag, ": '", item,
                                      "' is not a number (see --help)"));
    }
    values.push_back(value);
  }
  return values;
}

}  // namespace

int Main(int argc, char** argv) {
  std::vector<std::string> positional =
      cli::ParseFlagsOrExit(argc, argv, kUsage);
  if (!positional.empty()) {
    cli::ExitWithError(
        absl::StrCat("unexpected argument '", positional[0], "' (see --help)"));
  }

  const std::string inspect = UserPath(absl::GetFlag(FLAGS_inspect));
  if (!inspect.empty()) {
    if (!absl::GetFlag(FLAGS_checkpoint).empty() ||
        !absl::GetFlag(FLAGS_out).empty() ||
        !absl::GetFlag(FLAGS_lite).empty()) {
      cli::ExitWithError(
          "--inspect cannot be combined with --checkpoint, --out or --lite");
    }
    absl::StatusOr<std::string> metadata = model_export::InspectModel(inspect);
    ExitIfFailed(metadata.status());
    std::printf("%s\n", metadata->c_str());
    return 0;
  }

  model_export::ExportOptions options;
  options.checkpoint_path = UserPath(absl::GetFlag(FLAGS_checkpoint));
  options.output_path = UserPath(absl::GetFlag(FLAGS_out));
  options.lite_output_path = UserPath(absl::GetFlag(FLAGS_lite));
  options.probe_batch = absl::GetFlag(FLAGS_probe_batch);
  options.probe_seed = absl::GetFlag(FLAGS_probe_seed);
  options.parity_tolerance = absl::GetFlag(FLAGS_tolerance);
  options.architecture_path = UserPath(absl::GetFlag(FLAGS_architecture));
  const interop::NameRuleFlags names = interop::GetNameRuleFlags();
  options.name_rules.strip_prefixes = names.strip_prefixes;
  options.name_rules.add_prefix = names.add_prefix;
  options.lenient = names.lenient;
  if (!names.rename_file.empty()) {
    absl::StatusOr<std::map<std::string, std::optional<std::string>>> mapping =
        interop::ReadNameMapping(UserPath(names.rename_file));
    ExitIfFailed(mapping.status());
    options.name_rules.mapping = *std::move(mapping);
  }
  if (!absl::GetFlag(FLAGS_model_info).empty()) {
    const std::string path = UserPath(absl::GetFlag(FLAGS_model_info));
    absl::StatusOr<std::string> text =
        base::ReadRegularFile(path, uint64_t{16} << 20);
    ExitIfFailed(text.status());
    absl::StatusOr<models::ModelMetadata> info =
        models::ParseModelMetadata(*text);
    if (!info.ok()) {
      ExitIfFailed(
          absl::Status(info.status().code(),
                       absl::StrCat(path, ": ", info.status().message())));
    }
    options.input_shape = info->input_shape;
    options.input_dtype = info->input_dtype;
    options.normalization_mean = info->normalization_mean;
    options.normalization_std = info->normalization_std;
    options.class_labels = info->class_labels;
  }
  if (!absl::GetFlag(FLAGS_input_shape).empty()) {
    options.input_shape =
        ParseList<int64_t>(absl::GetFlag(FLAGS_input_shape), "input_shape");
  }
  if (!absl::GetFlag(FLAGS_mean).empty() || !absl::GetFlag(FLAGS_std).empty()) {
    options.normalization_mean =
        ParseList<double>(absl::GetFlag(FLAGS_mean), "mean");
    options.normalization_std =
        ParseList<double>(absl::GetFlag(FLAGS_std), "std");
  }
  if (!absl::GetFlag(FLAGS_labels).empty()) {
    options.class_labels = absl::GetFlag(FLAGS_labels);
  }
  if (options.checkpoint_path.empty()) {
    cli::ExitWithError("--checkpoint is required (see --help)");
  }
  if (options.output_path.empty()) {
    cli::ExitWithError("--out is required (see --help)");
  }
  if (options.output_path == options.lite_output_path) {
    cli::ExitWithError("--out and --lite must be different files");
  }
  if (options.probe_batch < 1) {
    cli::ExitWithError("--probe_batch must be at least 1");
  }
  if (!(options.parity_tolerance >= 0)) {
    cli::ExitWithError("--tolerance must be a non-negative number");
  }

  absl::StatusOr<model_export::ExportSummary> summary =
      model_export::ExportCheckpoint(options);
  ExitIfFailed(summary.status());
  std::printf("exported %s (%s, tensor digest %s)\n",
              options.checkpoint_path.c_str(),
              summary->resolved_checkpoint_path.c_str(),
              summary->tensor_digest.c_str());
  std::printf("  architecture: %s\n", summary->architecture.c_str());
  std::printf(
      "  weights: %d module tensors loaded strictly (%d renamed), %d "
      "checkpoint tensors not the model's (training state, dropped by name "
      "rules)\n",
      summary->tensors_loaded, summary->tensors_renamed,
      summary->tensors_ignored);
  std::printf("  parity: max abs difference %.9g on %lld probe examples\n",
              summary->max_abs_difference,
              static_cast<long long>(options.probe_batch));
  std::printf("  wrote %s\n", options.output_path.c_str());
  if (!options.lite_output_path.empty()) {
    std::printf("  wrote %s\n", options.lite_output_path.c_str());
  }
  return 0;
}

// LibTorch and nlohmann throw; whatever escapes is still one line, exit 1.
int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& error) {
    ExitIfFailed(
        absl::InternalError(absl::StrCat("unexpected error: ", error.what())));
  } catch (...) {
    ExitIfFailed(absl::InternalError("unexpected error"));
  }
  return 1;
}
