#include "checkpoint/ckpt_commands.h"

#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/types/span.h"
#include "checkpoint/digest.h"
#include "checkpoint/reader.h"
#include "checkpoint/run_directory.h"
#include "checkpoint/upgrade.h"
#include "checkpoint/writer.h"
#include "tools/base/paths.h"
#include "tools/base/shape.h"

namespace checkpoint {
namespace ckpt {
namespace {

std::string HumanBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string FormatShape(const proto::TensorEntry& entry) {
  return base::ShapeToString(entry.shape());
}

std::string FormatDouble(double value) {
  return absl::StrFormat("%.6g", value);
}

std::string ModeName(proto::MonitoredMetric::Mode mode) {
  switch (mode) {
    case proto::MonitoredMetric::MIN:
      return "min";
    case proto::MonitoredMetric::MAX:
      return "max";
    default:
      return "unspecified";
  }
}

bool IsDirectory(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool Exists(const std::string& path) {
  struct stat info;
  return ::lstat(path.c_str(), &info) == 0;
}

// Opens a checkpoint with messages that say what the user got wrong.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(
    const std::string& path, ReaderOptions options = {}) {
  if (!Exists(path)) {
    return absl::NotFoundError(
        absl::StrCat(path, ": no such file or directory"));
  }
  if (!IsDirectory(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a checkpoint (a checkpoint is a directory)"));
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(path, options);
  if (!reader.ok() && absl::IsNotFound(reader.status()) &&
      !Exists(absl::StrCat(path, "/", kManifestFileName))) {
    std::string hint =
        Exists(absl::StrCat(path, "/", kLastLinkName))
            ? " (it looks like a run directory: try `ckpt ls`, or "
              "PATH/best, PATH/last)"
            : "";
    return absl::NotFoundError(absl::StrCat(path, ": not a checkpoint (no ",
                                            kManifestFileName, ")", hint));
  }
  return reader;
}

std::string CreatedTime(int64_t unix_micros) {
  if (unix_micros <= 0) return "-";
  std::time_t seconds = static_cast<std::time_t>(unix_micros / 1000000);
  std::tm utc;
  if (::gmtime_r(&seconds, &utc) == nullptr) return absl::StrCat(unix_micros);
  char buffer[64];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S", &utc);
  return absl::StrFormat("%s.%06d UTC", buffer,
                         static_cast<int>(unix_micros % 1000000));
}

std::string OrDash(const std::string& text) {
  return text.empty() ? "-" : text;
}

template <typename Map>
std::vector<std::pair<std::string, typename Map::mapped_type>> Sorted(
    const Map& map) {
  std::vector<std::pair<std::string, typename Map::mapped_type>> items(
      map.begin(), map.end());
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return items;
}

void Line(std::string& out, absl::string_view label, absl::string_view value) {
  absl::StrAppend(&out, absl::StrFormat("%-15s %s\n", label, value));
}

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

// Rows of cells as text columns, each as wide as its widest cell: the
// columns in `right_aligned` (numbers) align right, the others left; each
// line starts with `indent`, cells are separated by `gap`, and trailing
// spaces are trimmed.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows,
                        const std::set<size_t>& right_aligned,
                        absl::string_view indent, absl::string_view gap) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line(indent);
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(
          &line, i == 0 ? "" : gap,
          absl::StrFormat(right_aligned.count(i) > 0 ? "%*s" : "%-*s",
                          static_cast<int>(widths[i]), row[i]));
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"\n", " "}, {"\r", " "}});
}

// ---------------------------------------------------------------------------
// Element-wise comparison for `diff`.

struct ElementDiff {
  uint64_t differing = 0;
  double max_abs = 0;  // NaN when a NaN met a number.
  bool integral = false;
};

template <typename T, typename ToDouble>
void CompareFloats(absl::Span<const char> a, absl::Span<const char> b,
                   ToDouble to_double, ElementDiff& diff) {
  size_t count = a.size() / sizeof(T);
  for (size_t i = 0; i < count; ++i) {
    T raw_a, raw_b;
    std::memcpy(&raw_a, a.data() + i * sizeof(T), sizeof(T));
    std::memcpy(&raw_b, b.data() + i * sizeof(T), sizeof(T));
    double x = to_double(raw_a), y = to_double(raw_b);
    if (x == y || (std::isnan(x) && std::isnan(y))) continue;
    ++diff.differing;
    double delta = std::fabs(x - y);
    if (std::isnan(delta) || std::isnan(diff.max_abs)) {
      diff.max_abs = NAN;
    } else {
      diff.max_abs = std::max(diff.max_abs, delta);
    }
  }
}

