#include "checkpoint/interop/pt_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "checkpoint/interop/zip_archive.h"
#include "tools/base/endian.h"
#include "tools/base/files.h"

namespace interop {
namespace {

using Kind = PickleValue::Kind;

// Protocol 2 opcodes, as CPython's pickler writes them.
class Pickler {
 public:
  explicit Pickler(const std::vector<PtTensorData>& tensors)
      : tensors_(tensors) {}

  absl::Status Dump(const PickleValue& root) {
    out_ = "\x80\x02";
    absl::Status status = Save(root);
    out_ += '.';
    return status;
  }
  const std::string& bytes() const { return out_; }

 private:
  void Global(absl::string_view module, absl::string_view name) {
    absl::StrAppend(&out_, "c", module, "\n", name, "\n");
  }
  void String(absl::string_view text) {
    out_ += 'X';
    base::AppendLittleEndian(text.size(), 4, &out_);
    out_.append(text.data(), text.size());
  }
  void Int(int64_t value) {
    if (value >= 0 && value < 256) {
      out_ += 'K';
      base::AppendLittleEndian(value, 1, &out_);
    } else if (value >= 0 && value < 65536) {
      out_ += 'M';
      base::AppendLittleEndian(value, 2, &out_);
    } else if (value >= INT32_MIN && value <= INT32_MAX) {
      out_ += 'J';
      base::AppendLittleEndian(static_cast<uint64_t>(value), 4, &out_);
    } else {
      out_ += "\x8a\x08";
      base::AppendLittleEndian(static_cast<uint64_t>(value), 8, &out_);
    }
  }
  void Bool(bool value) { out_ += value ? '\x88' : '\x89'; }
  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    out_ += ")R";
  }

  absl::Status Items(const std::vector<const PickleValue*>& items,
                     char batch_end) {
    // In batches of 1000, as CPython writes them.
    for (size_t begin = 0; begin < items.size(); begin += 1000) {
      out_ += '(';
      for (size_t i = begin; i < std::min(items.size(), begin + 1000); ++i) {
        absl::Status status = Save(*items[i]);
        if (!status.ok()) return status;
      }
      out_ += batch_end;
    }
    return absl::OkStatus();
  }

  absl::Status Entries(
      const std::vector<std::pair<const PickleValue*, const PickleValue*>>&
          entries) {
    for (size_t begin = 0; begin < entries.size(); begin += 1000) {
      out_ += '(';
      for (size_t i = begin; i < std::min(entries.size(), begin + 1000); ++i) {
        absl::Status status = Save(*entries[i].first);
        if (status.ok()) status = Save(*entries[i].second);
        if (!status.ok()) return status;
      }
      out_ += 'u';
    }
    return absl::OkStatus();
  }

  absl::Status SaveTensor(int index) {
    if (index < 0 || static_cast<size_t>(index) >= tensors_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", index, " is not among the ", tensors_.size(), " given"));
    }
    const PtTensorData& tensor = tensors_[index];
    uint64_t numel = 1;
    for (int64_t size : tensor.shape) {
      if (size < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", index, " has a negative size"));
      }
      numel *= static_cast<uint64_t>(size);
    }
    if (tensor.bytes.size() != numel * tensor.dtype->itemsize) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", index, ": ", tensor.bytes.size(), " bytes for ", numel,
          " elements of ", tensor.dtype->name));
    }
    const bool typed = *tensor.dtype->storage_type != '\0';
    Global("torch._utils", typed ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
    out_ += '(';
    // The persistent id: ('storage', type, key, location, numel).
    out_ += '(';
    String("storage");
    // As Python writes them: torch.FloatStorage, torch.storage.UntypedStorage.
    if (typed) {
      Global("torch", tensor.dtype->storage_type);
    } else {
      Global("torch.storage", "UntypedStorage");
    }
    String(absl::StrCat(index));
    String("cpu");
    Int(static_cast<int64_t>(typed ? numel : tensor.bytes.size()));
    out_ += "tQ";
    Int(0);  // storage offset
    out_ += '(';
    for (int64_t size : tensor.shape) Int(size);
    out_ += 't';
    out_ += '(';
    int64_t stride = 1;
    std::vector<int64_t> strides(tensor.shape.size());
    for (size_t i = tensor.shape.size(); i-- > 0;) {
      strides[i] = stride;
      stride *= std::max<int64_t>(tensor.shape[i], 1);
    }
    for (int64_t s : strides) Int(s);
    out_ += 't';
    Bool(tensor.requires_grad);
    EmptyOrderedDict();  // backward hooks
    if (!typed) Global("torch", tensor.dtype->name);
    out_ += "tR";
    return absl::OkStatus();
  }

  absl::Status Save(const PickleValue& value) {
    switch (value.kind) {
      case Kind::kNone:
        out_ += 'N';
        return absl::OkStatus();
      case Kind::kBool:
        Bool(value.boolean);
        return absl::OkStatus();
      case Kind::kInt:
        Int(value.integer);
        return absl::OkStatus();
      case Kind::kFloat: {
        uint64_t bits;
        std::memcpy(&bits, &value.number, 8);
        out_ += 'G';
        for (int i = 7; i >= 0; --i) out_ += static_cast<char>(bits >> (8 * i));
        return absl::OkStatus();
      }
      case Kind::kString:
        String(value.text);
        return absl::OkStatus();
      case Kind::kBytes: {
        // Protocol 2 has no bytes opcode: _codecs.encode(latin-1 text).
        std::string latin1;
        for (unsigned char c : value.text) {
          if (c < 0x80) {
            latin1 += static_cast<char>(c);
          } else {
            latin1 += static_cast<char>(0xc0 | (c >> 6));
            latin1 += static_cast<char>(0x80 | (c & 0x3f));
          }
        }
        Global("_codecs", "encode");
        out_ += '(';
        String(latin1);
        String("latin1");
        out_ += "tR";
        return absl::OkStatus();
      }
      case Kind::kTuple: {
        out_ += '(';
        for (const PickleValue* item : value.items) {
          absl::Status status = Save(*item);
          if (!status.ok()) return status;
        }
        out_ += 't';
        return absl::OkStatus();
      }
      case Kind::kList:
        out_ += ']';
        return Items(value.items, 'e');
      case Kind::kSet: {
        Global("__builtin__", "set");
        out_ += "(]";
        absl::Status status = Items(value.items, 'e');
        out_ += "tR";
        return status;
      }
      case Kind::kDict: {
        // State dicts are OrderedDicts in Python; other dicts plain.
        bool all_tensors = !value.entries.empty();
        for (const auto& entry : value.entries) {
          all_tensors = all_tensors && entry.second->kind == Kind::kTensor;
        }
        if (all_tensors || !value.attributes.empty()) {
          EmptyOrderedDict();
        } else {
          out_ += '}';
        }
        absl::Status status = Entries(value.entries);
        if (status.ok() && !value.attributes.empty()) {
          out_ += '}';
          status = Entries(value.attributes);
          out_ += 'b';
        }
        return status;
      }
      case Kind::kTensor:
        return SaveTensor(value.tensor);
      case Kind::kDtype:
        Global("torch", value.dtype->name);
        return absl::OkStatus();
      case Kind::kDevice:
        Global("torch", "device");
        out_ += '(';
        String(value.text);
        out_ += "tR";
        return absl::OkStatus();
      case Kind::kBigInt:
        return absl::InvalidArgumentError(
            absl::StrCat("the integer ", value.text, " does not fit 64 bits"));
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("a ", DescribeKind(value), " cannot be written"));
    }
  }

  const std::vector<PtTensorData>& tensors_;
  std::string out_;
};

