#include "checkpoint/ckpt_testing.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace ckpt {
namespace {

struct FixtureTensor {
  std::string name;
  proto::DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(T));
}

std::vector<FixtureTensor> ReferenceTensors() {
  std::vector<float> weight(32);
  for (size_t i = 0; i < weight.size(); ++i) weight[i] = 0.25f * i;
  return {
      {"fc.weight", proto::FLOAT32, {4, 8}, Bytes(weight)},
      {"fc.bias", proto::FLOAT32, {4}, Bytes(std::vector<float>{1, 2, 3, 4})},
      // 1, 2, 0.5, -1, 3, 0 in IEEE half.
      {"emb",
       proto::FLOAT16,
       {3, 2},
       Bytes(std::vector<uint16_t>{0x3C00, 0x4000, 0x3800, 0xBC00, 0x4200, 0})},
      // 1, -2 in bfloat16.
      {"norm",
       proto::BFLOAT16,
       {2},
       Bytes(std::vector<uint16_t>{0x3F80, 0xC000})},
      {"counts",
       proto::INT64,
       {3},
       Bytes(std::vector<int64_t>{1, -5, int64_t{1} << 40})},
      {"mask", proto::BOOL, {4}, Bytes(std::vector<uint8_t>{1, 0, 1, 1})},
      {"optimizer/exp_avg/fc.weight",
       proto::FLOAT32,
       {4, 8},
       Bytes(std::vector<float>(32, 0.0f))},
  };
}

proto::Metadata ReferenceMetadata(int64_t step, double val_loss) {
  proto::Metadata metadata;
  metadata.set_created_unix_micros(1700000000123456);
  metadata.mutable_producer()->set_tool("ckpt_testing");
  metadata.mutable_producer()->set_version("1.0");
  metadata.set_libtorch_version("1.13.1");
  metadata.set_host("fixture-host");
  metadata.mutable_progress()->set_epoch(step / 10);
  metadata.mutable_progress()->set_global_step(step);
  metadata.mutable_progress()->set_examples_seen(step * 64);
  (*metadata.mutable_metrics())["val_loss"] = val_loss;
  (*metadata.mutable_metrics())["accuracy"] = 0.875;
  metadata.mutable_monitored()->set_name("val_loss");
  metadata.mutable_monitored()->set_mode(proto::MonitoredMetric::MIN);
  metadata.mutable_monitored()->set_value(val_loss);
  (*metadata.mutable_user())["note"] = "fixture";
  metadata.set_architecture("mlp");
  (*metadata.mutable_architecture_config())["hidden"] = "8";
  return metadata;
}

proto::TrainingState ReferenceTrainingState() {
  proto::TrainingState state;
  proto::OptimizerState* optimizer = state.mutable_optimizer();
  optimizer->set_type("adam");
  auto* group = optimizer->add_param_groups();
  (*group->mutable_hyperparameters())["lr"] = 0.001;
  group->add_parameter_names("fc.weight");
  group->add_parameter_names("fc.bias");
  auto* parameter = optimizer->add_parameters();
  parameter->set_parameter_name("fc.weight");
  (*parameter->mutable_tensors())["exp_avg"] = "optimizer/exp_avg/fc.weight";
  (*parameter->mutable_counters())["step"] = 20;
  state.mutable_rng()->set_seed(42);
  // A producer's own state: opaque bytes to the format and to `ckpt`.
  proto::Extension* extension = state.add_extensions();
  extension->set_type("fixture.LoaderState");
  extension->set_version(3);
  extension->set_payload("\x08\x07");
  return state;
}

