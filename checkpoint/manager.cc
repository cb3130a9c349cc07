#include "checkpoint/manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <system_error>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "checkpoint/run_directory.h"
#include "checkpoint/writer.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/base/status.h"
#include "tools/base/stop_point.h"
#include "tools/base/warnings.h"

namespace checkpoint {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr char kLinkTemporaryPrefix[] = ".tmp-link-";
constexpr char kDeleteTemporaryPrefix[] = ".tmp-delete-";

using base::Annotate;
using base::JoinPath;

}  // namespace

CheckpointManager::CheckpointManager(std::string run_dir, Options options,
                                     NameTemplate name_template)
    : run_dir_(std::move(run_dir)),
      options_(std::move(options)),
      name_template_(std::move(name_template)) {}

absl::StatusOr<std::unique_ptr<CheckpointManager>> CheckpointManager::Open(
    std::string run_dir, Options options) {
  if (run_dir.empty()) {
    return absl::InvalidArgumentError("checkpoint manager: empty run_dir");
  }
  while (run_dir.size() > 1 && run_dir.back() == '/') run_dir.pop_back();
  if (!options.monitor.empty() && options.mode != proto::MonitoredMetric::MIN &&
      options.mode != proto::MonitoredMetric::MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint manager: monitor '", options.monitor,
                     "' needs mode MIN or MAX"));
  }
  if (options.keep_last < -1 || options.keep_top_k < -1) {
    return absl::InvalidArgumentError(
        "checkpoint manager: keep_last and keep_top_k must be >= -1");
  }
  absl::StatusOr<NameTemplate> name_template =
      NameTemplate::Parse(options.name_template);
  if (!name_template.ok()) return name_template.status();

  std::error_code error;
  std::filesystem::create_directories(run_dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("creating run directory ", run_dir,
                                            ": ", error.message()));
  }

  // Temporaries of writers, link switches and deletions killed mid-way;
  // those of live processes (another trainer's save in progress) stay.
  absl::StatusOr<int> removed = RemoveStaleTemporaries(run_dir);
  if (!removed.ok()) {
    return Annotate(removed.status(),
                    absl::StrCat("opening run directory ", run_dir));
  }

  std::unique_ptr<CheckpointManager> manager(new CheckpointManager(
      std::move(run_dir), std::move(options), *std::move(name_template)));
  {
    absl::MutexLock lock(&manager->mutex_);
    if (absl::Status status = manager->Scan(); !status.ok()) return status;
  }
  return manager;
}

absl::Status CheckpointManager::Scan() {
  absl::StatusOr<std::vector<ScannedCheckpoint>> scanned =
      ScanCheckpoints(run_dir_);
  if (!scanned.ok()) return scanned.status();
  entries_.clear();
  for (ScannedCheckpoint& checkpoint : *scanned) {
    CheckpointEntry entry = std::move(checkpoint.entry);
    entry.metric_name = options_.monitor;
    entry.metric = MonitoredValue(checkpoint.metadata, options_.monitor);
    entries_.push_back(std::move(entry));
  }
  std::sort(entries_.begin(), entries_.end(), StepOrder);

  auto known = [this](const std::string& name) {
    return !name.empty() && std::any_of(entries_.begin(), entries_.end(),
                                        [&](const CheckpointEntry& e) {
                                          return e.name == name;
                                        });
  };
  std::string linked_last = LinkedName(run_dir_, kLastLinkName);
  last_name_ = known(linked_last) ? linked_last
               : entries_.empty() ? ""
                                  : entries_.back().name;
  if (!last_name_.empty() && linked_last != last_name_) {
    if (absl::Status status = PointLink(kLastLinkName, last_name_);
        !status.ok()) {
      return status;
    }
  }

  std::string linked_best = LinkedName(run_dir_, kBestLinkName);
  if (options_.monitor.empty()) {
    // No metric to judge by: keep (and protect) whatever `best` points at.
    best_name_ = known(linked_best) ? linked_best : "";
    return absl::OkStatus();
  }
  RecomputeBest();
  if (!best_name_.empty() && linked_best != best_name_) {
    return PointLink(kBestLinkName, best_name_);
  }
  return absl::OkStatus();
}