// The tensors `value` refers to, once each, in first-use order.
void CollectTensors(const PickleValue& value, std::vector<bool>* seen,
                    std::vector<int>* order) {
  if (value.kind == Kind::kTensor) {
    if (value.tensor >= 0 && static_cast<size_t>(value.tensor) < seen->size() &&
        !(*seen)[value.tensor]) {
      (*seen)[value.tensor] = true;
      order->push_back(value.tensor);
    }
    return;
  }
  for (const PickleValue* item : value.items) {
    CollectTensors(*item, seen, order);
  }
  for (const auto* list : {&value.entries, &value.attributes}) {
    for (const auto& [key, item] : *list) {
      CollectTensors(*key, seen, order);
      CollectTensors(*item, seen, order);
    }
  }
}

}  // namespace

PickleValue* PickleTree::New(PickleValue::Kind kind) {
  values_.emplace_back();
  values_.back().kind = kind;
  return &values_.back();
}

PickleValue* PickleTree::String(absl::string_view text) {
  PickleValue* value = New(Kind::kString);
  value->text = std::string(text);
  return value;
}

PickleValue* PickleTree::Int(int64_t integer) {
  PickleValue* value = New(Kind::kInt);
  value->integer = integer;
  return value;
}

PickleValue* PickleTree::Float(double number) {
  PickleValue* value = New(Kind::kFloat);
  value->number = number;
  return value;
}

PickleValue* PickleTree::Bool(bool boolean) {
  PickleValue* value = New(Kind::kBool);
  value->boolean = boolean;
  return value;
}

PickleValue* PickleTree::Tensor(int index) {
  PickleValue* value = New(Kind::kTensor);
  value->tensor = index;
  return value;
}

void PickleTree::Set(PickleValue* dict, const PickleValue* key,
                     const PickleValue* value) {
  if (key->kind == Kind::kString) {
    for (auto& entry : dict->entries) {
      if (entry.first->kind == Kind::kString &&
          entry.first->text == key->text) {
        entry.second = value;
        return;
      }
    }
  }
  dict->entries.emplace_back(key, value);
}

absl::Status WritePt(const std::string& path, const PickleValue& root,
                     const std::vector<PtTensorData>& tensors) {
  auto annotate = [&path](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat("writing ", path, ": ", status.message()));
  };
  Pickler pickler(tensors);
  absl::Status status = pickler.Dump(root);
  if (!status.ok()) return annotate(status);
  std::vector<bool> seen(tensors.size(), false);
  std::vector<int> order;
  CollectTensors(root, &seen, &order);

  std::string archive = std::filesystem::path(path).stem().string();
  if (archive.empty()) archive = "archive";
  base::PendingFile file(path);
  status = file.Reserve();
  if (!status.ok()) return status;
  const int fd =
      ::open(file.temporary_path().c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0)
    return base::ErrnoToStatus(errno, "opening", file.temporary_path());
  ZipWriter zip([fd, &path](absl::string_view bytes) {
    return base::WriteFully(fd, bytes, path);
  });
  status = zip.Add(archive + "/data.pkl", pickler.bytes());
  if (status.ok()) status = zip.Add(archive + "/byteorder", "little");
  for (size_t i = 0; status.ok() && i < order.size(); ++i) {
    status = zip.Add(absl::StrCat(archive, "/data/", order[i]),
                     tensors[order[i]].bytes);
  }
  if (status.ok()) status = zip.Add(archive + "/version", "3\n");
  if (status.ok()) status = zip.Finish();
  if (::close(fd) != 0 && status.ok()) {
    status = base::ErrnoToStatus(errno, "closing", path);
  }
  if (!status.ok()) return status;
  return file.Publish();
}

}  // namespace interop
