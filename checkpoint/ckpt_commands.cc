#include "checkpoint/ckpt_commands.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/ckpt_text.h"
#include "checkpoint/digest.h"
#include "checkpoint/interop/convert.h"
#include "checkpoint/interop/name_rules.h"
#include "checkpoint/manifest_file.h"
#include "checkpoint/reader.h"
#include "checkpoint/run_directory.h"
#include "checkpoint/upgrade.h"
#include "checkpoint/writer.h"
#include "tools/base/paths.h"

namespace checkpoint {
namespace ckpt {

absl::StatusOr<std::string> Verify(const std::string& path,
                                   const interop::SourceOptions& options) {
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> source =
      OpenSource(path, options);
  if (!source.ok()) return source.status();
  return (*source)->Verify();
}

absl::StatusOr<std::string> ListRun(const std::string& run_dir) {
  if (!Exists(run_dir)) {
    return absl::NotFoundError(
        absl::StrCat(run_dir, ": no such file or directory"));
  }
  if (!IsDirectory(run_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat(run_dir, ": not a run directory"));
  }
  if (Exists(absl::StrCat(run_dir, "/", kManifestFileName))) {
    return absl::InvalidArgumentError(absl::StrCat(
        run_dir,
        ": is a checkpoint, not a run directory (try `ckpt inspect`)"));
  }
  absl::StatusOr<std::vector<CheckpointEntry>> entries =
      ListRunDirectory(run_dir);
  if (!entries.ok()) return entries.status();
  if (entries->empty())
    return absl::StrCat("no checkpoints in ", run_dir, "\n");
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "EPOCH", "STEP", "METRIC", ""}};
  std::string best = "-", last = "-";
  for (const CheckpointEntry& entry : *entries) {
    std::vector<std::string> marks;
    if (entry.is_best) {
      marks.push_back("best");
      best = entry.name;
    }
    if (entry.is_last) {
      marks.push_back("last");
      last = entry.name;
    }
    rows.push_back(
        {entry.name, absl::StrCat(entry.epoch), absl::StrCat(entry.step),
         entry.metric_name.empty()
             ? "-"
             : absl::StrCat(entry.metric_name, "=", FormatDouble(entry.metric)),
         absl::StrJoin(marks, ",")});
  }
  // EPOCH and STEP align right.
  std::string out = FormatTable(rows, {1, 2}, "", "  ");
  absl::StrAppend(&out, entries->size(), " checkpoint(s); best: ", best,
                  "; last: ", last, "\n");
  return out;
}

absl::StatusOr<std::string> Digest(const std::string& path,
                                   const interop::SourceOptions& options) {
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> source =
      OpenSource(path, options);
  if (!source.ok()) return source.status();
  absl::StatusOr<std::string> digest = (*source)->Digest();
  if (!digest.ok()) return digest.status();
  return *digest + "\n";
}

absl::StatusOr<std::string> Convert(const std::string& in,
                                    const std::string& out,
                                    const Flags& flags) {
  if (!Exists(in)) {
    return absl::NotFoundError(absl::StrCat(in, ": no such file or directory"));
  }
  interop::ConvertOptions options;
  options.source.lenient = flags.lenient;
  options.rules.strip_prefixes = flags.strip_prefixes;
  options.rules.add_prefix = flags.add_prefix;
  options.model_only = flags.model_only;
  options.overwrite = flags.overwrite;
  if (!flags.rename_file.empty()) {
    absl::StatusOr<std::map<std::string, std::optional<std::string>>> mapping =
        interop::ReadNameMapping(base::ResolveUserPath(flags.rename_file));
    if (!mapping.ok()) return mapping.status();
    options.rules.mapping = *std::move(mapping);
  }
  absl::StatusOr<interop::ConvertReport> report =
      interop::Convert(in, out, options);
  if (!report.ok()) return report.status();
  return report->Text();
}

int RunCkpt(const std::vector<std::string>& args, const Flags& flags,
            std::ostream& out, std::ostream& err) {
  auto fail = [&err](int code, absl::string_view message) {
    err << "ckpt: error: " << OneLine(message) << "\n";
    return code;
  };
  if (args.empty()) {
    return fail(
        kExitUsage,
        "missing command: inspect, verify, ls, diff, digest, upgrade or "
        "convert (see --help)");
  }
  const std::string& command = args[0];
  const bool two_paths =
      command == "diff" || command == "upgrade" || command == "convert";
  size_t expected = two_paths ? 3 : 2;
  bool known = command == "inspect" || command == "verify" || command == "ls" ||
               command == "diff" || command == "digest" ||
               command == "upgrade" || command == "convert";
  if (!known) {
    return fail(kExitUsage,
                absl::StrCat("unknown command '", command,
                             "': expected inspect, verify, ls, diff, digest, "
                             "upgrade or convert"));
  }
  if (args.size() != expected) {
    return fail(kExitUsage,
                absl::StrCat(command, " takes ",
                             command == "diff"      ? "two paths (A B)"
                             : command == "upgrade" ? "two paths (OLD NEW)"
                             : command == "convert" ? "two paths (IN OUT)"
                             : command == "ls"      ? "one run directory"
                                                    : "one checkpoint path",
                             ", got ", args.size() - 1, " argument(s)"));
  }
  if (flags.json && command != "inspect") {
    return fail(kExitUsage, "--json applies to inspect only");
  }
  if (command != "convert" &&
      (!flags.strip_prefixes.empty() || !flags.add_prefix.empty() ||
       !flags.rename_file.empty() || flags.model_only || flags.overwrite)) {
    return fail(kExitUsage,
                "--strip_prefix, --add_prefix, --rename, --model_only and "
                "--overwrite apply to convert only");
  }
  if (flags.lenient && (command == "ls" || command == "upgrade")) {
    return fail(kExitUsage,
                absl::StrCat("--lenient does not apply to ", command));
  }
  interop::SourceOptions source_options;
  source_options.lenient = flags.lenient;
  std::string path = base::ResolveUserPath(args[1]);
  if (command == "convert") {
    absl::StatusOr<std::string> report =
        Convert(path, base::ResolveUserPath(args[2]), flags);
    if (!report.ok()) return fail(kExitFailure, report.status().message());
    out << *report;
    return kExitOk;
  }
  if (command == "diff") {
    absl::StatusOr<DiffReport> report =
        Diff(path, base::ResolveUserPath(args[2]), source_options);
    if (!report.ok()) return fail(kExitUsage, report.status().message());
    out << report->text;
    return report->identical ? kExitOk : kExitFailure;
  }
  if (command == "upgrade") {
    const std::string new_path = base::ResolveUserPath(args[2]);
    absl::StatusOr<int> copied = UpgradeCheckpoint(path, new_path);
    if (!copied.ok()) return fail(kExitFailure, copied.status().message());
    out << "OK: " << *copied << " tensors verified and written to " << new_path
        << " in format version " << kFormatVersion << "\n";
    return kExitOk;
  }
  absl::StatusOr<std::string> text;
  if (command == "inspect") {
    text = flags.json ? InspectJson(path, source_options)
                      : InspectText(path, source_options);
  } else if (command == "verify") {
    text = Verify(path, source_options);
  } else if (command == "ls") {
    text = ListRun(path);
  } else {
    text = Digest(path, source_options);
  }
  if (!text.ok()) return fail(kExitFailure, text.status().message());
  out << *text;
  return kExitOk;
}

}  // namespace ckpt
}  // namespace checkpoint
