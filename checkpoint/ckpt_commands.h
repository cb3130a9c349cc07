// The `ckpt` tool's subcommands, as a torch-free library so that they are
// unit-testable; checkpoint/ckpt_main.cc only parses flags and calls
// RunCkpt().
//
//   ckpt inspect PATH [--json]  metadata, progress, metrics, training state
//                               and the tensor table (or one JSON object)
//   ckpt verify PATH            checks every byte: manifest, tensors, padding
//   ckpt ls RUN_DIR             the run's checkpoints; marks best and last
//   ckpt diff A B               per-tensor comparison
//   ckpt digest PATH            TensorDigest alone on stdout
//   ckpt upgrade OLD NEW        a format version 1 checkpoint, verified and
//                               rewritten in the current version
//
// PATH is a checkpoint directory or a link to one (RUN_DIR/best,
// RUN_DIR/last). A relative path is resolved against BUILD_WORKING_DIRECTORY
// when set, so `bazel run //:ckpt -- ls runs/a` means the caller's runs/a.
//
// Exit codes: 0 success (verify: valid; diff: identical); 1 failure
// (verify: corrupt, diff: different, any error reading a checkpoint or run
// directory); 2 usage error, and `diff` when it cannot read an input (like
// diff(1): "trouble"). Every error is one line `ckpt: error: ...`.
#ifndef CHECKPOINT_CKPT_COMMANDS_H_
#define CHECKPOINT_CKPT_COMMANDS_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace checkpoint {
namespace ckpt {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

inline constexpr char kUsage[] =
    "ckpt COMMAND ARGS\n"
    "  inspect PATH [--json]  show a checkpoint's metadata and tensors\n"
    "  verify PATH            check every tensor's checksum\n"
    "  ls RUN_DIR             list a run's checkpoints, marking best/last\n"
    "  diff A B               compare two checkpoints tensor by tensor\n"
    "  digest PATH            print the checkpoint's tensor digest\n"
    "  upgrade OLD NEW        rewrite a format 1 checkpoint in format 2\n"
    "PATH is a checkpoint directory, RUN_DIR/best or RUN_DIR/last.";

struct Flags {
  bool json = false;
};

// Runs one subcommand: `args` are the positional arguments (program name
// and flags excluded). Output goes to `out`, the error line to `err`.
// Returns the process exit code.
int RunCkpt(const std::vector<std::string>& args, const Flags& flags,
            std::ostream& out, std::ostream& err);

// The pieces, for tests and for other tools.

absl::StatusOr<std::string> InspectText(const std::string& path);
absl::StatusOr<std::string> InspectJson(const std::string& path);

// "OK: N tensors, X bytes verified", or the first failure.
absl::StatusOr<std::string> Verify(const std::string& path);

absl::StatusOr<std::string> ListRun(const std::string& run_dir);

struct DiffReport {
  std::string text;
  bool identical = false;
};
absl::StatusOr<DiffReport> Diff(const std::string& a, const std::string& b);

absl::StatusOr<std::string> Digest(const std::string& path);

// IEEE half and bfloat16 to float, in software (exposed for tests).
float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);

}  // namespace ckpt
}  // namespace checkpoint

#endif  // CHECKPOINT_CKPT_COMMANDS_H_
