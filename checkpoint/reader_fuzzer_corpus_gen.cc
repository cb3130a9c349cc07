// Writes the seed corpus of //checkpoint:reader_fuzzer: real checkpoints
// from CheckpointWriter, in the fuzzer's split form (4-byte little-endian
// manifest length, manifest, data file), and broken variants of them.
// Files named valid_* must open and verify; broken_* must be refused
// (reader_fuzzer_corpus_test checks both).
//
//   tools/bazel run //checkpoint:reader_fuzzer_corpus_gen --
//       $PWD/checkpoint/testdata/fuzz_corpus   (one command line)
#include <sys/stat.h>
#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "checkpoint/reader_fuzzer_input.h"
#include "checkpoint/writer.h"

namespace checkpoint {
namespace {

struct Tensor {
  std::string name;
  proto::DType dtype;
  std::vector<int64_t> shape;
};

struct Split {
  proto::Manifest manifest;
  std::string data;
  uint32_t header_version = kFormatVersion;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "reader_fuzzer_corpus_gen: error: %s\n",
               message.c_str());
  std::exit(1);
}

Split WriteCheckpoint(const std::string& scratch, const std::string& name,
                      const std::vector<Tensor>& tensors,
                      const std::function<void(CheckpointWriter&)>& extra) {
  const std::string path = scratch + "/" + name;
  WriterOptions options;
  options.sync = false;
  auto writer = CheckpointWriter::Create(path, options);
  if (!writer.ok()) Die(std::string(writer.status().message()));
  int seed = 0;
  for (const Tensor& tensor : tensors) {
    size_t count = 1;
    for (int64_t dim : tensor.shape) count *= static_cast<size_t>(dim);
    std::vector<char> bytes(count * ElementSize(tensor.dtype));
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = tensor.dtype == proto::BOOL ? (i + seed) % 2
                                             : static_cast<char>(i * 37 + seed);
    }
    ++seed;
    absl::Status status =
        (*writer)->AddTensor(tensor.name, tensor.dtype, tensor.shape, bytes);
    if (!status.ok()) Die(std::string(status.message()));
  }
  if (extra) extra(**writer);
  if (absl::Status status = (*writer)->Commit(); !status.ok()) {
    Die(std::string(status.message()));
  }
  Split split;
  absl::StatusOr<proto::Manifest> manifest =
      DecodeManifestFile(ReadFile(path + "/manifest.pb"));
  if (!manifest.ok()) Die(std::string(manifest.status().message()));
  split.manifest = *manifest;
  split.data = ReadFile(path + "/data-00000.bin");
  return split;
}

void Emit(const std::string& directory, const std::string& name,
          const std::string& manifest, const std::string& data) {
  const std::string bytes = JoinFuzzerInput(manifest, data);
  std::ofstream out(directory + "/" + name, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) Die("writing " + directory + "/" + name);
}

void Emit(const std::string& directory, const std::string& name,
          const Split& split) {
  // A valid frame around whatever the edit made of the manifest, so that
  // the reader's rules (not the checksum) must refuse a broken_* input.
  Emit(directory, name,
       FrameManifestPayload(SerializeCanonical(split.manifest),
                            split.header_version),
       split.data);
}

