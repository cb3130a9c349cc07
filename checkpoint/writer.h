// Writes one checkpoint directory atomically. Torch-free: callers hand it
// raw bytes (checkpoint/tensors.h does that for torch::Tensor).
//
// On-disk layout (checkpoint/FORMAT.md has the full specification):
//
//   NAME/manifest.pb        32-byte checked header + canonical
//                           checkpoint.proto.Manifest (manifest_file.h)
//   NAME/data-00000.bin     tensor bytes, each tensor at an offset aligned to
//                           Manifest.alignment (64), zero padding between
//
// Atomicity: everything is written into a temporary sibling directory
// `.tmp-NAME-<pid>-<unique>` of the final path, data and manifest are fsync'ed,
// the directory is renamed to NAME and the parent is fsync'ed. If NAME
// already exists it is swapped in one renameat2(RENAME_EXCHANGE) and the
// old directory removed afterwards. A crash at any instant leaves either
// the old NAME or the new one; at worst a `.tmp-*` directory, which
// RemoveStaleTemporaries() deletes. Crash points for tests
// (tools/base/stop_point.h): "writer.data_written" (data file fsync'ed, no
// manifest yet) and "writer.manifest_written" (complete, not yet renamed).
//
// A checkpoint of several processes (a data-parallel job, FORMAT.md section
// 6): each other process writes what it alone holds into a data file of its
// own with DataFileWriter and reports the DataFilePart; the committing
// process adds every part with AddDataFile before Commit, so one manifest
// covers (and checksums) every process's bytes and one rename publishes
// them together. Crash point "writer.part_written": a part's file is
// fsync'ed and closed, not yet reported.
//
// Example:
//   ASSIGN_OR_RETURN(auto writer, CheckpointWriter::Create("/runs/a/epoch=1"));
//   RETURN_IF_ERROR(writer->AddTensor("fc.weight", proto::FLOAT32, {10, 64},
//                                      bytes));
//   *writer->mutable_metadata()->mutable_progress() = ...;
//   RETURN_IF_ERROR(writer->Commit());
//
// Not thread-safe: one thread drives one writer.
#ifndef CHECKPOINT_WRITER_H_
#define CHECKPOINT_WRITER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "checkpoint/manifest.pb.h"
#include "checkpoint/manifest_file.h"
#include "tools/base/files.h"

namespace checkpoint {

inline constexpr uint32_t kTensorAlignment = 64;
inline constexpr char kManifestFileName[] = "manifest.pb";
// Uncommitted temporaries begin with this (FORMAT.md section 6).
using base::kTemporaryPrefix;

struct WriterOptions {
  // fsync data, manifest and directories before and after the rename.
  // Only tests and benchmarks of the page cache turn this off.
  bool sync = true;
};

// Where AddTensorFrom gets a tensor's bytes: called for consecutive pieces
// in order, it fills `out` with the tensor's bytes [offset, offset +
// out.size()). An error it returns aborts the writer.
using TensorBytesSource =
    absl::FunctionRef<absl::Status(uint64_t offset, absl::Span<char> out)>;

// One data file written apart from its checkpoint, waiting to be added to
// one by CheckpointWriter::AddDataFile (possibly in another process).
struct DataFilePart {
  std::string path;
  uint64_t size_bytes = 0;
  // Offsets, sizes and checksums in this file; data_file is left unset.
  std::vector<proto::TensorEntry> tensors;
};

// Writes one data file (FORMAT.md section 3): aligned tensors, each
// checksummed over the bytes as written. Not thread-safe.
class DataFileWriter {
 public:
  // Creates `path`, which must not exist. `label` starts error messages
  // (default: the path).
  static absl::StatusOr<std::unique_ptr<DataFileWriter>> Create(
      std::string path, WriterOptions options = {});
  static absl::StatusOr<std::unique_ptr<DataFileWriter>> Create(
      std::string path, std::string label, WriterOptions options);
  // Removes the file unless Finish() succeeded.
  ~DataFileWriter();
  DataFileWriter(const DataFileWriter&) = delete;
  DataFileWriter& operator=(const DataFileWriter&) = delete;

