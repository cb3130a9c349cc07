// Command-line parsing for the project's binaries, over Abseil flags, with
// the project's rule for user errors: an unknown flag or a malformed value
// prints one line naming the flag and the reason, and exits with code 2
// (Abseil alone exits 1 and may print several lines).
//
// Example:
//   ABSL_FLAG(int, epochs, 10, "Number of epochs.");
//   int main(int argc, char** argv) {
//     std::vector<std::string> positional = cli::ParseFlagsOrExit(
//         argc, argv, "train --run_dir=DIR --epochs=N [flags]");
//     ...
//   }
#ifndef TOOLS_CLI_FLAGS_H_
#define TOOLS_CLI_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cli {

// Exit code for a usage error (bad flag, missing required argument).
inline constexpr int kUsageExitCode = 2;

// Validates then parses argv; --help and --helpfull print usage and exit 0.
// Returns the positional arguments, program name excluded.
std::vector<std::string> ParseFlagsOrExit(int argc, char** argv,
                                          absl::string_view usage);

// Validates argv against the registered flags without changing them.
// Exposed for tests; ParseFlagsOrExit calls it first.
absl::Status ValidateFlags(int argc, char** argv);

// Prints "PROGRAM: error: MESSAGE" on stderr and exits with `exit_code`.
[[noreturn]] void ExitWithError(absl::string_view message,
                                int exit_code = kUsageExitCode);

// Prints "PROGRAM: error: <status message>" and exits 1 when !status.ok().
void ExitIfError(const absl::Status& status);

}  // namespace cli

#endif  // TOOLS_CLI_FLAGS_H_
