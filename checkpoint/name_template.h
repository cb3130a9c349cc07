// How checkpoint directories are named: a template rendered from a
// checkpoint's metadata, e.g. "epoch={epoch:04}-step={step:06}-{monitor}=
// {value:.4f}" -> "epoch=0003-step=001200-val_loss=0.2500". Torch-free.
#ifndef CHECKPOINT_NAME_TEMPLATE_H_
#define CHECKPOINT_NAME_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"

namespace checkpoint {

// The run directory's links to its best and newest checkpoints
// (checkpoint/run_directory.h): names no checkpoint may take.
inline constexpr char kBestLinkName[] = "best";
inline constexpr char kLastLinkName[] = "last";

// Checkpoint names rendered from a template.
//
// Syntax: literal text with fields in braces, `{FIELD}` or `{FIELD:SPEC}`;
// `{{` and `}}` are literal braces.
//   {epoch}, {step}      Progress.epoch and Progress.global_step. SPEC is a
//                        width, zero-padded with a leading 0: {step:06}
//                        renders 42 as 000042.
//   {monitor}            the monitored metric's name. No SPEC.
//   {value}              the monitored metric's value.
//   {NAME}               any other name is looked up in Metadata.metrics.
//                        For {value} and {NAME}, SPEC is `.Nf` (N decimals,
//                        fixed) or `.Ne` (exponent); without SPEC the value
//                        is printed with %g. A missing metric or NaN renders
//                        as `nan`, infinities as `inf` / `-inf`.
// Substituted text has `/` replaced by `_`, so a metric called
// "val/loss" still yields one directory name. The rendered name must not be
// empty, start with '.', or be `best` or `last`.
class NameTemplate {
 public:
  static constexpr char kDefault[] =
      "epoch={epoch:04}-step={step:06}-{monitor}={value:.4f}";

  // kInvalidArgument for an unbalanced brace, an empty field, a spec that
  // does not fit the field, or a literal `/`.
  static absl::StatusOr<NameTemplate> Parse(absl::string_view text);

  // `monitor` names the metric that {monitor} and {value} stand for.
  absl::StatusOr<std::string> Render(const proto::Metadata& metadata,
                                     absl::string_view monitor) const;

  const std::string& text() const { return text_; }

 private:
  struct Segment {
    bool is_field = false;
    std::string text;     // Literal text, or the field name.
    char conversion = 0;  // 'd' for integers, 'f'/'e'/'g' for doubles.
    int width_or_precision = -1;
    bool zero_pad = false;
  };
  std::string text_;
  std::vector<Segment> segments_;
};

}  // namespace checkpoint

#endif  // CHECKPOINT_NAME_TEMPLATE_H_
