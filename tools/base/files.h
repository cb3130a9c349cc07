// Files, the safe way, for every package: one errno-to-status mapping,
// fsync, whole-tree removal without following links, opening untrusted
// paths without blocking on a FIFO, and atomic publication of a file
// through a temporary beside it.
//
// Temporaries are named `.tmp-<name>-<pid>-<unique>` in the destination's
// directory (so the final rename never crosses filesystems). A process that
// dies leaves its temporary behind; RemoveStaleTemporaries() deletes those
// of processes that no longer exist and spares those of live ones.
//
//   base::PendingFile file("/models/model.pt");
//   RETURN_IF_ERROR(file.Reserve());          // creates the temporary
//   torch_module.save(file.temporary_path()); // anything that writes a path
//   RETURN_IF_ERROR(file.Publish());          // fsync, rename, fsync dir
//
// Errors name the path and the system's reason. All functions are
// thread-safe; a PendingFile belongs to one thread.
#ifndef TOOLS_BASE_FILES_H_
#define TOOLS_BASE_FILES_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace base {

inline constexpr char kTemporaryPrefix[] = ".tmp-";

// "OPERATION PATH: strerror" with a code chosen from `error_number`:
// ENOENT/ENOTDIR kNotFound; EACCES/EPERM/EROFS kPermissionDenied;
// ENOSPC/EDQUOT/EFBIG kResourceExhausted; EEXIST/ENOTEMPTY kAlreadyExists;
// ELOOP kFailedPrecondition (a symlink where none is allowed); EIO
// kDataLoss; anything else kInternal.
absl::Status ErrnoToStatus(int error_number, absl::string_view operation,
                           absl::string_view path);

// fsync of a file or directory by path.
absl::Status FsyncPath(const std::string& path);

// Writes all of `data` at the file's position, resuming after short writes.
absl::Status WriteFully(int fd, absl::string_view data,
                        absl::string_view display_path);

// Deletes `path` (a file, symlink or directory tree) without following
// symlinks. A missing path is OK.
absl::Status RemoveTree(const std::string& path);
// The same for `name` relative to the directory descriptor `parent_fd`.
absl::Status RemoveTreeAt(int parent_fd, const std::string& name,
                          const std::string& display_path);

// Opens `name` relative to `dir_fd` (AT_FDCWD for a path) read-only,
// refusing symlinks and anything but a regular file without ever blocking
// (a FIFO is opened O_NONBLOCK and refused after fstat). Returns the
// descriptor (close it) and, in *size, the file's size. Errors:
// kNotFound, kFailedPrecondition ("is a symlink", "is not a regular file
// (fifo)"), or the system's reason.
absl::StatusOr<int> OpenRegularFile(int dir_fd, const std::string& name,
                                    absl::string_view display_path,
                                    uint64_t* size);

// Reads a whole regular file (OpenRegularFile's rules) of at most
// `max_bytes`; larger files are kFailedPrecondition.
absl::StatusOr<std::string> ReadRegularFile(const std::string& path,
                                            uint64_t max_bytes);

// A read-only, shared mapping of a whole regular file, for formats whose
// tensors are read in place. Opening follows symlinks (a Hugging Face
// cache is made of them) to a regular file, refusing anything else without
// blocking (OpenRegularFile's rules on the resolved path). Errors name
// `path`. The bytes live as long as the object; they change if another
// process rewrites the file in place (our writers never do: they rename).
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(
      const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::string_view bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const char* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const char* data_;
  size_t size_;
};

// A unique temporary name for `final_name` in this process:
// ".tmp-<final_name (at most 180 bytes)>-<pid>-<unique hex>".
std::string TemporaryName(absl::string_view final_name);

// The pid in a name made by TemporaryName, if it has one.
std::optional<pid_t> TemporaryOwner(absl::string_view name);

// Deletes the `.tmp-*` entries in `directory` whose owner process no longer
// exists (files and trees alike). With `of_name`, only the temporaries of
// that final name (what TemporaryName(of_name) makes). Returns how many were
// removed. Entries without a pid in their name are removed too: no writer
// of ours makes them.
absl::StatusOr<int> RemoveStaleTemporaries(const std::string& directory,
                                           absl::string_view of_name = "");

// A file being written under a temporary name beside `final_path`, removed
// on destruction unless published.
class PendingFile {
 public:
  explicit PendingFile(std::string final_path);
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;

  // Removes stale temporaries of this file left by dead processes, then
  // creates the temporary (O_EXCL), so that an unwritable destination fails
  // here with the system's reason. A directory at final_path is an error.
  absl::Status Reserve();
  // fsync the temporary, rename it over final_path, fsync the directory.
  absl::Status Publish();

  const std::string& temporary_path() const { return temporary_path_; }
  const std::string& final_path() const { return final_path_; }

 private:
  std::string final_path_;
  std::string temporary_path_;
};

// PendingFile for bytes in memory: `path` holds either its old content or
// exactly `contents`, never a mixture.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

}  // namespace base

#endif  // TOOLS_BASE_FILES_H_
