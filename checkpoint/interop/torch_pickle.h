// The pickle inside a torch.save file (`data.pkl`), interpreted without
// executing anything. Torch-free.
//
// Python's pickle is a small stack machine whose GLOBAL and REDUCE opcodes
// import and call anything; that is how a .pt file runs code. This
// interpreter has no imports and no calls. It knows a closed list of
// globals, modelled on PyTorch's weights_only unpickler, and builds plain
// values from them:
//   collections.OrderedDict, collections.Counter  -> a dict
//   builtins/__builtin__ set, frozenset           -> a set
//   builtins/__builtin__ bytearray, _codecs.encode -> bytes
//   torch.Size                                    -> a tuple
//   torch.device                                  -> a device
//   torch.<dtype> (torch.float32, ...)            -> a dtype
//   torch.<Type>Storage, torch.UntypedStorage     -> storage types, used by
//       BINPERSID ('storage', type, key, location, numel)
//   torch._utils._rebuild_tensor(_v2, _v3), _rebuild_parameter
//       (_with_state)                             -> a tensor
// Every other global is refused, naming `module.name` and the byte offset.
// With PickleOptions::lenient, an unknown global instead becomes an opaque
// placeholder that records its name and arguments and absorbs the items and
// state the pickle gives it, so that the tensors of a file whose extras
// (a Lightning checkpoint's hyper-parameters, say) pickle arbitrary classes
// can still be read. Globals of modules that run commands or code (os, sys,
// subprocess, builtins.eval, ...) are refused even then.
//
// Opcodes: those of protocols 2 to 5 that carry data (the set PyTorch's
// weights_only unpickler accepts, plus the protocol 4/5 ones that
// torch.save(pickle_protocol=4) emits: FRAME, MEMOIZE, STACK_GLOBAL,
// SHORT_BINUNICODE, BINUNICODE8, (SHORT_)BINBYTES(8), EMPTY_SET, ADDITEMS,
// FROZENSET, NEWOBJ_EX, BYTEARRAY8). Protocol 0/1 text opcodes, out-of-band
// buffers and EXT codes are refused.
//
// Everything is checked as it is read: REDUCE/NEWOBJ only on the globals
// above, SETITEM(S) only on dicts, APPEND(S) only on lists, ADDITEMS only on
// sets, BUILD only on dicts, tensors and placeholders; a tensor's shape,
// strides and offset must lie within its storage and its elements must not
// alias one another (a stride-0 broadcast dimension excepted); a storage key
// has one dtype and one size; and PickleLimits bound the stack, the memo,
// MARK nesting, container nesting, integer sizes and the number of values
// the result expands to (a structure that refers to one list a million
// times is refused, not walked). A container that contains itself is
// refused.
//
//   ASSIGN_OR_RETURN(interop::TorchPickle pickle,
//                    interop::UnpickleTorch(data_pkl_bytes, {}));
//   const interop::PickleValue& root = pickle.root();
//
// A TorchPickle owns all its values; pointers into it live as long as it.
#ifndef CHECKPOINT_INTEROP_TORCH_PICKLE_H_
#define CHECKPOINT_INTEROP_TORCH_PICKLE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"

namespace interop {

// A dtype PyTorch can save.
struct TorchDtype {
  const char* name;          // "float32": torch.<name>
  const char* storage_type;  // "FloatStorage", or "" if only untyped
  int64_t itemsize;
  // Our format's dtype, if it has one.
  std::optional<checkpoint::proto::DType> checkpoint_dtype;
};

// By torch attribute name ("float32", "half", ...) or storage type name
// ("FloatStorage"); null when unknown.
const TorchDtype* FindTorchDtype(absl::string_view name);
const TorchDtype* FindTorchDtypeByStorageType(absl::string_view name);
// The TorchDtype for one of our dtypes.
const TorchDtype& TorchDtypeOf(checkpoint::proto::DType dtype);

struct PickleLimits {
  uint64_t max_stack = uint64_t{1} << 24;
  uint64_t max_memo = uint64_t{1} << 22;
  uint64_t max_marks = 10'000;
  int max_nesting = 1'000;
  uint64_t max_int_bytes = 1'024;
  uint64_t max_expanded_values = uint64_t{1} << 22;
};

struct PickleOptions {
  // Unknown globals become opaque placeholders instead of errors.
  bool lenient = false;
  PickleLimits limits;
};

// A storage, as BINPERSID names it.
struct TorchStorage {
  std::string key;       // the record <root>/data/<key>
  std::string location;  // "cpu", "cuda:0", ...: informational only
  const TorchDtype* dtype = nullptr;
  uint64_t bytes = 0;  // numel * itemsize: the record's exact size
};

struct TorchTensor {
  int storage = 0;  // index into TorchPickle::storages()
  const TorchDtype* dtype = nullptr;
  int64_t offset = 0;  // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
  bool requires_grad = false;
  bool parameter = false;      // rebuilt through _rebuild_parameter
  uint64_t pickle_offset = 0;  // where in data.pkl it was rebuilt
  int64_t numel() const;
  bool contiguous() const;
};

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,     // fits int64: `integer`
    kBigInt,  // does not: `text` holds it in decimal
    kFloat,
    kString,  // UTF-8 in `text`
    kBytes,   // in `text`
    kTuple,
    kList,
    kSet,
    kDict,
    kTensor,   // TorchPickle::tensors()[tensor]
    kStorage,  // TorchPickle::storages()[storage]
    kDtype,    // `dtype`
    kDevice,   // `text`: "cpu", "cuda:0"
    kGlobal,   // a name, not yet called (`text`: "module.name")
    kOpaque,   // lenient: an unknown object; `text`: its class, `items`:
               // its arguments, `entries`: items and state given to it
  };
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;
  const TorchDtype* dtype = nullptr;
  int tensor = -1;
  int storage = -1;
  std::vector<const PickleValue*> items;  // tuple, list, set, opaque args
  // dict items in insertion order (keys are unique by value); opaque state
  std::vector<std::pair<const PickleValue*, const PickleValue*>> entries;
  // A dict's instance attributes (OrderedDict's `_metadata`), from BUILD.
  std::vector<std::pair<const PickleValue*, const PickleValue*>> attributes;

  bool is_container() const;
  // The value of `key` in a dict whose keys are strings, or null.
  const PickleValue* Get(absl::string_view key) const;
};

// "dict", "tensor", "global 'os.system'", ...
std::string DescribeKind(const PickleValue& value);

class TorchPickle {
 public:
  const PickleValue& root() const { return *root_; }
  const std::vector<TorchStorage>& storages() const { return storages_; }
  const std::vector<TorchTensor>& tensors() const { return tensors_; }
  // The lenient placeholders made, by class name, once each.
  const std::vector<std::string>& placeholders() const { return placeholders_; }

 private:
  friend class Unpickler;
  std::deque<PickleValue> values_;
  const PickleValue* root_ = nullptr;
  std::vector<TorchStorage> storages_;
  std::vector<TorchTensor> tensors_;
  std::vector<std::string> placeholders_;
};

// Interprets `pickle`. kDataLoss for malformed bytes and broken limits,
// kFailedPrecondition for what is well-formed but refused (a global not
// allowed, an opcode not supported), each starting "offset N: ".
absl::StatusOr<TorchPickle> UnpickleTorch(absl::string_view pickle,
                                          const PickleOptions& options);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_TORCH_PICKLE_H_
