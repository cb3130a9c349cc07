// Which checkpoints of a run are best, and which old ones retention deletes:
// pure functions of the checkpoints' steps and metrics. Torch-free, no I/O.
#ifndef CHECKPOINT_RETENTION_H_
#define CHECKPOINT_RETENTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"

namespace checkpoint {

// The value of `monitor` recorded in `metadata`: Metadata.monitored.value
// when Metadata.monitored.name is `monitor`, else Metadata.metrics[monitor],
// else NaN (a checkpoint without the metric never becomes best).
double MonitoredValue(const proto::Metadata& metadata,
                      absl::string_view monitor);

// Whether `candidate` strictly beats `incumbent` under `mode`. NaN never
// improves; any finite value (or infinity) beats a NaN incumbent; a tie
// keeps the incumbent.
bool IsImprovement(double candidate, double incumbent,
                   proto::MonitoredMetric::Mode mode);

// One checkpoint directory of a run.
struct CheckpointEntry {
  std::string name;  // Directory name inside the run directory.
  std::string path;  // RUN_DIR/name.
  int64_t epoch = 0;
  int64_t step = 0;
  std::string metric_name;
  double metric = 0;  // NaN when the checkpoint lacks the metric.
  bool is_best = false;
  bool is_last = false;
};

// Retention: names of the `entries` that neither keep rule nor the
// best/last protection keeps. `keep_last` keeps the N highest steps,
// `keep_top_k` the K best finite metrics under `mode` (ties by lower step);
// a checkpoint is kept when any set rule keeps it. -1 leaves a rule unset:
// with both unset everything is kept, with one unset the other alone
// decides. 0 keeps none beyond best and last. Entries flagged is_best or
// is_last are always kept.
std::vector<std::string> SelectForDeletion(
    const std::vector<CheckpointEntry>& entries, int keep_last, int keep_top_k,
    proto::MonitoredMetric::Mode mode);

// Ascending step, then name: the order checkpoints are listed and judged in.
bool StepOrder(const CheckpointEntry& a, const CheckpointEntry& b);

}  // namespace checkpoint

#endif  // CHECKPOINT_RETENTION_H_
