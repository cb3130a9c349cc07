// The one test-utility library: paths a test uses (its runfiles, the Python
// that matches @libtorch, scratch paths and directories under TEST_TMPDIR),
// whole-file reads and writes, flipping a byte on disk, and running a shell
// command with its output captured.
//
// Scratch paths, all under TEST_TMPDIR:
//   TempPath(name)   the path only; nothing is done on disk
//   TempDir(name)    a directory, created if missing, its contents kept
//   FreshDir(name)   nothing there: whatever was is removed, nothing created
//   EmptyDir(name)   an empty directory: whatever was is removed, then the
//                    directory is created
//
// Failures: everything here is set-up, not a result to check, so a failure
// (TEST_TMPDIR or TEST_SRCDIR unset, a file that cannot be opened, read or
// written, a directory that cannot be made or removed, a shell that cannot
// start, a RunOrDie command that exits non-zero) prints "test_paths: <what
// failed>" to stderr and aborts the test binary (std::abort), which fails
// the test with that line in its log. The one result to check is
// RunCommand's: the command's exit code and output are returned, not judged.
// Nothing here reports through gtest, so test-only binaries (fixture
// writers such as checkpoint/ckpt_testing.cc) can use it too. Nothing is
// synchronized: call from one thread at a time.
#ifndef TESTING_TEST_PATHS_H_
#define TESTING_TEST_PATHS_H_

#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "tools/base/exit_code.h"

namespace test_paths {
namespace internal {

// Prints "test_paths: `what`" to stderr and aborts.
[[noreturn]] inline void Die(absl::string_view what) {
  std::fprintf(stderr, "test_paths: %.*s\n", static_cast<int>(what.size()),
               what.data());
  std::fflush(stderr);
  std::abort();
}

// The value of environment variable `name`; aborts when it is unset or
// empty (the test is not running under `bazel test`).
inline std::string Env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    Die(absl::StrCat("$", name, " is not set (run the test with bazel test)"));
  }
  return value;
}

// Creates directory `dir` and its missing parents (nothing if it exists);
// aborts if that fails.
inline void CreateDirectories(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) Die(absl::StrCat("creating ", dir, ": ", error.message()));
}

// `root`, or `root`/`name` when `name` is not empty.
inline std::string Join(const std::string& root, absl::string_view name) {
  return name.empty() ? root : absl::StrCat(root, "/", name);
}

}  // namespace internal

// ---------------------------------------------------------------------------
// Runfiles

// `path` (relative to the workspace root) in the test's runfiles:
// TEST_SRCDIR/ckpt_project/path.
inline std::string Runfile(absl::string_view path) {
  return absl::StrCat(internal::Env("TEST_SRCDIR"), "/ckpt_project/", path);
}

// `path` inside external repository `repository` (as named in WORKSPACE,
// e.g. "fashion_mnist") in the test's runfiles: TEST_SRCDIR/repository/path,
// or the repository's directory itself when `path` is empty.
inline std::string ExternalRunfile(absl::string_view repository,
                                   absl::string_view path = "") {
  return internal::Join(
      absl::StrCat(internal::Env("TEST_SRCDIR"), "/", repository), path);
}

// The Python whose torch is the version of the LibTorch the test links
// (@libtorch//:python): Debian's torch 1.13 in the default build, the
// pinned torch 2.11.0 wheel under --config=torch2.
inline std::string TorchPython() {
  return ExternalRunfile("libtorch", "python");
}

// ---------------------------------------------------------------------------
// Scratch paths under TEST_TMPDIR (see the table at the top)

// TEST_TMPDIR/name, or TEST_TMPDIR itself when `name` is empty. Nothing is
// created or removed.
inline std::string TempPath(absl::string_view name = "") {
  return internal::Join(internal::Env("TEST_TMPDIR"), name);
}

// TEST_TMPDIR/name as a directory: created (with missing parents) if it is
// not there, and whatever an earlier call put in it is kept. Aborts if it
// cannot be created (e.g. a file has that name).
inline std::string TempDir(absl::string_view name) {
  const std::string dir = TempPath(name);
  internal::CreateDirectories(dir);
  return dir;
}

// TEST_TMPDIR/name, with whatever an earlier run left there removed (the
// directory itself is not created). Aborts if the removal fails.
inline std::string FreshDir(absl::string_view name) {
  const std::string dir = TempPath(name);
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  if (error) {
    internal::Die(absl::StrCat("removing ", dir, ": ", error.message()));
  }
  return dir;
}

