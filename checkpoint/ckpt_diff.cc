#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "checkpoint/ckpt_commands.h"
#include "checkpoint/ckpt_text.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"

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

uint64_t ElementCount(const proto::TensorEntry& entry) {
  size_t element = ElementSize(entry.dtype());
  return element == 0 ? 0 : entry.size_bytes() / element;
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

absl::StatusOr<DiffReport> Diff(const std::string& a, const std::string& b) {
  ReaderOptions options;
  options.use_mmap = true;  // Compare in place; memory stays bounded.
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader_a =
      OpenCheckpoint(a, options);
  if (!reader_a.ok()) return reader_a.status();
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader_b =
      OpenCheckpoint(b, options);
  if (!reader_b.ok()) return reader_b.status();
  std::set<std::string> names;
  for (const auto& entry : (*reader_a)->manifest().tensors()) {
    names.insert(entry.name());
  }
  for (const auto& entry : (*reader_b)->manifest().tensors()) {
    names.insert(entry.name());
  }
  DiffReport report;
  int equal = 0, different = 0, changed = 0, only_a = 0, only_b = 0;
  absl::StrAppend(&report.text, "A: ", a, "\nB: ", b, "\n");
  for (const std::string& name : names) {
    const proto::TensorEntry* ea = (*reader_a)->FindTensor(name);
    const proto::TensorEntry* eb = (*reader_b)->FindTensor(name);
    if (eb == nullptr) {
      ++only_a;
      absl::StrAppend(&report.text, "- ", name, "  only in A\n");
      continue;
    }
    if (ea == nullptr) {
      ++only_b;
      absl::StrAppend(&report.text, "+ ", name, "  only in B\n");
      continue;
    }
    if (ea->dtype() != eb->dtype()) {
      ++changed;
      absl::StrAppend(&report.text, "! ", name, "  dtype ",
                      DTypeName(ea->dtype()), " -> ", DTypeName(eb->dtype()),
                      "\n");
      continue;
    }
    if (FormatShape(*ea) != FormatShape(*eb)) {
      ++changed;
      absl::StrAppend(&report.text, "! ", name, "  shape ", FormatShape(*ea),
                      " -> ", FormatShape(*eb), "\n");
      continue;
    }
    absl::StatusOr<absl::Span<const char>> bytes_a =
        (*reader_a)->MappedTensor(*ea);
    if (!bytes_a.ok()) return bytes_a.status();
    absl::StatusOr<absl::Span<const char>> bytes_b =
        (*reader_b)->MappedTensor(*eb);
    if (!bytes_b.ok()) return bytes_b.status();
    // std::equal, not memcmp: a zero-size tensor's span may have no data.
    if (std::equal(bytes_a->begin(), bytes_a->end(), bytes_b->begin(),
                   bytes_b->end())) {
      ++equal;
      absl::StrAppend(&report.text, "= ", name, "\n");
      continue;
    }
    ++different;
    ElementDiff diff = CompareElements(ea->dtype(), *bytes_a, *bytes_b);
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
    absl::StrAppend(&report.text, "~ ", name, "  max abs diff ", max_abs, ", ",
                    diff.differing, " of ", ElementCount(*ea),
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
