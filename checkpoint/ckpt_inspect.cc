#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/ckpt_commands.h"
#include "checkpoint/ckpt_text.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "tools/base/shape.h"

namespace checkpoint {
namespace ckpt {
namespace {

std::string TrainingStateSummary(const proto::TrainingState& state) {
  std::string out;
  if (state.ByteSizeLong() == 0) {
    Line(out, "training state", "none");
    return out;
  }
  out += "training state\n";
  if (state.has_optimizer()) {
    const proto::OptimizerState& optimizer = state.optimizer();
    std::string groups;
    for (const auto& group : optimizer.param_groups()) {
      std::vector<std::string> hyper;
      for (const auto& [name, value] : Sorted(group.hyperparameters())) {
        hyper.push_back(absl::StrCat(name, "=", FormatDouble(value)));
      }
      absl::StrAppend(&groups, groups.empty() ? "" : "; ", "{",
                      absl::StrJoin(hyper, ", "), "} over ",
                      group.parameter_names_size(), " parameters");
    }
    Line(out, "  optimizer",
         absl::StrCat(OrDash(optimizer.type()), ": ",
                      optimizer.param_groups_size(), " param group(s) ", groups,
                      "; state for ", optimizer.parameters_size(),
                      " parameters"));
  }
  if (state.has_rng()) {
    const proto::RngState& rng = state.rng();
    Line(out, "  rng",
         absl::StrCat("seed ", rng.seed(), ", cpu generator in ",
                      OrDash(rng.cpu_generator_tensor()), ", ",
                      rng.cuda_generator_tensors_size(), " cuda generator(s)"));
  }
  for (const proto::Extension& extension : state.extensions()) {
    Line(out, "  extension",
         absl::StrCat(extension.type(), " version ", extension.version(), ", ",
                      extension.payload().size(), " bytes"));
  }
  return out;
}

// A .pt or safetensors file: what it holds, as far as the format says.
std::string ForeignText(const interop::TensorSource& source) {
  std::string out;
  Line(out, "file", source.path());
  Line(out, "format", interop::SourceFormatName(source.format()));
  if (source.format() == interop::SourceFormat::kTorchSave) {
    Line(out, "model key", OrDash(source.model_key()));
    if (!source.placeholders().empty()) {
      Line(out, "placeholders",
           absl::StrCat("read as opaque (--lenient): ",
                        absl::StrJoin(source.placeholders(), ", ")));
    }
  }
  if (!source.values().empty()) {
    out += "values\n";
    for (const interop::SourceValue& value : source.values()) {
      Line(out, absl::StrCat("  ", value.name), value.repr);
    }
  }
  if (!source.metadata().empty()) {
    out += "metadata\n";
    for (const auto& [key, value] : source.metadata()) {
      Line(out, absl::StrCat("  ", key), value);
    }
  }
  uint64_t tensor_bytes = 0;
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "DTYPE", "SHAPE", "SIZE"}};
  for (const interop::SourceTensor& tensor : source.tensors()) {
    tensor_bytes += tensor.size_bytes;
    rows.push_back({tensor.name, tensor.dtype,
                    base::ShapeToString(tensor.shape),
                    absl::StrCat(tensor.size_bytes)});
  }
  Line(out, "tensors",
       absl::StrCat(source.tensors().size(), " (", HumanBytes(tensor_bytes),
                    ")"));
  absl::StrAppend(&out, FormatTable(rows, {3}, "  ", " "));
  return out;
}

std::string ForeignJson(const interop::TensorSource& source) {
  nlohmann::ordered_json json;
  json["path"] = source.path();
  json["format"] = std::string(interop::SourceFormatName(source.format()));
  json["model_key"] = source.model_key();
  json["placeholders"] = source.placeholders();
  json["values"] = nlohmann::ordered_json::object();
  for (const interop::SourceValue& value : source.values()) {
    json["values"][value.name] = value.repr;
  }
  json["metadata"] = source.metadata();
  uint64_t total = 0;
  json["tensors"] = nlohmann::ordered_json::array();
  for (const interop::SourceTensor& tensor : source.tensors()) {
    total += tensor.size_bytes;
    json["tensors"].push_back({{"name", tensor.name},
                               {"dtype", tensor.dtype},
                               {"shape", tensor.shape},
                               {"size_bytes", tensor.size_bytes}});
  }
  json["tensor_count"] = source.tensors().size();
  json["tensor_bytes"] = total;
  return json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

std::string CheckpointText(const std::string& path,
                           const CheckpointReader* reader) {
  const proto::Manifest& manifest = reader->manifest();
  const proto::Metadata& metadata = manifest.metadata();
  std::string out;

  std::string location = path;
  struct stat link_info;
  char resolved[PATH_MAX];
  if (::lstat(path.c_str(), &link_info) == 0 && S_ISLNK(link_info.st_mode) &&
      ::realpath(path.c_str(), resolved) != nullptr) {
    location = absl::StrCat(path, " -> ", resolved);  // RUN_DIR/best, last.
  }
  Line(out, "checkpoint", location);
  uint64_t data_bytes = 0;
  for (const proto::DataFile& file : manifest.data_files()) {
    data_bytes += file.size_bytes();
  }
  Line(out, "format",
       absl::StrCat("version ", manifest.format_version(), ", alignment ",
                    manifest.alignment(), ", ", manifest.data_files_size(),
                    " data file(s), ", HumanBytes(data_bytes)));
  Line(out, "created", CreatedTime(metadata.created_unix_micros()));
  Line(out, "producer",
       metadata.has_producer()
           ? absl::StrCat(OrDash(metadata.producer().tool()), " ",
                          metadata.producer().version())
           : "-");
  Line(out, "libtorch", OrDash(metadata.libtorch_version()));
  Line(out, "cuda / cudnn",
       absl::StrCat(OrDash(metadata.cuda_version()), " / ",
                    OrDash(metadata.cudnn_version())));
  Line(out, "host", OrDash(metadata.host()));
  std::vector<std::string> config;
  for (const auto& [key, value] : Sorted(metadata.architecture_config())) {
    config.push_back(absl::StrCat(key, "=", value));
  }
  Line(out, "architecture",
       config.empty() ? OrDash(metadata.architecture())
                      : absl::StrCat(OrDash(metadata.architecture()), " (",
                                     absl::StrJoin(config, ", "), ")"));
  const proto::Progress& progress = metadata.progress();
  Line(out, "progress",
       absl::StrCat("epoch ", progress.epoch(), ", global step ",
                    progress.global_step(), ", examples seen ",
                    progress.examples_seen(), ", step in epoch ",
                    progress.step_in_epoch()));
  Line(out, "monitored",
       metadata.monitored().name().empty()
           ? "-"
           : absl::StrCat(metadata.monitored().name(), " (",
                          ModeName(metadata.monitored().mode()),
                          ") = ", FormatDouble(metadata.monitored().value())));
  if (metadata.metrics().empty()) {
    Line(out, "metrics", "-");
  } else {
    out += "metrics\n";
    for (const auto& [name, value] : Sorted(metadata.metrics())) {
      Line(out, absl::StrCat("  ", name), FormatDouble(value));
    }
  }
  if (!metadata.user().empty()) {
    out += "user\n";
    for (const auto& [key, value] : Sorted(metadata.user())) {
      Line(out, absl::StrCat("  ", key), value);
    }
  }
  out += TrainingStateSummary(manifest.training_state());

  uint64_t tensor_bytes = 0;
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "DTYPE", "SHAPE", "SIZE", "OFFSET"}};
  bool several_files = manifest.data_files_size() > 1;
  if (several_files) rows[0].push_back("FILE");
  for (const proto::TensorEntry& entry : manifest.tensors()) {
    tensor_bytes += entry.size_bytes();
    rows.push_back({entry.name(), std::string(DTypeName(entry.dtype())),
                    FormatShape(entry), absl::StrCat(entry.size_bytes()),
                    absl::StrCat(entry.offset())});
    if (several_files) {
      rows.back().push_back(manifest.data_files(entry.data_file()).name());
    }
  }
  if (several_files) {
    // Written by several processes (a data-parallel job's parts) or
    // writers: what each file holds.
    std::vector<int> counts(manifest.data_files_size(), 0);
    for (const proto::TensorEntry& entry : manifest.tensors()) {
      ++counts[entry.data_file()];
    }
    out += "data files\n";
    for (int i = 0; i < manifest.data_files_size(); ++i) {
      Line(out, absl::StrCat("  ", manifest.data_files(i).name()),
           absl::StrCat(counts[i], " tensor(s), ",
                        HumanBytes(manifest.data_files(i).size_bytes())));
    }
  }
  Line(out, "tensors",
       absl::StrCat(manifest.tensors_size(), " (", HumanBytes(tensor_bytes),
                    ")"));
  // SIZE and OFFSET align right.
  absl::StrAppend(&out, FormatTable(rows, {3, 4}, "  ", " "));
  return out;
}