template <typename T>
void CompareIntegers(absl::Span<const char> a, absl::Span<const char> b,
                     ElementDiff& diff) {
  diff.integral = true;
  size_t count = a.size() / sizeof(T);
  for (size_t i = 0; i < count; ++i) {
    T x, y;
    std::memcpy(&x, a.data() + i * sizeof(T), sizeof(T));
    std::memcpy(&y, b.data() + i * sizeof(T), sizeof(T));
    if (x == y) continue;
    ++diff.differing;
    // long double holds any int64 difference exactly enough to rank it.
    long double delta =
        std::fabs(static_cast<long double>(x) - static_cast<long double>(y));
    diff.max_abs = std::max(diff.max_abs, static_cast<double>(delta));
  }
}

ElementDiff CompareElements(proto::DType dtype, absl::Span<const char> a,
                            absl::Span<const char> b) {
  ElementDiff diff;
  switch (dtype) {
    case proto::FLOAT32:
      CompareFloats<float>(
          a, b, [](float v) { return double{v}; }, diff);
      break;
    case proto::FLOAT64:
      CompareFloats<double>(
          a, b, [](double v) { return v; }, diff);
      break;
    case proto::FLOAT16:
      CompareFloats<uint16_t>(
          a, b, [](uint16_t v) { return double{HalfToFloat(v)}; }, diff);
      break;
    case proto::BFLOAT16:
      CompareFloats<uint16_t>(
          a, b, [](uint16_t v) { return double{BFloat16ToFloat(v)}; }, diff);
      break;
    case proto::INT8:
      CompareIntegers<int8_t>(a, b, diff);
      break;
    case proto::UINT8:
      CompareIntegers<uint8_t>(a, b, diff);
      break;
    case proto::BOOL:
      CompareIntegers<uint8_t>(a, b, diff);
      break;
    case proto::INT16:
      CompareIntegers<int16_t>(a, b, diff);
      break;
    case proto::INT32:
      CompareIntegers<int32_t>(a, b, diff);
      break;
    case proto::INT64:
      CompareIntegers<int64_t>(a, b, diff);
      break;
    default:
      break;
  }
  return diff;
}

uint64_t ElementCount(const proto::TensorEntry& entry) {
  size_t element = ElementSize(entry.dtype());
  return element == 0 ? 0 : entry.size_bytes() / element;
}

}  // namespace

// ---------------------------------------------------------------------------

float HalfToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t result;
  if (exponent == 0x1f) {  // Infinity or NaN.
    result = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // Normal.
    result = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // Signed zero.
    result = sign;
  } else {  // Subnormal: normalize.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    result =
        sign | (static_cast<uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &result, sizeof(value));
  return value;
}

