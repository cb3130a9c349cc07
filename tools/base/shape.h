// How a tensor shape is written in every message and report: "[1, 28, 28]",
// "[]" for a scalar. Works for any range of integers (std::vector,
// absl::Span, a protobuf RepeatedField, c10::IntArrayRef).
#ifndef TOOLS_BASE_SHAPE_H_
#define TOOLS_BASE_SHAPE_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace base {

template <typename Dimensions>
std::string ShapeToString(const Dimensions& dimensions) {
  return absl::StrCat("[", absl::StrJoin(dimensions, ", "), "]");
}

}  // namespace base

#endif  // TOOLS_BASE_SHAPE_H_
