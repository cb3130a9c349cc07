#include "checkpoint/interop/name_rules.h"

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tools/base/files.h"

namespace interop {

std::optional<std::string> NameRules::Apply(const std::string& name) const {
  if (auto it = mapping.find(name); it != mapping.end()) return it->second;
  absl::string_view rest = name;
  for (const std::string& prefix : strip_prefixes) {
    absl::ConsumePrefix(&rest, prefix);
  }
  if (rest.find('/') != absl::string_view::npos) return std::string(rest);
  return absl::StrCat(add_prefix, rest);
}

absl::StatusOr<std::map<std::string, std::optional<std::string>>>
ReadNameMapping(const std::string& path) {
  absl::StatusOr<std::string> text =
      base::ReadRegularFile(path, uint64_t{64} << 20);
  if (!text.ok()) return text.status();
  nlohmann::json json = nlohmann::json::parse(*text, nullptr,
                                              /*allow_exceptions=*/false);
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": not a name mapping: expected one JSON object {\"old name\": "
        "\"new name\" or null}"));
  }
  std::map<std::string, std::optional<std::string>> mapping;
  for (const auto& [from, to] : json.items()) {
    if (to.is_null()) {
      mapping[from] = std::nullopt;
    } else if (to.is_string() && !to.get<std::string>().empty()) {
      mapping[from] = to.get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the new name of '", from,
                       "' must be a non-empty string or null"));
    }
  }
  return mapping;
}

}  // namespace interop
