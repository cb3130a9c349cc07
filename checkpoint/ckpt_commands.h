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
//   ckpt convert IN OUT         any format to any format, with name rules
//                               (interop/convert.h) and a report
//
// PATH is a checkpoint directory or a link to one (RUN_DIR/best,
// RUN_DIR/last), or a file PyTorch users have: a torch.save .pt/.pth,
// a Lightning .ckpt or a safetensors file, recognised by content
// (interop/tensor_source.h). `verify` checks what each format lets it
// check, and `digest` is the same for the same tensors in any format. A
// relative path is resolved against BUILD_WORKING_DIRECTORY when set, so `bazel
// run //:ckpt -- ls runs/a` means the caller's runs/a.
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
#include "checkpoint/interop/tensor_source.h"

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
    "  convert IN OUT         convert between formats; OUT's name picks it:\n"
    "                         .pt/.pth/.ckpt, .safetensors, else a checkpoint\n"
    "                         [--strip_prefix=module.,_orig_mod.]\n"
    "                         [--add_prefix=P] [--rename=MAPPING.json]\n"
    "                         [--model_only] [--overwrite]\n"
    "PATH is a checkpoint directory, RUN_DIR/best or RUN_DIR/last, or a\n"
    ".pt/.pth/.ckpt or .safetensors file. --lenient reads .pt files whose\n"
    "extras pickle unknown Python classes (never code).";

struct Flags {
  bool json = false;
  bool lenient = false;
  // convert
  std::vector<std::string> strip_prefixes;
  std::string add_prefix;
  std::string rename_file;
  bool model_only = false;
  bool overwrite = false;
};

// Runs one subcommand: `args` are the positional arguments (program name
// and flags excluded). Output goes to `out`, the error line to `err`.
// Returns the process exit code.
int RunCkpt(const std::vector<std::string>& args, const Flags& flags,
            std::ostream& out, std::ostream& err);

// The pieces, for tests and for other tools.

absl::StatusOr<std::string> InspectText(
    const std::string& path, const interop::SourceOptions& options = {});
absl::StatusOr<std::string> InspectJson(
    const std::string& path, const interop::SourceOptions& options = {});

// "OK: N tensors, X bytes verified", or the first failure.
absl::StatusOr<std::string> Verify(const std::string& path,
                                   const interop::SourceOptions& options = {});

absl::StatusOr<std::string> ListRun(const std::string& run_dir);

struct DiffReport {
  std::string text;
  bool identical = false;
};
absl::StatusOr<DiffReport> Diff(const std::string& a, const std::string& b,
                                const interop::SourceOptions& options = {});

absl::StatusOr<std::string> Digest(const std::string& path,
                                   const interop::SourceOptions& options = {});

// The conversion report (interop::ConvertReport::Text).
absl::StatusOr<std::string> Convert(const std::string& in,
                                    const std::string& out, const Flags& flags);

// IEEE half and bfloat16 to float, in software (exposed for tests).
float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);

}  // namespace ckpt
}  // namespace checkpoint

#endif  // CHECKPOINT_CKPT_COMMANDS_H_
