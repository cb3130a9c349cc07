#include "trainer/metrics_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tools/base/files.h"

namespace trainer {

std::string MetricsPath(const std::string& run_dir) {
  return run_dir + "/metrics.jsonl";
}

// A resumed run repeats what came after its checkpoint: drop those lines so
// every step appears once. Rewritten via a temporary and a rename.
absl::Status TruncateMetricsAfter(const std::string& run_dir, int64_t step) {
  const std::string path = MetricsPath(run_dir);
  // Metrics of a long run are megabytes at most; a FIFO or symlink planted
  // here is refused rather than followed or blocked on.
  absl::StatusOr<std::string> text =
      base::ReadRegularFile(path, /*max_bytes=*/uint64_t{1} << 30);
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  if (!text.ok()) return text.status();
  std::string kept;
  bool dropped = false;
  for (absl::string_view line :
       absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_discarded() && record.contains("step") &&
        record["step"].is_number_integer() &&
        record["step"].get<int64_t>() > step) {
      dropped = true;
      continue;
    }
    absl::StrAppend(&kept, line, "\n");
  }
  if (!dropped) return absl::OkStatus();
  return base::WriteFileAtomically(path, kept);
}

absl::Status AppendMetrics(const std::string& run_dir,
                           const nlohmann::json& record) {
  const std::string path = MetricsPath(run_dir);
  // Never follows a symlink, never blocks on a FIFO, never appends to
  // anything but a regular file.
  const int fd = ::open(
      path.c_str(),
      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
      0644);
  if (fd < 0) return base::ErrnoToStatus(errno, "opening", path);
  struct stat info;
  absl::Status status;
  if (::fstat(fd, &info) != 0) {
    status = base::ErrnoToStatus(errno, "fstat", path);
  } else if (!S_ISREG(info.st_mode)) {
    status = absl::FailedPreconditionError(
        absl::StrCat(path, ": is not a regular file"));
  } else {
    status = base::WriteFully(
        fd,
        record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
            "\n",
        path);
  }
  ::close(fd);
  return status;
}

}  // namespace trainer
