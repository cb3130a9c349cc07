// Save/load throughput of the checkpoint runtime against its peers, in one
// run on the same data: torch::save / torch::load, and a raw write+fsync of
// the same bytes (the disk's ceiling). Also the caller's pause of
// AsyncCheckpointSaver (copy, write-protect and fork snapshots) and what
// each costs the caller's next rewrite of its tensors, a raw read of the same
// bytes, the peak RSS of each save mode, and issue 12's targets, each
// MET or MISSED.
//
//   bazel run -c opt //checkpoint:save_load_benchmark -- [--dir=/tmp]
//       [--large_count=256 --large_bytes=4194304]
//       [--small_count=20000 --small_bytes=4096] [--cold] [--huge_pages]
//
// Loads read warm files (just written, in the page cache) unless --cold,
// which evicts the files with posix_fadvise(DONTNEED) before each load.
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/tensors.h"
#include "tools/cli/flags.h"
#include "torch/torch.h"

ABSL_FLAG(std::string, dir, "",
          "Directory for temporary files (default $TMPDIR or /tmp); use one "
          "on the disk you want to measure.");
ABSL_FLAG(int, large_count, 256, "Number of tensors in the large set.");
ABSL_FLAG(int64_t, large_bytes, 4 << 20, "Bytes per tensor, large set.");
ABSL_FLAG(int, small_count, 20000, "Number of tensors in the small set.");
ABSL_FLAG(int64_t, small_bytes, 4096, "Bytes per tensor, small set.");
ABSL_FLAG(bool, cold, false, "Evict files from the page cache before loads.");
ABSL_FLAG(bool, fsync, true,
          "Make every save durable (fsync). Without it, saves measure the "
          "CPU's part alone: hashing and the kernel's copy into the page "
          "cache, the regime of a disk faster than one core.");
ABSL_FLAG(bool, rss, true, "Measure peak RSS of the save modes (forks).");
ABSL_FLAG(int, repeats, 3,
          "Each measurement is repeated (in rotating order; loads twice "
          "per repeat) and the best time is reported.");
ABSL_FLAG(int, load_threads, 0, "LoadOptions::num_threads (0: automatic).");
ABSL_FLAG(std::string, device, "cpu",
          "Where the state lives: cpu, or cuda (the GPU rows: saves of GPU "
          "tensors against pinned device-to-host copies plus a raw write, "
          "loads onto the GPU against torch::load onto it).");
ABSL_FLAG(bool, huge_pages, false,
          "Move the tensors of 2 MiB or more onto transparent huge pages "
          "(MoveToHugePages) before saving: the kernel's page-table work of "
          "a forked or write-protected snapshot is per page.");