void CheckpointManager::RecomputeBest() {
  best_name_.clear();
  double best = kNaN;
  for (const CheckpointEntry& entry : entries_) {  // Ascending step.
    if (IsImprovement(entry.metric, best, options_.mode)) {
      best = entry.metric;
      best_name_ = entry.name;
    }
  }
}

absl::Status CheckpointManager::PointLink(const char* link_name,
                                          const std::string& target) {
  std::string temporary =
      JoinPath(run_dir_, absl::StrCat(kLinkTemporaryPrefix, link_name, "-",
                                      ::getpid(), "-", temporary_counter_++));
  std::string link_path = JoinPath(run_dir_, link_name);
  ::unlink(temporary.c_str());
  if (::symlink(target.c_str(), temporary.c_str()) != 0) {
    return base::ErrnoToStatus(errno, "creating symlink", temporary);
  }
  base::StopPoint("manager.link_temporary_created");
  if (::rename(temporary.c_str(), link_path.c_str()) != 0) {
    int error_number = errno;
    ::unlink(temporary.c_str());
    return base::ErrnoToStatus(
        error_number,
        absl::StrCat("pointing ", link_name, " at ", target, ": renaming"),
        link_path);
  }
  return base::FsyncPath(run_dir_);
}

bool CheckpointManager::NameTaken(const std::string& name) const {
  if (reserved_.count(name) > 0) return true;
  for (const CheckpointEntry& entry : entries_) {
    if (entry.name == name) return true;
  }
  struct stat info;
  return ::lstat(JoinPath(run_dir_, name).c_str(), &info) == 0;
}

absl::StatusOr<std::string> CheckpointManager::PathForNew(
    const proto::Metadata& metadata) {
  absl::StatusOr<std::string> base =
      name_template_.Render(metadata, options_.monitor);
  if (!base.ok()) return base.status();
  absl::MutexLock lock(&mutex_);
  std::string name = *base;
  for (int version = 1; NameTaken(name); ++version) {
    name = absl::StrCat(*base, "-v", version);
  }
  reserved_.insert(name);
  return JoinPath(run_dir_, name);
}

