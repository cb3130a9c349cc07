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
#include "checkpoint/writer.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/base/status.h"
#include "tools/base/warnings.h"

namespace checkpoint {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr char kLinkTemporaryPrefix[] = ".tmp-link-";
constexpr char kDeleteTemporaryPrefix[] = ".tmp-delete-";

using base::Annotate;
using base::JoinPath;

void Warn(absl::string_view message) {
  base::Warn(absl::StrCat("checkpoint manager: ", message));
}

// Argument order of the callers below; one mapping for the whole project.
absl::Status ErrnoStatus(absl::string_view operation, const std::string& path,
                         int error_number) {
  return base::ErrnoToStatus(error_number, operation, path);
}

// The target of the symlink at `link_path`, or "" when it is absent or not
// a symlink.
std::string ReadLinkTarget(const std::string& link_path) {
  char buffer[4096];
  ssize_t length = ::readlink(link_path.c_str(), buffer, sizeof(buffer));
  if (length <= 0 || static_cast<size_t>(length) >= sizeof(buffer)) return "";
  return std::string(buffer, static_cast<size_t>(length));
}

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

// Names in `run_dir` that may be checkpoints: directories (not symlinks)
// whose names do not start with '.'.
absl::StatusOr<std::vector<std::string>> CandidateNames(
    const std::string& run_dir) {
  DIR* directory = ::opendir(run_dir.c_str());
  if (directory == nullptr) {
    return ErrnoStatus("listing run directory", run_dir, errno);
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

bool StepOrder(const CheckpointEntry& a, const CheckpointEntry& b) {
  if (a.step != b.step) return a.step < b.step;
  return a.name < b.name;
}

std::string FormatInteger(int64_t value, int width, bool zero_pad) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), zero_pad ? "%0*lld" : "%*lld",
                width < 0 ? 0 : width, static_cast<long long>(value));
  return buffer;
}

std::string FormatDouble(double value, char conversion, int precision) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[512];
  if (conversion == 'g') {
    std::snprintf(buffer, sizeof(buffer), "%g", value);
  } else {
    const char* format = conversion == 'e' ? "%.*e" : "%.*f";
    std::snprintf(buffer, sizeof(buffer), format, precision, value);
  }
  return buffer;
}

// Substituted text must stay inside one path component.
std::string SanitizeComponent(std::string text) {
  for (char& c : text) {
    if (c == '/' || c == '\0') c = '_';
  }
  return text;
}

}  // namespace

// ---------------------------------------------------------------------------
// NameTemplate

absl::StatusOr<NameTemplate> NameTemplate::Parse(absl::string_view text) {
  NameTemplate parsed;
  parsed.text_ = std::string(text);
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint name template '", text, "': ", why));
  };
  std::string literal;
  auto flush_literal = [&] {
    if (literal.empty()) return;
    Segment segment;
    segment.text = std::move(literal);
    parsed.segments_.push_back(std::move(segment));
    literal.clear();
  };
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      literal.push_back('{');
      i += 2;
      continue;
    }
    if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      literal.push_back('}');
      i += 2;
      continue;
    }
    if (c == '}') return invalid("unmatched '}' (write '}}' for a brace)");
    if (c == '/') return invalid("'/' is not allowed in a checkpoint name");
    if (c != '{') {
      literal.push_back(c);
      ++i;
      continue;
    }
    size_t close = text.find('}', i + 1);
    if (close == absl::string_view::npos) return invalid("unterminated '{'");
    absl::string_view field = text.substr(i + 1, close - i - 1);
    i = close + 1;
    if (field.find('{') != absl::string_view::npos) {
      return invalid("'{' inside a field");
    }
    absl::string_view spec;
    if (size_t colon = field.find(':'); colon != absl::string_view::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    if (field.empty()) return invalid("empty field name");
    Segment segment;
    segment.is_field = true;
    segment.text = std::string(field);
    if (field == "epoch" || field == "step") {
      segment.conversion = 'd';
      if (!spec.empty()) {
        int width = 0;
        if (!absl::c_all_of(spec, absl::ascii_isdigit) ||
            !absl::SimpleAtoi(spec, &width) || width > 32) {
          return invalid(absl::StrCat("field {", field, "} takes a width such ",
                                      "as 06, not '", spec, "'"));
        }
        segment.zero_pad = spec.size() > 1 && spec[0] == '0';
        segment.width_or_precision = width;
      }
    } else if (field == "monitor") {
      if (!spec.empty()) return invalid("field {monitor} takes no format");
      segment.conversion = 's';
    } else {
      segment.conversion = 'g';
      if (!spec.empty()) {
        int precision = 0;
        char conversion = spec.back();
        absl::string_view digits = spec.substr(1, spec.size() - 2);
        if (spec.size() < 3 || spec[0] != '.' ||
            (conversion != 'f' && conversion != 'e') ||
            !absl::c_all_of(digits, absl::ascii_isdigit) ||
            !absl::SimpleAtoi(digits, &precision) || precision > 17) {
          return invalid(absl::StrCat("field {", field,
                                      "} takes a format such as .4f or .3e, "
                                      "not '",
                                      spec, "'"));
        }
        segment.conversion = conversion;
        segment.width_or_precision = precision;
      }
    }
    flush_literal();
    parsed.segments_.push_back(std::move(segment));
  }
  flush_literal();
  if (parsed.segments_.empty()) return invalid("empty template");
  return parsed;
}

