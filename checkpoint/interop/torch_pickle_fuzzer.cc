// libFuzzer target over the pickle interpreter (torch_pickle.h), strict and
// lenient: any byte string must give a Status, never a crash, an
// out-of-bounds read, a hang, a leak or a huge allocation. What it accepts
// must keep the promises the header makes: every tensor within its
// storage, and names for everything (pt_file.h) within bounds.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "checkpoint/interop/pt_file.h"
#include "checkpoint/interop/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  for (bool lenient : {false, true}) {
    interop::PickleOptions options;
    options.lenient = lenient;
    absl::StatusOr<interop::TorchPickle> pickle =
        interop::UnpickleTorch(input, options);
    if (!pickle.ok()) continue;
    for (const interop::TorchTensor& tensor : pickle->tensors()) {
      const interop::TorchStorage& storage = pickle->storages()[tensor.storage];
      if (tensor.dtype != storage.dtype) std::abort();
      const uint64_t elements = storage.bytes / tensor.dtype->itemsize;
      if (tensor.numel() == 0) continue;
      uint64_t last = tensor.offset;
      for (size_t i = 0; i < tensor.shape.size(); ++i) {
        last += (tensor.shape[i] - 1) * tensor.strides[i];
      }
      if (last >= elements) std::abort();
    }
    absl::StatusOr<interop::PtNames> names = interop::NameContents(*pickle);
    if (!names.ok()) continue;
    for (const interop::PtNamedValue& value : names->values) {
      if (interop::PythonRepr(*value.value).empty()) std::abort();
    }
  }
  return 0;
}