namespace checkpoint {
namespace {

namespace fs = std::filesystem;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double Seconds(const std::function<void()>& body) {
  auto start = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

void Check(const absl::Status& status, const std::string& what) {
  if (!status.ok()) {
    cli::ExitWithError(absl::StrCat(what, ": ", status.ToString()), 1);
  }
}

void CheckErrno(bool ok, const std::string& what) {
  if (!ok) {
    cli::ExitWithError(absl::StrCat(what, ": ", std::strerror(errno)), 1);
  }
}

void FsyncPath(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  CheckErrno(fd >= 0, "open " + path);
  CheckErrno(fsync(fd) == 0, "fsync " + path);
  close(fd);
}

// Drops `path` (a file or every file under a directory) from the page
// cache: clean pages only, so call after fsync.
void Evict(const std::string& path) {
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  } else {
    files.push_back(path);
  }
  for (const std::string& file : files) {
    int fd = open(file.c_str(), O_RDONLY);
    if (fd < 0) continue;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
}

CheckpointState MakeState(int count, int64_t bytes) {
  CheckpointState state;
  torch::manual_seed(0);
  const int64_t floats = bytes / 4;
  for (int i = 0; i < count; ++i) {
    state.tensors.emplace_back(absl::StrCat("layer", i, ".weight"),
                               torch::rand({floats}));
  }
  if (absl::GetFlag(FLAGS_huge_pages)) {
    Check(MoveToHugePages(state.tensors).status(), "moving to huge pages");
  }
  const torch::Device device(absl::GetFlag(FLAGS_device));
  if (!device.is_cpu()) {
    for (auto& [name, tensor] : state.tensors) tensor = tensor.to(device);
    torch::cuda::synchronize();
  }
  return state;
}

// Waits for the GPU's queued work, so that timings include it.
void Synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

// What an optimizer step does to the state: every tensor rewritten.
void RewriteAll(CheckpointState& state) {
  for (auto& [name, tensor] : state.tensors) tensor.add_(1);
  if (!state.tensors.empty()) Synchronize(state.tensors[0].second.device());
}

uint64_t TotalBytes(const CheckpointState& state) {
  uint64_t total = 0;
  for (const auto& [name, tensor] : state.tensors) total += tensor.nbytes();
  return total;
}

// Writes the bytes of `host` (CPU tensors) into a new file, fsync'ed.
void RawWrite(const std::vector<torch::Tensor>& host, const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  CheckErrno(fd >= 0, "open " + path);
  for (const torch::Tensor& tensor : host) {
    const char* data = static_cast<const char*>(tensor.data_ptr());
    size_t left = tensor.nbytes();
    while (left > 0) {
      ssize_t written = write(fd, data, left);
      CheckErrno(written > 0, "write " + path);
      data += written;
      left -= static_cast<size_t>(written);
    }
  }
  if (absl::GetFlag(FLAGS_fsync)) CheckErrno(fsync(fd) == 0, "fsync " + path);
  close(fd);
}

// Reads the raw file into `buffer`.
void ReadInto(const std::string& path, char* buffer, uint64_t bytes) {
  int fd = open(path.c_str(), O_RDONLY);
  CheckErrno(fd >= 0, "open " + path);
  uint64_t done = 0;
  while (done < bytes) {
    ssize_t got = read(fd, buffer + done, bytes - done);
    CheckErrno(got > 0, "read " + path);
    done += static_cast<uint64_t>(got);
  }
  close(fd);
}

// Reads the raw file into fresh memory, as a load into new tensors would.
// Mapped for the purpose: a buffer from malloc may reuse pages an earlier
// set left behind (after the large set it did, and read 80 MB 30% faster
// than into fresh pages), which would make the peer depend on the heap's
// history.
void RawRead(const std::string& path, uint64_t bytes) {
  void* buffer = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CheckErrno(buffer != MAP_FAILED, "mmap");
  ReadInto(path, static_cast<char*>(buffer), bytes);
  munmap(buffer, bytes);
}

std::vector<torch::Tensor> Values(const CheckpointState& state) {
  std::vector<torch::Tensor> values;
  for (const auto& [name, tensor] : state.tensors) values.push_back(tensor);
  return values;
}

struct Row {
  std::string what;
  double seconds;
};

void PrintRow(const Row& row, uint64_t bytes, double reference_seconds,
              const char* reference) {
  std::printf("  %-34s %8.3f s %8.2f GiB/s", row.what.c_str(), row.seconds,
              bytes / kGiB / row.seconds);
  if (reference_seconds > 0) {
    std::printf("   %6.2fx %s", reference_seconds / row.seconds, reference);
  }
  std::printf("\n");
}

void Target(const char* what, double value, double target, bool at_least) {
  const bool met = at_least ? value >= target : value <= target;
  std::printf("  target %-52s %7.2f %s %-6.2f %s\n", what, value,
              at_least ? ">=" : "<=", target, met ? "MET" : "MISSED");
}

// Best (minimum) time of each named measurement over the repeats.
class Best {
 public:
  void Add(const std::string& name, double seconds) {
    auto [it, inserted] = best_.emplace(name, seconds);
    if (!inserted) it->second = std::min(it->second, seconds);
  }
  double operator[](const std::string& name) const { return best_.at(name); }