float BFloat16ToFloat(uint16_t bits) {
  uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

std::string ResolveUserPath(const std::string& path) {
  return base::ResolveUserPath(path);
}

absl::StatusOr<std::string> InspectText(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      OpenCheckpoint(path);
  if (!reader.ok()) return reader.status();
  const proto::Manifest& manifest = (*reader)->manifest();
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
  Line(out, "tensors",
       absl::StrCat(manifest.tensors_size(), " (", HumanBytes(tensor_bytes),
                    ")"));
  // SIZE and OFFSET align right.
  absl::StrAppend(&out, FormatTable(rows, {3, 4}, "  ", " "));
  return out;
}

absl::StatusOr<std::string> InspectJson(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      OpenCheckpoint(path);
  if (!reader.ok()) return reader.status();
  const proto::Manifest& manifest = (*reader)->manifest();
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

absl::StatusOr<std::string> Verify(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      OpenCheckpoint(path);
  if (!reader.ok()) return reader.status();
  if (absl::Status status = (*reader)->VerifyAll(); !status.ok()) {
    return status;
  }
  uint64_t bytes = 0;
  for (const proto::TensorEntry& entry : (*reader)->manifest().tensors()) {
    bytes += entry.size_bytes();
  }
  return absl::StrCat("OK: ", (*reader)->manifest().tensors_size(),
                      " tensors, ", bytes, " bytes verified\n");
}

absl::StatusOr<std::string> ListRun(const std::string& run_dir) {
  if (!Exists(run_dir)) {
    return absl::NotFoundError(
        absl::StrCat(run_dir, ": no such file or directory"));
  }
  if (!IsDirectory(run_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat(run_dir, ": not a run directory"));
  }
  if (Exists(absl::StrCat(run_dir, "/", kManifestFileName))) {
    return absl::InvalidArgumentError(absl::StrCat(
        run_dir,
        ": is a checkpoint, not a run directory (try `ckpt inspect`)"));
  }
  absl::StatusOr<std::vector<CheckpointEntry>> entries =
      ListRunDirectory(run_dir);
  if (!entries.ok()) return entries.status();
  if (entries->empty())
    return absl::StrCat("no checkpoints in ", run_dir, "\n");
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "EPOCH", "STEP", "METRIC", ""}};
  std::string best = "-", last = "-";
  for (const CheckpointEntry& entry : *entries) {
    std::vector<std::string> marks;
    if (entry.is_best) {
      marks.push_back("best");
      best = entry.name;
    }
    if (entry.is_last) {
      marks.push_back("last");
      last = entry.name;
    }
    rows.push_back(
        {entry.name, absl::StrCat(entry.epoch), absl::StrCat(entry.step),
         entry.metric_name.empty()
             ? "-"
             : absl::StrCat(entry.metric_name, "=", FormatDouble(entry.metric)),
         absl::StrJoin(marks, ",")});
  }
  // EPOCH and STEP align right.
  std::string out = FormatTable(rows, {1, 2}, "", "  ");
  absl::StrAppend(&out, entries->size(), " checkpoint(s); best: ", best,
                  "; last: ", last, "\n");
  return out;
}

absl::StatusOr<DiffReport> Diff(const std::string& a, const std::string& b) {
  ReaderOptions options;
  options.use_mmap = true;  // Compare in place; memory stays bounded.
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader_a =
      OpenCheckpoint(a, options);
  if (!reader_a.ok()) return reader_a.status();
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader_b =
      OpenCheckpoint(b, options);
  if (!reader_b.ok()) return reader_b.status();
  std::set<std::string> names;
  for (const auto& entry : (*reader_a)->manifest().tensors()) {
    names.insert(entry.name());
  }
  for (const auto& entry : (*reader_b)->manifest().tensors()) {
    names.insert(entry.name());
  }
  DiffReport report;
  int equal = 0, different = 0, changed = 0, only_a = 0, only_b = 0;
  absl::StrAppend(&report.text, "A: ", a, "\nB: ", b, "\n");
  for (const std::string& name : names) {
    const proto::TensorEntry* ea = (*reader_a)->FindTensor(name);
    const proto::TensorEntry* eb = (*reader_b)->FindTensor(name);
    if (eb == nullptr) {
      ++only_a;
      absl::StrAppend(&report.text, "- ", name, "  only in A\n");
      continue;
    }
    if (ea == nullptr) {
      ++only_b;
      absl::StrAppend(&report.text, "+ ", name, "  only in B\n");
      continue;
    }
    if (ea->dtype() != eb->dtype()) {
      ++changed;
      absl::StrAppend(&report.text, "! ", name, "  dtype ",
                      DTypeName(ea->dtype()), " -> ", DTypeName(eb->dtype()),
                      "\n");
      continue;
    }
    if (FormatShape(*ea) != FormatShape(*eb)) {
      ++changed;
      absl::StrAppend(&report.text, "! ", name, "  shape ", FormatShape(*ea),
                      " -> ", FormatShape(*eb), "\n");
      continue;
    }
    absl::StatusOr<absl::Span<const char>> bytes_a =
        (*reader_a)->MappedTensor(*ea);
    if (!bytes_a.ok()) return bytes_a.status();
    absl::StatusOr<absl::Span<const char>> bytes_b =
        (*reader_b)->MappedTensor(*eb);
    if (!bytes_b.ok()) return bytes_b.status();
    // std::equal, not memcmp: a zero-size tensor's span may have no data.
    if (std::equal(bytes_a->begin(), bytes_a->end(), bytes_b->begin(),
                   bytes_b->end())) {
      ++equal;
      absl::StrAppend(&report.text, "= ", name, "\n");
      continue;
    }
    ++different;
    ElementDiff diff = CompareElements(ea->dtype(), *bytes_a, *bytes_b);
    if (diff.differing == 0) {
      absl::StrAppend(&report.text, "~ ", name,
                      "  bit patterns differ, values equal (signed zeros or "
                      "NaN payloads)\n");
      continue;
    }
    std::string max_abs = std::isnan(diff.max_abs) ? "nan"
                          : diff.integral
                              ? absl::StrFormat("%.0f", diff.max_abs)
                              : absl::StrFormat("%.6g", diff.max_abs);
    absl::StrAppend(&report.text, "~ ", name, "  max abs diff ", max_abs, ", ",
                    diff.differing, " of ", ElementCount(*ea),
                    " elements differ\n");
  }
  report.identical =
      different == 0 && changed == 0 && only_a == 0 && only_b == 0;
  absl::StrAppend(&report.text, names.size(), " tensors: ", equal, " equal, ",
                  different, " different, ", changed, " shape/dtype changed, ",
                  only_a, " only in A, ", only_b, " only in B\n");
  return report;
}

