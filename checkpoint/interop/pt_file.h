// torch.save files (.pt, .pth, and Lightning's .ckpt, which is the same
// container), read without Python and without executing anything.
// Torch-free.
//
// A file is a zip (zip_archive.h) whose entries share one root directory,
// taken from the archive (torch.save names it after the file, or
// "archive"):
//   <root>/data.pkl          the pickled object (torch_pickle.h)
//   <root>/data/<key>        one record per storage, its raw bytes
//   <root>/version           the serialization version ("3")
//   <root>/byteorder         "little" or "big" (2.1+; absent: little)
//   <root>/.data/serialization_id, <root>/.format_version,
//   <root>/.storage_alignment (2.x), and any other dot-record: ignored.
// Open checks, before anything is returned: the zip; one root; data.pkl
// present and within kMaxPtPickleBytes; little-endian; every storage the
// pickle names present as a record of exactly its size; and, unless
// PtReadOptions::check_crc is false, the CRC-32 of every record it reads
// (data.pkl and each storage). A file in the legacy format (before PyTorch
// 1.6, or saved with _use_new_zipfile_serialization=False) or a TorchScript
// module is refused with a message that says so.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<interop::PtFile> file,
//                    interop::PtFile::Open("resnet18.pt", {}));
//   ASSIGN_OR_RETURN(interop::PtNames names,
//                    interop::NameContents(file->pickle()));
//   for (const interop::PtNamedTensor& named : names.tensors) {
//     std::string scratch;
//     absl::string_view bytes = file->TensorBytes(
//         file->pickle().tensors()[named.tensor], &scratch);
//   }
//
// A PtFile is immutable after Open and may be shared between threads; the
// file's mapping lives as long as it does.
#ifndef CHECKPOINT_INTEROP_PT_FILE_H_
#define CHECKPOINT_INTEROP_PT_FILE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/interop/torch_pickle.h"
#include "checkpoint/interop/zip_archive.h"
#include "tools/base/files.h"

namespace interop {

inline constexpr uint64_t kMaxPtPickleBytes = uint64_t{1} << 30;

struct PtReadOptions {
  PickleOptions pickle;
  bool check_crc = true;
};

class PtFile {
 public:
  // Errors name `path`: kNotFound, kFailedPrecondition (not a regular file;
  // a legacy or TorchScript file; a global or opcode refused), kDataLoss
  // (anything malformed, a CRC mismatch).
  static absl::StatusOr<std::unique_ptr<PtFile>> Open(
      const std::string& path, const PtReadOptions& options);

  const TorchPickle& pickle() const { return pickle_; }
  const std::string& path() const { return file_->path(); }
  const std::string& root() const { return root_; }  // the archive's root
  const std::string& version() const { return version_; }
  // The bytes of storage `index` of pickle().storages(), in the mapping.
  absl::string_view StorageBytes(int index) const {
    return storage_bytes_[index];
  }
  // `tensor`'s elements in row-major order: a view of the mapping when the
  // tensor is contiguous, otherwise gathered into *scratch (its strides
  // were checked against its storage when the pickle was read).
  absl::string_view TensorBytes(const TorchTensor& tensor,
                                std::string* scratch) const;

 private:
  PtFile() = default;
  std::unique_ptr<base::MappedFile> file_;
  std::string root_;
  std::string version_;
  TorchPickle pickle_;
  std::vector<absl::string_view> storage_bytes_;
};

// True when `bytes` (a file's first bytes) look like torch.save's zip
// container (or any zip), as opposed to safetensors or our manifest.
bool LooksLikeZip(absl::string_view bytes);

// Names for the tensors and plain values of a pickled object, by the
// project's convention (checkpoint/named_tensors.h):
//   - A state_dict (a dict whose values are all tensors) gives its keys.
//   - A training dict gives the keys of its model state_dict (the first
//     of "state_dict", "model_state_dict", "model", "model_state", "net",
//     "network" that is a state_dict) as model tensor names, and every
//     other value the "/"-joined path of keys and list indices that leads
//     to it ("optimizer/state/0/momentum_buffer", "epoch").
//   - Anything else: every value by its path.
// A tensor reached twice (tied weights) is named each time.
struct PtNamedTensor {
  std::string name;
  int tensor;  // index into TorchPickle::tensors()
};
struct PtNamedValue {
  std::string name;
  const PickleValue* value;  // a scalar: None, bool, int, float, str, ...
};
struct PtNames {
  std::vector<PtNamedTensor> tensors;
  std::vector<PtNamedValue> values;
  std::string model_key;  // the training dict's model key, if one was found
};
// kDataLoss if the names would exceed 256 MiB in all (a hostile file).
absl::StatusOr<PtNames> NameContents(const TorchPickle& pickle);

// A scalar as Python would print it: 3, 0.25, True, None, 'text'.
std::string PythonRepr(const PickleValue& value);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_PT_FILE_H_