// TEST_TMPDIR/name as a new, empty directory: FreshDir(name), then the
// directory is created. Aborts if either step fails.
inline std::string EmptyDir(absl::string_view name) {
  const std::string dir = FreshDir(name);
  internal::CreateDirectories(dir);
  return dir;
}

// ---------------------------------------------------------------------------
// Files

// The whole content of the file at `path`, byte for byte. Aborts if it
// cannot be opened or read (a missing file is a failure, not "").
inline std::string ReadFile(absl::string_view path) {
  const std::string name(path);
  std::ifstream in(name, std::ios::binary);
  if (!in.is_open()) internal::Die(absl::StrCat("cannot open ", name));
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  if (in.bad()) internal::Die(absl::StrCat("cannot read ", name));
  return bytes;
}

// Makes `bytes` the whole content of the file at `path`: created if
// missing, truncated otherwise (not atomic; the directory must exist).
// Aborts if it cannot be opened or written.
inline void WriteFile(absl::string_view path, absl::string_view bytes) {
  const std::string name(path);
  std::ofstream out(name, std::ios::binary | std::ios::trunc);
  if (!out.is_open()) internal::Die(absl::StrCat("cannot create ", name));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (out.fail()) internal::Die(absl::StrCat("cannot write ", name));
}

// XORs the byte at `offset` of the existing file at `path` with `mask`, in
// place (the file keeps its size and inode): the way to damage one byte of
// a checkpoint. Aborts if the file cannot be opened, `offset` is not inside
// it, or the write fails.
inline void FlipByte(absl::string_view path, uint64_t offset,
                     unsigned char mask) {
  const std::string name(path);
  std::fstream file(name, std::ios::in | std::ios::out | std::ios::binary);
  if (!file.is_open()) internal::Die(absl::StrCat("cannot open ", name));
  char byte = 0;
  file.seekg(static_cast<std::streamoff>(offset));
  file.read(&byte, 1);
  if (!file) {
    internal::Die(absl::StrCat("cannot read byte ", offset, " of ", name));
  }
  byte = static_cast<char>(byte ^ mask);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(&byte, 1);
  file.close();
  if (file.fail()) {
    internal::Die(absl::StrCat("cannot write byte ", offset, " of ", name));
  }
}

// ---------------------------------------------------------------------------
// Child processes

// What RunCommand saw.
struct CommandResult {
  // The command's exit status; 128 + N when it was killed by signal N (as
  // the shell reports it).
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
};

// Runs `command` with /bin/sh (std::system; `command` may be a pipeline or
// a list, and its stdin is the test's), waits for it and returns its exit
// code with everything it wrote to stdout and stderr. The output goes
// through two files under TEST_TMPDIR/test_paths_commands/, removed
// afterwards. A failing command is a result, not an abort; aborts only if
// the shell cannot be started or the output cannot be captured.
inline CommandResult RunCommand(absl::string_view command) {
  static int counter = 0;
  const std::string base =
      absl::StrCat(TempDir("test_paths_commands"), "/", counter++);
  const std::string out = base + ".stdout";
  const std::string err = base + ".stderr";
  // The newline keeps a trailing comment in `command` from eating the ')'.
  const std::string line =
      absl::StrCat("(", command, "\n) >'", out, "' 2>'", err, "'");
  const int status = std::system(line.c_str());
  if (status == -1) internal::Die(absl::StrCat("cannot run: ", command));
  CommandResult result;
  result.exit_code = base::ShellExitCode(status);
  result.stdout_text = ReadFile(out);
  result.stderr_text = ReadFile(err);
  std::error_code ignored;
  std::filesystem::remove(out, ignored);
  std::filesystem::remove(err, ignored);
  return result;
}

// RunCommand for a set-up step that must succeed (making a test model, a
// fixture file): returns its stdout. Unless it exits 0, prints the
// command, its exit code and both outputs, and aborts. For a command whose
// exit code or output is what the test checks, use RunCommand and assert.
inline std::string RunOrDie(absl::string_view command) {
  CommandResult result = RunCommand(command);
  if (result.exit_code != 0) {
    internal::Die(absl::StrCat(
        "command failed with exit code ", result.exit_code, ": ", command,
        "\nstdout:\n", result.stdout_text, "\nstderr:\n", result.stderr_text));
  }
  return std::move(result.stdout_text);
}

}  // namespace test_paths

#endif  // TESTING_TEST_PATHS_H_
