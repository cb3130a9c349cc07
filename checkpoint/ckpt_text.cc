#include "checkpoint/ckpt_text.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "checkpoint/name_template.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "tools/base/shape.h"

namespace checkpoint {
namespace ckpt {

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
    const std::string& path, ReaderOptions options) {
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

absl::StatusOr<std::unique_ptr<interop::TensorSource>> OpenSource(
    const std::string& path, const interop::SourceOptions& options) {
  if (!Exists(path)) {
    return absl::NotFoundError(
        absl::StrCat(path, ": no such file or directory"));
  }
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> source =
      interop::TensorSource::Open(path, options);
  if (!source.ok() && IsDirectory(path)) {
    absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
        OpenCheckpoint(path);
    if (!reader.ok()) return reader.status();
  }
  return source;
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

void Line(std::string& out, absl::string_view label, absl::string_view value) {
  absl::StrAppend(&out, absl::StrFormat("%-15s %s\n", label, value));
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

}  // namespace ckpt
}  // namespace checkpoint
