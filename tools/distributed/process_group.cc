#include "tools/distributed/process_group.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tools/base/status.h"
#include "torch/torch.h"

// @libtorch//:gloo and :nccl define these where the build has them.
#ifndef CKPT_WITH_GLOO
#define CKPT_WITH_GLOO 0
#endif
#ifndef CKPT_WITH_NCCL
#define CKPT_WITH_NCCL 0
#endif
#if CKPT_WITH_GLOO || CKPT_WITH_NCCL
#define CKPT_WITH_C10D 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if CKPT_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if CKPT_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace distributed {
namespace {

// c10d and Gloo throw; their messages say what happened, the code is ours.
absl::Status FromException(const std::exception& error,
                           absl::string_view context) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&error);
  std::string what = torch_error != nullptr
                         ? torch_error->what_without_backtrace()
                         : error.what();
  // One line: c10d's messages can carry several.
  for (char& c : what) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  const std::string lower = absl::AsciiStrToLower(what);
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (absl::StrContains(lower, "timed out") ||
      absl::StrContains(lower, "timeout")) {
    code = absl::StatusCode::kDeadlineExceeded;
  } else if (absl::StrContains(lower, "connect") ||
             absl::StrContains(lower, "closed") ||
             absl::StrContains(lower, "reset by peer")) {
    code = absl::StatusCode::kUnavailable;
  }
  return absl::Status(code, absl::StrCat(context, ": ", what));
}

// A collective that failed: a peer that left shows as a reset connection,
// one that hangs as a timeout; say which it likely was.
absl::Status CollectiveError(const std::exception& error,
                             absl::string_view context) {
  absl::Status status = FromException(error, context);
  if (absl::IsUnavailable(status)) {
    return absl::UnavailableError(absl::StrCat(
        status.message(), " (another process left the job or crashed)"));
  }
  if (absl::IsDeadlineExceeded(status)) {
    return absl::DeadlineExceededError(absl::StrCat(
        status.message(), " (another process hangs or is too slow)"));
  }
  return status;
}

absl::Status NoPeers(const std::string& key) {
  return absl::FailedPreconditionError(absl::StrCat(
      "message '", key, "': a process alone has no one to exchange it with"));
}

}  // namespace

bool HasGloo() { return CKPT_WITH_GLOO == 1; }
bool HasNccl() { return CKPT_WITH_NCCL == 1; }

namespace {

// Whether this build has the backend `device` needs, and the device is
// there.
absl::Status CheckBackend(const LaunchEnv& env, const torch::Device& device) {
  if (device.is_cpu()) {
    if (HasGloo()) return absl::OkStatus();
    return absl::UnimplementedError(absl::StrCat(
        Describe(env),
        ": this build has no Gloo (c10d's CPU backend needs Gloo's headers, "
        "Debian's libgloo-dev), so it cannot run several processes on the "
        "CPU"));
  }
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(env),
                     ": several processes run on the CPU or on CUDA devices, "
                     "not on ",
                     device.str()));
  }
  if (!HasNccl()) {
    return absl::UnimplementedError(absl::StrCat(
        Describe(env),
        ": this build has no NCCL, so several processes cannot train on "
        "CUDA devices; build against a CUDA LibTorch (--config=torch2) or "
        "use the CPU"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (!device.has_index() || device.index() >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(env), ": ", device.str(),
                     " is not a CUDA device here (", count, " visible)"));
  }
  return absl::OkStatus();
}

}  // namespace

#if CKPT_WITH_C10D

namespace {

std::chrono::milliseconds Milliseconds(absl::Duration duration) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(duration));
}

}  // namespace

struct ProcessGroup::Impl {
  // One of the two, by the group's device.
#if CKPT_WITH_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#if CKPT_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  // Post/Await's messages, apart from what the backend keeps in the store.
  c10::intrusive_ptr<c10d::Store> messages;
  absl::Duration timeout;
  torch::Device device = torch::kCPU;
  std::string where;  // "rank 1 of 2 (store 127.0.0.1:29500)"

