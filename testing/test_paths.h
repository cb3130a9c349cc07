// Paths a test uses: its runfiles, the Python that matches @libtorch, and
// fresh scratch directories.
#ifndef TESTING_TEST_PATHS_H_
#define TESTING_TEST_PATHS_H_

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace test_paths {

// `path` (relative to the workspace root) in the test's runfiles.
inline std::string Runfile(absl::string_view path) {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/ckpt_project/", path);
}

// The Python whose torch is the version of the LibTorch the test links
// (@libtorch//:python): Debian's torch 1.13 in the default build, the
// pinned torch 2.11.0 wheel under --config=torch2.
inline std::string TorchPython() {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/libtorch/python");
}

// TEST_TMPDIR/name, with whatever an earlier run left there removed (the
// directory itself is not created).
inline std::string FreshDir(absl::string_view name) {
  std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return dir;
}

}  // namespace test_paths

#endif  // TESTING_TEST_PATHS_H_