absl::Status Write(const std::string& path,
                   const std::vector<FixtureTensor>& tensors,
                   const proto::Metadata& metadata) {
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> writer =
      CheckpointWriter::Create(path, WriterOptions{/*sync=*/false});
  if (!writer.ok()) return writer.status();
  for (const FixtureTensor& tensor : tensors) {
    absl::Status status = (*writer)->AddTensor(
        tensor.name, tensor.dtype, tensor.shape,
        absl::Span<const char>(tensor.bytes.data(), tensor.bytes.size()));
    if (!status.ok()) return status;
  }
  *(*writer)->mutable_metadata() = metadata;
  *(*writer)->mutable_training_state() = ReferenceTrainingState();
  return (*writer)->Commit();
}

FixtureTensor* Find(std::vector<FixtureTensor>& tensors,
                    const std::string& name) {
  for (FixtureTensor& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

template <typename T>
void SetElement(FixtureTensor& tensor, size_t index, T value) {
  std::memcpy(tensor.bytes.data() + index * sizeof(T), &value, sizeof(T));
}

absl::Status FlipByteOf(const std::string& checkpoint,
                        const std::string& tensor_name) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(checkpoint);
  if (!reader.ok()) return reader.status();
  const proto::TensorEntry* entry = (*reader)->FindTensor(tensor_name);
  if (entry == nullptr) return absl::NotFoundError(tensor_name);
  test_paths::FlipByte(
      absl::StrCat(checkpoint, "/",
                   (*reader)->manifest().data_files(entry->data_file()).name()),
      entry->offset(), 0x01);
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteCkptFixtures(const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  std::vector<FixtureTensor> reference = ReferenceTensors();
  if (absl::Status s =
          Write(dir + "/a", reference, ReferenceMetadata(20, 0.25));
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          Write(dir + "/same", reference, ReferenceMetadata(99, 0.125));
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          Write(dir + "/corrupt", reference, ReferenceMetadata(20, 0.25));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = FlipByteOf(dir + "/corrupt", "fc.bias"); !s.ok()) {
    return s;
  }

  std::vector<FixtureTensor> changed = ReferenceTensors();
  SetElement<float>(*Find(changed, "fc.weight"), 0, 0.5f);
  SetElement<uint16_t>(*Find(changed, "emb"), 1, 0x4200);   // 2 -> 3
  SetElement<uint16_t>(*Find(changed, "norm"), 1, 0xC020);  // -2 -> -2.5
  SetElement<int64_t>(*Find(changed, "counts"), 2, (int64_t{1} << 40) + 7);
  FixtureTensor* bias = Find(changed, "fc.bias");
  bias->shape = {5};
  bias->bytes = Bytes(std::vector<float>{1, 2, 3, 4, 5});
  changed.erase(changed.begin() + (Find(changed, "mask") - changed.data()));
  changed.push_back(
      {"extra", proto::INT32, {2}, Bytes(std::vector<int32_t>{7, 8})});
  if (absl::Status s = Write(dir + "/b", changed, ReferenceMetadata(30, 0.5));
      !s.ok()) {
    return s;
  }

  CheckpointManager::Options options;
  options.monitor = "val_loss";
  options.mode = proto::MonitoredMetric::MIN;
  absl::StatusOr<std::unique_ptr<CheckpointManager>> manager =
      CheckpointManager::Open(dir + "/run", options);
  if (!manager.ok()) return manager.status();
  const std::pair<int64_t, double> saves[] = {
      {10, 0.5}, {20, 0.25}, {30, 0.75}};
  for (const auto& [step, val_loss] : saves) {
    proto::Metadata metadata = ReferenceMetadata(step, val_loss);
    absl::StatusOr<std::string> path = (*manager)->PathForNew(metadata);
    if (!path.ok()) return path.status();
    if (absl::Status s = Write(*path, reference, metadata); !s.ok()) return s;
    if (absl::Status s = (*manager)->OnCommitted(*path); !s.ok()) return s;
  }

  ::mkdir((dir + "/not_a_checkpoint").c_str(), 0755);
  test_paths::WriteFile(dir + "/file.txt", "not a checkpoint\n");
  return absl::OkStatus();
}

}  // namespace ckpt
}  // namespace checkpoint
