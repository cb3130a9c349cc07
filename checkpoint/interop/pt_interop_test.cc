// Real torch.save files, written at test time by the Python whose torch
// matches @libtorch (Debian's 1.13, or 2.11 under --config=torch2): every
// tensor reads back under the name, dtype and shape Python gives it, with
// bitwise-equal bytes; hostile files are refused and run nothing.
#include <deque>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/interop/pt_file.h"
#include "checkpoint/interop/pt_writer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/test_paths.h"

namespace interop {
namespace {

class PtInteropTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test_paths::EmptyDir("pt"));
    test_paths::RunOrDie(
        absl::StrCat(test_paths::TorchPython(), " ",
                     test_paths::Runfile("checkpoint/interop/pt_interop.py"),
                     " write ", *dir_));
  }
  static std::string Path(absl::string_view name) {
    return absl::StrCat(*dir_, "/", name);
  }
  static std::string* dir_;
};
std::string* PtInteropTest::dir_ = nullptr;

// Reads NAME.pt and checks it against NAME.index.json and NAME.bin.
void ExpectMatchesPython(const std::string& dir, const std::string& name) {
  SCOPED_TRACE(name);
  absl::StatusOr<std::unique_ptr<PtFile>> file =
      PtFile::Open(absl::StrCat(dir, "/", name, ".pt"), {});
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<PtNames> names = NameContents((*file)->pickle());
  ASSERT_TRUE(names.ok()) << names.status();
  const nlohmann::json index = nlohmann::json::parse(
      test_paths::ReadFile(absl::StrCat(dir, "/", name, ".index.json")));
  const std::string blob =
      test_paths::ReadFile(absl::StrCat(dir, "/", name, ".bin"));
  ASSERT_EQ(names->tensors.size(), index.size());
  for (size_t i = 0; i < index.size(); ++i) {
    const PtNamedTensor& named = names->tensors[i];
    SCOPED_TRACE(named.name);
    EXPECT_EQ(named.name, index[i]["name"].get<std::string>());
    const TorchTensor& tensor = (*file)->pickle().tensors()[named.tensor];
    EXPECT_EQ(tensor.dtype->name, index[i]["dtype"].get<std::string>());
    EXPECT_EQ(tensor.shape, index[i]["shape"].get<std::vector<int64_t>>());
    std::string scratch;
    const absl::string_view bytes = (*file)->TensorBytes(tensor, &scratch);
    EXPECT_TRUE(bytes ==
                absl::string_view(blob).substr(index[i]["offset"].get<size_t>(),
                                               index[i]["size"].get<size_t>()))
        << "bytes differ";
  }
}

TEST_F(PtInteropTest, StateDictsAndTrainingDictsReadBitwise) {
  for (const char* name : {"resnet18", "train_sgd", "train_adam", "ddp",
                           "protocol4", "parameters", "views", "dtypes"}) {
    ExpectMatchesPython(*dir_, name);
  }
}

TEST_F(PtInteropTest, ResNet18HasTorchvisionsLayout) {
  absl::StatusOr<std::unique_ptr<PtFile>> file =
      PtFile::Open(Path("resnet18.pt"), {});
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->root(), "resnet18");
  absl::StatusOr<PtNames> names = NameContents((*file)->pickle());
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->tensors.size(), 122u);
  EXPECT_EQ(names->tensors.front().name, "conv1.weight");
  // The state_dict's _metadata (module versions) is kept, not named.
  EXPECT_FALSE((*file)->pickle().root().attributes.empty());
}

TEST_F(PtInteropTest, TrainingCountersAreNamedValues) {
  absl::StatusOr<std::unique_ptr<PtFile>> file =
      PtFile::Open(Path("train_sgd.pt"), {});
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<PtNames> names = NameContents((*file)->pickle());
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->model_key, "model");
  std::map<std::string, std::string> values;
  for (const PtNamedValue& value : names->values) {
    values[value.name] = PythonRepr(*value.value);
  }
  EXPECT_EQ(values["epoch"], "3");
  EXPECT_EQ(values["best_acc"], "0.9125");
  EXPECT_EQ(values["optimizer/param_groups/0/momentum"], "0.9");
  EXPECT_EQ(values["optimizer/param_groups/0/lr"], "0.1");
}

TEST_F(PtInteropTest, LegacyFormatIsRefusedByName) {
  absl::StatusOr<std::unique_ptr<PtFile>> file =
      PtFile::Open(Path("legacy.pt"), {});
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(file.status().message().find("legacy format"), std::string::npos)
      << file.status();
}

