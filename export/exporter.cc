#include "export/exporter.h"

#include <limits.h>
#include <stdlib.h>
#include <torch/version.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/interop/tensor_source.h"
#include "checkpoint/module_loading.h"
#include "checkpoint/tensors.h"
#include "export/models/architectures.h"
#include "export/models/metadata.h"
#include "export/torchscript.h"
#include "tools/base/paths.h"
#include "tools/base/status.h"
#include "tools/base/version.h"

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

// " (hint: ...)" when the checkpoint's names are the module's behind a
// wrapper's prefix, which is what a strict load fails on most often.
std::string PrefixHint(const torch::jit::Module& module,
                       const checkpoint::NamedTensors& tensors) {
  std::set<std::string> wanted;
  for (const auto& [name, tensor] :
       checkpoint::NamedParametersAndBuffers(module)) {
    wanted.insert(name);
  }
  for (const char* prefix : {"module.", "_orig_mod.", "model.", "net."}) {
    size_t matched = 0;
    for (const auto& [name, tensor] : tensors) {
      if (absl::StartsWith(name, prefix) &&
          wanted.count(name.substr(std::strlen(prefix))) > 0) {
        ++matched;
      }
    }
    if (!wanted.empty() && matched == wanted.size()) {
      return absl::StrCat(
          " (hint: the checkpoint's names are the module's "
          "behind '",
          prefix, "': pass --strip_prefix=", prefix, ")");
    }
  }
  return "";
}

}  // namespace

