// Deterministic crash points for tests of crash safety.
//
// A test that must kill a process at an exact instant (after a
// checkpoint's data is written but before its manifest, between switching
// `last` and `best`, in the middle of a deletion) starts the process with
// the environment variable CKPT_STOP_AT=POINT:N. The N-th time the process
// reaches StopPoint("POINT") it stops itself with SIGSTOP; the test sees
// that with waitpid(WUNTRACED) and SIGKILLs it there. Without the variable
// (every real run) a StopPoint costs one comparison after the first call.
//
//   base::StopPoint("writer.before_manifest");
//
// Thread-safe. The points a library offers are listed in its header.
#ifndef TOOLS_BASE_STOP_POINT_H_
#define TOOLS_BASE_STOP_POINT_H_

namespace base {

void StopPoint(const char* point);

}  // namespace base

#endif  // TOOLS_BASE_STOP_POINT_H_