absl::StatusOr<std::string> Digest(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      OpenCheckpoint(path);
  if (!reader.ok()) return reader.status();
  absl::StatusOr<std::string> digest = TensorDigest(**reader);
  if (!digest.ok()) return digest.status();
  return *digest + "\n";
}

int RunCkpt(const std::vector<std::string>& args, const Flags& flags,
            std::ostream& out, std::ostream& err) {
  auto fail = [&err](int code, absl::string_view message) {
    err << "ckpt: error: " << OneLine(message) << "\n";
    return code;
  };
  if (args.empty()) {
    return fail(kExitUsage,
                "missing command: inspect, verify, ls, diff, digest or upgrade "
                "(see --help)");
  }
  const std::string& command = args[0];
  const bool two_paths = command == "diff" || command == "upgrade";
  size_t expected = two_paths ? 3 : 2;
  bool known = command == "inspect" || command == "verify" || command == "ls" ||
               command == "diff" || command == "digest" || command == "upgrade";
  if (!known) {
    return fail(kExitUsage,
                absl::StrCat("unknown command '", command,
                             "': expected inspect, verify, ls, diff, digest or "
                             "upgrade"));
  }
  if (args.size() != expected) {
    return fail(kExitUsage,
                absl::StrCat(command, " takes ",
                             command == "diff"      ? "two paths (A B)"
                             : command == "upgrade" ? "two paths (OLD NEW)"
                             : command == "ls"      ? "one run directory"
                                                    : "one checkpoint path",
                             ", got ", args.size() - 1, " argument(s)"));
  }
  if (flags.json && command != "inspect") {
    return fail(kExitUsage, "--json applies to inspect only");
  }
  std::string path = ResolveUserPath(args[1]);
  if (command == "diff") {
    absl::StatusOr<DiffReport> report = Diff(path, ResolveUserPath(args[2]));
    if (!report.ok()) return fail(kExitUsage, report.status().message());
    out << report->text;
    return report->identical ? kExitOk : kExitFailure;
  }
  if (command == "upgrade") {
    const std::string new_path = ResolveUserPath(args[2]);
    absl::StatusOr<int> copied = UpgradeCheckpoint(path, new_path);
    if (!copied.ok()) return fail(kExitFailure, copied.status().message());
    out << "OK: " << *copied << " tensors verified and written to " << new_path
        << " in format version " << kFormatVersion << "\n";
    return kExitOk;
  }
  absl::StatusOr<std::string> text;
  if (command == "inspect") {
    text = flags.json ? InspectJson(path) : InspectText(path);
  } else if (command == "verify") {
    text = Verify(path);
  } else if (command == "ls") {
    text = ListRun(path);
  } else {
    text = Digest(path);
  }
  if (!text.ok()) return fail(kExitFailure, text.status().message());
  out << *text;
  return kExitOk;
}

}  // namespace ckpt
}  // namespace checkpoint
