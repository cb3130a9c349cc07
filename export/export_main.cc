// export: a checkpoint to frozen TorchScript for edge applications.
//
//   export --checkpoint=RUN_DIR/best --out=model.pt [--lite=model.ptl]
//   export --inspect=model.pt        # print the metadata a model carries
//
// Exit codes: 0 success, 1 the export or inspection failed, 2 usage error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "export/exporter.h"
#include "tools/base/paths.h"
#include "tools/cli/flags.h"

ABSL_FLAG(std::string, checkpoint, "",
          "Checkpoint directory (or a symlink such as RUN_DIR/best) to "
          "export.");
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
