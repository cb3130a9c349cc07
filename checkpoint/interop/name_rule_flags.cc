#include "checkpoint/interop/name_rule_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::vector<std::string>, strip_prefix, {},
          "Prefixes removed from the front of checkpoint tensor names, in "
          "order (module.,_orig_mod.,model.).");
ABSL_FLAG(std::string, add_prefix, "",
          "Prefix put in front of model tensor names (not optimizer/ paths).");
ABSL_FLAG(std::string, rename, "",
          "A JSON file {\"old name\": \"new name\" or null (drop)}, applied "
          "before the prefixes.");
ABSL_FLAG(bool, lenient, false,
          "Read .pt/.ckpt files whose extras pickle unknown Python classes "
          "(a Lightning checkpoint's hyper-parameters) as placeholders; code "
          "is never run either way.");

namespace interop {

NameRuleFlags GetNameRuleFlags() {
  NameRuleFlags flags;
  flags.strip_prefixes = absl::GetFlag(FLAGS_strip_prefix);
  flags.add_prefix = absl::GetFlag(FLAGS_add_prefix);
  flags.rename_file = absl::GetFlag(FLAGS_rename);
  flags.lenient = absl::GetFlag(FLAGS_lenient);
  return flags;
}

}  // namespace interop