absl::Status CheckpointManager::OnCommitted(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  std::string name = std::filesystem::path(trimmed).filename().string();
  std::string canonical_path = JoinPath(run_dir_, name);
  auto context = [&] { return absl::StrCat("recording checkpoint ", path); };
  struct stat given, inside;
  if (name.empty() || name[0] == '.' || name == kBestLinkName ||
      name == kLastLinkName || ::stat(trimmed.c_str(), &given) != 0 ||
      ::stat(canonical_path.c_str(), &inside) != 0 ||
      given.st_dev != inside.st_dev || given.st_ino != inside.st_ino) {
    return absl::InvalidArgumentError(absl::StrCat(
        context(), ": not a checkpoint directory inside ", run_dir_));
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(canonical_path);
  if (!reader.ok()) return Annotate(reader.status(), context());
  const proto::Metadata& metadata = (*reader)->manifest().metadata();
  CheckpointEntry entry;
  entry.name = name;
  entry.path = canonical_path;
  entry.epoch = metadata.progress().epoch();
  entry.step = metadata.progress().global_step();
  entry.metric_name = options_.monitor;
  entry.metric = MonitoredValue(metadata, options_.monitor);

  absl::MutexLock lock(&mutex_);
  reserved_.erase(name);
  bool replaced = false;
  for (CheckpointEntry& existing : entries_) {
    if (existing.name == name) {
      existing = entry;
      replaced = true;
    }
  }
  if (!replaced) {
    entries_.push_back(entry);
    std::sort(entries_.begin(), entries_.end(), StepOrder);
  }

  // Links first, deletions after: a crash in between leaves extra
  // checkpoints, never a link to a deleted one.
  base::StopPoint("manager.committed");
  if (absl::Status status = PointLink(kLastLinkName, name); !status.ok()) {
    return Annotate(status, context());
  }
  last_name_ = name;
  base::StopPoint("manager.last_switched");
  if (!options_.monitor.empty()) {
    std::string previous_best = best_name_;
    if (replaced && name == best_name_) {
      RecomputeBest();  // The best was rewritten; its metric may be worse.
    } else {
      double incumbent = kNaN;
      for (const CheckpointEntry& existing : entries_) {
        if (existing.name == best_name_) incumbent = existing.metric;
      }
      if (IsImprovement(entry.metric, incumbent, options_.mode)) {
        best_name_ = name;
      }
    }
    if (!best_name_.empty() && best_name_ != previous_best) {
      if (absl::Status status = PointLink(kBestLinkName, best_name_);
          !status.ok()) {
        best_name_ = previous_best;
        return Annotate(status, context());
      }
    }
  }
  base::StopPoint("manager.links_switched");
  if (absl::Status status = ApplyRetention(); !status.ok()) {
    return Annotate(status, context());
  }
  return absl::OkStatus();
}

absl::Status CheckpointManager::ApplyRetention() {
  for (CheckpointEntry& entry : entries_) {
    entry.is_best = entry.name == best_name_;
    entry.is_last = entry.name == last_name_;
  }
  std::vector<std::string> victims = SelectForDeletion(
      entries_, options_.keep_last,
      options_.monitor.empty() ? -1 : options_.keep_top_k, options_.mode);
  if (victims.empty()) return absl::OkStatus();
  // Renaming first takes each victim out of the set of checkpoints at once:
  // a crash during the recursive removal leaves a `.tmp-*` directory for
  // the next Open() to clean, never a half-deleted checkpoint.
  std::vector<std::string> doomed;
  absl::Status result = absl::OkStatus();
  for (const std::string& victim : victims) {
    std::string from = JoinPath(run_dir_, victim);
    std::string to =
        JoinPath(run_dir_, absl::StrCat(kDeleteTemporaryPrefix, victim, "-",
                                        ::getpid(), "-", temporary_counter_++));
    if (::rename(from.c_str(), to.c_str()) != 0) {
      if (result.ok())
        result = base::ErrnoToStatus(errno, "retiring checkpoint", from);
      continue;
    }
    doomed.push_back(to);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                  [&](const CheckpointEntry& e) {
                                    return e.name == victim;
                                  }),
                   entries_.end());
  }
  if (absl::Status status = base::FsyncPath(run_dir_);
      !status.ok() && result.ok()) {
    result = status;
  }
  base::StopPoint("manager.victims_renamed");
  for (const std::string& path : doomed) {
    std::error_code error;
    std::filesystem::remove_all(path, error);
    if (error && result.ok()) {
      result = absl::InternalError(
          absl::StrCat("removing ", path, ": ", error.message()));
    }
  }
  return result;
}

std::string CheckpointManager::BestPath() const {
  absl::MutexLock lock(&mutex_);
  return best_name_.empty() ? "" : JoinPath(run_dir_, best_name_);
}

std::string CheckpointManager::LastPath() const {
  absl::MutexLock lock(&mutex_);
  return last_name_.empty() ? "" : JoinPath(run_dir_, last_name_);
}

std::vector<CheckpointEntry> CheckpointManager::List() const {
  absl::MutexLock lock(&mutex_);
  std::vector<CheckpointEntry> entries = entries_;
  for (CheckpointEntry& entry : entries) {
    entry.is_best = entry.name == best_name_;
    entry.is_last = entry.name == last_name_;
  }
  return entries;
}

}  // namespace checkpoint
