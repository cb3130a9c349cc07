#include "tools/base/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tools/base/paths.h"

namespace base {
namespace {

// Keeps a temporary's name within NAME_MAX for long final names.
constexpr size_t kMaxNameInTemporary = 180;

const char* FileTypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

bool ProcessExists(pid_t pid) {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

}  // namespace

absl::Status ErrnoToStatus(int error_number, absl::string_view operation,
                           absl::string_view path) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (error_number) {
    case ENOENT:
    case ENOTDIR:
      code = absl::StatusCode::kNotFound;
      break;
    case EACCES:
    case EPERM:
    case EROFS:
      code = absl::StatusCode::kPermissionDenied;
      break;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      code = absl::StatusCode::kResourceExhausted;
      break;
    case EEXIST:
    case ENOTEMPTY:
      code = absl::StatusCode::kAlreadyExists;
      break;
    case ELOOP:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    case EIO:
      code = absl::StatusCode::kDataLoss;
      break;
    default:
      break;
  }
  return absl::Status(code, absl::StrCat(operation, " ", path, ": ",
                                         std::strerror(error_number)));
}

absl::Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "opening for fsync", path);
  int result = ::fsync(fd);
  int fsync_errno = errno;
  ::close(fd);
  if (result != 0) return ErrnoToStatus(fsync_errno, "fsync", path);
  return absl::OkStatus();
}

absl::Status WriteFully(int fd, absl::string_view data,
                        absl::string_view display_path) {
  while (!data.empty()) {
    ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "writing", display_path);
    }
    if (written == 0) return ErrnoToStatus(ENOSPC, "writing", display_path);
    data.remove_prefix(static_cast<size_t>(written));
  }
  return absl::OkStatus();
}

absl::Status RemoveTreeAt(int parent_fd, const std::string& name,
                          const std::string& display_path) {
  if (::unlinkat(parent_fd, name.c_str(), 0) == 0) return absl::OkStatus();
  if (errno == ENOENT) return absl::OkStatus();
  if (errno != EISDIR && errno != EPERM) {
    return ErrnoToStatus(errno, "removing", display_path);
  }
  int dir_fd = ::openat(parent_fd, name.c_str(),
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoToStatus(errno, "opening", display_path);
  DIR* dir = ::fdopendir(dir_fd);
  if (dir == nullptr) {
    int open_errno = errno;
    ::close(dir_fd);
    return ErrnoToStatus(open_errno, "listing", display_path);
  }
  std::vector<std::string> children;
  while (struct dirent* entry = ::readdir(dir)) {
    if (std::strcmp(entry->d_name, ".") != 0 &&
        std::strcmp(entry->d_name, "..") != 0) {
      children.emplace_back(entry->d_name);
    }
  }
  absl::Status status;
  for (const std::string& child : children) {
    absl::Status child_status =
        RemoveTreeAt(::dirfd(dir), child, JoinPath(display_path, child));
    if (status.ok()) status = child_status;
  }
  ::closedir(dir);
  if (!status.ok()) return status;
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0 &&
      errno != ENOENT) {
    return ErrnoToStatus(errno, "removing", display_path);
  }
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  return RemoveTreeAt(AT_FDCWD, path, path);
}

absl::StatusOr<int> OpenRegularFile(int dir_fd, const std::string& name,
                                    absl::string_view display_path,
                                    uint64_t* size) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
  // writer forever. It has no effect on reads of a regular file.
  int fd = ::openat(dir_fd, name.c_str(),
                    O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat(
          display_path, " is a symlink; only a regular file is accepted"));
    }
    return ErrnoToStatus(errno, "opening", display_path);
  }
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    int stat_errno = errno;
    ::close(fd);
    return ErrnoToStatus(stat_errno, "stat", display_path);
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(display_path, " is ", FileTypeName(info.st_mode),
                     "; only a regular file is accepted"));
  }
  if (size != nullptr) *size = static_cast<uint64_t>(info.st_size);
  return fd;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(
    const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    return ErrnoToStatus(errno, "opening", path);
  }
  uint64_t size = 0;
  absl::StatusOr<int> fd = OpenRegularFile(AT_FDCWD, resolved, path, &size);
  if (!fd.ok()) return fd.status();
  const char* data = nullptr;
  if (size > 0) {
    void* address = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, *fd, 0);
    if (address == MAP_FAILED) {
      const int error = errno;
      ::close(*fd);
      return ErrnoToStatus(error, "mmap", path);
    }
    data = static_cast<const char*>(address);
  }
  ::close(*fd);
  return std::unique_ptr<MappedFile>(
      new MappedFile(path, data, static_cast<size_t>(size)));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
}