  ~Impl() {
#if CKPT_WITH_NCCL
    // Ends NCCL's communicators and watchdog before the process goes on
    // to exit (c10d warns about a group never shut down, and its threads
    // must not outlive the CUDA context).
    if (nccl) {
      try {
        nccl->shutdown();
      } catch (const std::exception&) {
        // A peer that already left: nothing more to end.
      }
    }
#endif
  }

  // Calls `collective` with this group's backend and waits for the c10d
  // work it returns.
  template <typename Collective>
  void Wait(Collective collective) {
#if CKPT_WITH_NCCL
    if (nccl) {
      collective(*nccl)->wait();
      return;
    }
#endif
#if CKPT_WITH_GLOO
    collective(*gloo)->wait();
#endif
  }

  enum class Op { kSum, kMean, kBroadcast };
  absl::Status Run(std::vector<at::Tensor>& flat, Op op, int root) {
    Wait([&](auto& group) {
      if (op == Op::kBroadcast) {
        c10d::BroadcastOptions options;
        options.rootRank = root;
        return group.broadcast(flat, options);
      }
      return group.allreduce(flat);
    });
    return absl::OkStatus();
  }
};

namespace {

#if CKPT_WITH_GLOO
c10::intrusive_ptr<c10d::ProcessGroupGloo> ConnectGloo(
    const LaunchEnv& env, const ProcessGroup::Options& options,
    const c10::intrusive_ptr<c10d::Store>& store) {
  auto gloo_options =
      c10d::ProcessGroupGloo::Options::create(Milliseconds(options.timeout));
  const bool loopback = env.master_addr == "127.0.0.1" ||
                        env.master_addr == "localhost" ||
                        env.master_addr == "::1";
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  if (interface != nullptr && *interface != '\0') {
    gloo_options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (loopback) {
    gloo_options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
  } else {
    gloo_options->devices.push_back(
        c10d::ProcessGroupGloo::createDefaultDevice());
  }
  gloo_options->threads = options.gloo_threads;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(
      store, env.rank, env.world_size, gloo_options);
}
#endif

#if CKPT_WITH_NCCL
c10::intrusive_ptr<c10d::ProcessGroupNCCL> ConnectNccl(
    const LaunchEnv& env, const ProcessGroup::Options& options,
    const c10::intrusive_ptr<c10d::Store>& store) {
  // A collective that times out or fails then throws from wait(), which
  // becomes our error, instead of only NCCL's watchdog ending the process.
  // The user's own setting wins.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
  c10::cuda::set_device(options.device.index());
  auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
  nccl_options->timeout = Milliseconds(options.timeout);
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
      store, env.rank, env.world_size, nccl_options);
  // Meets the peers now, so that a missing one is reported by Connect
  // rather than by the first collective.
  group->setBoundDeviceId(options.device);
  group->eagerConnectSingleDevice(options.device);
  return group;
}
#endif

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::Connect(
    const LaunchEnv& env, const Options& options) {
  if (env.world_size <= 1) {
    return std::unique_ptr<ProcessGroup>(new ProcessGroup(0, 1, nullptr));
  }
  RETURN_IF_ERROR(CheckBackend(env, options.device));
  if (env.master_addr.empty() || env.master_port <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(env), ": no address and port to meet the other processes"));
  }
  auto impl = std::make_unique<Impl>();
  impl->where = Describe(env);
  impl->device = options.device;
  impl->timeout = options.timeout;
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(env.master_port);
    store_options.isServer = env.rank == 0 && !env.use_agent_store;
    // Every process counts itself in (a client without numWorkers does
    // not, and the server then waits out the whole timeout); torchrun's
    // agent store is counted by the agent.
    store_options.numWorkers = static_cast<size_t>(env.world_size);
    store_options.waitWorkers = !env.use_agent_store;
    store_options.timeout = Milliseconds(options.timeout);
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    if (!env.store_prefix.empty()) {
      store = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, store);
    }
    impl->messages =
        c10::make_intrusive<c10d::PrefixStore>("ckpt_project/messages", store);
    store = c10::make_intrusive<c10d::PrefixStore>("ckpt_project/pg", store);
#if CKPT_WITH_NCCL
    if (options.device.is_cuda()) impl->nccl = ConnectNccl(env, options, store);
#endif
#if CKPT_WITH_GLOO
    if (options.device.is_cpu()) impl->gloo = ConnectGloo(env, options, store);
