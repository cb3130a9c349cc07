#include "checkpoint/interop/torch_pickle.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/base/endian.h"

namespace interop {
namespace {

using checkpoint::proto::DType;
using Kind = PickleValue::Kind;

const TorchDtype kTorchDtypes[] = {
    {"float32", "FloatStorage", 4, checkpoint::proto::FLOAT32},
    {"float64", "DoubleStorage", 8, checkpoint::proto::FLOAT64},
    {"float16", "HalfStorage", 2, checkpoint::proto::FLOAT16},
    {"bfloat16", "BFloat16Storage", 2, checkpoint::proto::BFLOAT16},
    {"int8", "CharStorage", 1, checkpoint::proto::INT8},
    {"uint8", "ByteStorage", 1, checkpoint::proto::UINT8},
    {"int16", "ShortStorage", 2, checkpoint::proto::INT16},
    {"int32", "IntStorage", 4, checkpoint::proto::INT32},
    {"int64", "LongStorage", 8, checkpoint::proto::INT64},
    {"bool", "BoolStorage", 1, checkpoint::proto::BOOL},
    {"complex32", "ComplexHalfStorage", 4, std::nullopt},
    {"complex64", "ComplexFloatStorage", 8, std::nullopt},
    {"complex128", "ComplexDoubleStorage", 16, std::nullopt},
    {"uint16", "", 2, std::nullopt},
    {"uint32", "", 4, std::nullopt},
    {"uint64", "", 8, std::nullopt},
    {"float8_e4m3fn", "", 1, std::nullopt},
    {"float8_e5m2", "", 1, std::nullopt},
    {"float8_e4m3fnuz", "", 1, std::nullopt},
    {"float8_e5m2fnuz", "", 1, std::nullopt},
    {"float8_e8m0fnu", "", 1, std::nullopt},
};

// Modules whose globals run commands or code: refused even when lenient,
// since no model state is made of them.
bool IsDangerousModule(absl::string_view module) {
  for (absl::string_view prefix : {"os",
                                   "posix",
                                   "nt",
                                   "sys",
                                   "subprocess",
                                   "builtins",
                                   "__builtin__",
                                   "importlib",
                                   "runpy",
                                   "shutil",
                                   "socket",
                                   "ctypes",
                                   "pickle",
                                   "_pickle",
                                   "marshal",
                                   "code",
                                   "codeop",
                                   "pty",
                                   "multiprocessing",
                                   "webbrowser",
                                   "types",
                                   "functools",
                                   "operator",
                                   "pdb",
                                   "timeit",
                                   "platform",
                                   "signal",
                                   "threading",
                                   "_thread",
                                   "asyncio",
                                   "io",
                                   "tempfile",
                                   "pathlib",
                                   "glob",
                                   "http",
                                   "urllib",
                                   "ftplib",
                                   "smtplib",
                                   "telnetlib",
                                   "commands",
                                   "popen2",
                                   "numpy.testing",
                                   "torch.hub",
                                   "torch.jit",
                                   "torch.ops",
                                   "torch._ops",
                                   "torch.serialization",
                                   "torch.load",
                                   "torch.classes"}) {
    if (module == prefix ||
        (absl::StartsWith(module, prefix) && module.size() > prefix.size() &&
         module[prefix.size()] == '.')) {
      return true;
    }
  }
  return false;
}

// The UTF-8 rules Python's decoder applies (surrogates, which pickle's
// "surrogatepass" lets through, included).
bool IsUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = text[i];
    size_t length;
    uint32_t point;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      length = 2;
      point = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      length = 3;
      point = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      length = 4;
      point = c & 0x07;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const unsigned char next = text[i + k];
      if ((next & 0xc0) != 0x80) return false;
      point = (point << 6) | (next & 0x3f);
    }
    static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (point < kMinimum[length] || point > 0x10ffff) return false;
    i += length;
  }
  return true;
}

// Latin-1 encoding of UTF-8 `text`, as _codecs.encode(text, "latin1").
std::optional<std::string> EncodeLatin1(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = text[i];
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c & 0xe0) == 0xc0 && i + 1 < text.size()) {
      const uint32_t point = ((c & 0x1f) << 6) | (text[i + 1] & 0x3f);
      if (point > 0xff) return std::nullopt;
      out.push_back(static_cast<char>(point));
      ++i;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

// Little-endian two's complement `bytes` in decimal.
std::string BigIntToDecimal(absl::string_view bytes) {
  std::vector<uint8_t> magnitude(bytes.begin(), bytes.end());
  const bool negative = !magnitude.empty() && (magnitude.back() & 0x80);
  if (negative) {  // two's complement negation
    bool carry = true;
    for (uint8_t& byte : magnitude) {
      byte = static_cast<uint8_t>(~byte);
      if (carry) carry = ++byte == 0;
    }
  }
  std::string digits;
  while (true) {
    while (!magnitude.empty() && magnitude.back() == 0) magnitude.pop_back();
    if (magnitude.empty()) break;
    uint32_t remainder = 0;
    for (size_t i = magnitude.size(); i-- > 0;) {
      const uint32_t value = (remainder << 8) | magnitude[i];
      magnitude[i] = static_cast<uint8_t>(value / 10);
      remainder = value % 10;
    }
    digits.push_back(static_cast<char>('0' + remainder));
  }
  if (digits.empty()) digits = "0";
  if (negative) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

// A dict key's identity, for the kinds compared by value.
std::optional<std::string> KeyOf(const PickleValue& key) {
  if (key.kind == Kind::kString) return absl::StrCat("s", key.text);
  if (key.kind == Kind::kInt) return absl::StrCat("i", key.integer);
  if (key.kind == Kind::kBigInt) return absl::StrCat("i", key.text);
  if (key.kind == Kind::kBool) return absl::StrCat("i", key.boolean ? 1 : 0);
  return std::nullopt;
}

}  // namespace

const TorchDtype* FindTorchDtype(absl::string_view name) {
  for (const TorchDtype& dtype : kTorchDtypes) {
    if (name == dtype.name) return &dtype;
  }
  return nullptr;
}

const TorchDtype* FindTorchDtypeByStorageType(absl::string_view name) {
  for (const TorchDtype& dtype : kTorchDtypes) {
    if (*dtype.storage_type != '\0' && name == dtype.storage_type) {
      return &dtype;
    }
  }
  return nullptr;
}

const TorchDtype& TorchDtypeOf(DType dtype) {
  for (const TorchDtype& known : kTorchDtypes) {
    if (known.checkpoint_dtype == dtype) return known;
  }
  return kTorchDtypes[0];  // unreachable for a valid DType
}

int64_t TorchTensor::numel() const {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;  // checked when rebuilt
  return count;
}

bool TorchTensor::contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

bool PickleValue::is_container() const {
  return kind == Kind::kTuple || kind == Kind::kList || kind == Kind::kSet ||
         kind == Kind::kDict || kind == Kind::kOpaque;
}

const PickleValue* PickleValue::Get(absl::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k->kind == Kind::kString && k->text == key) return v;
  }
  return nullptr;
}