absl::StatusOr<std::string> ReadRegularFile(const std::string& path,
                                            uint64_t max_bytes) {
  uint64_t size = 0;
  absl::StatusOr<int> fd = OpenRegularFile(AT_FDCWD, path, path, &size);
  if (!fd.ok()) return fd.status();
  if (size > max_bytes) {
    ::close(*fd);
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has ", size, " bytes, more than the limit of ", max_bytes));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  size_t done = 0;
  absl::Status status;
  while (done < bytes.size()) {
    ssize_t got = ::read(*fd, bytes.data() + done, bytes.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      status = ErrnoToStatus(errno, "reading", path);
      break;
    }
    if (got == 0) {
      status = absl::DataLossError(
          absl::StrCat("reading ", path, ": the file shrank while read"));
      break;
    }
    done += static_cast<size_t>(got);
  }
  ::close(*fd);
  if (!status.ok()) return status;
  return bytes;
}

std::string TemporaryName(absl::string_view final_name) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t unique =
      static_cast<uint64_t>(
          std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (counter.fetch_add(1) << 48);
  return absl::StrCat(kTemporaryPrefix,
                      final_name.substr(0, kMaxNameInTemporary), "-",
                      ::getpid(), "-", absl::Hex(unique));
}

std::optional<pid_t> TemporaryOwner(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kTemporaryPrefix)) return std::nullopt;
  // The final name may itself contain '-': the pid is the second-to-last
  // field.
  const size_t last = name.rfind('-');
  if (last == absl::string_view::npos || last == 0) return std::nullopt;
  const size_t previous = name.rfind('-', last - 1);
  if (previous == absl::string_view::npos) return std::nullopt;
  int pid = 0;
  if (!absl::SimpleAtoi(name.substr(previous + 1, last - previous - 1), &pid) ||
      pid <= 0) {
    return std::nullopt;
  }
  return static_cast<pid_t>(pid);
}

absl::StatusOr<int> RemoveStaleTemporaries(const std::string& directory,
                                           absl::string_view of_name) {
  const std::string prefix =
      of_name.empty()
          ? std::string(kTemporaryPrefix)
          : absl::StrCat(kTemporaryPrefix,
                         of_name.substr(0, kMaxNameInTemporary), "-");
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return ErrnoToStatus(errno, "listing", directory);
  std::vector<std::string> candidates;
  while (struct dirent* entry = ::readdir(dir)) {
    if (absl::StartsWith(entry->d_name, prefix)) {
      candidates.emplace_back(entry->d_name);
    }
  }
  ::closedir(dir);
  int removed = 0;
  for (const std::string& name : candidates) {
    std::optional<pid_t> owner = TemporaryOwner(name);
    // Another live process (or this one) may be writing it right now.
    if (owner.has_value() && ProcessExists(*owner)) continue;
    const std::string path = JoinPath(directory, name);
    if (absl::Status status = RemoveTree(path); !status.ok()) return status;
    ++removed;
  }
  return removed;
}

PendingFile::PendingFile(std::string final_path)
    : final_path_(std::move(final_path)) {}

PendingFile::~PendingFile() {
  if (!temporary_path_.empty()) ::unlink(temporary_path_.c_str());
}

absl::Status PendingFile::Reserve() {
  const std::string directory = DirectoryOf(final_path_);
  const std::string name = BaseName(final_path_);
  struct stat final_stat;
  if (::stat(final_path_.c_str(), &final_stat) == 0 &&
      S_ISDIR(final_stat.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(final_path_, " is a directory"));
  }
  // Temporaries of this file left by killed processes; other files'
  // temporaries are not ours to judge. Best effort: failing to clean up
  // never stops a write.
  (void)RemoveStaleTemporaries(directory, name);
  const std::string candidate = JoinPath(directory, TemporaryName(name));
  int fd =
      ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return ErrnoToStatus(
        errno, absl::StrCat("creating a temporary for ", final_path_, " in"),
        directory);
  }
  ::close(fd);
  temporary_path_ = candidate;
  return absl::OkStatus();
}

absl::Status PendingFile::Publish() {
  if (temporary_path_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(final_path_, ": Publish without Reserve"));
  }
  if (absl::Status status = FsyncPath(temporary_path_); !status.ok()) {
    return status;
  }
  if (::rename(temporary_path_.c_str(), final_path_.c_str()) != 0) {
    return ErrnoToStatus(errno, "renaming into", final_path_);
  }
  temporary_path_.clear();
  return FsyncPath(DirectoryOf(final_path_));
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  PendingFile file(path);
  if (absl::Status status = file.Reserve(); !status.ok()) return status;
  int fd =
      ::open(file.temporary_path().c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "opening", file.temporary_path());
  absl::Status status = WriteFully(fd, contents, path);
  if (::close(fd) != 0 && status.ok()) {
    status = ErrnoToStatus(errno, "closing", path);
  }
  if (!status.ok()) return status;
  return file.Publish();
}

}  // namespace base
