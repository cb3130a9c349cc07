#include "tools/base/paths.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace base {
namespace {

absl::string_view StripTrailingSlashes(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return path;
}

}  // namespace

std::string ResolveUserPath(const std::string& path) {
  const char* working_directory = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || working_directory == nullptr ||
      working_directory[0] == '\0') {
    return path;
  }
  return JoinPath(working_directory, path);
}

std::string JoinPath(absl::string_view directory, absl::string_view name) {
  if (directory.empty() || directory == ".") return std::string(name);
  if (directory.back() == '/') return absl::StrCat(directory, name);
  return absl::StrCat(directory, "/", name);
}

std::string DirectoryOf(absl::string_view path) {
  path = StripTrailingSlashes(path);
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

std::string BaseName(absl::string_view path) {
  path = StripTrailingSlashes(path);
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return std::string(path);
  return std::string(path.substr(slash + 1));
}

}  // namespace base
