// Text helpers shared by the `ckpt` subcommands (ckpt_commands.h):
// opening a checkpoint with messages for people, and formatting bytes,
// shapes, numbers, times and tables. Internal to //checkpoint:ckpt_commands.
#ifndef CHECKPOINT_CKPT_TEXT_H_
#define CHECKPOINT_CKPT_TEXT_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/interop/tensor_source.h"
#include "checkpoint/manifest.pb.h"
#include "checkpoint/reader.h"

namespace checkpoint {
namespace ckpt {

// "1.5 MiB (1572864 bytes)"-style sizes.
std::string HumanBytes(uint64_t bytes);

std::string FormatShape(const proto::TensorEntry& entry);

// Shortest text that reads back as `value`.
std::string FormatDouble(double value);

std::string ModeName(proto::MonitoredMetric::Mode mode);

bool IsDirectory(const std::string& path);

bool Exists(const std::string& path);

// Opens a checkpoint with messages that say what the user got wrong.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(
    const std::string& path, ReaderOptions options = {});

// Opens any checkpoint (interop/tensor_source.h), with OpenCheckpoint's
// messages when a directory is not one of ours.
absl::StatusOr<std::unique_ptr<interop::TensorSource>> OpenSource(
    const std::string& path, const interop::SourceOptions& options);

// "2026-12-02 15:04:05.123456 UTC", or "-" when unset.
std::string CreatedTime(int64_t unix_micros);

std::string OrDash(const std::string& text);

// Appends "label          value\n".
void Line(std::string& out, absl::string_view label, absl::string_view value);

// Rows of cells as text columns, each as wide as its widest cell: the
// columns in `right_aligned` (numbers) align right, the others left; each
// line starts with `indent`, cells are separated by `gap`, and trailing
// spaces are trimmed.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows,
                        const std::set<size_t>& right_aligned,
                        absl::string_view indent, absl::string_view gap);

// `text` with line breaks as spaces, for one-line error messages.
std::string OneLine(absl::string_view text);

// A protobuf or std map's entries sorted by key, for stable output.
template <typename Map>
std::vector<std::pair<std::string, typename Map::mapped_type>> Sorted(
    const Map& map) {
  std::vector<std::pair<std::string, typename Map::mapped_type>> items(
      map.begin(), map.end());
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return items;
}

}  // namespace ckpt
}  // namespace checkpoint

#endif  // CHECKPOINT_CKPT_TEXT_H_
