// `ckpt convert` and the any-format reader against files Python writes at
// test time (Debian's torch 1.13, or 2.11 under --config=torch2) and reads
// back: the same tensors give the same digest in every format; renamed,
// converted files load in Python bitwise-equal to the originals; a
// Lightning-shaped checkpoint is refused strictly and read leniently.
#include "checkpoint/interop/convert.h"

#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/interop/tensor_source.h"
#include "checkpoint/reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace interop {
namespace {

using ::testing::HasSubstr;

class ConvertTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test_paths::EmptyDir("convert"));
    test_paths::RunOrDie(absl::StrCat(Python(), " write ", *dir_));
  }
  static std::string Python() {
    return absl::StrCat(
        test_paths::TorchPython(), " ",
        test_paths::Runfile("checkpoint/interop/convert_interop.py"));
  }
  static std::string Path(absl::string_view name) {
    return absl::StrCat(*dir_, "/", name);
  }
  // Python loads OURS and compares it with its own REFERENCE.
  static void ExpectPythonReadsSame(const std::string& ours,
                                    const std::string& reference,
                                    const std::string& strip = "") {
    test_paths::CommandResult result = test_paths::RunCommand(
        absl::StrCat(Python(), " check ", *dir_, " ", ours, " ", reference,
                     strip.empty() ? "" : " --strip=" + strip));
    EXPECT_EQ(result.exit_code, 0) << result.stdout_text << result.stderr_text;
  }
  static std::string DigestOf(const std::string& path,
                              SourceOptions options = {}) {
    absl::StatusOr<std::unique_ptr<TensorSource>> source =
        TensorSource::Open(path, options);
    EXPECT_TRUE(source.ok()) << source.status();
    if (!source.ok()) return "";
    absl::StatusOr<std::string> digest = (*source)->Digest();
    EXPECT_TRUE(digest.ok()) << digest.status();
    return digest.ok() ? *digest : "";
  }
  static std::string* dir_;
};
std::string* ConvertTest::dir_ = nullptr;

TEST_F(ConvertTest, FormatsAreRecognisedByContentNotName) {
  std::filesystem::copy_file(Path("model.safetensors"), Path("looks.pt"));
  absl::StatusOr<std::unique_ptr<TensorSource>> source =
      TensorSource::Open(Path("looks.pt"), {});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->format(), SourceFormat::kSafetensors);
  source = TensorSource::Open(Path("model.pt"), {});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->format(), SourceFormat::kTorchSave);
  EXPECT_EQ((*source)->tensors().size(), 9u);
  // A Hugging Face cache is made of symlinks to blobs.
  std::filesystem::create_symlink(Path("model.safetensors"),
                                  Path("linked.safetensors"));
  source = TensorSource::Open(Path("linked.safetensors"), {});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->format(), SourceFormat::kSafetensors);
}

