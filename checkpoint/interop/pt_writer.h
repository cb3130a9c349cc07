// Writing torch.save files that Python reads with
// torch.load(path, weights_only=True). Torch-free.
//
// The file is what torch.save writes (pt_file.h): a zip of STORED records,
// payloads aligned to 64 bytes, `<root>/data.pkl` in pickle protocol 2,
// `<root>/byteorder`, one `<root>/data/<key>` per tensor and
// `<root>/version`; <root> is the file's name without its extension. The
// pickle uses only what both PyTorch's weights_only unpicklers (1.13 and
// 2.x) accept: OrderedDict for dicts of tensors, plain dicts, lists,
// tuples, sets, str, int, bool, None, bytes (as _codecs.encode), dtypes,
// devices, and tensors through torch._utils._rebuild_tensor_v2 (v3 with an
// untyped storage for the dtypes 1.13 lacks). Floats are BINFLOAT, which
// PyTorch 1.13's weights_only unpickler does not know (it refuses every
// optimizer state_dict Python itself saves); 2.x reads them.
//
//   interop::PickleTree tree;
//   interop::PickleValue* state = tree.Dict();
//   tree.Set(state, tree.String("fc.weight"), tree.Tensor(0));
//   std::vector<interop::PtTensorData> tensors = {
//       {&interop::TorchDtypeOf(checkpoint::proto::FLOAT32), {2, 3}, bytes}};
//   RETURN_IF_ERROR(interop::WritePt("model.pt", *state, tensors));
//
// Commit is atomic: `path` holds its old content or the whole new file.
#ifndef CHECKPOINT_INTEROP_PT_WRITER_H_
#define CHECKPOINT_INTEROP_PT_WRITER_H_

#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "checkpoint/interop/torch_pickle.h"

namespace interop {

// Values to write, owned by the tree. Not thread-safe.
class PickleTree {
 public:
  PickleValue* New(PickleValue::Kind kind);
  PickleValue* String(absl::string_view text);
  PickleValue* Int(int64_t value);
  PickleValue* Float(double value);
  PickleValue* Bool(bool value);
  PickleValue* None() { return New(PickleValue::Kind::kNone); }
  PickleValue* Dict() { return New(PickleValue::Kind::kDict); }
  PickleValue* List() { return New(PickleValue::Kind::kList); }
  // Tensor `index` of the vector given to WritePt.
  PickleValue* Tensor(int index);
  // dict[key] = value, replacing an existing string key.
  static void Set(PickleValue* dict, const PickleValue* key,
                  const PickleValue* value);

 private:
  std::deque<PickleValue> values_;
};

struct PtTensorData {
  const TorchDtype* dtype;
  std::vector<int64_t> shape;
  absl::string_view bytes;  // row-major, numel * itemsize
  bool requires_grad = false;
};

// Writes `root` to `path`. Each kTensor value names tensors[value.tensor];
// a tensor named twice is saved once and shared, as in Python. Errors:
// kInvalidArgument for a value that cannot be written (a placeholder, a
// global, an integer beyond 64 bits, a tensor whose bytes do not match its
// dtype and shape, a tensor index out of range); I/O errors naming `path`.
absl::Status WritePt(const std::string& path, const PickleValue& root,
                     const std::vector<PtTensorData>& tensors);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_PT_WRITER_H_
