// Status plumbing shared by every package: early-return macros and one way
// to add context to an error as it rises (file, tensor, operation), in the
// style of abseil, TensorFlow and tensorstore.
//
//   absl::StatusOr<Model> LoadModel(const std::string& path) {
//     ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
//     RETURN_IF_ERROR(CheckHeader(bytes));
//     ...
//   }
//
// Annotate keeps the code and prefixes the message: "loading model.pt: ...".
#ifndef TOOLS_BASE_STATUS_H_
#define TOOLS_BASE_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace base {

// `context: message`, same code; OK stays OK.
inline absl::Status Annotate(const absl::Status& status,
                             absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(context, ": ", status.message()));
}

}  // namespace base

#define BASE_STATUS_CONCAT_INNER_(x, y) x##y
#define BASE_STATUS_CONCAT_(x, y) BASE_STATUS_CONCAT_INNER_(x, y)

// Returns the status of `expression` from the enclosing function unless OK.
#define RETURN_IF_ERROR(expression)                                   \
  do {                                                                \
    if (absl::Status base_status_ = (expression); !base_status_.ok()) \
      return base_status_;                                            \
  } while (false)

// `lhs = std::move(value)` of a StatusOr `expression`, or returns its error.
#define ASSIGN_OR_RETURN(lhs, expression)                                    \
  ASSIGN_OR_RETURN_IMPL_(BASE_STATUS_CONCAT_(base_statusor_, __LINE__), lhs, \
                         expression)
#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expression) \
  auto statusor = (expression);                           \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(*statusor)

#endif  // TOOLS_BASE_STATUS_H_
