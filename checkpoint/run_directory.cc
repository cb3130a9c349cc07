#include "checkpoint/run_directory.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/base/warnings.h"

namespace checkpoint {
namespace {

using base::JoinPath;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void Warn(absl::string_view message) {
  base::Warn(absl::StrCat("checkpoint manager: ", message));
}

// The target of the symlink at `link_path`, or "" when it is absent or not
// a symlink.
std::string ReadLinkTarget(const std::string& link_path) {
  char buffer[4096];
  ssize_t length = ::readlink(link_path.c_str(), buffer, sizeof(buffer));
  if (length <= 0 || static_cast<size_t>(length) >= sizeof(buffer)) return "";
  return std::string(buffer, static_cast<size_t>(length));
}

// Names in `run_dir` that may be checkpoints: directories (not symlinks)
// whose names do not start with '.'.
absl::StatusOr<std::vector<std::string>> CandidateNames(
    const std::string& run_dir) {
  DIR* directory = ::opendir(run_dir.c_str());
  if (directory == nullptr) {
    return base::ErrnoToStatus(errno, "listing run directory", run_dir);
  }
  std::vector<std::string> names;
  while (struct dirent* item = ::readdir(directory)) {
    std::string name = item->d_name;
    if (name.empty() || name[0] == '.' || name == kBestLinkName ||
        name == kLastLinkName) {
      continue;
    }
    struct stat info;
    if (::lstat(JoinPath(run_dir, name).c_str(), &info) != 0) continue;
    if (!S_ISDIR(info.st_mode)) continue;
    names.push_back(std::move(name));
  }
  ::closedir(directory);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

// The checkpoint name a link in the run directory points at: its target's
// last component. Links the manager writes are plain names; an absolute
// target written by hand only counts if it lies inside the run directory.
std::string LinkedName(const std::string& run_dir, const char* link_name) {
  std::string target = ReadLinkTarget(JoinPath(run_dir, link_name));
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  if (target.empty()) return "";
  if (target.find('/') == std::string::npos) return target;
  std::error_code error;
  std::filesystem::path resolved = std::filesystem::weakly_canonical(
      std::filesystem::path(run_dir) / target, error);
  std::filesystem::path run = std::filesystem::weakly_canonical(run_dir, error);
  if (error || resolved.parent_path() != run) return "";
  return resolved.filename().string();
}

// Every checkpoint of `run_dir` that opens; a corrupt one is skipped with a
// warning naming it (and left on disk for a person to look at).
absl::StatusOr<std::vector<ScannedCheckpoint>> ScanCheckpoints(
    const std::string& run_dir) {
  absl::StatusOr<std::vector<std::string>> names = CandidateNames(run_dir);
  if (!names.ok()) return names.status();
  std::vector<ScannedCheckpoint> scanned;
  for (const std::string& name : *names) {
    std::string path = JoinPath(run_dir, name);
    absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
        CheckpointReader::Open(path);
    if (!reader.ok()) {
      Warn(absl::StrCat("skipping corrupt checkpoint ", path, ": ",
                        reader.status().message()));
      continue;
    }
    ScannedCheckpoint checkpoint;
    checkpoint.metadata = (*reader)->manifest().metadata();
    checkpoint.entry.name = name;
    checkpoint.entry.path = path;
    checkpoint.entry.epoch = checkpoint.metadata.progress().epoch();
    checkpoint.entry.step = checkpoint.metadata.progress().global_step();
    scanned.push_back(std::move(checkpoint));
  }
  return scanned;
}

absl::StatusOr<std::vector<CheckpointEntry>> ListRunDirectory(
    const std::string& run_dir) {
  absl::StatusOr<std::vector<ScannedCheckpoint>> scanned =
      ScanCheckpoints(run_dir);
  if (!scanned.ok()) return scanned.status();
  std::string best = LinkedName(run_dir, kBestLinkName);
  std::string last = LinkedName(run_dir, kLastLinkName);
  std::vector<CheckpointEntry> entries;
  for (ScannedCheckpoint& checkpoint : *scanned) {
    const proto::Metadata& metadata = checkpoint.metadata;
    CheckpointEntry entry = std::move(checkpoint.entry);
    const std::string& name = entry.name;
    entry.metric_name = metadata.monitored().name();
    entry.metric =
        entry.metric_name.empty() ? kNaN : metadata.monitored().value();
    entry.is_best = name == best;
    entry.is_last = name == last;
    entries.push_back(std::move(entry));
  }
  std::sort(entries.begin(), entries.end(), StepOrder);
  return entries;
}

namespace {

absl::Status OpenAndVerify(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(path);
  if (!reader.ok()) return reader.status();
  return (*reader)->VerifyAll();
}

}  // namespace

absl::StatusOr<std::string> FindResumeCheckpoint(const std::string& run_dir) {
  struct stat info;
  if (::stat(run_dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return absl::NotFoundError(absl::StrCat("no run directory at ", run_dir));
  }
  std::set<std::string> known_bad;
  std::string last = LinkedName(run_dir, kLastLinkName);
  if (!last.empty()) {
    std::string path = JoinPath(run_dir, last);
    absl::Status status = OpenAndVerify(path);
    if (status.ok()) return path;
    Warn(absl::StrCat("skipping corrupt checkpoint ", path, " (", run_dir,
                      "/last): ", status.message()));
    known_bad.insert(last);
  }
  // The same scan as the manager's; a checkpoint that does not open is
  // skipped there, with its warning.
  absl::StatusOr<std::vector<ScannedCheckpoint>> scanned =
      ScanCheckpoints(run_dir);
  if (!scanned.ok()) return scanned.status();
  std::vector<std::pair<int64_t, std::string>> by_step;
  for (const ScannedCheckpoint& checkpoint : *scanned) {
    if (known_bad.count(checkpoint.entry.name) > 0) continue;
    by_step.emplace_back(checkpoint.entry.step, checkpoint.entry.name);
  }
  std::sort(by_step.rbegin(), by_step.rend());
  for (const auto& [step, name] : by_step) {
    std::string path = JoinPath(run_dir, name);
    absl::Status status = OpenAndVerify(path);
    if (status.ok()) return path;
    Warn(absl::StrCat("skipping corrupt checkpoint ", path, ": ",
                      status.message()));
  }
  return absl::NotFoundError(absl::StrCat("no valid checkpoint in ", run_dir));
}

}  // namespace checkpoint