std::string DescribeKind(const PickleValue& value) {
  switch (value.kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kSet:
      return "set";
    case Kind::kDict:
      return "dict";
    case Kind::kTensor:
      return "tensor";
    case Kind::kStorage:
      return "storage";
    case Kind::kDtype:
      return "dtype";
    case Kind::kDevice:
      return "device";
    case Kind::kGlobal:
      return absl::StrCat("global '", value.text, "'");
    case Kind::kOpaque:
      return absl::StrCat("placeholder for '", value.text, "'");
  }
  return "value";
}

class Unpickler {
 public:
  Unpickler(absl::string_view data, const PickleOptions& options)
      : data_(data), options_(options) {}

  absl::StatusOr<TorchPickle> Run();

 private:
  // Errors, prefixed with the offset of the opcode being run.
  absl::Status Malformed(absl::string_view what) const {
    return absl::DataLossError(
        absl::StrCat("offset ", opcode_offset_, ": ", what));
  }
  absl::Status Refused(absl::string_view what) const {
    return absl::FailedPreconditionError(
        absl::StrCat("offset ", opcode_offset_, ": ", what));
  }

  absl::Status Read(uint64_t bytes, absl::string_view* out) {
    if (data_.size() - position_ < bytes) {
      return Malformed(absl::StrCat("the pickle ends inside an opcode (", bytes,
                                    " more bytes needed)"));
    }
    *out = data_.substr(position_, bytes);
    position_ += bytes;
    return absl::OkStatus();
  }
  absl::Status ReadUnsigned(size_t bytes, uint64_t* out) {
    absl::string_view raw;
    absl::Status status = Read(bytes, &raw);
    if (status.ok()) *out = base::GetLittleEndian(raw.data(), bytes);
    return status;
  }
  absl::Status ReadLine(std::string* out) {
    const size_t end = data_.find('\n', position_);
    if (end == absl::string_view::npos || end - position_ > 1000) {
      return Malformed("a GLOBAL name is not terminated by a newline");
    }
    *out = std::string(data_.substr(position_, end - position_));
    position_ = end + 1;
    return absl::OkStatus();
  }