  // As CheckpointWriter::AddTensor. A refused tensor (bad name, shape or
  // bytes) leaves the writer usable; a failed write makes every later call
  // return that error.
  absl::Status AddTensor(absl::string_view name, proto::DType dtype,
                         absl::Span<const int64_t> shape,
                         absl::Span<const char> bytes,
                         absl::string_view saved_device = "cpu");
  // As CheckpointWriter::AddTensorFrom.
  absl::Status AddTensorFrom(absl::string_view name, proto::DType dtype,
                             absl::Span<const int64_t> shape,
                             uint64_t size_bytes, TensorBytesSource source,
                             absl::string_view saved_device = "cpu");

  // Flushes, fsyncs (WriterOptions::sync) and closes the file, and says
  // what it holds.
  absl::StatusOr<DataFilePart> Finish();

 private:
  friend class CheckpointWriter;
  class Impl;
  explicit DataFileWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class CheckpointWriter {
 public:
  // Prepares a temporary directory beside `final_path`. The parent
  // directory must exist.
  static absl::StatusOr<std::unique_ptr<CheckpointWriter>> Create(
      std::string final_path, WriterOptions options = {});

  // Removes the temporary directory unless Commit() succeeded.
  ~CheckpointWriter();

  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Appends one tensor. `bytes` is copied (or written) before this returns,
  // and the checksum is computed over the bytes as written. Names must be
  // unique; bytes.size() must equal product(shape) * element size.
  absl::Status AddTensor(absl::string_view name, proto::DType dtype,
                         absl::Span<const int64_t> shape,
                         absl::Span<const char> bytes,
                         absl::string_view saved_device = "cpu");

  // As AddTensor, for bytes that are not in one span of memory: `source`
  // fills the writer's buffer piece by piece (at most 4 MiB at a time), and
  // the checksum covers the bytes as written. Name, dtype and shape are
  // checked first, as AddTensor does, and leave the writer usable; an error
  // of `source` or a bool byte other than 0 or 1 comes after part of the
  // tensor may be in the file, and aborts the writer.
  absl::Status AddTensorFrom(absl::string_view name, proto::DType dtype,
                             absl::Span<const int64_t> shape,
                             uint64_t size_bytes, TensorBytesSource source,
                             absl::string_view saved_device = "cpu");

  // Metadata and training state to record; tensors and data files are
  // filled in by the writer.
  proto::Metadata* mutable_metadata();
  proto::TrainingState* mutable_training_state();

  // Adds a data file finished by a DataFileWriter (usually another
  // process's) as data-0000K.bin: checks that `part.path` is a regular file
  // of part.size_bytes bytes and that every entry lies inside it, aligned,
  // then moves it into the temporary directory (rename(2): it must be on
  // the same filesystem, e.g. in the parent directory). Its tensors join
  // the manifest; names must stay unique across the checkpoint (checked at
  // Commit). Errors: kNotFound, kDataLoss (size, not a regular file),
  // kInvalidArgument (an entry outside the file); they abort the writer.
  absl::Status AddDataFile(const DataFilePart& part);

  // Flushes, fsyncs and atomically publishes the checkpoint at final_path.
  absl::Status Commit();

  const std::string& final_path() const;
  // The `.tmp-NAME-...` directory being written, until Commit.
  const std::string& temporary_path() const;

 private:
  class Impl;
  explicit CheckpointWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Deletes `.tmp-*` directories left in `directory` by writers that died;
// those of live processes (this one's included: an async save may be
// writing) are spared, by the pid in their name. Returns how many were
// removed.
absl::StatusOr<int> RemoveStaleTemporaries(const std::string& directory);

// Bytes per element of `dtype`, or 0 for DTYPE_UNSPECIFIED / unknown values.
size_t ElementSize(proto::DType dtype);
absl::string_view DTypeName(proto::DType dtype);

// The index of the first byte of a BOOL tensor's bytes that is neither 0
// nor 1 (FORMAT.md section 3), if any. Writer and reader both refuse one.
std::optional<size_t> FirstInvalidBool(absl::Span<const char> bytes);

}  // namespace checkpoint

#endif  // CHECKPOINT_WRITER_H_
