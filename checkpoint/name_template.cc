#include "checkpoint/name_template.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/retention.h"

namespace checkpoint {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string FormatInteger(int64_t value, int width, bool zero_pad) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), zero_pad ? "%0*lld" : "%*lld",
                width < 0 ? 0 : width, static_cast<long long>(value));
  return buffer;
}

std::string FormatDouble(double value, char conversion, int precision) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[512];
  if (conversion == 'g') {
    std::snprintf(buffer, sizeof(buffer), "%g", value);
  } else {
    const char* format = conversion == 'e' ? "%.*e" : "%.*f";
    std::snprintf(buffer, sizeof(buffer), format, precision, value);
  }
  return buffer;
}

// Substituted text must stay inside one path component.
std::string SanitizeComponent(std::string text) {
  for (char& c : text) {
    if (c == '/' || c == '\0') c = '_';
  }
  return text;
}

}  // namespace

absl::StatusOr<NameTemplate> NameTemplate::Parse(absl::string_view text) {
  NameTemplate parsed;
  parsed.text_ = std::string(text);
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint name template '", text, "': ", why));
  };
  std::string literal;
  auto flush_literal = [&] {
    if (literal.empty()) return;
    Segment segment;
    segment.text = std::move(literal);
    parsed.segments_.push_back(std::move(segment));
    literal.clear();
  };
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      literal.push_back('{');
      i += 2;
      continue;
    }
    if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      literal.push_back('}');
      i += 2;
      continue;
    }
    if (c == '}') return invalid("unmatched '}' (write '}}' for a brace)");
    if (c == '/') return invalid("'/' is not allowed in a checkpoint name");
    if (c != '{') {
      literal.push_back(c);
      ++i;
      continue;
    }
    size_t close = text.find('}', i + 1);
    if (close == absl::string_view::npos) return invalid("unterminated '{'");
    absl::string_view field = text.substr(i + 1, close - i - 1);
    i = close + 1;
    if (field.find('{') != absl::string_view::npos) {
      return invalid("'{' inside a field");
    }
    absl::string_view spec;
    if (size_t colon = field.find(':'); colon != absl::string_view::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    if (field.empty()) return invalid("empty field name");
    Segment segment;
    segment.is_field = true;
    segment.text = std::string(field);
    if (field == "epoch" || field == "step") {
      segment.conversion = 'd';
      if (!spec.empty()) {
        int width = 0;
        if (!absl::c_all_of(spec, absl::ascii_isdigit) ||
            !absl::SimpleAtoi(spec, &width) || width > 32) {
          return invalid(absl::StrCat("field {", field, "} takes a width such ",
                                      "as 06, not '", spec, "'"));
        }
        segment.zero_pad = spec.size() > 1 && spec[0] == '0';
        segment.width_or_precision = width;
      }
    } else if (field == "monitor") {
      if (!spec.empty()) return invalid("field {monitor} takes no format");
      segment.conversion = 's';
    } else {
      segment.conversion = 'g';
      if (!spec.empty()) {
        int precision = 0;
        char conversion = spec.back();
        absl::string_view digits = spec.substr(1, spec.size() - 2);
        if (spec.size() < 3 || spec[0] != '.' ||
            (conversion != 'f' && conversion != 'e') ||
            !absl::c_all_of(digits, absl::ascii_isdigit) ||
            !absl::SimpleAtoi(digits, &precision) || precision > 17) {
          return invalid(absl::StrCat("field {", field,
                                      "} takes a format such as .4f or .3e, "
                                      "not '",
                                      spec, "'"));
        }
        segment.conversion = conversion;
        segment.width_or_precision = precision;
      }
    }
    flush_literal();
    parsed.segments_.push_back(std::move(segment));
  }
  flush_literal();
  if (parsed.segments_.empty()) return invalid("empty template");
  return parsed;
}

absl::StatusOr<std::string> NameTemplate::Render(
    const proto::Metadata& metadata, absl::string_view monitor) const {
  std::string name;
  for (const Segment& segment : segments_) {
    if (!segment.is_field) {
      name += segment.text;
    } else if (segment.text == "epoch") {
      name += FormatInteger(metadata.progress().epoch(),
                            segment.width_or_precision, segment.zero_pad);
    } else if (segment.text == "step") {
      name += FormatInteger(metadata.progress().global_step(),
                            segment.width_or_precision, segment.zero_pad);
    } else if (segment.text == "monitor") {
      name += SanitizeComponent(std::string(monitor));
    } else {
      double value;
      if (segment.text == "value") {
        value = MonitoredValue(metadata, monitor);
      } else {
        auto found = metadata.metrics().find(segment.text);
        value = found == metadata.metrics().end() ? kNaN : found->second;
      }
      name +=
          FormatDouble(value, segment.conversion, segment.width_or_precision);
    }
  }
  if (name.empty() || name[0] == '.' || name == kBestLinkName ||
      name == kLastLinkName) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint name template '", text_, "' renders '", name,
                     "', which is not a usable checkpoint name (empty, ",
                     "hidden, or a link name)"));
  }
  return name;
}

}  // namespace checkpoint
