// RUN_DIR/metrics.jsonl: one JSON object per validation, appended as the
// run goes ({"epoch", "step", "train_loss", "val_loss", "val_acc", ...}).
// Torch-free. Both functions refuse a metrics.jsonl that is a symlink, FIFO
// or anything but a regular file, naming it.
#ifndef TRAINER_METRICS_LOG_H_
#define TRAINER_METRICS_LOG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace trainer {

std::string MetricsPath(const std::string& run_dir);

// A resumed run repeats what came after its checkpoint: drops the records
// with a step after `step`, so every step appears once. Rewritten
// atomically (the old file or the new one, never a mixture). OK when there
// is no file.
absl::Status TruncateMetricsAfter(const std::string& run_dir, int64_t step);

// Appends `record` as one line.
absl::Status AppendMetrics(const std::string& run_dir,
                           const nlohmann::json& record);

}  // namespace trainer

#endif  // TRAINER_METRICS_LOG_H_
