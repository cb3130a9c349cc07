#include "runner/session.h"

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runner/data/npy.h"
#include "testing/test_paths.h"
#include "torch/cuda.h"

namespace runner {
namespace {

using test_paths::TempPath;
using ::testing::HasSubstr;

std::string ScriptPath(const std::string& name) {
  return test_paths::Runfile(absl::StrCat("runner/", name));
}

std::string Bytes(const torch::Tensor& tensor) {
  return std::string(static_cast<const char*>(tensor.data_ptr()),
                     tensor.numel() * tensor.element_size());
}

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string make =
        test_paths::TorchPython() + " " + ScriptPath("make_test_model.py");
    test_paths::RunOrDie(make + " --out=" + TempPath("model.pt"));
    test_paths::RunOrDie(make + " --no_metadata --out=" + TempPath("bare.pt"));
    test_paths::RunOrDie(make +
                         " --metadata_json='{\"input_shape\": \"x\"}' --out=" +
                         TempPath("bad_metadata.pt"));
    test_paths::RunOrDie(
        make + " --metadata_json='{\"schema_version\": null}' --out=" +
        TempPath("unversioned_metadata.pt"));
    test_paths::RunOrDie(make +
                         " --metadata_json='{\"schema_version\": 2}' --out=" +
                         TempPath("newer_metadata.pt"));
    // What Python computes for the same model and input, for comparison.
    test_paths::WriteFile(TempPath("reference.py"),
                          "import numpy as np, torch, sys\n"
                          "torch.manual_seed(1)\n"
                          "x = torch.rand(5, 1, 28, 28)\n"
                          "m = torch.jit.load(sys.argv[1])\n"
                          "np.save(sys.argv[2], x.numpy())\n"
                          "np.save(sys.argv[3], m(x).detach().numpy())\n");
    test_paths::RunOrDie(
        absl::StrCat(test_paths::TorchPython(), " ", TempPath("reference.py"),
                     " ", TempPath("model.pt"), " ", TempPath("input.npy"), " ",
                     TempPath("expected.npy")));
  }

  static torch::Tensor LoadNpy(const std::string& name) {
    absl::StatusOr<NpyArray> array = ReadNpy(TempPath(name));
    EXPECT_TRUE(array.ok()) << array.status();
    return torch::from_blob(const_cast<char*>(array->data.data()), array->shape,
                            torch::kFloat)
        .clone();
  }

  static std::unique_ptr<Session> OpenOrDie(const std::string& name,
                                            RunnerOptions options = {}) {
    absl::StatusOr<std::unique_ptr<Session>> session =
        Session::Open(TempPath(name), options);
    EXPECT_TRUE(session.ok()) << session.status();
    return session.ok() ? *std::move(session) : nullptr;
  }
};

