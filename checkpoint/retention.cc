#include "checkpoint/retention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

namespace checkpoint {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

bool StepOrder(const CheckpointEntry& a, const CheckpointEntry& b) {
  if (a.step != b.step) return a.step < b.step;
  return a.name < b.name;
}

double MonitoredValue(const proto::Metadata& metadata,
                      absl::string_view monitor) {
  if (monitor.empty()) return kNaN;
  if (metadata.has_monitored() && metadata.monitored().name() == monitor) {
    return metadata.monitored().value();
  }
  auto found = metadata.metrics().find(std::string(monitor));
  return found == metadata.metrics().end() ? kNaN : found->second;
}

bool IsImprovement(double candidate, double incumbent,
                   proto::MonitoredMetric::Mode mode) {
  if (std::isnan(candidate)) return false;
  if (std::isnan(incumbent)) return true;
  return mode == proto::MonitoredMetric::MAX ? candidate > incumbent
                                             : candidate < incumbent;
}

std::vector<std::string> SelectForDeletion(
    const std::vector<CheckpointEntry>& entries, int keep_last, int keep_top_k,
    proto::MonitoredMetric::Mode mode) {
  std::vector<const CheckpointEntry*> by_step;
  for (const CheckpointEntry& entry : entries) by_step.push_back(&entry);
  std::sort(by_step.begin(), by_step.end(),
            [](const CheckpointEntry* a, const CheckpointEntry* b) {
              return StepOrder(*a, *b);
            });
  std::set<std::string> kept;
  for (const CheckpointEntry* entry : by_step) {
    if (entry->is_best || entry->is_last) kept.insert(entry->name);
  }
  // -1 means "this rule is not set": with neither set everything stays;
  // with one set, that rule alone decides.
  if (keep_last < 0 && keep_top_k < 0) return {};
  for (int i = 0; i < keep_last && i < static_cast<int>(by_step.size()); ++i) {
    kept.insert(by_step[by_step.size() - 1 - i]->name);
  }
  std::vector<const CheckpointEntry*> ranked;
  for (const CheckpointEntry* entry : by_step) {
    if (!std::isnan(entry->metric)) ranked.push_back(entry);
  }
  // stable_sort over step order: among equal metrics the older ranks first,
  // like `best` itself.
  std::stable_sort(ranked.begin(), ranked.end(),
                   [mode](const CheckpointEntry* a, const CheckpointEntry* b) {
                     return IsImprovement(a->metric, b->metric, mode);
                   });
  for (int i = 0; i < keep_top_k && i < static_cast<int>(ranked.size()); ++i) {
    kept.insert(ranked[i]->name);
  }
  std::vector<std::string> victims;
  for (const CheckpointEntry* entry : by_step) {
    if (kept.count(entry->name) == 0) victims.push_back(entry->name);
  }
  return victims;
}

}  // namespace checkpoint
