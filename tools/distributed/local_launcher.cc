#include "tools/distributed/local_launcher.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tools/base/exit_code.h"
#include "tools/base/files.h"

extern char** environ;

namespace distributed {
namespace {

// What process `rank` of the job is told, as torchrun tells it.
std::vector<std::string> LauncherVariables(int rank, int nproc, int port) {
  return {absl::StrCat("RANK=", rank),
          absl::StrCat("LOCAL_RANK=", rank),
          absl::StrCat("WORLD_SIZE=", nproc),
          absl::StrCat("LOCAL_WORLD_SIZE=", nproc),
          "GROUP_RANK=0",
          "MASTER_ADDR=127.0.0.1",
          absl::StrCat("MASTER_PORT=", port),
          "CKPT_LAUNCHER=--nproc"};
}

// The caller's own values of the launcher's variables, and torchrun's
// agent variables, which would make a process look for an agent that is
// not there, are not passed on.
bool SetByLauncher(absl::string_view entry,
                   const std::vector<std::string>& variables) {
  for (absl::string_view variable : variables) {
    const absl::string_view name_and_equals =
        variable.substr(0, variable.find('=') + 1);
    if (absl::StartsWith(entry, name_and_equals)) return true;
  }
  return absl::StartsWith(entry, "TORCHELASTIC_");
}

struct Process {
  pid_t pid;
  bool running = true;
};

}  // namespace

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return base::ErrnoToStatus(errno, "socket for", "a free port");
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  const bool bound =
      ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  const int error = errno;
  ::close(fd);
  if (!bound) return base::ErrnoToStatus(error, "binding", "127.0.0.1:0");
  return static_cast<int>(ntohs(address.sin_port));
}

absl::StatusOr<int> RunLocalJob(const LocalJob& job,
                                const std::atomic<int>* stop_signal) {
  if (job.argv.empty() || job.nproc < 1) {
    return absl::InvalidArgumentError(
        "a local job needs a program and at least one process");
  }
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return port.status();

  // Everything the children need is built here: between fork and exec a
  // child may only make async-signal-safe calls.
  std::vector<std::string> inherited;
  const std::vector<std::string> ours = LauncherVariables(0, job.nproc, *port);
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (!SetByLauncher(*entry, ours)) inherited.push_back(*entry);
  }
  std::vector<char*> argv;
  for (const std::string& arg : job.argv) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  const pid_t launcher = ::getpid();

  std::vector<Process> processes;
  for (int rank = 0; rank < job.nproc; ++rank) {
    std::vector<std::string> env_strings = inherited;
    for (std::string& variable : LauncherVariables(rank, job.nproc, *port)) {
      env_strings.push_back(std::move(variable));
    }
    std::vector<char*> envp;
    for (std::string& entry : env_strings) envp.push_back(entry.data());
    envp.push_back(nullptr);

    const pid_t pid = ::fork();
    if (pid < 0) {
      const int error = errno;
      for (const Process& process : processes) ::kill(process.pid, SIGKILL);
      for (const Process& process : processes) {
        ::waitpid(process.pid, nullptr, 0);
      }
      return base::ErrnoToStatus(error, "fork for process", absl::StrCat(rank));
    }
    if (pid == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      // The launcher died before prctl: nobody is left to wait for us.
      if (::getppid() != launcher) ::_exit(128 + SIGTERM);
      ::execve(argv[0], argv.data(), envp.data());
      const char* reason = std::strerror(errno);
      const char prefix[] = "error: cannot start ";
      (void)!::write(STDERR_FILENO, prefix, sizeof(prefix) - 1);
      (void)!::write(STDERR_FILENO, argv[0], std::strlen(argv[0]));
      (void)!::write(STDERR_FILENO, ": ", 2);
      (void)!::write(STDERR_FILENO, reason, std::strlen(reason));
      (void)!::write(STDERR_FILENO, "\n", 1);
      ::_exit(127);
    }
    processes.push_back({pid});
  }

  int running = job.nproc;
  int job_exit = 0;
  bool failed = false;
  bool forwarded = false;
  int escalation = 0;  // 0: none, 1: SIGTERM sent, 2: SIGKILL sent
  absl::Time failed_at;
  while (running > 0) {
    for (Process& process : processes) {
      if (!process.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(process.pid, &status, WNOHANG);
      if (done != process.pid) continue;
      process.running = false;
      --running;
      const int code = base::ShellExitCode(status);
      if (code != 0 && !failed) {
        failed = true;
        job_exit = code;
        failed_at = absl::Now();
      }
    }
    if (!forwarded && stop_signal != nullptr && stop_signal->load() != 0) {
      forwarded = true;
      for (const Process& process : processes) {
        if (process.running) ::kill(process.pid, stop_signal->load());
      }
    }
    if (failed && running > 0 && escalation < 2 &&
        absl::Now() - failed_at > job.grace * (escalation + 1)) {
      ++escalation;
      std::fprintf(stderr,
                   "launcher: %d process(es) still running %s after the "
                   "first failure: sending %s\n",
                   running,
                   absl::FormatDuration(job.grace * escalation).c_str(),
                   escalation == 1 ? "SIGTERM" : "SIGKILL");
      for (const Process& process : processes) {
        if (process.running) {
          ::kill(process.pid, escalation == 1 ? SIGTERM : SIGKILL);
        }
      }
    }
    if (running > 0) absl::SleepFor(absl::Milliseconds(20));
  }
  return job_exit;
}

}  // namespace distributed
