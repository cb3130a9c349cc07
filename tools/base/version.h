// The project's version, recorded as the producer version in every
// checkpoint and exported model, so a file names the code that wrote it.
#ifndef TOOLS_BASE_VERSION_H_
#define TOOLS_BASE_VERSION_H_

namespace project {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace project

#endif  // TOOLS_BASE_VERSION_H_
