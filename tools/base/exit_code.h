// The exit code a shell reports for a child, from its waitpid() status:
// the code it exited with, or 128 + the number of the signal that killed
// it (bash's convention: SIGKILL gives 137). Launchers pass it on; tests
// compare it.
#ifndef TOOLS_BASE_EXIT_CODE_H_
#define TOOLS_BASE_EXIT_CODE_H_

#include <sys/wait.h>

namespace base {

// 1 for a status that is neither (a stopped child).
inline int ShellExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

}  // namespace base

#endif  // TOOLS_BASE_EXIT_CODE_H_