  PickleValue* New(Kind kind) {
    result_.values_.emplace_back();
    result_.values_.back().kind = kind;
    return &result_.values_.back();
  }
  absl::Status Push(PickleValue* value) {
    if (stack_.size() >= options_.limits.max_stack) {
      return Malformed(absl::StrCat("the stack holds more than ",
                                    options_.limits.max_stack, " values"));
    }
    stack_.push_back(value);
    return absl::OkStatus();
  }
  absl::Status Pop(PickleValue** out) {
    if (stack_.size() <= floor()) {
      return Malformed("pop from an empty stack (or past a MARK)");
    }
    *out = stack_.back();
    stack_.pop_back();
    return absl::OkStatus();
  }
  absl::Status Top(PickleValue** out) {
    if (stack_.size() <= floor()) {
      return Malformed("the stack is empty (or ends at a MARK)");
    }
    *out = stack_.back();
    return absl::OkStatus();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  // The values pushed since the last MARK, which is removed.
  absl::Status PopMark(std::vector<PickleValue*>* out) {
    if (marks_.empty()) return Malformed("no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    out->assign(stack_.begin() + mark, stack_.end());
    stack_.resize(mark);
    return absl::OkStatus();
  }
  absl::Status Memoize(uint64_t index, PickleValue* value) {
    if (memo_.size() >= options_.limits.max_memo && !memo_.count(index)) {
      return Malformed(absl::StrCat("the memo holds more than ",
                                    options_.limits.max_memo, " values"));
    }
    memo_[index] = value;
    return absl::OkStatus();
  }
  absl::Status Recall(uint64_t index) {
    auto found = memo_.find(index);
    if (found == memo_.end()) {
      return Malformed(absl::StrCat("memo entry ", index, " was never set"));
    }
    return Push(found->second);
  }

  absl::Status PushInt(absl::string_view little_endian) {
    if (little_endian.size() > options_.limits.max_int_bytes) {
      return Malformed(absl::StrCat("an integer of ", little_endian.size(),
                                    " bytes, more than the limit of ",
                                    options_.limits.max_int_bytes));
    }
    // Fits int64 when every byte past the 8th repeats the sign.
    const bool negative =
        !little_endian.empty() && (little_endian.back() & 0x80);
    bool fits = true;
    for (size_t i = 8; i < little_endian.size(); ++i) {
      if (static_cast<uint8_t>(little_endian[i]) != (negative ? 0xff : 0)) {
        fits = false;
      }
    }
    if (fits && little_endian.size() >= 8 &&
        ((little_endian[7] & 0x80) != 0) != negative) {
      fits = false;
    }
    if (!fits) {
      PickleValue* value = New(Kind::kBigInt);
      value->text = BigIntToDecimal(little_endian);
      return Push(value);
    }
    uint64_t bits = negative ? ~uint64_t{0} : 0;
    const size_t used = std::min<size_t>(little_endian.size(), 8);
    for (size_t i = 0; i < used; ++i) {
      bits &= ~(uint64_t{0xff} << (8 * i));
      bits |= uint64_t{static_cast<uint8_t>(little_endian[i])} << (8 * i);
    }
    PickleValue* value = New(Kind::kInt);
    value->integer = static_cast<int64_t>(bits);
    return Push(value);
  }

  absl::Status PushString(Kind kind, absl::string_view bytes) {
    if (kind == Kind::kString && !IsUtf8(bytes)) {
      return Malformed("a string is not valid UTF-8");
    }
    PickleValue* value = New(kind);
    value->text = std::string(bytes);
    return Push(value);
  }

  absl::Status PushGlobal(const std::string& module, const std::string& name);
  absl::Status Reduce(PickleValue* callable, PickleValue* args);
  absl::Status NewObject(PickleValue* cls, PickleValue* args);
  absl::Status PersistentLoad(PickleValue* pid);
  absl::Status RebuildTensor(const std::string& function,
                             const std::vector<PickleValue*>& args);
  absl::Status AddToDict(PickleValue* dict,
                         const std::vector<PickleValue*>& items);
  absl::Status CheckStructure();

  absl::string_view data_;
  const PickleOptions& options_;
  uint64_t position_ = 0;
  uint64_t opcode_offset_ = 0;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  std::unordered_map<std::string, int> storage_by_key_;
  // Each dict's keys, for SETITEM's replace-or-append.
  std::unordered_map<const PickleValue*,
                     std::unordered_map<std::string, size_t>>
      dict_index_;
  TorchPickle result_;
};

absl::Status Unpickler::PushGlobal(const std::string& module,
                                   const std::string& name) {
  const std::string full = absl::StrCat(module, ".", name);
  auto global = [&](absl::string_view canonical) {
    PickleValue* value = New(Kind::kGlobal);
    value->text = std::string(canonical);
    return Push(value);
  };
  const bool builtins = module == "builtins" || module == "__builtin__";
  if (module == "collections" && (name == "OrderedDict" || name == "Counter")) {
    return global(full);
  }
  if (builtins &&
      (name == "set" || name == "frozenset" || name == "bytearray")) {
    return global(absl::StrCat("builtins.", name));
  }
  if (module == "_codecs" && name == "encode") return global(full);
  if (module == "torch._utils" &&
      (name == "_rebuild_tensor" || name == "_rebuild_tensor_v2" ||
       name == "_rebuild_tensor_v3" || name == "_rebuild_parameter" ||
       name == "_rebuild_parameter_with_state")) {
    return global(full);
  }
  if (module == "torch") {
    if (name == "Size" || name == "device") return global(full);
    if (const TorchDtype* dtype = FindTorchDtype(name)) {
      PickleValue* value = New(Kind::kDtype);
      value->dtype = dtype;
      return Push(value);
    }
    if (FindTorchDtypeByStorageType(name) != nullptr ||
        name == "UntypedStorage") {
      return global(full);
    }
  }
  if (module == "torch.storage" && name == "UntypedStorage") {
    return global("torch.UntypedStorage");
  }
  if (IsDangerousModule(module)) {
    return Refused(absl::StrCat("global '", full,
                                "' is refused: a checkpoint holds data, and "
                                "this would run code"));
  }
  if (!options_.lenient) {
    return Refused(absl::StrCat(
        "global '", full,
        "' is not allowed (a .pt file may hold tensors, storages and plain "
        "Python values; read it leniently to keep other objects as "
        "placeholders)"));
  }
  PickleValue* value = New(Kind::kOpaque);
  value->text = full;
  if (std::find(result_.placeholders_.begin(), result_.placeholders_.end(),
                full) == result_.placeholders_.end()) {
    result_.placeholders_.push_back(full);
  }
  return Push(value);
}

absl::Status Unpickler::AddToDict(PickleValue* dict,
                                  const std::vector<PickleValue*>& items) {
  if (items.size() % 2 != 0) {
    return Malformed("SETITEMS with an odd number of values");
  }
  if (dict->kind == Kind::kOpaque) {  // lenient: keep what it was given
    for (size_t i = 0; i < items.size(); i += 2) {
      dict->entries.emplace_back(items[i], items[i + 1]);
    }
    return absl::OkStatus();
  }
  if (dict->kind != Kind::kDict) {
    return Refused(absl::StrCat("SETITEM on a ", DescribeKind(*dict),
                                ", which is not a dict"));
  }
  // Keys compare by value for the scalar kinds a state dict uses (a later
  // SETITEM replaces the value, as in Python); other keys are kept as given.
  auto [slot, first_use] = dict_index_.try_emplace(dict);
  std::unordered_map<std::string, size_t>& index = slot->second;
  if (first_use) {
    for (size_t i = 0; i < dict->entries.size(); ++i) {
      std::optional<std::string> key = KeyOf(*dict->entries[i].first);
      if (key) index.emplace(*std::move(key), i);
    }
  }
  for (size_t i = 0; i < items.size(); i += 2) {
    std::optional<std::string> key = KeyOf(*items[i]);
    if (key) {
      auto [found, inserted] =
          index.emplace(*std::move(key), dict->entries.size());
      if (!inserted) {
        dict->entries[found->second].second = items[i + 1];
        continue;
      }
    }
    dict->entries.emplace_back(items[i], items[i + 1]);
  }
  return absl::OkStatus();
}

absl::Status Unpickler::PersistentLoad(PickleValue* pid) {
  // ('storage', storage_type, key, location, numel)
  if (pid->kind != Kind::kTuple || pid->items.size() != 5 ||
      pid->items[0]->kind != Kind::kString ||
      pid->items[0]->text != "storage") {
    return Refused(
        "BINPERSID with an id other than ('storage', type, key, location, "
        "numel)");
  }
  const PickleValue* type = pid->items[1];
  const PickleValue* key = pid->items[2];
  const PickleValue* location = pid->items[3];
  const PickleValue* numel = pid->items[4];
  if (type->kind != Kind::kGlobal ||
      (type->text != "torch.UntypedStorage" &&
       FindTorchDtypeByStorageType(
           absl::string_view(type->text).substr(sizeof("torch.") - 1)) ==
           nullptr)) {
    return Refused(absl::StrCat("a storage of type ", DescribeKind(*type)));
  }
  if (key->kind != Kind::kString || location->kind != Kind::kString ||
      numel->kind != Kind::kInt || numel->integer < 0) {
    return Malformed(
        "a storage id whose key, location or size has the wrong type");
  }
  const TorchDtype* dtype = nullptr;
  uint64_t bytes = static_cast<uint64_t>(numel->integer);
  if (type->text != "torch.UntypedStorage") {
    dtype = FindTorchDtypeByStorageType(
        absl::string_view(type->text).substr(sizeof("torch.") - 1));
    if (bytes > std::numeric_limits<uint64_t>::max() / dtype->itemsize) {
      return Malformed(absl::StrCat("storage '", key->text, "' is too large"));
    }
    bytes *= dtype->itemsize;
  }
  auto found = storage_by_key_.find(key->text);
  int index;
  if (found == storage_by_key_.end()) {
    index = static_cast<int>(result_.storages_.size());
    storage_by_key_[key->text] = index;
    result_.storages_.push_back({key->text, location->text, dtype, bytes});
  } else {
    index = found->second;
    TorchStorage& storage = result_.storages_[index];
    if (storage.bytes != bytes) {
      return Malformed(absl::StrCat("storage '", key->text, "' is given ",
                                    storage.bytes, " and ", bytes, " bytes"));
    }
    if (dtype != nullptr && storage.dtype != nullptr &&
        dtype != storage.dtype) {
      return Malformed(absl::StrCat("storage '", key->text, "' is used as ",
                                    storage.dtype->name, " and ", dtype->name));
    }
    if (storage.dtype == nullptr) storage.dtype = dtype;
  }
  PickleValue* value = New(Kind::kStorage);
  value->storage = index;
  // A typed storage carries its dtype; an untyped one gets it from the
  // _rebuild_tensor_v3 that uses it.
  value->dtype = dtype;
  return Push(value);
}

namespace {

// A tuple (or list) of int64 as a vector.
bool IntTuple(const PickleValue* value, std::vector<int64_t>* out) {
  if (value->kind != Kind::kTuple && value->kind != Kind::kList) return false;
  out->clear();
  for (const PickleValue* item : value->items) {
    if (item->kind != Kind::kInt) return false;
    out->push_back(item->integer);
  }
  return true;
}

}  // namespace

absl::Status Unpickler::RebuildTensor(const std::string& function,
                                      const std::vector<PickleValue*>& args) {
  // _rebuild_tensor(storage, offset, size, stride)
  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
  //                    backward_hooks[, metadata])
  // _rebuild_tensor_v3(..., backward_hooks, dtype[, metadata])
  const bool v1 = function == "torch._utils._rebuild_tensor";
  const bool v3 = function == "torch._utils._rebuild_tensor_v3";
  const size_t minimum = v1 ? 4 : v3 ? 7 : 6;
  const size_t maximum = v1 ? 4 : minimum + 1;
  if (args.size() < minimum || args.size() > maximum) {
    return Malformed(
        absl::StrCat(function, " with ", args.size(), " arguments"));
  }
  if (args[0]->kind != Kind::kStorage) {
    return Malformed(absl::StrCat(function, " of a ", DescribeKind(*args[0]),
                                  ", not a storage"));
  }
  TorchStorage& storage = result_.storages_[args[0]->storage];
  TorchTensor tensor;
  tensor.storage = args[0]->storage;
  tensor.pickle_offset = opcode_offset_;
  tensor.dtype = args[0]->dtype;
  if (v3) {
    if (args[6]->kind != Kind::kDtype) {
      return Malformed(absl::StrCat(function, " with a ",
                                    DescribeKind(*args[6]),
                                    " where its dtype belongs"));
    }
    if (tensor.dtype != nullptr && tensor.dtype != args[6]->dtype) {
      return Malformed(absl::StrCat("a ", tensor.dtype->name,
                                    " storage rebuilt as ",
                                    args[6]->dtype->name));
    }
    tensor.dtype = args[6]->dtype;
  }
  if (tensor.dtype == nullptr) {
    return Malformed(absl::StrCat(function, " of an untyped storage"));
  }
  if (storage.dtype == nullptr) storage.dtype = tensor.dtype;
  if (storage.dtype != tensor.dtype) {
    return Malformed(absl::StrCat("storage '", storage.key, "' is used as ",
                                  storage.dtype->name, " and ",
                                  tensor.dtype->name));
  }
  if (storage.bytes % tensor.dtype->itemsize != 0) {
    return Malformed(absl::StrCat("storage '", storage.key, "' holds ",
                                  storage.bytes,
                                  " bytes, not a whole number "
                                  "of ",
                                  tensor.dtype->name));
  }
  if (args[1]->kind != Kind::kInt || args[1]->integer < 0 ||
      !IntTuple(args[2], &tensor.shape) ||
      !IntTuple(args[3], &tensor.strides) ||
      tensor.shape.size() != tensor.strides.size()) {
    return Malformed(absl::StrCat(
        function, " whose offset, size or stride is not what a tensor has"));
  }
  if (tensor.shape.size() > 64) {
    return Malformed(
        absl::StrCat("a tensor of ", tensor.shape.size(), " dimensions"));
  }
  tensor.offset = args[1]->integer;
  if (!v1) {
    if (args[4]->kind != Kind::kBool) {
      return Malformed(absl::StrCat(function, ": requires_grad is a ",
                                    DescribeKind(*args[4])));
    }
    tensor.requires_grad = args[4]->boolean;
  }
  // Within the storage: offset + sum((size - 1) * stride) < elements, with
  // no overflow on the way; and no two elements at one address, except
  // along stride-0 (broadcast) dimensions.
  const uint64_t elements = storage.bytes / tensor.dtype->itemsize;
  const std::string shape = absl::StrCat(
      "[", absl::StrJoin(tensor.shape, ","), "] strides [",
      absl::StrJoin(tensor.strides, ","), "] offset ", tensor.offset);
  uint64_t numel = 1;
  bool empty = false;
  for (size_t i = 0; i < tensor.shape.size(); ++i) {
    if (tensor.shape[i] < 0 || tensor.strides[i] < 0) {
      return Malformed(
          absl::StrCat("a tensor with shape ", shape, " (negative)"));
    }
    if (tensor.shape[i] == 0) empty = true;
    if (tensor.shape[i] != 0 &&
        numel > std::numeric_limits<int64_t>::max() /
                    static_cast<uint64_t>(tensor.shape[i])) {
      return Malformed(absl::StrCat("a tensor with shape ", shape,
                                    " has too many elements"));
    }
    numel *= static_cast<uint64_t>(tensor.shape[i]);
  }
  if (static_cast<uint64_t>(tensor.offset) > elements) {
    return Malformed(absl::StrCat("a tensor with shape ", shape,
                                  " starts past the end of storage '",
                                  storage.key, "' (", elements, " elements)"));
  }
  if (!empty) {
    uint64_t last = static_cast<uint64_t>(tensor.offset);
    for (size_t i = 0; i < tensor.shape.size(); ++i) {
      const uint64_t size = static_cast<uint64_t>(tensor.shape[i]) - 1;
      const uint64_t stride = static_cast<uint64_t>(tensor.strides[i]);
      if (stride != 0 && size > (elements - last) / stride) {
        return Malformed(absl::StrCat(
            "a tensor with shape ", shape, " reaches past the end of storage '",
            storage.key, "' (", elements, " elements)"));
      }
      last += size * stride;
    }
    if (last >= elements) {
      return Malformed(absl::StrCat(
          "a tensor with shape ", shape, " reaches past the end of storage '",
          storage.key, "' (", elements, " elements)"));
    }
    // No aliasing: ordered by stride, each dimension must step over all
    // the elements the smaller ones span.
    std::vector<size_t> order;
    for (size_t i = 0; i < tensor.shape.size(); ++i) {
      if (tensor.shape[i] > 1 && tensor.strides[i] > 0) order.push_back(i);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return tensor.strides[a] < tensor.strides[b];
    });
    uint64_t span = 1;  // elements covered by the dimensions so far
    for (size_t i : order) {
      if (static_cast<uint64_t>(tensor.strides[i]) < span) {
        return Malformed(absl::StrCat("a tensor with shape ", shape,
                                      " has elements that overlap"));
      }
      span = static_cast<uint64_t>(tensor.strides[i]) *
                 static_cast<uint64_t>(tensor.shape[i] - 1) +
             span;
    }
  }
  PickleValue* value = New(Kind::kTensor);
  value->tensor = static_cast<int>(result_.tensors_.size());
  result_.tensors_.push_back(std::move(tensor));
  return Push(value);
}

absl::Status Unpickler::Reduce(PickleValue* callable, PickleValue* args) {
  if (args->kind != Kind::kTuple) {
    return Malformed(absl::StrCat("REDUCE with ", DescribeKind(*args),
                                  " arguments, not a tuple"));
  }
  const std::vector<const PickleValue*>& items = args->items;
  if (callable->kind == Kind::kOpaque) {  // lenient
    PickleValue* value = New(Kind::kOpaque);
    value->text = callable->text;
    value->items = items;
    return Push(value);
  }
  if (callable->kind != Kind::kGlobal) {
    return Refused(absl::StrCat("REDUCE on a ", DescribeKind(*callable),
                                ", which is not callable"));
  }
  const std::string& name = callable->text;
  auto arguments = [&](size_t count) -> absl::Status {
    if (items.size() != count) {
      return Malformed(
          absl::StrCat(name, " with ", items.size(), " arguments"));
    }
    return absl::OkStatus();
  };
  if (name == "collections.OrderedDict" || name == "collections.Counter") {
    PickleValue* dict = New(Kind::kDict);
    if (items.size() == 1 && items[0]->kind == Kind::kDict) {
      dict->entries = items[0]->entries;
    } else if (!items.empty()) {
      return Malformed(absl::StrCat(name, " of a ", DescribeKind(*items[0])));
    }
    return Push(dict);
  }
  if (name == "builtins.set" || name == "builtins.frozenset") {
    PickleValue* set = New(Kind::kSet);
    if (items.size() == 1 &&
        (items[0]->kind == Kind::kList || items[0]->kind == Kind::kTuple ||
         items[0]->kind == Kind::kSet)) {
      set->items = items[0]->items;
    } else if (!items.empty()) {
      return Malformed(absl::StrCat(name, " of a ", DescribeKind(*items[0])));
    }
    return Push(set);
  }
  if (name == "_codecs.encode" || name == "builtins.bytearray") {
    if (items.empty() && name == "builtins.bytearray") {
      return Push(New(Kind::kBytes));
    }
    if (items.size() == 1 && items[0]->kind == Kind::kBytes) {
      PickleValue* bytes = New(Kind::kBytes);
      bytes->text = items[0]->text;
      return Push(bytes);
    }
    if (items.empty() || items.size() > 2 || items[0]->kind != Kind::kString ||
        (items.size() == 2 && items[1]->kind != Kind::kString)) {
      return Malformed(absl::StrCat(name, " of something other than text"));
    }
    const std::string encoding = items.size() == 2 ? items[1]->text : "utf-8";
    PickleValue* bytes = New(Kind::kBytes);
    if (encoding == "latin1" || encoding == "latin-1") {
      std::optional<std::string> encoded = EncodeLatin1(items[0]->text);
      if (!encoded) {
        return Malformed(absl::StrCat(name, " of text that is not latin-1"));
      }
      bytes->text = *std::move(encoded);
    } else if (encoding == "utf-8" || encoding == "utf8") {
      bytes->text = items[0]->text;
    } else {
      return Refused(absl::StrCat(name, " with encoding '", encoding, "'"));
    }
    return Push(bytes);
  }
  if (name == "torch.Size") {
    absl::Status status = arguments(1);
    if (!status.ok()) return status;
    std::vector<int64_t> sizes;
    if (!IntTuple(items[0], &sizes)) {
      return Malformed("torch.Size of something other than integers");
    }
    PickleValue* tuple = New(Kind::kTuple);
    tuple->items = items[0]->items;
    return Push(tuple);
  }
  if (name == "torch.device") {
    PickleValue* device = New(Kind::kDevice);
    if (items.size() == 1 && items[0]->kind == Kind::kString) {
      device->text = items[0]->text;
    } else if (items.size() == 2 && items[0]->kind == Kind::kString &&
               items[1]->kind == Kind::kInt) {
      device->text = absl::StrCat(items[0]->text, ":", items[1]->integer);
    } else {
      return Malformed("torch.device of something other than a name");
    }
    return Push(device);
  }
  if (absl::StartsWith(name, "torch._utils._rebuild_tensor")) {
    std::vector<PickleValue*> mutable_items;
    for (const PickleValue* item : items) {
      mutable_items.push_back(const_cast<PickleValue*>(item));
    }
    return RebuildTensor(name, mutable_items);
  }
  if (name == "torch._utils._rebuild_parameter" ||
      name == "torch._utils._rebuild_parameter_with_state") {
    // (data, requires_grad, backward_hooks[, state])
    const size_t count = name == "torch._utils._rebuild_parameter" ? 3 : 4;
    absl::Status status = arguments(count);
    if (!status.ok()) return status;
    if (items[0]->kind != Kind::kTensor || items[1]->kind != Kind::kBool) {
      return Malformed(absl::StrCat(name, " of a ", DescribeKind(*items[0])));
    }
    TorchTensor parameter = result_.tensors_[items[0]->tensor];
    parameter.requires_grad = items[1]->boolean;
    parameter.parameter = true;
    PickleValue* value = New(Kind::kTensor);
    value->tensor = static_cast<int>(result_.tensors_.size());
    result_.tensors_.push_back(std::move(parameter));
    return Push(value);
  }
  return Refused(absl::StrCat("REDUCE on ", DescribeKind(*callable),
                              ", which is not callable"));
}

absl::Status Unpickler::NewObject(PickleValue* cls, PickleValue* args) {
  if (args->kind != Kind::kTuple) {
    return Malformed("NEWOBJ with arguments that are not a tuple");
  }
  if (cls->kind == Kind::kOpaque) {
    PickleValue* value = New(Kind::kOpaque);
    value->text = cls->text;
    value->items = args->items;
    return Push(value);
  }
  if (cls->kind == Kind::kGlobal && args->items.empty()) {
    if (cls->text == "collections.OrderedDict" ||
        cls->text == "collections.Counter") {
      return Push(New(Kind::kDict));
    }
    if (cls->text == "builtins.set") return Push(New(Kind::kSet));
  }
  return Refused(absl::StrCat("NEWOBJ of ", DescribeKind(*cls)));
}

// Container nesting, cycles and expansion, in one pass over the graph:
// each value's depth and expanded size (its values counted as often as
// they are reached) is computed once.
absl::Status Unpickler::CheckStructure() {
  struct Info {
    int height = 0;
    uint64_t expanded = 1;
    bool done = false;
    bool active = false;
  };
  std::unordered_map<const PickleValue*, Info> info;
  const PickleLimits& limits = options_.limits;
  absl::Status failure;
  std::function<bool(const PickleValue*, int)> visit =
      [&](const PickleValue* value, int depth) -> bool {
    if (!value->is_container()) return true;
    Info& mine = info[value];
    if (mine.done) {
      if (depth + mine.height > limits.max_nesting) {
        failure = Malformed(absl::StrCat("containers nest more than ",
                                         limits.max_nesting, " deep"));
        return false;
      }
      return true;
    }
    if (mine.active) {
      failure = Malformed(
          absl::StrCat("a ", DescribeKind(*value), " contains itself"));
      return false;
    }
    if (depth >= limits.max_nesting) {
      failure = Malformed(absl::StrCat("containers nest more than ",
                                       limits.max_nesting, " deep"));
      return false;
    }
    mine.active = true;
    int height = 0;
    uint64_t expanded = 1;
    auto child = [&](const PickleValue* item) {
      if (!visit(item, depth + 1)) return false;
      if (item->is_container()) {
        const Info& theirs = info[item];
        height = std::max(height, theirs.height + 1);
        expanded += theirs.expanded;
      } else {
        expanded += 1;
      }
      if (expanded > limits.max_expanded_values) {
        failure = Malformed(absl::StrCat(
            "the structure expands to more than ", limits.max_expanded_values,
            " values (one container referred to again and again)"));
        return false;
      }
      return true;
    };
    for (const PickleValue* item : value->items) {
      if (!child(item)) return false;
    }
    for (const auto* list : {&value->entries, &value->attributes}) {
      for (const auto& [key, item] : *list) {
        if (!child(key) || !child(item)) return false;
      }
    }
    mine.active = false;  // unordered_map references survive rehashing
    mine.done = true;
    mine.height = height;
    mine.expanded = expanded;
    return true;
  };
  visit(result_.root_, 0);
  return failure;
}

absl::StatusOr<TorchPickle> Unpickler::Run() {
  while (true) {
    opcode_offset_ = position_;
    if (position_ >= data_.size()) {
      return Malformed("the pickle ends without STOP");
    }
    const uint8_t opcode = static_cast<uint8_t>(data_[position_++]);
    absl::Status status;
    absl::string_view raw;
    uint64_t number = 0;
    PickleValue* a = nullptr;
    PickleValue* b = nullptr;
    std::vector<PickleValue*> items;
    switch (opcode) {
      case 0x80:  // PROTO
        status = ReadUnsigned(1, &number);
        if (status.ok() && number > 5) {
          status = Refused(absl::StrCat("pickle protocol ", number));
        }
        break;
      case 0x95:  // FRAME: a length hint; the opcodes follow inline
        status = ReadUnsigned(8, &number);
        if (status.ok() && number > data_.size() - position_) {
          status = Malformed("a FRAME longer than the rest of the pickle");
        }
        break;
      case '.':  // STOP
        status = Pop(&a);
        if (!status.ok()) return status;
        if (!stack_.empty() || !marks_.empty()) {
          return Malformed("STOP with values left on the stack");
        }
        if (position_ != data_.size()) {
          return Malformed(
              absl::StrCat(data_.size() - position_, " bytes after STOP"));
        }
        result_.root_ = a;
        status = CheckStructure();
        if (!status.ok()) return status;
        return std::move(result_);
      case '(':  // MARK
        if (marks_.size() >= options_.limits.max_marks) {
          return Malformed(absl::StrCat("MARKs nest more than ",
                                        options_.limits.max_marks, " deep"));
        }
        marks_.push_back(stack_.size());
        break;
      case '0':  // POP
        status = Pop(&a);
        break;
      case '1':  // POP_MARK
        status = PopMark(&items);
        break;
      case '2':  // DUP
        status = Top(&a);
        if (status.ok()) status = Push(a);
        break;
      case 'N':
        status = Push(New(Kind::kNone));
        break;
      case 0x88:  // NEWTRUE
      case 0x89:  // NEWFALSE
        a = New(Kind::kBool);
        a->boolean = opcode == 0x88;
        status = Push(a);
        break;
      case 'J':  // BININT
        status = Read(4, &raw);
        if (status.ok()) status = PushInt(raw);
        break;
      case 'K':  // BININT1
      case 'M':  // BININT2 (both unsigned)
        status = ReadUnsigned(opcode == 'K' ? 1 : 2, &number);
        if (status.ok()) {
          a = New(Kind::kInt);
          a->integer = static_cast<int64_t>(number);
          status = Push(a);
        }
        break;
      case 0x8a:  // LONG1
      case 0x8b:  // LONG4
        status = ReadUnsigned(opcode == 0x8a ? 1 : 4, &number);
        if (status.ok() && number > options_.limits.max_int_bytes) {
          status = Malformed(absl::StrCat("an integer of ", number,
                                          " bytes, more than the limit of ",
                                          options_.limits.max_int_bytes));
        }
        if (status.ok()) status = Read(number, &raw);
        if (status.ok()) status = PushInt(raw);
        break;
      case 'G': {  // BINFLOAT, big-endian
        status = Read(8, &raw);
        if (!status.ok()) break;
        uint64_t bits = 0;
        for (char c : raw) bits = (bits << 8) | static_cast<uint8_t>(c);
        a = New(Kind::kFloat);
        std::memcpy(&a->number, &bits, 8);
        status = Push(a);
        break;
      }
      case 'X':     // BINUNICODE
      case 0x8c:    // SHORT_BINUNICODE
      case 0x8d:    // BINUNICODE8
      case 'U':     // SHORT_BINSTRING (Python 2 str, read as UTF-8)
      case 'T':     // BINSTRING
      case 'B':     // BINBYTES
      case 'C':     // SHORT_BINBYTES
      case 0x8e:    // BINBYTES8
      case 0x96: {  // BYTEARRAY8
        const size_t width =
            (opcode == 0x8c || opcode == 'U' || opcode == 'C')     ? 1
            : (opcode == 0x8d || opcode == 0x8e || opcode == 0x96) ? 8
                                                                   : 4;
        status = ReadUnsigned(width, &number);
        if (status.ok()) status = Read(number, &raw);
        if (!status.ok()) break;
        const bool text = opcode == 'X' || opcode == 0x8c || opcode == 0x8d ||
                          opcode == 'U' || opcode == 'T';
        status = PushString(text ? Kind::kString : Kind::kBytes, raw);
        break;
      }
      case ')':  // EMPTY_TUPLE
        status = Push(New(Kind::kTuple));
        break;
      case 't':  // TUPLE
        status = PopMark(&items);
        if (status.ok()) {
          a = New(Kind::kTuple);
          a->items.assign(items.begin(), items.end());
          status = Push(a);
        }
        break;
      case 0x85:    // TUPLE1
      case 0x86:    // TUPLE2
      case 0x87: {  // TUPLE3
        const size_t count = opcode - 0x84;
        if (stack_.size() < floor() + count) {
          status = Malformed("TUPLE with too few values on the stack");
          break;
        }
        a = New(Kind::kTuple);
        a->items.assign(stack_.end() - count, stack_.end());
        stack_.resize(stack_.size() - count);
        status = Push(a);
        break;
      }
      case ']':  // EMPTY_LIST
        status = Push(New(Kind::kList));
        break;
      case 'l':  // LIST
        status = PopMark(&items);
        if (status.ok()) {
          a = New(Kind::kList);
          a->items.assign(items.begin(), items.end());
          status = Push(a);
        }
        break;
      case 'a':  // APPEND
      case 'e':  // APPENDS
        if (opcode == 'a') {
          status = Pop(&b);
          if (status.ok()) items.push_back(b);
        } else {
          status = PopMark(&items);
        }
        if (status.ok()) status = Top(&a);
        if (!status.ok()) break;
        if (a->kind == Kind::kList || a->kind == Kind::kOpaque) {
          a->items.insert(a->items.end(), items.begin(), items.end());
        } else {
          status = Refused(absl::StrCat("APPEND to a ", DescribeKind(*a),
                                        ", which is not a list"));
        }
        break;
      case '}':  // EMPTY_DICT
        status = Push(New(Kind::kDict));
        break;
      case 'd':  // DICT
        status = PopMark(&items);
        if (status.ok()) {
          a = New(Kind::kDict);
          status = AddToDict(a, items);
        }
        if (status.ok()) status = Push(a);
        break;
      case 's':  // SETITEM
        status = Pop(&b);
        if (status.ok()) status = Pop(&a);
        if (status.ok()) {
          items = {a, b};
          status = Top(&a);
        }
        if (status.ok()) status = AddToDict(a, items);
        break;
      case 'u':  // SETITEMS
        status = PopMark(&items);
        if (status.ok()) status = Top(&a);
        if (status.ok()) status = AddToDict(a, items);
        break;
      case 0x8f:  // EMPTY_SET
        status = Push(New(Kind::kSet));
        break;
      case 0x90:  // ADDITEMS
        status = PopMark(&items);
        if (status.ok()) status = Top(&a);
        if (!status.ok()) break;
        if (a->kind != Kind::kSet) {
          status = Refused(absl::StrCat("ADDITEMS to a ", DescribeKind(*a),
                                        ", which is not a set"));
          break;
        }
        a->items.insert(a->items.end(), items.begin(), items.end());
        break;
      case 0x91:  // FROZENSET
        status = PopMark(&items);
        if (status.ok()) {
          a = New(Kind::kSet);
          a->items.assign(items.begin(), items.end());
          status = Push(a);
        }
        break;
      case 'c': {  // GLOBAL
        std::string module, name;
        status = ReadLine(&module);
        if (status.ok()) status = ReadLine(&name);
        if (status.ok()) status = PushGlobal(module, name);
        break;
      }
      case 0x93:  // STACK_GLOBAL
        status = Pop(&b);
        if (status.ok()) status = Pop(&a);
        if (!status.ok()) break;
        if (a->kind != Kind::kString || b->kind != Kind::kString) {
          status = Malformed("STACK_GLOBAL of names that are not strings");
          break;
        }
        status = PushGlobal(a->text, b->text);
        break;
      case 'R':  // REDUCE
        status = Pop(&b);
        if (status.ok()) status = Pop(&a);
        if (status.ok()) status = Reduce(a, b);
        break;
      case 0x81:  // NEWOBJ
        status = Pop(&b);
        if (status.ok()) status = Pop(&a);
        if (status.ok()) status = NewObject(a, b);
        break;
      case 0x92: {  // NEWOBJ_EX
        PickleValue* kwargs = nullptr;
        status = Pop(&kwargs);
        if (status.ok()) status = Pop(&b);
        if (status.ok()) status = Pop(&a);
        if (!status.ok()) break;
        if (kwargs->kind != Kind::kDict || !kwargs->entries.empty()) {
          if (a->kind != Kind::kOpaque) {
            status = Refused("NEWOBJ_EX with keyword arguments");
            break;
          }
        }
        status = NewObject(a, b);
        break;
      }
      case 'b':  // BUILD
        status = Pop(&b);
        if (status.ok()) status = Top(&a);
        if (!status.ok()) break;
        if (a->kind == Kind::kOpaque) {
          a->entries.emplace_back(New(Kind::kNone), b);
        } else if (a->kind == Kind::kDict && b->kind == Kind::kDict) {
          a->attributes.insert(a->attributes.end(), b->entries.begin(),
                               b->entries.end());
        } else if ((a->kind == Kind::kDict || a->kind == Kind::kTensor) &&
                   b->kind == Kind::kNone) {
        } else if (a->kind == Kind::kTensor &&
                   (b->kind == Kind::kDict || b->kind == Kind::kTuple)) {
          // A tensor's Python attributes: not model state; dropped.
        } else {
          status = Refused(absl::StrCat("BUILD on a ", DescribeKind(*a),
                                        " with a ", DescribeKind(*b)));
        }
        break;
      case 'Q':  // BINPERSID
        status = Pop(&a);
        if (status.ok()) status = PersistentLoad(a);
        break;
      case 'q':  // BINPUT
      case 'r':  // LONG_BINPUT
        status = ReadUnsigned(opcode == 'q' ? 1 : 4, &number);
        if (status.ok()) status = Top(&a);
        if (status.ok()) status = Memoize(number, a);
        break;
      case 0x94:  // MEMOIZE
        status = Top(&a);
        if (status.ok()) status = Memoize(memo_.size(), a);
        break;
      case 'h':  // BINGET
      case 'j':  // LONG_BINGET
        status = ReadUnsigned(opcode == 'h' ? 1 : 4, &number);
        if (status.ok()) status = Recall(number);
        break;
      case 'I':
      case 'L':
      case 'F':
      case 'S':
      case 'V':
      case 'P':
      case 'p':
      case 'g':
      case 'i':
      case 'o':
        return Refused(absl::StrCat("opcode '", std::string(1, opcode),
                                    "' (text pickle, protocol 0/1) is not "
                                    "supported; torch.save writes protocol 2"));
      default:
        return Refused(absl::StrCat("unsupported opcode 0x",
                                    absl::Hex(opcode, absl::kZeroPad2)));
    }
    if (!status.ok()) return status;
  }
}

absl::StatusOr<TorchPickle> UnpickleTorch(absl::string_view pickle,
                                          const PickleOptions& options) {
  return Unpickler(pickle, options).Run();
}

}  // namespace interop