namespace {

// The metadata.json document: the checkpoint's provenance and progress, how
// to feed the model, and how the export was checked.
models::ModelMetadata DescribeExport(
    const ExportOptions& options, const std::string& resolved_path,
    const std::string& tensor_digest,
    const checkpoint::proto::Metadata& checkpoint_metadata,
    const std::string& architecture_name,
    const std::map<std::string, std::string>& config_map,
    const models::ModelMetadata& feed, const ParityProbe& probe,
    double max_abs_difference) {
  models::ModelMetadata metadata;
  metadata.input_shape = feed.input_shape;
  metadata.input_dtype = feed.input_dtype;
  metadata.normalization_mean = feed.normalization_mean;
  metadata.normalization_std = feed.normalization_std;
  metadata.class_labels = feed.class_labels;
  metadata.output = "logits";
  models::ModelMetadata::SourceCheckpoint& source = metadata.source_checkpoint;
  source.path = options.checkpoint_path;
  source.resolved_path = resolved_path;
  source.tensor_digest = tensor_digest;
  source.created_unix_micros = checkpoint_metadata.created_unix_micros();
  source.producer_tool = checkpoint_metadata.producer().tool();
  source.producer_version = checkpoint_metadata.producer().version();
  source.libtorch_version = checkpoint_metadata.libtorch_version();
  metadata.epoch = checkpoint_metadata.progress().epoch();
  metadata.global_step = checkpoint_metadata.progress().global_step();
  const checkpoint::proto::MonitoredMetric& monitored =
      checkpoint_metadata.monitored();
  if (!monitored.name().empty()) {
    const char* mode = "unspecified";
    if (monitored.mode() == checkpoint::proto::MonitoredMetric::MIN) {
      mode = "min";
    }
    if (monitored.mode() == checkpoint::proto::MonitoredMetric::MAX) {
      mode = "max";
    }
    metadata.monitored = {monitored.name(), mode, monitored.value()};
  }
  metadata.metrics = {checkpoint_metadata.metrics().begin(),
                      checkpoint_metadata.metrics().end()};
  metadata.architecture_name = architecture_name;
  metadata.architecture_config = config_map;
  metadata.exporter_version = project::kVersion;
  metadata.exporter_libtorch_version = TORCH_VERSION;
  metadata.exported_unix_micros = NowUnixMicros();
  metadata.parity = {probe.batch, probe.seed, probe.tolerance,
                     max_abs_difference};
  return metadata;
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
  load_options.lenient = options.lenient;
  absl::StatusOr<checkpoint::CheckpointState> state =
      checkpoint::LoadCheckpoint(*resolved, load_options);
  if (!state.ok()) return Annotate(state.status(), "loading checkpoint");

  {
    interop::SourceOptions source_options;
    source_options.lenient = options.lenient;
    absl::StatusOr<std::unique_ptr<interop::TensorSource>> source =
        interop::TensorSource::Open(*resolved, source_options);
    if (!source.ok()) return Annotate(source.status(), "opening checkpoint");
    absl::StatusOr<std::string> digest = (*source)->Digest();
    if (!digest.ok()) return Annotate(digest.status(), context);
    summary.tensor_digest = *digest;
  }

  const checkpoint::proto::Metadata& metadata = state->metadata;
  // How to feed the model: the built-in architecture's own description,
  // then whatever the options say.
  models::ModelMetadata feed;
  feed.input_dtype = "float32";
  std::map<std::string, std::string> config_map;
  absl::StatusOr<torch::jit::Module> module;
  if (options.architecture_path.empty()) {
    summary.architecture = metadata.architecture();
    if (metadata.architecture().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          context,
          ": metadata records no architecture to rebuild the model from "
          "(for a model of your own, pass its scripted TorchScript file as "
          "--architecture)"));
    }
    config_map = {metadata.architecture_config().begin(),
                  metadata.architecture_config().end()};
    absl::StatusOr<models::ArchitectureConfig> config =
        models::ArchitectureConfigFromMap(config_map);
    if (!config.ok()) return Annotate(config.status(), context);
    feed.input_shape = {config->input_channels, config->input_height,
                        config->input_width};
    feed.normalization_mean = {config->normalization_mean};
    feed.normalization_std = {config->normalization_std};
    feed.class_labels = config->class_labels;
    module = models::BuildArchitecture(metadata.architecture(), *config,
                                       /*seed=*/0);
    if (!module.ok()) {
      return Annotate(module.status(),
                      absl::StrCat(context, ": rebuilding architecture '",
                                   metadata.architecture(), "'"));
    }
  } else {
    const std::string& file = options.architecture_path;
    summary.architecture = absl::StrCat("torchscript:", base::BaseName(file));
    config_map = {{"file", file}};
    try {
      module = torch::jit::load(file, torch::kCPU);
    } catch (const std::exception& error) {
      const auto* torch_error = dynamic_cast<const c10::Error*>(&error);
      return absl::InvalidArgumentError(absl::StrCat(
          "architecture ", file,
          ": not a TorchScript module (save one with "
          "torch.jit.script(model).save(path)): ",
          torch_error != nullptr ? torch_error->what_without_backtrace()
                                 : error.what()));
    }
    if (options.input_shape.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "architecture ", file,
          ": the input shape of one example is needed (--input_shape, "
          "e.g. 3,224,224)"));
    }
  }
  if (!options.input_shape.empty()) feed.input_shape = options.input_shape;
  if (!options.input_dtype.empty()) feed.input_dtype = options.input_dtype;
  if (!options.normalization_mean.empty() ||
      !options.normalization_std.empty()) {
    feed.normalization_mean = options.normalization_mean;
    feed.normalization_std = options.normalization_std;
  }
  if (!options.class_labels.empty()) feed.class_labels = options.class_labels;
  if (feed.input_dtype != "float32") {
    return absl::InvalidArgumentError(absl::StrCat(
        "input dtype ", feed.input_dtype,
        ": only float32 inputs can be checked by the parity probe"));
  }

  // The checkpoint's names, renamed for the module; training state stays
  // behind (LoadIntoModule ignores names with '/').
  checkpoint::NamedTensors renamed;
  for (auto& [name, tensor] : state->tensors) {
    if (checkpoint::IsTrainingStateName(name)) {
      ++summary.tensors_ignored;
      continue;
    }
    std::optional<std::string> new_name = options.name_rules.Apply(name);
    if (!new_name.has_value()) {
      ++summary.tensors_ignored;
      continue;
    }
    if (*new_name != name) ++summary.tensors_renamed;
    renamed.emplace_back(*new_name, tensor);
  }
  checkpoint::LoadIntoModuleOptions load_into_options;
  load_into_options.strict = true;
  absl::StatusOr<checkpoint::LoadReport> report =
      checkpoint::LoadIntoModule(*module, renamed, load_into_options);
  if (!report.ok()) {
    return Annotate(
        report.status(),
        absl::StrCat(context, ": weights do not match ", summary.architecture,
                     PrefixHint(*module, renamed)));
  }
  summary.tensors_loaded = static_cast<int>(report->loaded.size());

  const std::vector<int64_t>& example_shape = feed.input_shape;
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

  summary.metadata_json = ModelMetadataJson(DescribeExport(
      options, *resolved, summary.tensor_digest, metadata, summary.architecture,
      config_map, feed, probe, frozen->max_abs_difference));
  // What the runner will check when it loads the model, checked now.
  absl::StatusOr<models::ModelMetadata> parsed =
      models::ParseModelMetadata(summary.metadata_json);
  if (!parsed.ok()) {
    return Annotate(parsed.status(), "the model description given");
  }

  RETURN_IF_ERROR(WriteModelFiles(
      *frozen, {options.output_path, options.lite_output_path},
      {{models::kMetadataFileName, summary.metadata_json}}, probe));
  return summary;
}

absl::StatusOr<std::string> InspectModel(const std::string& model_path) {
  absl::StatusOr<std::string> text =
      ReadExtraFile(model_path, models::kMetadataFileName);
  if (!text.ok()) return text.status();
  absl::StatusOr<models::ModelMetadata> metadata =
      models::ParseModelMetadata(*text);
  if (!metadata.ok()) return Annotate(metadata.status(), model_path);
  return models::PrettyPrintJson(*text);
}

}  // namespace model_export
