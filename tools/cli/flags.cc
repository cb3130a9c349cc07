#include "tools/cli/flags.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace cli {
namespace {

std::string& ProgramName() {
  static std::string name = "program";
  return name;
}

bool IsUsageFlag(absl::string_view name) {
  return name == "help" || name == "helpfull" || name == "helpshort" ||
         name == "helppackage" || name == "version" ||
         name == "only_check_args";
}

// --help lists the flags defined in the program's own file (abseil's
// default: "run_main.cc" for `run`) and in shared flag libraries, files
// named "*_flags.cc" that several tools link (the name-rule flags of `ckpt`
// and `export`, say).
bool IsHelpFlagFile(absl::string_view file) {
  absl::string_view stem = file.substr(file.rfind('/') + 1);
  stem = stem.substr(0, stem.find('.'));
  const std::string& program = ProgramName();
  return stem == program || stem == program + "_main" ||
         stem == program + "-main" || absl::EndsWith(stem, "_flags");
}

}  // namespace

absl::Status ValidateFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view argument = argv[i];
    if (argument == "--") break;
    if (!absl::StartsWith(argument, "-") || argument == "-") continue;
    argument.remove_prefix(absl::StartsWith(argument, "--") ? 2 : 1);
    absl::string_view name = argument;
    absl::string_view value;
    bool has_value = false;
    if (size_t equals = argument.find('='); equals != absl::string_view::npos) {
      name = argument.substr(0, equals);
      value = argument.substr(equals + 1);
      has_value = true;
    }
    if (IsUsageFlag(name) || name == "flagfile" || name == "fromenv" ||
        name == "tryfromenv" || name == "undefok") {
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && !has_value) {
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) continue;
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    // ParseFrom stores the value; ParseCommandLine sets it again right after.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad value '", value, "' for flag --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> ParseFlagsOrExit(int argc, char** argv,
                                          absl::string_view usage) {
  if (argc > 0) {
    absl::string_view program = argv[0];
    if (size_t slash = program.rfind('/'); slash != absl::string_view::npos) {
      program.remove_prefix(slash + 1);
    }
    ProgramName() = std::string(program);
  }
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsHelpFlagFile;
  config.contains_helpshort_flags = IsHelpFlagFile;
  absl::SetFlagsUsageConfig(config);
  if (absl::Status status = ValidateFlags(argc, argv); !status.ok()) {
    ExitWithError(status.message());
  }
  // Abseil 20220623 exits 1 after printing --help; asking for help is not
  // an error, so usage flags are handled here and exit 0.
  std::vector<char*> remaining = absl::flags_internal::ParseCommandLineImpl(
      argc, argv, absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  if (absl::flags_internal::HandleUsageFlags(
          std::cout, absl::ProgramUsageMessage()) != -1) {
    std::exit(0);
  }
  return std::vector<std::string>(remaining.begin() + 1, remaining.end());
}

void ExitWithError(absl::string_view message, int exit_code) {
  std::fprintf(stderr, "%s: error: %.*s\n", ProgramName().c_str(),
               static_cast<int>(message.size()), message.data());
  std::exit(exit_code);
}

void ExitIfError(const absl::Status& status) {
  if (!status.ok()) ExitWithError(status.message(), 1);
}

}  // namespace cli
