#include "tools/distributed/launch_env.h"

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace distributed {
namespace {

using Environment = std::map<std::string, std::string>;

const std::string* Find(const Environment& environment, const char* name) {
  auto it = environment.find(name);
  return it == environment.end() ? nullptr : &it->second;
}

// `name`'s value as an integer in [minimum, maximum], or `fallback` when the
// variable is absent.
absl::StatusOr<int> Integer(const Environment& environment, const char* name,
                            int fallback, int minimum, int maximum) {
  const std::string* text = Find(environment, name);
  if (text == nullptr) return fallback;
  int value;
  if (!absl::SimpleAtoi(*text, &value) || value < minimum || value > maximum) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, "='", *text,
                     "' is not an integer from ", minimum, " to ", maximum));
  }
  return value;
}

// The same into *field.
absl::Status ReadInto(const Environment& environment, const char* name,
                      int fallback, int minimum, int maximum, int* field) {
  absl::StatusOr<int> value =
      Integer(environment, name, fallback, minimum, maximum);
  if (!value.ok()) return value.status();
  *field = *value;
  return absl::OkStatus();
}

constexpr int kMaxWorld = 1 << 20;

absl::Status CheckRank(const LaunchEnv& env, const char* rank_name) {
  if (env.rank >= env.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(rank_name, "=", env.rank, " is not below the world size ",
                     env.world_size));
  }
  if (env.local_rank >= env.local_world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "local rank ", env.local_rank, " is not below the local world size ",
        env.local_world_size));
  }
  if (env.world_size > 1 && (env.master_addr.empty() || env.master_port <= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a world of ", env.world_size, " processes (", env.source,
        ") needs the address and port where they meet: set MASTER_ADDR and "
        "MASTER_PORT (or --master_addr and --master_port)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LaunchEnv> FromTorchrun(const Environment& environment) {
  LaunchEnv env;
  env.source = "torchrun";
  // A launcher of ours that sets torchrun's variables names itself.
  if (const std::string* launcher = Find(environment, "CKPT_LAUNCHER")) {
    env.source = *launcher;
  }
  if (Find(environment, "WORLD_SIZE") == nullptr) {
    return absl::InvalidArgumentError(
        "environment variable RANK is set but WORLD_SIZE is not");
  }
  for (absl::Status status : {
           ReadInto(environment, "WORLD_SIZE", 1, 1, kMaxWorld,
                    &env.world_size),
           ReadInto(environment, "RANK", 0, 0, kMaxWorld, &env.rank),
           ReadInto(environment, "LOCAL_RANK", 0, 0, kMaxWorld,
                    &env.local_rank),
           ReadInto(environment, "LOCAL_WORLD_SIZE", 1, 1, kMaxWorld,
                    &env.local_world_size),
           ReadInto(environment, "GROUP_RANK", 0, 0, kMaxWorld, &env.node_rank),
           ReadInto(environment, "MASTER_PORT", 0, 1, 65535, &env.master_port),
       }) {
    if (!status.ok()) return status;
  }
  if (Find(environment, "LOCAL_RANK") != nullptr &&
      Find(environment, "LOCAL_WORLD_SIZE") == nullptr) {
    env.local_world_size = env.world_size;
  }
  if (const std::string* addr = Find(environment, "MASTER_ADDR")) {
    env.master_addr = *addr;
  }
  if (const std::string* agent =
          Find(environment, "TORCHELASTIC_USE_AGENT_STORE")) {
    env.use_agent_store = absl::AsciiStrToLower(*agent) == "true";
  }
  if (env.use_agent_store) {
    absl::StatusOr<int> restart =
        Integer(environment, "TORCHELASTIC_RESTART_COUNT", 0, 0, kMaxWorld);
    if (!restart.ok()) return restart.status();
    env.store_prefix = absl::StrCat("/worker/attempt_", *restart);
  }
  if (absl::Status status = CheckRank(env, "RANK"); !status.ok()) {
    return status;
  }
  return env;
}

absl::StatusOr<LaunchEnv> FromSlurm(const Environment& environment) {
  LaunchEnv env;
  env.source = "slurm";
  if (Find(environment, "SLURM_NTASKS") == nullptr) {
    return absl::InvalidArgumentError(
        "environment variable SLURM_PROCID is set but SLURM_NTASKS is not");
  }
  for (absl::Status status : {
           ReadInto(environment, "SLURM_NTASKS", 1, 1, kMaxWorld,
                    &env.world_size),
           ReadInto(environment, "SLURM_PROCID", 0, 0, kMaxWorld, &env.rank),
           ReadInto(environment, "SLURM_LOCALID", 0, 0, kMaxWorld,
                    &env.local_rank),
           ReadInto(environment, "SLURM_NODEID", 0, 0, kMaxWorld,
                    &env.node_rank),
       }) {
    if (!status.ok()) return status;
  }
  env.local_world_size = env.world_size;
  if (const std::string* per_node =
          Find(environment, "SLURM_NTASKS_PER_NODE")) {
    // "4" or "4(x2)": the first count.
    std::string first = per_node->substr(0, per_node->find_first_of("(,"));
    int count;
    if (!absl::SimpleAtoi(first, &count) || count < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable SLURM_NTASKS_PER_NODE='",
                       *per_node, "' does not start with a task count"));
    }
    env.local_world_size = count;
  }
  if (const std::string* addr = Find(environment, "MASTER_ADDR")) {
    env.master_addr = *addr;
  } else {
    const std::string* nodes = Find(environment, "SLURM_NODELIST");
    if (nodes == nullptr) nodes = Find(environment, "SLURM_JOB_NODELIST");
    if (nodes != nullptr) {
      absl::StatusOr<std::string> host = FirstSlurmHost(*nodes);
      if (!host.ok()) return host.status();
      env.master_addr = *host;
    }
  }
  if (Find(environment, "MASTER_PORT") != nullptr) {
    absl::Status status =
        ReadInto(environment, "MASTER_PORT", 0, 1, 65535, &env.master_port);
    if (!status.ok()) return status;
  } else if (const std::string* job = Find(environment, "SLURM_JOB_ID")) {
    uint64_t id;
    if (!absl::SimpleAtoi(*job, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "environment variable SLURM_JOB_ID='", *job, "' is not a number"));
    }
    env.master_port = 15000 + static_cast<int>(id % 10000);
  }
  if (absl::Status status = CheckRank(env, "SLURM_PROCID"); !status.ok()) {
    return status;
  }
  return env;
}

}  // namespace

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    absl::string_view text = *entry;
    size_t equals = text.find('=');
    if (equals == absl::string_view::npos) continue;
    environment.emplace(std::string(text.substr(0, equals)),
                        std::string(text.substr(equals + 1)));
  }
  return environment;
}

