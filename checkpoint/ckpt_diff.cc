#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "checkpoint/ckpt_commands.h"
#include "checkpoint/ckpt_text.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "tools/base/shape.h"

namespace checkpoint {
namespace ckpt {
namespace {

// ---------------------------------------------------------------------------
// Element-wise comparison for `diff`.

struct ElementDiff {
  uint64_t differing = 0;
  double max_abs = 0;  // NaN when a NaN met a number.
  bool integral = false;
};

template <typename T, typename ToDouble>
void CompareFloats(absl::Span<const char> a, absl::Span<const char> b,
                   ToDouble to_double, ElementDiff& diff) {
  size_t count = a.size() / sizeof(T);
  for (size_t i = 0; i < count; ++i) {
    T raw_a, raw_b;
    std::memcpy(&raw_a, a.data() + i * sizeof(T), sizeof(T));
    std::memcpy(&raw_b, b.data() + i * sizeof(T), sizeof(T));
    double x = to_double(raw_a), y = to_double(raw_b);
    if (x == y || (std::isnan(x) && std::isnan(y))) continue;
    ++diff.differing;
    double delta = std::fabs(x - y);
    if (std::isnan(delta) || std::isnan(diff.max_abs)) {
      diff.max_abs = NAN;
    } else {
      diff.max_abs = std::max(diff.max_abs, delta);
    }
  }
}

template <typename T>
void CompareIntegers(absl::Span<const char> a, absl::Span<const char> b,
                     ElementDiff& diff) {
  diff.integral = true;
  size_t count = a.size() / sizeof(T);
  for (size_t i = 0; i < count; ++i) {
    T x, y;
    std::memcpy(&x, a.data() + i * sizeof(T), sizeof(T));
    std::memcpy(&y, b.data() + i * sizeof(T), sizeof(T));
    if (x == y) continue;
    ++diff.differing;
    // long double holds any int64 difference exactly enough to rank it.
    long double delta =
        std::fabs(static_cast<long double>(x) - static_cast<long double>(y));
    diff.max_abs = std::max(diff.max_abs, static_cast<double>(delta));
  }
}

ElementDiff CompareElements(proto::DType dtype, absl::Span<const char> a,
                            absl::Span<const char> b) {
  ElementDiff diff;
  switch (dtype) {
    case proto::FLOAT32:
      CompareFloats<float>(
          a, b, [](float v) { return double{v}; }, diff);
      break;
    case proto::FLOAT64:
      CompareFloats<double>(
          a, b, [](double v) { return v; }, diff);
      break;
    case proto::FLOAT16:
      CompareFloats<uint16_t>(
          a, b, [](uint16_t v) { return double{HalfToFloat(v)}; }, diff);
      break;
    case proto::BFLOAT16:
      CompareFloats<uint16_t>(
          a, b, [](uint16_t v) { return double{BFloat16ToFloat(v)}; }, diff);
      break;
    case proto::INT8:
      CompareIntegers<int8_t>(a, b, diff);
      break;
    case proto::UINT8:
      CompareIntegers<uint8_t>(a, b, diff);
      break;
    case proto::BOOL:
      CompareIntegers<uint8_t>(a, b, diff);
      break;
    case proto::INT16:
      CompareIntegers<int16_t>(a, b, diff);
      break;
    case proto::INT32:
      CompareIntegers<int32_t>(a, b, diff);
      break;
    case proto::INT64:
      CompareIntegers<int64_t>(a, b, diff);
      break;
    default:
      break;
  }
  return diff;
}

}  // namespace

float HalfToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t result;
  if (exponent == 0x1f) {  // Infinity or NaN.
    result = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // Normal.
    result = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // Signed zero.
    result = sign;
  } else {  // Subnormal: normalize.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    result =
        sign | (static_cast<uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &result, sizeof(value));
  return value;
}

float BFloat16ToFloat(uint16_t bits) {
  uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

absl::StatusOr<DiffReport> Diff(const std::string& a, const std::string& b,
                                const interop::SourceOptions& options) {
  // Compared in place from the files' mappings; memory stays bounded.
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> source_a =
      OpenSource(a, options);
  if (!source_a.ok()) return source_a.status();
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> source_b =
      OpenSource(b, options);
  if (!source_b.ok()) return source_b.status();
  const interop::TensorSource& from_a = **source_a;
  const interop::TensorSource& from_b = **source_b;
  std::map<std::string, std::pair<int, int>> names;  // index in A, in B
  for (size_t i = 0; i < from_a.tensors().size(); ++i) {
    names[from_a.tensors()[i].name] = {static_cast<int>(i), -1};
  }
  for (size_t i = 0; i < from_b.tensors().size(); ++i) {
    auto [it, inserted] =
        names.try_emplace(from_b.tensors()[i].name, -1, static_cast<int>(i));
    if (!inserted) it->second.second = static_cast<int>(i);
  }
  DiffReport report;
  int equal = 0, different = 0, changed = 0, only_a = 0, only_b = 0;
  absl::StrAppend(&report.text, "A: ", a, "\nB: ", b, "\n");
  std::string scratch_a, scratch_b;
  for (const auto& [name, indices] : names) {
    if (indices.second < 0) {
      ++only_a;
      absl::StrAppend(&report.text, "- ", name, "  only in A\n");
      continue;
    }
    if (indices.first < 0) {
      ++only_b;
      absl::StrAppend(&report.text, "+ ", name, "  only in B\n");
      continue;
    }
    const interop::SourceTensor& ta = from_a.tensors()[indices.first];
    const interop::SourceTensor& tb = from_b.tensors()[indices.second];
    if (ta.dtype != tb.dtype) {
      ++changed;
      absl::StrAppend(&report.text, "! ", name, "  dtype ", ta.dtype, " -> ",
                      tb.dtype, "\n");
      continue;
    }
    if (ta.shape != tb.shape) {
      ++changed;
      absl::StrAppend(&report.text, "! ", name, "  shape ",
                      base::ShapeToString(ta.shape), " -> ",
                      base::ShapeToString(tb.shape), "\n");
      continue;
    }
    absl::StatusOr<absl::string_view> bytes_a =
        from_a.TensorBytes(indices.first, &scratch_a);
    if (!bytes_a.ok()) return bytes_a.status();
    absl::StatusOr<absl::string_view> bytes_b =
        from_b.TensorBytes(indices.second, &scratch_b);
    if (!bytes_b.ok()) return bytes_b.status();
    if (*bytes_a == *bytes_b) {
      ++equal;
      absl::StrAppend(&report.text, "= ", name, "\n");
      continue;
    }
    ++different;
    if (!ta.checkpoint_dtype.has_value()) {
      absl::StrAppend(&report.text, "~ ", name, "  bytes differ (", ta.dtype,
                      " values are not compared)\n");
      continue;
    }
    ElementDiff diff =
        CompareElements(*ta.checkpoint_dtype,
                        absl::MakeConstSpan(bytes_a->data(), bytes_a->size()),
                        absl::MakeConstSpan(bytes_b->data(), bytes_b->size()));
    if (diff.differing == 0) {
      absl::StrAppend(&report.text, "~ ", name,
                      "  bit patterns differ, values equal (signed zeros or "
                      "NaN payloads)\n");
      continue;
    }
    std::string max_abs = std::isnan(diff.max_abs) ? "nan"
                          : diff.integral
                              ? absl::StrFormat("%.0f", diff.max_abs)
                              : absl::StrFormat("%.6g", diff.max_abs);
    size_t element = ElementSize(*ta.checkpoint_dtype);
    absl::StrAppend(&report.text, "~ ", name, "  max abs diff ", max_abs, ", ",
                    diff.differing, " of ", ta.size_bytes / element,
                    " elements differ\n");
  }
  report.identical =
      different == 0 && changed == 0 && only_a == 0 && only_b == 0;
  absl::StrAppend(&report.text, names.size(), " tensors: ", equal, " equal, ",
                  different, " different, ", changed, " shape/dtype changed, ",
                  only_a, " only in A, ", only_b, " only in B\n");
  return report;
}

}  // namespace ckpt
}  // namespace checkpoint