 private:
  std::map<std::string, double> best_;
};

// Removes what RunSet wrote under `dir`.
void Cleanup(const std::string& dir) {
  fs::remove_all(dir + "/ours");
  fs::remove_all(dir + "/ours-async");
  fs::remove(dir + "/torch.pt");
  fs::remove(dir + "/raw.bin");
}

void RunSet(const std::string& label, int count, int64_t bytes_each,
            const std::string& dir, bool cold, int repeats, int load_threads) {
  CheckpointState state = MakeState(count, bytes_each);
  const torch::Device device = state.tensors[0].second.device();
  const bool gpu = device.is_cuda();
  const uint64_t bytes = TotalBytes(state);
  // The GPU's peer writes from pinned host memory, allocated once here;
  // on the CPU it writes the tensors themselves.
  std::vector<torch::Tensor> host = Values(state);
  if (gpu) {
    for (torch::Tensor& tensor : host) {
      tensor = torch::empty(tensor.sizes(), torch::TensorOptions()
                                                .dtype(tensor.scalar_type())
                                                .pinned_memory(true));
    }
  }
  std::printf(
      "\n%s: %d tensors x %lld bytes = %.3f GiB (float32) on %s, best of "
      "%d (loads %d)\n",
      label.c_str(), count, static_cast<long long>(bytes_each), bytes / kGiB,
      device.str().c_str(), repeats, 2 * repeats);
  const std::string ours = dir + "/ours";
  const std::string torch_file = dir + "/torch.pt";
  const std::string raw = dir + "/raw.bin";
  Best best;
  WriterOptions writer_options;
  writer_options.sync = absl::GetFlag(FLAGS_fsync);
  AsyncCheckpointSaver saver(writer_options, /*keep_staging_buffers=*/true,
                             SnapshotMode::kCopy);
  double first_pause_s = 0;
  // The snapshots that copy nothing up front, first, while this process
  // holds little besides the tensors: fork's pause grows with the memory
  // the process has mapped, and the copy saver's staging slab (one more
  // copy of the state) would count in it, which a program using them does
  // not have. Each save is followed at once by a rewrite of every tensor
  // (what an optimizer step does), timed against the same rewrite with no
  // save in flight: that is where copy-on-write pays for its copies.
  const std::vector<std::pair<std::string, SnapshotMode>> lazy_modes = {
      {"protect", SnapshotMode::kWriteProtect}, {"fork", SnapshotMode::kFork}};
  std::map<std::string, double> first_lazy_pause_s;
  std::set<std::string> fell_back;  // modes that took another snapshot
  for (const auto& [mode, snapshot] : lazy_modes) {
    AsyncCheckpointSaver lazy_saver(writer_options,
                                    /*keep_staging_buffers=*/true, snapshot);
    const std::string path = ours + "-" + mode;
    for (int repeat = 0; repeat < repeats; ++repeat) {
      fs::remove_all(path);
      best.Add("rewrite_alone", Seconds([&] { RewriteAll(state); }));
      double pause_s = 0;
      best.Add(mode + "_total", Seconds([&] {
                 pause_s = Seconds([&] {
                   Check(lazy_saver.SaveAsync(path, state),
                         "save async (" + mode + ")");
                 });
                 if (lazy_saver.last_snapshot() != snapshot) {
                   fell_back.insert(mode);
                 }
                 best.Add(mode + "_rewrite",
                          Seconds([&] { RewriteAll(state); }));
                 Check(lazy_saver.Wait(), "async save (" + mode + ")");
               }));
      if (repeat == 0) first_lazy_pause_s[mode] = pause_s;
      best.Add(mode + "_pause", pause_s);
    }
    fs::remove_all(path);
  }
  // For the raw read into memory already faulted in, after the lazy
  // snapshots (whose pause a larger process would lengthen).
  std::unique_ptr<char[]> reused(new char[bytes]);
  std::memset(reused.get(), 0, bytes);
  for (int repeat = 0; repeat < repeats; ++repeat) {
    // Saves, each ending durable on disk, in rotating order.
    std::vector<std::function<void()>> saves = {
        [&] {
          // A new file, as our save makes: overwriting one would add the
          // freeing of its old blocks to the raw write.
          fs::remove(raw);
          best.Add("raw", Seconds([&] {
                     if (gpu) {
                       for (size_t i = 0; i < host.size(); ++i) {
                         host[i].copy_(state.tensors[i].second,
                                       /*non_blocking=*/true);
                       }
                       Synchronize(device);
                     }
                     RawWrite(host, raw);
                   }));
        },
        [&] {
          fs::remove_all(ours);
          best.Add("ours", Seconds([&] {
                     Check(SaveCheckpoint(ours, state, writer_options), "save");
                   }));
        },
        [&] {
          best.Add("torch_save", Seconds([&] {
                     torch::save(Values(state), torch_file);
                     if (writer_options.sync) FsyncPath(torch_file);
                   }));
        },
        [&] {
          fs::remove_all(ours + "-async");
          double pause_s = 0;
          best.Add("async_total", Seconds([&] {
                     pause_s = Seconds([&] {
                       Check(saver.SaveAsync(ours + "-async", state),
                             "save async");
                     });
                     Check(saver.Wait(), "async save");
                   }));
          if (repeat == 0) {
            first_pause_s = pause_s;
          } else {
            best.Add("async_pause", pause_s);
          }
        }};
    for (size_t i = 0; i < saves.size(); ++i) {
      saves[(i + repeat) % saves.size()]();
    }
    // Loads: twice each per repeat (cold reads of this disk vary more than
    // saves), in an order rotated with each repeat and reversed for the
    // second pass. Each starts with the heap trimmed, so that its tensors
    // are faulted in afresh, as in a new process, whatever the load
    // before it left: a raw read into memory already faulted in was 1.2 to
    // 1.8x faster here than one into fresh memory.
    auto before_load = [&](const std::string& path) {
      if (cold) Evict(path);
      malloc_trim(0);
    };
    auto load = [&](const char* name, bool mmap, bool verify) {
      before_load(ours);
      LoadOptions options;
      options.use_mmap = mmap;
      options.verify_checksums = verify;
      options.num_threads = load_threads;
      options.device = device;
      best.Add(name, Seconds([&] {
                 absl::StatusOr<CheckpointState> loaded =
                     LoadCheckpoint(ours, options);
                 Check(loaded.status(), "load");
               }));
    };
    const std::vector<std::function<void()>> loads = {
        [&] {
          before_load(raw);
          best.Add("raw_read", Seconds([&] { RawRead(raw, bytes); }));
        },
        [&] {
          // The disk alone: no memory to fault in (shown, not a target).
          before_load(raw);
          best.Add("raw_read_reused",
                   Seconds([&] { ReadInto(raw, reused.get(), bytes); }));
        },
        [&] {
          before_load(torch_file);
          best.Add("torch_load", Seconds([&] {
                     std::vector<torch::Tensor> loaded;
                     torch::load(loaded, torch_file, device);
                   }));
        },
        [&] { load("verified", false, true); },
        [&] { load("unverified", false, false); },
        [&] { load("mmap_lazy", true, false); },
        [&] { load("mmap_verified", true, true); }};
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < loads.size(); ++i) {
        const size_t k = pass == 0 ? i : loads.size() - 1 - i;
        loads[(k + repeat) % loads.size()]();
      }
    }
  }
  if (repeats == 1) best.Add("async_pause", first_pause_s);
  const double ours_s = best["ours"];
  std::printf(" save (%s):\n",
              writer_options.sync ? "fsync'ed" : "not fsync'ed: --nofsync");
  const std::string raw_label =
      std::string(gpu ? "pinned D2H + " : "") +
      (writer_options.sync ? "raw write+fsync" : "raw write");
  PrintRow({raw_label, best["raw"]}, bytes, 0, "");
  PrintRow({"SaveCheckpoint", ours_s}, bytes, best["torch_save"],
           "vs torch::save");
  PrintRow({writer_options.sync ? "torch::save + fsync" : "torch::save",
            best["torch_save"]},
           bytes, 0, "");
  std::printf("  SaveCheckpoint / raw throughput: %.2fx\n",
              best["raw"] / ours_s);
  PrintRow({"AsyncCheckpointSaver total", best["async_total"]}, bytes, 0, "");
  std::printf(
      "  SaveAsync caller pause, first save: %.3f s = %.1f%% of a sync save\n",
      first_pause_s, 100.0 * first_pause_s / ours_s);
  std::printf(
      "  SaveAsync caller pause, reused staging: %.3f s = %.1f%% of a sync "
      "save\n",
      best["async_pause"], 100.0 * best["async_pause"] / ours_s);
  for (const auto& [mode, snapshot] : lazy_modes) {
    PrintRow({"AsyncCheckpointSaver (" + mode + ") total, rewrite included",
              best[mode + "_total"]},
             bytes, 0, "");
    if (fell_back.count(mode) != 0) {
      std::printf(
          "  (%s was not available here: its saves fell back, see stderr)\n",
          mode.c_str());
    }
    const double first = first_lazy_pause_s[mode];
    std::printf(
        "  SaveAsync (%s) caller pause, first save: %.4f s = %.2f%% of a sync "
        "save; best: %.4f s = %.2f%%\n",
        mode.c_str(), first, 100.0 * first / ours_s, best[mode + "_pause"],
        100.0 * best[mode + "_pause"] / ours_s);
    std::printf(
        "  rewrite of every tensor right after SaveAsync (%s): %.3f s, with "
        "no save in flight %.3f s\n",
        mode.c_str(), best[mode + "_rewrite"], best["rewrite_alone"]);
  }
  const double torch_load_s = best["torch_load"];
  std::printf(" load%s:\n", cold ? " (cold page cache)" : " (warm page cache)");
  PrintRow({"raw read into fresh memory", best["raw_read"]}, bytes, 0, "");
  PrintRow({"raw read into reused memory", best["raw_read_reused"]}, bytes, 0,
           "");
  PrintRow({"torch::load", torch_load_s}, bytes, 0, "");
  PrintRow({"LoadCheckpoint verified", best["verified"]}, bytes, torch_load_s,
           "vs torch::load");
  PrintRow({"LoadCheckpoint unverified", best["unverified"]}, bytes,
           torch_load_s, "vs torch::load");
  PrintRow({"LoadCheckpoint mmap lazy (no touch)", best["mmap_lazy"]}, bytes,
           torch_load_s, "vs torch::load");
  PrintRow({"LoadCheckpoint mmap + verify", best["mmap_verified"]}, bytes,
           torch_load_s, "vs torch::load");
  // The targets of issue 12 (docs/PERFORMANCE.md, "Snapshots").
  std::printf(" targets:\n");
  if (gpu) {
    Target("GPU save >= 0.9x pinned D2H + raw write", best["raw"] / ours_s, 0.9,
           true);
    Target("GPU async pause (protect), first save <= 5% of sync save (%)",
           100.0 * first_lazy_pause_s["protect"] / ours_s, 5, false);
    Target("GPU async pause (protect), any save <= 5% of sync save (%)",
           100.0 * best["protect_pause"] / ours_s, 5, false);
    Target("GPU verified load >= 1.5x torch::load onto the GPU",
           torch_load_s / best["verified"], 1.5, true);
    Cleanup(dir);
    return;
  }
  Target(writer_options.sync ? "save >= 1.0x raw write+fsync"
                             : "save >= 1.0x raw write (no fsync)",
         best["raw"] / ours_s, 1.0, true);
  Target("save >= 2x torch::save", best["torch_save"] / ours_s, 2.0, true);
  Target("async pause (protect), first save <= 2% of sync save (%)",
         100.0 * first_lazy_pause_s["protect"] / ours_s, 2, false);
  Target("async pause (protect), any save <= 2% of sync save (%)",
         100.0 * best["protect_pause"] / ours_s, 2, false);
  Target(cold ? "cold verified load >= 0.9x raw read"
              : "verified load >= 0.9x raw read (warm; --cold for the target)",
         best["raw_read"] / best["verified"], 0.9, true);
  Target("verified load >= 0.9x unverified",
         best["unverified"] / best["verified"], 0.9, true);
  Target("verified load >= 1.5x torch::load", torch_load_s / best["verified"],
         1.5, true);
  Target("mmap (lazy) >= 20x torch::load", torch_load_s / best["mmap_lazy"], 20,
         true);
  Cleanup(dir);
}

int64_t StatusKiB(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) {
      return std::atoll(line.c_str() + std::strlen(field));
    }
  }
  return -1;
}

