// One read-only view of the named tensors in any checkpoint a user has, by
// content, not by file name: our checkpoint directory (checkpoint/FORMAT.md),
// a torch.save file (.pt, .pth, Lightning's .ckpt; pt_file.h) or a
// safetensors file (safetensors.h). Torch-free. This is what `ckpt` inspect,
// verify, diff, digest and convert work on, and what LoadAnyCheckpoint
// (torch_load.h) turns into torch::Tensors.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<interop::TensorSource> source,
//                    interop::TensorSource::Open("resnet18.pth", {}));
//   for (size_t i = 0; i < source->tensors().size(); ++i) {
//     std::string scratch;
//     ASSIGN_OR_RETURN(absl::string_view bytes,
//                      source->TensorBytes(i, &scratch));
//   }
//   ASSIGN_OR_RETURN(std::string digest, source->Digest());
//
// Names follow the project's convention (checkpoint/named_tensors.h): model
// tensors by their dotted state_dict names, everything else (optimizer
// state, a training dict's extras) under "/"-joined paths. For a .pt file
// they are pt_file.h's NameContents; names must come out unique, or the
// file is refused.
//
// Detection: a directory is our checkpoint; a file starting with a zip
// signature is torch.save's container; a file whose first 8 bytes are a
// little-endian length followed by '{' is safetensors; a file starting with
// pickle's protocol byte is the legacy torch.save format (refused by name).
// Anything else is refused as "not a checkpoint". A FIFO, socket or device is
// refused without blocking.
//
// What each format lets us check (Verify): ours, the XXH3 of every tensor
// and every other byte; .pt, the CRC-32 of every record it reads (the only
// checksum torch.save writes); safetensors, the header rules and the exact
// file length (the format carries no checksum).
//
// A TensorSource is immutable after Open and may be used from several
// threads; byte views live as long as it does.
#ifndef CHECKPOINT_INTEROP_TENSOR_SOURCE_H_
#define CHECKPOINT_INTEROP_TENSOR_SOURCE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"

namespace checkpoint {
class CheckpointReader;
class TensorDigester;
}  // namespace checkpoint

namespace interop {

enum class SourceFormat { kCheckpoint, kTorchSave, kSafetensors };

// "checkpoint", "torch.save", "safetensors".
absl::string_view SourceFormatName(SourceFormat format);

struct SourceTensor {
  std::string name;
  // PyTorch's name for the dtype ("float32", "uint16", "float8_e4m3fn");
  // a safetensors dtype torch has no name for keeps its own ("F4").
  std::string dtype;
  // Our format's dtype, or none for the dtypes our format lacks.
  std::optional<checkpoint::proto::DType> checkpoint_dtype;
  std::vector<int64_t> shape;
  uint64_t size_bytes = 0;  // numel * itemsize
};

// A plain value of a Python training dict ("epoch", "best_acc",
// "optimizer/param_groups/0/lr").
struct SourceValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kOther };
  std::string name;
  Kind kind = Kind::kNone;
  int64_t integer = 0;  // kBool (0 or 1) and kInt
  double number = 0;    // kFloat
  std::string text;     // kString; for kOther, what it is ("bytes", ...)
  std::string repr;     // as Python prints it: 3, 0.25, True, 'adam'
};

struct SourceOptions {
  // torch.save files: unknown Python classes (a Lightning checkpoint's
  // hyper-parameters) become placeholders instead of refusing the file.
  // Modules that run code stay refused (torch_pickle.h).
  bool lenient = false;
};

class TensorSource {
 public:
  // Errors name `path`: kNotFound; kInvalidArgument when it is no
  // checkpoint of any kind; kFailedPrecondition (a FIFO, a legacy or
  // TorchScript file, a refused global); kDataLoss (malformed, names not
  // unique, a checksum mismatch found while opening).
  static absl::StatusOr<std::unique_ptr<TensorSource>> Open(
      const std::string& path, const SourceOptions& options);
  ~TensorSource();
  TensorSource(const TensorSource&) = delete;
  TensorSource& operator=(const TensorSource&) = delete;

  SourceFormat format() const { return format_; }
  const std::string& path() const { return path_; }
  // In the file's order.
  const std::vector<SourceTensor>& tensors() const { return tensors_; }
  // The tensor named `name`, or null.
  const SourceTensor* Find(absl::string_view name) const;
  // torch.save: the training dict's values that are not tensors. Ours: the
  // ones `ckpt convert` kept in metadata.user["python/<name>"], typed again
  // (None, bool, int, float, str), so that they return to a .pt.
  const std::vector<SourceValue>& values() const { return values_; }
  // safetensors: `__metadata__`; ours: metadata.user.
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // torch.save: the training dict's model key ("state_dict", "model"), or
  // empty (ours: the one ForeignMetadata kept); and the Python classes read
  // as placeholders (lenient).
  const std::string& model_key() const { return model_key_; }
  const std::vector<std::string>& placeholders() const { return placeholders_; }
  // Our checkpoint's reader (opened with mmap), or null for other formats.
  const checkpoint::CheckpointReader* checkpoint() const {
    return checkpoint_.get();
  }

  // Tensor `index`'s bytes in row-major order: a view of the file's
  // mapping, or gathered into *scratch (a strided .pt view). Ours are
  // checked against their XXH3 first (kDataLoss on mismatch).
  absl::StatusOr<absl::string_view> TensorBytes(size_t index,
                                                std::string* scratch) const;

  // What can be checked (see the file comment): on success a sentence
  // saying what was verified.
  absl::StatusOr<std::string> Verify() const;

  // checkpoint/digest.h's digest over every tensor: the same tensors give
  // the same digest whichever format holds them.
  absl::StatusOr<std::string> Digest() const;

 private:
  TensorSource() = default;
  struct Formats;
  SourceFormat format_ = SourceFormat::kCheckpoint;
  std::string path_;
  std::vector<SourceTensor> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::vector<SourceValue> values_;
  std::map<std::string, std::string> metadata_;
  std::string model_key_;
  std::vector<std::string> placeholders_;
  std::vector<int> pt_tensor_index_;  // tensors_[i] -> pickle tensor
  std::unique_ptr<checkpoint::CheckpointReader> checkpoint_;
  std::unique_ptr<Formats> formats_;  // the .pt or safetensors file
};

// What our checkpoint's metadata can say of a foreign file: its values as
// user["python/<name>"] (their Python text), integer "epoch" and
// "global_step" also as progress, a training dict's model key as
// user["torch.save/model_key"], safetensors metadata as
// user["safetensors/<key>"]; TensorSource reads the values and the model
// key back from our checkpoint. Used by `ckpt convert` and LoadCheckpoint.
// Without `include_values`, the values (and the progress they give) stay
// out.
checkpoint::proto::Metadata ForeignMetadata(const TensorSource& source,
                                            bool include_values = true);

// Starts `tensor` in a TensorDigester under `name` (its own name, or the one
// a conversion gives it), so that every digest of source tensors is taken
// the same way.
void BeginDigest(checkpoint::TensorDigester& digester, absl::string_view name,
                 const SourceTensor& tensor);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_TENSOR_SOURCE_H_
