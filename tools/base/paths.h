// Path helpers shared by the command-line tools.
#ifndef TOOLS_BASE_PATHS_H_
#define TOOLS_BASE_PATHS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace base {

// A path the user typed, made absolute against BUILD_WORKING_DIRECTORY when
// running under `bazel run` (whose working directory is the runfiles tree),
// so that `bazel run //:train -- --run_dir=runs/a` and
// `bazel run //:ckpt -- ls runs/a` mean the same directory. Unchanged when
// absolute, empty, or not under `bazel run`.
std::string ResolveUserPath(const std::string& path);

// "directory/name", without doubling a slash; "name" for "" or ".".
std::string JoinPath(absl::string_view directory, absl::string_view name);

// The directory part ("." when none, "/" for a top-level entry) and the
// last component of `path` (trailing slashes ignored).
std::string DirectoryOf(absl::string_view path);
std::string BaseName(absl::string_view path);

}  // namespace base

#endif  // TOOLS_BASE_PATHS_H_