// Runs one save mode in a fresh child and reports its RSS before the save
// (the tensors allocated) and its peak.
void MeasurePeakRss(const std::string& mode, int count, int64_t bytes_each,
                    const std::string& dir) {
  int pipe_fds[2];
  CheckErrno(pipe(pipe_fds) == 0, "pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    CheckpointState state = MakeState(count, bytes_each);
    const int64_t before = StatusKiB("VmRSS:");
    const std::string path = dir + "/rss-" + mode;
    if (mode == "sync") {
      Check(SaveCheckpoint(path, state), "save");
    } else if (mode == "async-copy") {
      AsyncCheckpointSaver saver({}, true, SnapshotMode::kCopy);
      Check(saver.SaveAsync(path, state), "save async");
      Check(saver.Wait(), "async save");
    } else if (mode == "async-protect") {
      AsyncCheckpointSaver saver({}, true, SnapshotMode::kWriteProtect);
      Check(saver.SaveAsync(path, state), "save async (protect)");
      Check(saver.Wait(), "async save (protect)");
    } else if (mode == "async-fork") {
      // This process's peak only: the child that writes shares its pages
      // copy-on-write, and nothing here writes to them.
      AsyncCheckpointSaver saver({}, true, SnapshotMode::kFork);
      Check(saver.SaveAsync(path, state), "save async (fork)");
      Check(saver.Wait(), "async save (fork)");
    } else {
      torch::save(Values(state), path);
      FsyncPath(path);
    }
    const int64_t peak = StatusKiB("VmHWM:");
    fs::remove_all(path);
    int64_t values[2] = {before, peak};
    if (write(pipe_fds[1], values, sizeof(values)) != sizeof(values)) _exit(1);
    _exit(0);
  }
  close(pipe_fds[1]);
  int64_t values[2] = {0, 0};
  ssize_t got = read(pipe_fds[0], values, sizeof(values));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != sizeof(values)) {
    std::printf("  %-12s (child failed)\n", mode.c_str());
    return;
  }
  std::printf(
      "  %-12s RSS with tensors %7.1f MiB, peak %7.1f MiB, extra %7.1f "
      "MiB\n",
      mode.c_str(), values[0] / 1024.0, values[1] / 1024.0,
      (values[1] - values[0]) / 1024.0);
}

}  // namespace
}  // namespace checkpoint

