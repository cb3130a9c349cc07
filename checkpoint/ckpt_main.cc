// `ckpt`: inspect, verify, list, diff and digest checkpoints. The logic is
// in checkpoint/ckpt_commands.h; this file only parses the command line.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "checkpoint/ckpt_commands.h"
#include "tools/cli/flags.h"

ABSL_FLAG(bool, json, false,
          "inspect: print one JSON object instead of the readable table");

int main(int argc, char** argv) {
  std::vector<std::string> args =
      cli::ParseFlagsOrExit(argc, argv, checkpoint::ckpt::kUsage);
  checkpoint::ckpt::Flags flags;
  flags.json = absl::GetFlag(FLAGS_json);
  return checkpoint::ckpt::RunCkpt(args, flags, std::cout, std::cerr);
}