TEST_F(PtInteropTest, HostileFilesAreRefusedAndRunNothing) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"hostile-os-system", "global 'posix.system' is refused"},
      {"hostile-eval", "global '__builtin__.eval' is refused"},
      {"hostile-popen", "Popen' is refused"},
      {"hostile-storage", "storage '0' should hold 256 bytes"},
  };
  for (const auto& [name, reason] : cases) {
    SCOPED_TRACE(name);
    for (bool lenient : {false, true}) {
      PtReadOptions options;
      options.pickle.lenient = lenient;
      absl::StatusOr<std::unique_ptr<PtFile>> file =
          PtFile::Open(Path(name + ".pt"), options);
      ASSERT_FALSE(file.ok());
      EXPECT_NE(file.status().message().find(reason), std::string::npos)
          << file.status();
      EXPECT_EQ(file.status().message().find('\n'), std::string::npos);
    }
  }
  EXPECT_FALSE(std::filesystem::exists(Path("pwned")));
}

TEST_F(PtInteropTest, CorruptStorageFailsItsCrc) {
  const std::string copy = Path("corrupt.pt");
  test_paths::WriteFile(copy, test_paths::ReadFile(Path("ddp.pt")));
  absl::StatusOr<std::unique_ptr<PtFile>> file = PtFile::Open(copy, {});
  ASSERT_TRUE(file.ok()) << file.status();
  const absl::string_view storage = (*file)->StorageBytes(0);
  const std::string bytes = test_paths::ReadFile(copy);
  const size_t at = bytes.find(std::string(storage));
  file->reset();
  ASSERT_NE(at, std::string::npos);
  test_paths::FlipByte(copy, at, 0x01);
  file = PtFile::Open(copy, {});
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("CRC-32"), std::string::npos)
      << file.status();
}

// Python -> ours -> Python: each file read by PtFile and written again by
// WritePt loads in Python (weights_only=True wherever that Python's torch
// can) with the same structure and bitwise-equal tensors.
TEST_F(PtInteropTest, RoundTripsThroughOurWriterAreBitwise) {
  const std::vector<std::string> names = {"resnet18", "train_sgd", "train_adam",
                                          "ddp",      "protocol4", "parameters",
                                          "views",    "dtypes"};
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::unique_ptr<PtFile>> file =
        PtFile::Open(Path(name + ".pt"), {});
    ASSERT_TRUE(file.ok()) << file.status();
    std::deque<std::string> scratch;
    std::vector<PtTensorData> tensors;
    for (const TorchTensor& tensor : (*file)->pickle().tensors()) {
      scratch.emplace_back();
      tensors.push_back({tensor.dtype, tensor.shape,
                         (*file)->TensorBytes(tensor, &scratch.back()),
                         tensor.requires_grad});
    }
    const absl::Status written = WritePt(Path("ours-" + name + ".pt"),
                                         (*file)->pickle().root(), tensors);
    ASSERT_TRUE(written.ok()) << written;
  }
  const std::string report = test_paths::RunOrDie(
      absl::StrCat(test_paths::TorchPython(), " ",
                   test_paths::Runfile("checkpoint/interop/pt_interop.py"),
                   " check ", *dir_, " ", absl::StrJoin(names, " ")));
  for (const char* name :
       {"resnet18", "ddp", "protocol4", "views", "dtypes", "parameters"}) {
    EXPECT_NE(
        report.find(absl::StrCat(name, " bitwise-equal via weights_only")),
        std::string::npos)
        << report;
  }
  EXPECT_NE(report.find("train_adam bitwise-equal"), std::string::npos)
      << report;
}

TEST_F(PtInteropTest, WriterRefusesWhatItCannotWriteAndKeepsTheOldFile) {
  const std::string path = Path("kept.pt");
  test_paths::WriteFile(path, "old content");
  PickleTree tree;
  PickleValue* root = tree.Dict();
  tree.Set(root, tree.String("w"), tree.Tensor(0));
  const std::string bytes(12, '\0');
  // 12 bytes cannot be 2x3 float32.
  absl::Status status =
      WritePt(path, *root,
              {{&TorchDtypeOf(checkpoint::proto::FLOAT32), {2, 3}, bytes}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  PickleValue* opaque = tree.New(PickleValue::Kind::kOpaque);
  tree.Set(root, tree.String("w"), opaque);
  EXPECT_EQ(WritePt(path, *root, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(test_paths::ReadFile(path), "old content");
}

}  // namespace
}  // namespace interop