absl::StatusOr<std::string> CheckpointJson(const std::string& path,
                                           const CheckpointReader* reader) {
  const proto::Manifest& manifest = reader->manifest();
  const proto::Metadata& metadata = manifest.metadata();
  nlohmann::ordered_json json;
  json["path"] = path;
  json["format_version"] = manifest.format_version();
  json["alignment"] = manifest.alignment();
  json["data_files"] = nlohmann::ordered_json::array();
  for (const proto::DataFile& file : manifest.data_files()) {
    json["data_files"].push_back(
        {{"name", file.name()}, {"size_bytes", file.size_bytes()}});
  }
  nlohmann::ordered_json meta;
  meta["created_unix_micros"] = metadata.created_unix_micros();
  meta["producer"] = {{"tool", metadata.producer().tool()},
                      {"version", metadata.producer().version()}};
  meta["libtorch_version"] = metadata.libtorch_version();
  meta["cuda_version"] = metadata.cuda_version();
  meta["cudnn_version"] = metadata.cudnn_version();
  meta["host"] = metadata.host();
  meta["architecture"] = metadata.architecture();
  meta["architecture_config"] = nlohmann::ordered_json::object();
  for (const auto& [key, value] : Sorted(metadata.architecture_config())) {
    meta["architecture_config"][key] = value;
  }
  const proto::Progress& progress = metadata.progress();
  meta["progress"] = {{"epoch", progress.epoch()},
                      {"global_step", progress.global_step()},
                      {"examples_seen", progress.examples_seen()},
                      {"step_in_epoch", progress.step_in_epoch()}};
  meta["metrics"] = nlohmann::ordered_json::object();
  for (const auto& [name, value] : Sorted(metadata.metrics())) {
    meta["metrics"][name] = value;  // NaN becomes null.
  }
  if (metadata.has_monitored()) {
    meta["monitored"] = {{"name", metadata.monitored().name()},
                         {"mode", ModeName(metadata.monitored().mode())},
                         {"value", metadata.monitored().value()}};
  } else {
    meta["monitored"] = nullptr;
  }
  meta["user"] = nlohmann::ordered_json::object();
  for (const auto& [key, value] : Sorted(metadata.user())) {
    meta["user"][key] = value;
  }
  json["metadata"] = std::move(meta);

  // The training state is deep and grows with the trainer: protobuf's own
  // JSON mapping keeps it complete (64-bit integers become strings there).
  std::string state_json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  auto status = google::protobuf::util::MessageToJsonString(
      manifest.training_state(), &state_json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat(path, ": training state to JSON: ", status.ToString()));
  }
  json["training_state"] = nlohmann::ordered_json::parse(state_json);

  uint64_t total = 0;
  json["tensors"] = nlohmann::ordered_json::array();
  for (const proto::TensorEntry& entry : manifest.tensors()) {
    total += entry.size_bytes();
    json["tensors"].push_back({
        {"name", entry.name()},
        {"dtype", std::string(DTypeName(entry.dtype()))},
        {"shape",
         std::vector<int64_t>(entry.shape().begin(), entry.shape().end())},
        {"size_bytes", entry.size_bytes()},
        {"data_file", manifest.data_files(entry.data_file()).name()},
        {"offset", entry.offset()},
        {"xxh3_64", absl::StrFormat("%016x", entry.xxh3_64())},
        {"saved_device", entry.saved_device()},
    });
  }
  json["tensor_count"] = manifest.tensors_size();
  json["tensor_bytes"] = total;
  return json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

// One opening for both renderings: ours in full, other formats as far as
// they say.
absl::StatusOr<std::string> Inspect(const std::string& path,
                                    const interop::SourceOptions& options,
                                    bool json) {
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> source =
      OpenSource(path, options);
  if (!source.ok()) return source.status();
  if ((*source)->format() != interop::SourceFormat::kCheckpoint) {
    return json ? ForeignJson(**source) : ForeignText(**source);
  }
  if (json) return CheckpointJson(path, (*source)->checkpoint());
  return CheckpointText(path, (*source)->checkpoint());
}

}  // namespace

absl::StatusOr<std::string> InspectText(const std::string& path,
                                        const interop::SourceOptions& options) {
  return Inspect(path, options, /*json=*/false);
}

absl::StatusOr<std::string> InspectJson(const std::string& path,
                                        const interop::SourceOptions& options) {
  return Inspect(path, options, /*json=*/true);
}

}  // namespace ckpt
}  // namespace checkpoint