TEST_F(ConvertTest, SameTensorsSameDigestInEveryFormat) {
  const std::string digest = DigestOf(Path("model.pt"));
  EXPECT_EQ(DigestOf(Path("model.safetensors")), digest);
  absl::StatusOr<ConvertReport> report =
      Convert(Path("model.pt"), Path("model_ours"), {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->digest, digest);
  EXPECT_EQ(DigestOf(Path("model_ours")), digest);
  // Our reader agrees: it is a real checkpoint of ours.
  absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
      checkpoint::CheckpointReader::Open(Path("model_ours"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->VerifyAll().ok());
  report = Convert(Path("model_ours"), Path("model_again.safetensors"), {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(DigestOf(Path("model_again.safetensors")), digest);
  ExpectPythonReadsSame("model_again.safetensors", "model.pt");
  // A different tensor set gives a different digest.
  EXPECT_NE(DigestOf(Path("ddp.pt")), digest);
}

TEST_F(ConvertTest, StrippingDdpPrefixGivesPythonsPlainStateDict) {
  ConvertOptions options;
  options.rules.strip_prefixes = {"module."};
  absl::StatusOr<ConvertReport> report =
      Convert(Path("ddp.pt"), Path("stripped.safetensors"), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->renamed.size(), 9u);
  EXPECT_THAT(report->Text(), HasSubstr("renamed module.0.weight -> 0.weight"));
  EXPECT_EQ(report->digest, DigestOf(Path("model.pt")));
  ExpectPythonReadsSame("stripped.safetensors", "model.pt");
}

TEST_F(ConvertTest, TrainingDictKeepsOptimizerStateAndCounters) {
  // Adam's hyper-parameters differ between torch versions: count them.
  absl::StatusOr<std::unique_ptr<TensorSource>> source =
      TensorSource::Open(Path("train.pt"), {});
  ASSERT_TRUE(source.ok()) << source.status();
  const int values = static_cast<int>((*source)->values().size());
  EXPECT_GE(values, 12);  // epoch, best_acc, lr, betas, eps, params, ...
  absl::StatusOr<ConvertReport> report =
      Convert(Path("train.pt"), Path("train_ours"), {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->values_kept, values);
  absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
      checkpoint::CheckpointReader::Open(Path("train_ours"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  const checkpoint::proto::Metadata& metadata =
      (*reader)->manifest().metadata();
  EXPECT_EQ(metadata.progress().epoch(), 3);
  EXPECT_EQ(metadata.user().at("python/best_acc"), "0.9125");
  EXPECT_EQ(metadata.user().at("python/optimizer/param_groups/0/lr"), "0.001");
  EXPECT_NE((*reader)->FindTensor("optimizer/state/0/exp_avg"), nullptr);
  EXPECT_NE((*reader)->FindTensor("0.weight"), nullptr);
  // And back to Python: model and Adam state bitwise-equal.
  report = Convert(Path("train_ours"), Path("train_back.pt"), {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->values_kept, values);
  ExpectPythonReadsSame("train_back.pt", "train.pt");
  absl::StatusOr<std::unique_ptr<TensorSource>> back =
      TensorSource::Open(Path("train_back.pt"), {});
  ASSERT_TRUE(back.ok()) << back.status();
  std::map<std::string, std::string> reprs;
  for (const SourceValue& value : (*back)->values()) {
    reprs[value.name] = value.repr;
  }
  EXPECT_EQ(reprs["epoch"], "3");
  EXPECT_EQ(reprs["best_acc"], "0.9125");
  EXPECT_EQ(reprs["optimizer/param_groups/0/amsgrad"], "False");
  EXPECT_EQ((*back)->model_key(), "model");
  // .pt to .pt keeps the values too.
  report = Convert(Path("train.pt"), Path("train_copy.pt"), {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->values_kept, values);
  ExpectPythonReadsSame("train_copy.pt", "train.pt");
}

TEST_F(ConvertTest, LightningCheckpointIsReadOnlyLeniently) {
  absl::StatusOr<std::unique_ptr<TensorSource>> strict =
      TensorSource::Open(Path("lightning.ckpt"), {});
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(strict.status().message(), HasSubstr("__main__.AttributeDict"));
  SourceOptions lenient;
  lenient.lenient = true;
  absl::StatusOr<std::unique_ptr<TensorSource>> source =
      TensorSource::Open(Path("lightning.ckpt"), lenient);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->model_key(), "state_dict");
  EXPECT_THAT((*source)->placeholders(),
              testing::Contains(HasSubstr("AttributeDict")));
  EXPECT_NE((*source)->Find("optimizer_states/0/state/0/exp_avg"), nullptr);
  ConvertOptions options;
  options.source.lenient = true;
  options.model_only = true;
  options.rules.strip_prefixes = {"model."};
  absl::StatusOr<ConvertReport> report =
      Convert(Path("lightning.ckpt"), Path("lightning_model.pt"), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->renamed.size(), 9u);
  ExpectPythonReadsSame("lightning_model.pt", "trained.pt");
}

// A checkpoint written by PyPI's pytorch-lightning itself (torch2 build).
TEST_F(ConvertTest, RealLightningCheckpointConvertsToItsModel) {
  if (!std::filesystem::exists(Path("pl.ckpt"))) {
    GTEST_SKIP() << "pytorch-lightning is not in this build (it needs torch "
                    "2.x: --config=torch2)";
  }
  absl::StatusOr<std::unique_ptr<TensorSource>> source =
      TensorSource::Open(Path("pl.ckpt"), {});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->model_key(), "state_dict");
  EXPECT_NE((*source)->Find("model.0.weight"), nullptr);
  EXPECT_NE((*source)->Find("optimizer_states/0/state/0/exp_avg"), nullptr);
  ConvertOptions options;
  options.model_only = true;
  options.rules.strip_prefixes = {"model."};
  absl::StatusOr<ConvertReport> report =
      Convert(Path("pl.ckpt"), Path("pl_converted.safetensors"), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->renamed.size(), 4u);
  ExpectPythonReadsSame("pl_converted.safetensors", "pl_model.pt");
  report = Convert(Path("pl.ckpt"), Path("pl_ours"), {});
  ASSERT_TRUE(report.ok()) << report.status();
  absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
      checkpoint::CheckpointReader::Open(Path("pl_ours"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->manifest().metadata().progress().global_step(), 2);
}

TEST_F(ConvertTest, MappingFileRenamesAndDrops) {
  test_paths::WriteFile(Path("mapping.json"),
                        R"({"0.weight": "conv.weight", "3.bias": null})");
  ConvertOptions options;
  absl::StatusOr<std::map<std::string, std::optional<std::string>>> mapping =
      ReadNameMapping(Path("mapping.json"));
  ASSERT_TRUE(mapping.ok()) << mapping.status();
  options.rules.mapping = *mapping;
  options.rules.add_prefix = "net.";
  absl::StatusOr<ConvertReport> report =
      Convert(Path("model.pt"), Path("mapped.safetensors"), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(report->Text(), HasSubstr("renamed 0.weight -> conv.weight"));
  EXPECT_THAT(report->Text(), HasSubstr("renamed 0.bias -> net.0.bias"));
  EXPECT_THAT(report->Text(), HasSubstr("dropped 3.bias: mapped to null"));
  absl::StatusOr<std::unique_ptr<TensorSource>> source =
      TensorSource::Open(Path("mapped.safetensors"), {});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->tensors().size(), 8u);
  EXPECT_NE((*source)->Find("conv.weight"), nullptr);

  test_paths::WriteFile(Path("bad_mapping.json"), R"(["not", "a", "map"])");
  EXPECT_FALSE(ReadNameMapping(Path("bad_mapping.json")).ok());
}

TEST_F(ConvertTest, RefusesWhatWouldLoseOrConfuseData) {
  // An existing output is kept unless asked.
  test_paths::WriteFile(Path("exists.pt"), "precious");
  absl::StatusOr<ConvertReport> report =
      Convert(Path("model.pt"), Path("exists.pt"), {});
  EXPECT_EQ(report.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(test_paths::ReadFile(Path("exists.pt")), "precious");
  // Two names that would become one.
  ConvertOptions options;
  options.rules.mapping["0.weight"] = "0.bias";
  report = Convert(Path("model.pt"), Path("collide.pt"), options);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("would both be named"));
  EXPECT_FALSE(std::filesystem::exists(Path("collide.pt")));
  // Not a checkpoint of any kind; a FIFO is refused without blocking.
  test_paths::WriteFile(Path("notes.txt"), "hello, world\n");
  absl::StatusOr<std::unique_ptr<TensorSource>> source =
      TensorSource::Open(Path("notes.txt"), {});
  EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(source.status().message(), HasSubstr("not a checkpoint"));
  ASSERT_EQ(::mkfifo(Path("fifo.pt").c_str(), 0600), 0);
  source = TensorSource::Open(Path("fifo.pt"), {});
  EXPECT_FALSE(source.ok());
  EXPECT_THAT(source.status().message(), HasSubstr("fifo.pt"));
  source = TensorSource::Open(Path("missing.pt"), {});
  EXPECT_EQ(source.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace interop