absl::StatusOr<std::string> NameTemplate::Render(
    const proto::Metadata& metadata, absl::string_view monitor) const {
  std::string name;
  for (const Segment& segment : segments_) {
    if (!segment.is_field) {
      name += segment.text;
    } else if (segment.text == "epoch") {
      name += FormatInteger(metadata.progress().epoch(),
                            segment.width_or_precision, segment.zero_pad);
    } else if (segment.text == "step") {
      name += FormatInteger(metadata.progress().global_step(),
                            segment.width_or_precision, segment.zero_pad);
    } else if (segment.text == "monitor") {
      name += SanitizeComponent(std::string(monitor));
    } else {
      double value;
      if (segment.text == "value") {
        value = MonitoredValue(metadata, monitor);
      } else {
        auto found = metadata.metrics().find(segment.text);
        value = found == metadata.metrics().end() ? kNaN : found->second;
      }
      name +=
          FormatDouble(value, segment.conversion, segment.width_or_precision);
    }
  }
  if (name.empty() || name[0] == '.' || name == kBestLinkName ||
      name == kLastLinkName) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint name template '", text_, "' renders '", name,
                     "', which is not a usable checkpoint name (empty, ",
                     "hidden, or a link name)"));
  }
  return name;
}

// ---------------------------------------------------------------------------
// Pure policy

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

// ---------------------------------------------------------------------------
// CheckpointManager

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

namespace {

struct ScannedCheckpoint {
  CheckpointEntry entry;  // name, path, epoch and step filled in
  proto::Metadata metadata;
};

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

}  // namespace

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
    return ErrnoStatus("creating symlink", temporary, errno);
  }
  if (::rename(temporary.c_str(), link_path.c_str()) != 0) {
    int error_number = errno;
    ::unlink(temporary.c_str());
    return ErrnoStatus(
        absl::StrCat("pointing ", link_name, " at ", target, ": renaming"),
        link_path, error_number);
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
  if (absl::Status status = PointLink(kLastLinkName, name); !status.ok()) {
    return Annotate(status, context());
  }
  last_name_ = name;
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
      if (result.ok()) result = ErrnoStatus("retiring checkpoint", from, errno);
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

// ---------------------------------------------------------------------------
// Read-only helpers

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
  absl::StatusOr<std::vector<std::string>> names = CandidateNames(run_dir);
  if (!names.ok()) return names.status();
  std::vector<std::pair<int64_t, std::string>> by_step;
  for (const std::string& name : *names) {
    if (known_bad.count(name) > 0) continue;
    std::string path = JoinPath(run_dir, name);
    absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
        CheckpointReader::Open(path);
    if (!reader.ok()) {
      Warn(absl::StrCat("skipping corrupt checkpoint ", path, ": ",
                        reader.status().message()));
      continue;
    }
    by_step.emplace_back(
        (*reader)->manifest().metadata().progress().global_step(), name);
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