int Main(const std::string& output) {
  const char* tmp = std::getenv("TMPDIR");
  std::string scratch = std::string(tmp != nullptr ? tmp : "/tmp") +
                        "/reader_fuzzer_corpus_gen.XXXXXX";
  if (::mkdtemp(scratch.data()) == nullptr) Die("mkdtemp");

  const Split empty = WriteCheckpoint(scratch, "empty", {}, nullptr);
  const Split small = WriteCheckpoint(
      scratch, "small",
      {{"fc.weight", proto::FLOAT32, {3, 4}},
       {"fc.bias", proto::FLOAT32, {3}},
       {"step", proto::INT64, {}},
       {"mask", proto::BOOL, {0, 5}}},
      [](CheckpointWriter& writer) {
        writer.mutable_metadata()->mutable_progress()->set_epoch(2);
        writer.mutable_metadata()->set_architecture("mlp");
        (*writer.mutable_metadata()->mutable_metrics())["loss"] = 0.5;
      });
  std::vector<Tensor> every_dtype;
  for (int value = proto::DType_MIN; value <= proto::DType_MAX; ++value) {
    const auto dtype = static_cast<proto::DType>(value);
    if (ElementSize(dtype) == 0) continue;
    every_dtype.push_back({std::string(DTypeName(dtype)), dtype, {2, 3}});
  }
  const Split dtypes = WriteCheckpoint(scratch, "dtypes", every_dtype, nullptr);
  const Split training = WriteCheckpoint(
      scratch, "training",
      {{"conv.weight", proto::FLOAT32, {2, 1, 3, 3}},
       {"optimizer/exp_avg/conv.weight", proto::FLOAT32, {2, 1, 3, 3}},
       {"optimizer/exp_avg_sq/conv.weight", proto::FLOAT32, {2, 1, 3, 3}},
       {"rng/cpu", proto::UINT8, {40}}},
      [](CheckpointWriter& writer) {
        auto* state = writer.mutable_training_state();
        state->mutable_optimizer()->set_type("adam");
        auto* parameter = state->mutable_optimizer()->add_parameters();
        parameter->set_parameter_name("conv.weight");
        (*parameter->mutable_tensors())["exp_avg"] =
            "optimizer/exp_avg/conv.weight";
        (*parameter->mutable_counters())["step"] = 3;
        state->mutable_rng()->set_cpu_generator_tensor("rng/cpu");
        proto::Extension* extension = state->add_extensions();
        extension->set_type("train.TrainerState");
        extension->set_version(1);
        extension->set_payload(std::string("\x0a\x06\x0a\x04step", 8));
      });

  Emit(output, "valid_empty", empty);
  Emit(output, "valid_small", small);
  Emit(output, "valid_every_dtype", dtypes);
  Emit(output, "valid_training_state", training);

  auto broken = [&](const std::string& name,
                    const std::function<void(Split&)>& edit) {
    Split split = small;
    edit(split);
    Emit(output, "broken_" + name, split);
  };
  broken("flipped_byte",
         [](Split& s) { s.data[s.manifest.tensors(1).offset()] ^= 1; });
  broken("truncated_data", [](Split& s) { s.data.resize(s.data.size() / 2); });
  broken("newer_version", [](Split& s) {
    s.manifest.set_format_version(3);
    s.header_version = 3;
  });
  broken("zero_version", [](Split& s) { s.manifest.clear_format_version(); });
  broken("bool_byte", [](Split& s) {
    s.manifest.mutable_tensors(3)->set_shape(0, 1);
    s.manifest.mutable_tensors(3)->set_size_bytes(5);
    s.data.resize(s.data.size() + 5, '\x02');
    s.manifest.mutable_data_files(0)->set_size_bytes(s.data.size());
    s.manifest.mutable_tensors(3)->set_xxh3_64(
        XXH3_64bits(s.data.data() + s.manifest.tensors(3).offset(), 5));
  });
  broken("padding", [](Split& s) { s.data[60] = 1; });
  broken("shape_overflow", [](Split& s) {
    s.manifest.mutable_tensors(0)->set_shape(0, int64_t{1} << 62);
    s.manifest.mutable_tensors(0)->set_shape(1, 16);
  });
  broken("negative_dim",
         [](Split& s) { s.manifest.mutable_tensors(0)->set_shape(0, -3); });
  broken("offset_beyond_file", [](Split& s) {
    s.manifest.mutable_tensors(1)->set_offset(uint64_t{1} << 40);
  });
  broken("misaligned",
         [](Split& s) { s.manifest.mutable_tensors(1)->set_offset(4); });
  broken("overlap", [](Split& s) {
    s.manifest.mutable_tensors(1)->set_offset(s.manifest.tensors(0).offset());
  });
  broken("duplicate_name", [](Split& s) {
    s.manifest.mutable_tensors(1)->set_name(s.manifest.tensors(0).name());
  });
  broken("unknown_dtype", [](Split& s) {
    s.manifest.mutable_tensors(0)->set_dtype(static_cast<proto::DType>(77));
  });
  broken("escaping_file_name", [](Split& s) {
    s.manifest.mutable_data_files(0)->set_name("../data-00000.bin");
  });
  broken("bad_alignment", [](Split& s) { s.manifest.set_alignment(3); });
  Emit(output, "broken_garbage_manifest",
       FrameManifestPayload("\x0a\xff\xff\xff\xff\x0f garbage"), small.data);
  {
    std::string manifest = FrameManifestPayload(
        SerializeCanonical(small.manifest), kFormatVersion);
    manifest[manifest.size() - 3] ^= 0x20;
    Emit(output, "broken_manifest_checksum", manifest, small.data);
  }

  std::string command = "rm -rf '" + scratch + "'";
  if (std::system(command.c_str()) != 0) Die("removing " + scratch);
  std::printf("wrote the corpus to %s\n", output.c_str());
  return 0;
}

}  // namespace
}  // namespace checkpoint

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr,
                 "reader_fuzzer_corpus_gen: error: usage: "
                 "reader_fuzzer_corpus_gen OUTPUT_DIR\n");
    return 2;
  }
  return checkpoint::Main(argv[1]);
}
