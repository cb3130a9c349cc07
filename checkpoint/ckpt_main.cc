// `ckpt`: inspect, verify, list, diff, digest, upgrade and convert
// checkpoints. The logic is in checkpoint/ckpt_commands.h; this file only
// parses the command line (the name-rule flags: interop/name_rule_flags.h).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "checkpoint/ckpt_commands.h"
#include "checkpoint/interop/name_rule_flags.h"
#include "tools/cli/flags.h"

ABSL_FLAG(bool, json, false,
          "inspect: print one JSON object instead of the readable table");
ABSL_FLAG(bool, model_only, false,
          "convert: keep model tensors only (no optimizer state or values).");
ABSL_FLAG(bool, overwrite, false, "convert: replace an existing OUT.");

int main(int argc, char** argv) {
  std::vector<std::string> args =
      cli::ParseFlagsOrExit(argc, argv, checkpoint::ckpt::kUsage);
  checkpoint::ckpt::Flags flags;
  flags.json = absl::GetFlag(FLAGS_json);
  interop::NameRuleFlags names = interop::GetNameRuleFlags();
  flags.lenient = names.lenient;
  flags.strip_prefixes = names.strip_prefixes;
  flags.add_prefix = names.add_prefix;
  flags.rename_file = names.rename_file;
  flags.model_only = absl::GetFlag(FLAGS_model_only);
  flags.overwrite = absl::GetFlag(FLAGS_overwrite);
  return checkpoint::ckpt::RunCkpt(args, flags, std::cout, std::cerr);
}
