// Warnings from libraries go through one process-wide sink instead of
// fprintf, so that a tool decides where they land (stderr by default) and a
// test can capture them.
//
//   base::Warn("checkpoint manager: could not remove epoch=1");
//
//   // In a test:
//   base::CapturedWarnings captured;
//   DoSomething();
//   EXPECT_THAT(captured.messages(), testing::Contains(...));
//
// Thread-safe: the sink is called under a mutex, one message at a time.
#ifndef TOOLS_BASE_WARNINGS_H_
#define TOOLS_BASE_WARNINGS_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace base {

using WarningSink = std::function<void(absl::string_view message)>;

// Reports `message` (one line, no "warning:" prefix) to the current sink.
// The default sink writes "warning: MESSAGE\n" to stderr.
void Warn(absl::string_view message);

// Installs `sink` (null restores the default) and returns the previous one.
WarningSink SetWarningSink(WarningSink sink);

// Collects warnings for its lifetime; restores the previous sink after.
class CapturedWarnings {
 public:
  CapturedWarnings();
  ~CapturedWarnings();
  CapturedWarnings(const CapturedWarnings&) = delete;
  CapturedWarnings& operator=(const CapturedWarnings&) = delete;

  std::vector<std::string> messages() const;

 private:
  mutable absl::Mutex mutex_;
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mutex_);
  WarningSink previous_;
};

}  // namespace base

#endif  // TOOLS_BASE_WARNINGS_H_