TEST_F(SessionTest, ReadsMetadataAndMatchesPython) {
  std::unique_ptr<Session> session = OpenOrDie("model.pt");
  ASSERT_NE(session, nullptr);
  ASSERT_NE(session->metadata(), nullptr);
  EXPECT_EQ(session->metadata()->input_shape,
            (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(session->metadata()->input_dtype, "float32");
  ASSERT_EQ(session->metadata()->class_labels.size(), 10u);
  EXPECT_EQ(session->metadata()->class_labels[9], "Ankle boot");
  EXPECT_FLOAT_EQ(session->metadata()->normalization_mean[0], 0.2860f);
  EXPECT_THAT(session->metadata()->json, HasSubstr("\"epoch\": 3"));

  absl::StatusOr<torch::Tensor> output = session->Run(LoadNpy("input.npy"));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->sizes().vec(), (std::vector<int64_t>{5, 10}));
  EXPECT_TRUE(output->device().is_cpu());
  EXPECT_TRUE(torch::allclose(*output, LoadNpy("expected.npy"), 1e-5, 1e-6));
  // An ordinary tensor: in-place ops work outside inference mode.
  EXPECT_FALSE(output->is_inference());
  output->add_(1);
}

TEST_F(SessionTest, SameInputAndThreadsGiveIdenticalBytes) {
  RunnerOptions options;
  options.threads = 2;
  std::unique_ptr<Session> first = OpenOrDie("model.pt", options);
  std::unique_ptr<Session> second = OpenOrDie("model.pt", options);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(first->threads(), 2);
  torch::manual_seed(7);
  torch::Tensor input = torch::rand({64, 1, 28, 28});
  absl::StatusOr<torch::Tensor> reference = first->Run(input);
  ASSERT_TRUE(reference.ok()) << reference.status();
  for (int run = 0; run < 5; ++run) {
    for (Session* session : {first.get(), second.get()}) {
      absl::StatusOr<torch::Tensor> output = session->Run(input);
      ASSERT_TRUE(output.ok()) << output.status();
      ASSERT_EQ(Bytes(*output), Bytes(*reference)) << "run " << run;
    }
  }
}

TEST_F(SessionTest, NewInputIsSizedByTheMetadataAndRuns) {
  std::unique_ptr<Session> session = OpenOrDie("model.pt");
  ASSERT_NE(session, nullptr);
  absl::StatusOr<torch::Tensor> input = session->NewInput(5);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->sizes().vec(), (std::vector<int64_t>{5, 1, 28, 28}));
  EXPECT_EQ(input->scalar_type(), torch::kFloat);
  EXPECT_TRUE(input->device().is_cpu());
  // Pinned memory is for CUDA sessions only.
  EXPECT_FALSE(input->is_pinned());
  input->copy_(LoadNpy("input.npy"));
  absl::StatusOr<torch::Tensor> output = session->Run(*input);
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_TRUE(torch::allclose(*output, LoadNpy("expected.npy"), 1e-5, 1e-6));

  EXPECT_EQ(session->NewInput(0).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::unique_ptr<Session> bare = OpenOrDie("bare.pt");
  ASSERT_NE(bare, nullptr);
  EXPECT_EQ(bare->NewInput(1).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SessionTest, Tf32OptionLeavesCpuResultsAlone) {
  RunnerOptions options;
  options.threads = 1;
  options.tf32 = RunnerOptions::Tf32::kOff;
  std::unique_ptr<Session> off = OpenOrDie("model.pt", options);
  options.tf32 = RunnerOptions::Tf32::kOn;
  std::unique_ptr<Session> on = OpenOrDie("model.pt", options);
  ASSERT_NE(off, nullptr);
  ASSERT_NE(on, nullptr);
  EXPECT_TRUE(at::globalContext().allowTF32CuDNN());
  torch::Tensor input = LoadNpy("input.npy");
  absl::StatusOr<torch::Tensor> a = off->Run(input);
  absl::StatusOr<torch::Tensor> b = on->Run(input);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(Bytes(*a), Bytes(*b));
}

// Needs a GPU. A CUDA session: pinned inputs from NewInput, outputs close
// to the CPU's with the same classes, and the same bytes run after run in
// deterministic mode.
TEST_F(SessionTest, CudaSessionMatchesCpuAndRepeatsItself) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "skipped: no CUDA device";
  RunnerOptions options;
  options.device = "cuda";
  std::unique_ptr<Session> cuda = OpenOrDie("model.pt", options);
  std::unique_ptr<Session> cpu = OpenOrDie("model.pt");
  ASSERT_NE(cuda, nullptr);
  ASSERT_NE(cpu, nullptr);
  absl::StatusOr<torch::Tensor> input = cuda->NewInput(5);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_TRUE(input->is_pinned());
  input->copy_(LoadNpy("input.npy"));
  absl::StatusOr<torch::Tensor> first = cuda->Run(*input);
  absl::StatusOr<torch::Tensor> second = cuda->Run(*input);
  absl::StatusOr<torch::Tensor> pageable = cuda->Run(LoadNpy("input.npy"));
  absl::StatusOr<torch::Tensor> reference = cpu->Run(LoadNpy("input.npy"));
  ASSERT_TRUE(first.ok() && second.ok() && pageable.ok() && reference.ok());
  EXPECT_TRUE(first->device().is_cpu());
  EXPECT_EQ(Bytes(*first), Bytes(*second));
  EXPECT_EQ(Bytes(*first), Bytes(*pageable));
  EXPECT_TRUE(torch::allclose(*first, *reference, 1e-4, 1e-4));
  EXPECT_TRUE(torch::equal(first->argmax(1), reference->argmax(1)));
}

TEST_F(SessionTest, ConcurrentRunsFromSeveralThreadsAgree) {
  RunnerOptions options;
  options.threads = 1;
  std::unique_ptr<Session> session = OpenOrDie("model.pt", options);
  ASSERT_NE(session, nullptr);
  torch::Tensor input = torch::rand({8, 1, 28, 28});
  absl::StatusOr<torch::Tensor> reference = session->Run(input);
  ASSERT_TRUE(reference.ok());
  std::vector<std::string> results(4);
  std::vector<std::thread> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([&, i] {
      for (int run = 0; run < 10; ++run) {
        absl::StatusOr<torch::Tensor> output = session->Run(input);
        std::string bytes = output.ok() ? Bytes(*output) : "error";
        if (run == 0 || bytes != results[i]) results[i] += bytes;
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (const std::string& result : results) {
    EXPECT_EQ(result, Bytes(*reference));
  }
}

TEST_F(SessionTest, RejectsInputsThatDoNotMatchTheMetadata) {
  std::unique_ptr<Session> session = OpenOrDie("model.pt");
  ASSERT_NE(session, nullptr);
  struct Case {
    torch::Tensor input;
    std::string message;
  };
  std::vector<Case> cases = {
      {torch::zeros({28, 28}),
       "input shape [28, 28] does not match the model's [N, 1, 28, 28]"},
      {torch::zeros({2, 3, 28, 28}),
       "input shape [2, 3, 28, 28] does not match the model's [N, 1, 28, 28]"},
      {torch::zeros({0, 1, 28, 28}), "empty batch"},
      {torch::zeros({2, 1, 28, 28}, torch::kByte),
       "input dtype uint8 does not match the model's float32"},
      {torch::zeros({2, 1, 28, 28}, torch::kDouble),
       "input dtype float64 does not match the model's float32"},
      {torch::Tensor(), "undefined"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<torch::Tensor> output = session->Run(c.input);
    ASSERT_FALSE(output.ok()) << c.message;
    EXPECT_EQ(output.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(output.status().message(), HasSubstr(c.message));
  }
}

TEST_F(SessionTest, ModelWithoutMetadataRunsAndReportsModelErrors) {
  std::unique_ptr<Session> session = OpenOrDie("bare.pt");
  ASSERT_NE(session, nullptr);
  EXPECT_EQ(session->metadata(), nullptr);
  absl::StatusOr<torch::Tensor> output =
      session->Run(torch::zeros({3, 1, 28, 28}));
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->size(0), 3);
  // The model's own error, caught: one line, no backtrace.
  output = session->Run(torch::zeros({3, 2, 5, 5}));
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(output.status().message(), HasSubstr("running the model: "));
  EXPECT_THAT(output.status().message(), HasSubstr("channels"));
  EXPECT_EQ(std::string(output.status().message()).find('\n'),
            std::string::npos);
}

TEST_F(SessionTest, OpenGivesClearStatuses) {
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Open(TempPath("missing.pt"));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(session.status().message(), HasSubstr("missing.pt: no such"));

  test_paths::WriteFile(TempPath("text.pt"), "hello, not a model\n");
  session = Session::Open(TempPath("text.pt"));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(session.status().message(),
              HasSubstr("text.pt: not a TorchScript archive"));

  test_paths::RunOrDie(
      "cd " + TempPath() +
      " && /usr/bin/python3 -c \"import zipfile; "
      "zipfile.ZipFile('other.zip', 'w').writestr('a.txt', 'x')\"");
  session = Session::Open(TempPath("other.zip"));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(session.status().message(),
              HasSubstr("other.zip: not a TorchScript archive: "));
  EXPECT_EQ(std::string(session.status().message()).find('\n'),
            std::string::npos);

  session = Session::Open(TempPath("bad_metadata.pt"));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(session.status().message(),
              HasSubstr("bad_metadata.pt: metadata.json: \"input_shape\""));
  session = Session::Open(TempPath("unversioned_metadata.pt"));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(session.status().message(), HasSubstr("\"schema_version\""));
  session = Session::Open(TempPath("newer_metadata.pt"));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(session.status().message(), HasSubstr("schema_version 2"));

  RunnerOptions options;
  options.device = "tpu";
  session = Session::Open(TempPath("model.pt"), options);
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(session.status().message(), HasSubstr("unsupported device"));

  if (!torch::cuda::is_available()) {
    for (const char* device : {"cuda", "cuda:1"}) {
      options.device = device;
      session = Session::Open(TempPath("model.pt"), options);
      EXPECT_EQ(session.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(session.status().message(),
                  HasSubstr("CUDA is not available"));
    }
  }
}

}  // namespace
}  // namespace runner
