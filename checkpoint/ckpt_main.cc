// `ckpt`: inspect, verify, list, diff, digest, upgrade and convert
// checkpoints. The logic is
// in checkpoint/ckpt_commands.h; this file only parses the command line.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "checkpoint/ckpt_commands.h"
#include "tools/cli/flags.h"

ABSL_FLAG(bool, json, false,
          "inspect: print one JSON object instead of the readable table");
ABSL_FLAG(bool, lenient, false,
          "Read .pt/.ckpt files whose extras pickle unknown Python classes "
          "(a Lightning checkpoint's hyper-parameters) as placeholders; code "
          "is never run either way.");
ABSL_FLAG(std::vector<std::string>, strip_prefix, {},
          "convert: prefixes removed from the front of tensor names, in "
          "order (module.,_orig_mod.,model.).");
ABSL_FLAG(std::string, add_prefix, "",
          "convert: prefix put in front of model tensor names.");
ABSL_FLAG(std::string, rename, "",
          "convert: a JSON file {\"old name\": \"new name\" or null (drop)}.");
ABSL_FLAG(bool, model_only, false,
          "convert: keep model tensors only (no optimizer state or values).");
ABSL_FLAG(bool, overwrite, false, "convert: replace an existing OUT.");

int main(int argc, char** argv) {
  std::vector<std::string> args =
      cli::ParseFlagsOrExit(argc, argv, checkpoint::ckpt::kUsage);
  checkpoint::ckpt::Flags flags;
  flags.json = absl::GetFlag(FLAGS_json);
  flags.lenient = absl::GetFlag(FLAGS_lenient);
  flags.strip_prefixes = absl::GetFlag(FLAGS_strip_prefix);
  flags.add_prefix = absl::GetFlag(FLAGS_add_prefix);
  flags.rename_file = absl::GetFlag(FLAGS_rename);
  flags.model_only = absl::GetFlag(FLAGS_model_only);
  flags.overwrite = absl::GetFlag(FLAGS_overwrite);
  return checkpoint::ckpt::RunCkpt(args, flags, std::cout, std::cerr);
}
