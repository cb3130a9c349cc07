// Paths of a test's runfiles, for tests that call scripts or Python.
#ifndef TESTING_RUNFILES_H_
#define TESTING_RUNFILES_H_

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace testing_runfiles {

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

}  // namespace testing_runfiles

#endif  // TESTING_RUNFILES_H_