int main(int argc, char** argv) {
  cli::ParseFlagsOrExit(argc, argv, "save_load_benchmark [--dir=DIR] [flags]");
  std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  dir += "/save_load_benchmark-" + std::to_string(getpid());
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error)
    cli::ExitWithError("cannot create " + dir + ": " + error.message());
  const int large_count = absl::GetFlag(FLAGS_large_count);
  const int64_t large_bytes = absl::GetFlag(FLAGS_large_bytes);
  const int small_count = absl::GetFlag(FLAGS_small_count);
  const int64_t small_bytes = absl::GetFlag(FLAGS_small_bytes);
  if (large_count < 1 || small_count < 1 || large_bytes < 4 ||
      small_bytes < 4) {
    cli::ExitWithError("counts must be >= 1 and sizes >= 4 bytes");
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") {
    cli::ExitWithError("--device=" + device + ": expected cpu or cuda");
  }
  if (device == "cuda" && !torch::cuda::is_available()) {
    cli::ExitWithError(
        "--device=cuda: CUDA is not available (this LibTorch has no CUDA "
        "support or no GPU is visible)");
  }
  std::printf("save_load_benchmark: dir %s, torch threads %d, LibTorch %s\n",
              dir.c_str(), torch::get_num_threads(), TORCH_VERSION);
  if (absl::GetFlag(FLAGS_rss) && device == "cpu") {
    // First, while this process is still small: each mode in its own child.
    std::printf("\npeak RSS, large set, each mode in a fresh child:\n");
    for (const char* mode :
         {"sync", "async-copy", "async-protect", "async-fork", "torch_save"}) {
      checkpoint::MeasurePeakRss(mode, large_count, large_bytes, dir);
    }
  }
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  checkpoint::RunSet("large", large_count, large_bytes, dir,
                     absl::GetFlag(FLAGS_cold), repeats,
                     absl::GetFlag(FLAGS_load_threads));
  checkpoint::RunSet("small", small_count, small_bytes, dir,
                     absl::GetFlag(FLAGS_cold), repeats,
                     absl::GetFlag(FLAGS_load_threads));
  std::filesystem::remove_all(dir, error);
  return 0;
}
