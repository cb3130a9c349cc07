#include "export/exporter.h"

#include <limits.h>
#include <stdlib.h>
#include <torch/version.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/digest.h"
#include "checkpoint/module_loading.h"
#include "checkpoint/reader.h"
#include "checkpoint/tensors.h"
#include "export/metadata.h"
#include "export/torchscript.h"
#include "tools/base/status.h"
#include "trainer/architectures.h"

namespace model_export {
namespace {

using base::Annotate;

absl::StatusOr<std::string> ResolvePath(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    int error_number = errno;
    std::string message =
        absl::StrCat("checkpoint ", path, ": ", std::strerror(error_number));
    if (error_number == ENOENT) return absl::NotFoundError(message);
    return absl::FailedPreconditionError(message);
  }
  return std::string(resolved);
}

int64_t NowUnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<ExportSummary> ExportCheckpoint(const ExportOptions& options) {
  if (options.checkpoint_path.empty()) {
    return absl::InvalidArgumentError("no checkpoint path given");
  }
  if (options.output_path.empty()) {
    return absl::InvalidArgumentError("no output path given");
  }
  if (options.probe_batch < 1) {
    return absl::InvalidArgumentError("probe batch must be at least 1");
  }
  ExportSummary summary;
  absl::StatusOr<std::string> resolved = ResolvePath(options.checkpoint_path);
  if (!resolved.ok()) return resolved.status();
  summary.resolved_checkpoint_path = *resolved;
  const std::string context = absl::StrCat("checkpoint ", *resolved);

  // Verified load: every tensor's checksum is checked as it is read.
  checkpoint::LoadOptions load_options;
  load_options.verify_checksums = true;
  absl::StatusOr<checkpoint::CheckpointState> state =
      checkpoint::LoadCheckpoint(*resolved, load_options);
  if (!state.ok()) return Annotate(state.status(), "loading checkpoint");

  {
    absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
        checkpoint::CheckpointReader::Open(*resolved);
    if (!reader.ok()) return Annotate(reader.status(), "opening checkpoint");
    absl::StatusOr<std::string> digest = checkpoint::TensorDigest(**reader);
    if (!digest.ok()) return Annotate(digest.status(), context);
    summary.tensor_digest = *digest;
  }

  const checkpoint::proto::Metadata& metadata = state->metadata;
  summary.architecture = metadata.architecture();
  if (metadata.architecture().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context,
                     ": metadata records no architecture to rebuild the model "
                     "from"));
  }
  std::map<std::string, std::string> config_map(
      metadata.architecture_config().begin(),
      metadata.architecture_config().end());
  absl::StatusOr<trainer::ArchitectureConfig> config =
      trainer::ArchitectureConfigFromMap(config_map);
  if (!config.ok()) return Annotate(config.status(), context);

  absl::StatusOr<torch::jit::Module> module =
      trainer::BuildArchitecture(metadata.architecture(), *config, /*seed=*/0);
  if (!module.ok()) {
    return Annotate(module.status(),
                    absl::StrCat(context, ": rebuilding architecture '",
                                 metadata.architecture(), "'"));
  }

  checkpoint::LoadIntoModuleOptions load_into_options;
  load_into_options.strict = true;
  absl::StatusOr<checkpoint::LoadReport> report =
      checkpoint::LoadIntoModule(*module, state->tensors, load_into_options);
  if (!report.ok()) {
    return Annotate(
        report.status(),
        absl::StrCat(context, ": weights do not match architecture '",
                     metadata.architecture(), "'"));
  }

  std::vector<int64_t> example_shape = {
      config->input_channels, config->input_height, config->input_width};
  ParityProbe probe;
  probe.batch = options.probe_batch;
  probe.seed = options.probe_seed;
  probe.tolerance = options.parity_tolerance;
  try {
    for (at::Tensor parameter : module->parameters()) {
      parameter.requires_grad_(false);
    }
  } catch (const c10::Error& error) {
    return absl::InternalError(
        absl::StrCat(context, ": ", error.what_without_backtrace()));
  }
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(*module, example_shape, probe);
  if (!frozen.ok()) return Annotate(frozen.status(), context);
  summary.max_abs_difference = frozen->max_abs_difference;

  ExportDescription description;
  description.checkpoint_path = options.checkpoint_path;
  description.resolved_checkpoint_path = *resolved;
  description.tensor_digest = summary.tensor_digest;
  description.architecture_name = metadata.architecture();
  description.architecture_config = config_map;
  description.class_labels = config->class_labels;
  description.input_shape = example_shape;
  description.input_dtype = "float32";
  description.normalization_mean = {config->normalization_mean};
  description.normalization_std = {config->normalization_std};
  description.libtorch_version = TORCH_VERSION;
  description.exported_unix_micros = NowUnixMicros();
  description.probe_batch = probe.batch;
  description.probe_seed = probe.seed;
  description.parity_tolerance = probe.tolerance;
  description.parity_max_abs_difference = frozen->max_abs_difference;
  summary.metadata_json =
      BuildMetadataJson(metadata, description)
          .dump(2, ' ', false, nlohmann::json::error_handler_t::replace);

  RETURN_IF_ERROR(
      WriteModelFiles(*frozen, {options.output_path, options.lite_output_path},
                      {{kMetadataFileName, summary.metadata_json}}, probe));
  return summary;
}

absl::StatusOr<std::string> InspectModel(const std::string& model_path) {
  absl::StatusOr<std::string> text =
      ReadExtraFile(model_path, kMetadataFileName);
  if (!text.ok()) return text.status();
  absl::StatusOr<nlohmann::json> document = ParseMetadataJson(*text);
  if (!document.ok()) return Annotate(document.status(), model_path);
  return document->dump(2, ' ', false,
                        nlohmann::json::error_handler_t::replace);
}

}  // namespace model_export
