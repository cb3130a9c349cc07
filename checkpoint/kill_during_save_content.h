// What the kill_during_save child writes at each step, shared with the test
// that checks what survived: tensor bytes and the metric are pure functions
// of the global step, so any checkpoint read back can be compared with what
// that step must have written.
#ifndef CHECKPOINT_KILL_DURING_SAVE_CONTENT_H_
#define CHECKPOINT_KILL_DURING_SAVE_CONTENT_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/manager.h"
#include "checkpoint/manifest.pb.h"

namespace checkpoint {
namespace kill_during_save {

struct TensorSpec {
  const char* name;
  proto::DType dtype;
  std::vector<int64_t> shape;
};

// About 3 MiB per checkpoint: large enough that a kill often lands inside
// a data write or an fsync, small enough for dozens of saves in seconds.
inline std::vector<TensorSpec> Tensors() {
  return {
      {"layer0.weight", proto::FLOAT32, {512, 1024}},
      {"layer1.bias", proto::INT32, {256 * 1024}},
      {"step", proto::INT64, {1}},
  };
}

// Bytes of tensor `index` at `step`: a different word pattern per step and
// tensor, so a torn or stale write never matches by accident.
inline std::string ExpectedBytes(int64_t step, size_t index,
                                 size_t size_bytes) {
  std::string bytes(size_bytes, '\0');
  if (index == 2) {
    std::memcpy(bytes.data(), &step, sizeof(step));
    return bytes;
  }
  uint64_t state = static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull +
                   index * 0xBF58476D1CE4E5B9ull + 1;
  for (size_t offset = 0; offset + 4 <= size_bytes; offset += 4) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    uint32_t word = static_cast<uint32_t>(state);
    std::memcpy(bytes.data() + offset, &word, sizeof(word));
  }
  return bytes;
}

// Not monotonic and periodic: improvements, ties and regressions all occur.
inline double MetricForStep(int64_t step) {
  return static_cast<double>((step * 37) % 17) / 17.0;
}

inline CheckpointManager::Options ManagerOptions() {
  CheckpointManager::Options options;
  options.monitor = "val_loss";
  options.mode = proto::MonitoredMetric::MIN;
  options.keep_last = 2;
  options.keep_top_k = 2;
  options.name_template =
      "epoch={epoch:03}-step={step:06}-{monitor}={value:.4f}";
  return options;
}

inline proto::Metadata MetadataForStep(int64_t step) {
  proto::Metadata metadata;
  metadata.mutable_progress()->set_epoch(step / 10);
  metadata.mutable_progress()->set_global_step(step);
  metadata.mutable_monitored()->set_name("val_loss");
  metadata.mutable_monitored()->set_mode(proto::MonitoredMetric::MIN);
  metadata.mutable_monitored()->set_value(MetricForStep(step));
  (*metadata.mutable_metrics())["val_loss"] = MetricForStep(step);
  return metadata;
}

}  // namespace kill_during_save
}  // namespace checkpoint

#endif  // CHECKPOINT_KILL_DURING_SAVE_CONTENT_H_