#endif
  } catch (const std::exception& error) {
    absl::Status status = FromException(
        error, absl::StrCat(impl->where, ": joining the other processes"));
    if (absl::IsDeadlineExceeded(status)) {
      return absl::DeadlineExceededError(
          absl::StrCat(status.message(), " (not every process joined within ",
                       absl::FormatDuration(options.timeout), ")"));
    }
    return status;
  }
  return std::unique_ptr<ProcessGroup>(
      new ProcessGroup(env.rank, env.world_size, std::move(impl)));
}

absl::Status ProcessGroup::Post(const std::string& key,
                                const std::string& value) {
  if (impl_ == nullptr) return NoPeers(key);
  try {
    impl_->messages->set(key, std::vector<uint8_t>(value.begin(), value.end()));
  } catch (const std::exception& error) {
    return FromException(error,
                         absl::StrCat(impl_->where, ": posting '", key, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ProcessGroup::Await(
    const std::string& key, const std::atomic<bool>* cancel) {
  if (impl_ == nullptr) return NoPeers(key);
  const std::string context =
      absl::StrCat(impl_->where, ": waiting for '", key, "'");
  const absl::Time deadline = absl::Now() + impl_->timeout;
  absl::Duration pause = absl::Milliseconds(1);
  try {
    // Polled rather than a blocking get(): a blocking get cannot be
    // cancelled, and the caller may have to give up early (its own job is
    // ending).
    while (!impl_->messages->check({key})) {
      if (cancel != nullptr && cancel->load()) {
        return absl::CancelledError(absl::StrCat(context, ": cancelled"));
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            context, ": nothing within ", absl::FormatDuration(impl_->timeout),
            " (the process that should post it crashed, left "
            "or hangs)"));
      }
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(20));
    }
    const std::vector<uint8_t> value = impl_->messages->get(key);
    return std::string(value.begin(), value.end());
  } catch (const std::exception& error) {
    return FromException(error, context);
  }
}

#else  // !CKPT_WITH_C10D

absl::Status ProcessGroup::Post(const std::string& key, const std::string&) {
  return NoPeers(key);
}

absl::StatusOr<std::string> ProcessGroup::Await(const std::string& key,
                                                const std::atomic<bool>*) {
  return NoPeers(key);
}

struct ProcessGroup::Impl {
  torch::Device device = torch::kCPU;
  std::string where;
  enum class Op { kSum, kMean, kBroadcast };
  absl::Status Run(std::vector<at::Tensor>&, Op, int) {
    return absl::UnimplementedError("no c10d backend in this build");
  }
};

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::Connect(
    const LaunchEnv& env, const Options& options) {
  if (env.world_size <= 1) {
    return std::unique_ptr<ProcessGroup>(new ProcessGroup(0, 1, nullptr));
  }
  RETURN_IF_ERROR(CheckBackend(env, options.device));
  return absl::UnimplementedError(
      absl::StrCat(Describe(env), ": no c10d backend in this build"));
}

#endif  // CKPT_WITH_C10D

ProcessGroup::ProcessGroup(int rank, int world_size, std::unique_ptr<Impl> impl)
    : rank_(rank), world_size_(world_size), impl_(std::move(impl)) {}

ProcessGroup::~ProcessGroup() = default;

namespace {

// Runs `op` over `tensors` in buckets of one dtype and at most
// `bucket_bytes`, each flattened into one tensor (a lone contiguous tensor
// is used in place).
template <typename Run>
absl::Status Bucketed(std::vector<torch::Tensor>& tensors, int64_t bucket_bytes,
                      Run run) {
  std::vector<torch::Tensor*> bucket;
  int64_t bytes = 0;
  auto flush = [&]() -> absl::Status {
    if (bucket.empty()) return absl::OkStatus();
    std::vector<torch::Tensor*> members;
    members.swap(bucket);
    bytes = 0;
    if (members.size() == 1 && members[0]->is_contiguous()) {
      std::vector<at::Tensor> flat = {*members[0]};
      return run(flat);
    }
    std::vector<at::Tensor> pieces;
    for (torch::Tensor* tensor : members) pieces.push_back(tensor->reshape(-1));
    std::vector<at::Tensor> flat = {torch::cat(pieces)};
    absl::Status status = run(flat);
    if (!status.ok()) return status;
    int64_t offset = 0;
    for (torch::Tensor* tensor : members) {
      const int64_t numel = tensor->numel();
      tensor->copy_(flat[0].narrow(0, offset, numel).view(tensor->sizes()));
      offset += numel;
    }
    return absl::OkStatus();
  };
  for (torch::Tensor& tensor : tensors) {
    if (!tensor.defined() || tensor.numel() == 0) continue;
    const int64_t size = tensor.numel() * tensor.element_size();
    if (!bucket.empty() &&
        (bucket.front()->scalar_type() != tensor.scalar_type() ||
         bucket.front()->device() != tensor.device() ||
         bytes + size > bucket_bytes)) {
      if (absl::Status status = flush(); !status.ok()) return status;
    }
    bucket.push_back(&tensor);
    bytes += size;
  }
  return flush();
}

}  // namespace

absl::Status ProcessGroup::Broadcast(std::vector<torch::Tensor>& tensors,
                                     int root) {
  if (world_size_ == 1) return absl::OkStatus();
  try {
    torch::NoGradGuard no_grad;
    return Bucketed(tensors, int64_t{25} << 20,
                    [&](std::vector<at::Tensor>& flat) {
                      return impl_->Run(flat, Impl::Op::kBroadcast, root);
                    });
  } catch (const std::exception& error) {
    return CollectiveError(error, absl::StrCat(impl_->where, ": broadcast"));
  }
}

absl::Status ProcessGroup::AllReduceSum(std::vector<torch::Tensor>& tensors,
                                        int64_t bucket_bytes) {
  if (world_size_ == 1) return absl::OkStatus();
  try {
    torch::NoGradGuard no_grad;
    return Bucketed(tensors, bucket_bytes, [&](std::vector<at::Tensor>& flat) {
      return impl_->Run(flat, Impl::Op::kSum, 0);
    });
  } catch (const std::exception& error) {
    return CollectiveError(error, absl::StrCat(impl_->where, ": allreduce"));
  }
}

absl::Status ProcessGroup::AllReduceSum(std::vector<double>& values) {
  if (world_size_ == 1 || values.empty()) return absl::OkStatus();
  // On the group's device: NCCL reduces only CUDA tensors.
  std::vector<torch::Tensor> shared = {
      torch::tensor(values, torch::kFloat64).to(impl_->device)};
  RETURN_IF_ERROR(AllReduceSum(shared));
  const torch::Tensor sums_on_host = shared[0].cpu();
  const double* sums = sums_on_host.data_ptr<double>();
  values.assign(sums, sums + values.size());
  return absl::OkStatus();
}

absl::Status ProcessGroup::AllReduceMean(std::vector<torch::Tensor>& tensors,
                                         int64_t bucket_bytes) {
  for (const torch::Tensor& tensor : tensors) {
    if (tensor.defined() && !torch::isFloatingType(tensor.scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("a mean over ranks needs floating-point tensors, not ",
                       c10::toString(tensor.scalar_type())));
    }
  }
  if (world_size_ == 1) return absl::OkStatus();
  try {
    torch::NoGradGuard no_grad;
    const double world = world_size_;
    return Bucketed(tensors, bucket_bytes, [&](std::vector<at::Tensor>& flat) {
      absl::Status status = impl_->Run(flat, Impl::Op::kSum, 0);
      if (status.ok()) flat[0].div_(world);
      return status;
    });
  } catch (const std::exception& error) {
    return CollectiveError(error, absl::StrCat(impl_->where, ": allreduce"));
  }
}

absl::Status ProcessGroup::Barrier() {
  if (world_size_ == 1) return absl::OkStatus();
#if CKPT_WITH_C10D
  try {
    impl_->Wait([](auto& group) { return group.barrier(); });
    return absl::OkStatus();
  } catch (const std::exception& error) {
    return CollectiveError(error, absl::StrCat(impl_->where, ": barrier"));
  }
#else
  return absl::UnimplementedError("no c10d backend in this build");
#endif
}

}  // namespace distributed