absl::StatusOr<std::string> FirstSlurmHost(absl::string_view node_list) {
  // The first entry ends at a comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < node_list.size(); ++end) {
    char c = node_list[end];
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) break;
    if (c == ',' && depth == 0) break;
  }
  absl::string_view first = node_list.substr(0, end);
  size_t open = first.find('[');
  if (first.empty() || depth != 0 || open == 0 ||
      (open == absl::string_view::npos &&
       first.find(']') != absl::string_view::npos)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Slurm node list '", node_list, "' is malformed"));
  }
  if (open == absl::string_view::npos) return std::string(first);
  if (first.back() != ']') {
    return absl::InvalidArgumentError(
        absl::StrCat("Slurm node list '", node_list, "' is malformed"));
  }
  // "prefix[05-09,12]": the prefix and the first number as written.
  absl::string_view ranges = first.substr(open + 1, first.size() - open - 2);
  absl::string_view number = ranges.substr(0, ranges.find_first_of("-,"));
  if (number.empty() ||
      number.find_first_not_of("0123456789") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("Slurm node list '", node_list, "' is malformed"));
  }
  return absl::StrCat(first.substr(0, open), number);
}

absl::StatusOr<LaunchEnv> LaunchEnvFrom(const Environment& environment,
                                        const LaunchFlags& flags) {
  if (flags.world_size.has_value()) {
    LaunchEnv env;
    env.source = "flags";
    env.world_size = *flags.world_size;
    env.rank = flags.rank.value_or(0);
    env.local_world_size = env.world_size;
    env.local_rank = env.rank;
    // The meeting point from the flags, else from MASTER_ADDR/MASTER_PORT.
    env.master_addr = flags.master_addr;
    if (env.master_addr.empty()) {
      if (const std::string* addr = Find(environment, "MASTER_ADDR")) {
        env.master_addr = *addr;
      }
    }
    if (flags.master_port.has_value()) {
      env.master_port = *flags.master_port;
    } else {
      absl::Status status =
          ReadInto(environment, "MASTER_PORT", 0, 1, 65535, &env.master_port);
      if (!status.ok()) return status;
    }
    if (env.world_size < 1 || env.rank < 0) {
      return absl::InvalidArgumentError(
          "--world_size must be at least 1 and --rank at least 0");
    }
    if (absl::Status status = CheckRank(env, "--rank"); !status.ok()) {
      return status;
    }
    return env;
  }
  if (flags.rank.has_value()) {
    return absl::InvalidArgumentError("--rank needs --world_size");
  }
  if (Find(environment, "RANK") != nullptr) return FromTorchrun(environment);
  if (Find(environment, "SLURM_PROCID") != nullptr) {
    return FromSlurm(environment);
  }
  return LaunchEnv();
}

std::string Describe(const LaunchEnv& env) {
  std::string text = absl::StrCat("rank ", env.rank, " of ", env.world_size,
                                  " (", env.source, ")");
  if (env.world_size > 1) {
    absl::StrAppend(&text, ", store ", env.master_addr, ":", env.master_port,
                    env.use_agent_store ? absl::StrCat(" (torchrun's agent, ",
                                                       env.store_prefix, ")")
                                        : "");
  }
  return text;
}

}  // namespace distributed
