// The command-line flags of the name rules (name_rules.h) and of lenient
// reading, defined once for every tool that takes them (`ckpt`, `export`):
//
//   --strip_prefix=module.,_orig_mod.   --add_prefix=P
//   --rename=MAPPING.json               --lenient
//
// Link this library into a binary and read them after flag parsing:
//   interop::NameRuleFlags names = interop::GetNameRuleFlags();
#ifndef CHECKPOINT_INTEROP_NAME_RULE_FLAGS_H_
#define CHECKPOINT_INTEROP_NAME_RULE_FLAGS_H_

#include <string>
#include <vector>

namespace interop {

struct NameRuleFlags {
  std::vector<std::string> strip_prefixes;
  std::string add_prefix;
  std::string rename_file;  // as typed: resolve it against the caller's dir
  bool lenient = false;
};

NameRuleFlags GetNameRuleFlags();

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_NAME_RULE_FLAGS_H_
