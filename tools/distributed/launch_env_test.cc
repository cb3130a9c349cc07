#include "tools/distributed/launch_env.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace distributed {
namespace {

using ::testing::HasSubstr;
using Environment = std::map<std::string, std::string>;

TEST(LaunchEnvTest, NothingSetIsOneProcess) {
  absl::StatusOr<LaunchEnv> env = LaunchEnvFrom({{"HOME", "/root"}}, {});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 0);
  EXPECT_EQ(env->world_size, 1);
  EXPECT_EQ(env->source, "single process");
}

// What torchrun --nproc_per_node=2 --nnodes=2 gives the second local worker
// of the second node.
TEST(LaunchEnvTest, TorchrunVariables) {
  absl::StatusOr<LaunchEnv> env =
      LaunchEnvFrom({{"RANK", "3"},
                     {"WORLD_SIZE", "4"},
                     {"LOCAL_RANK", "1"},
                     {"LOCAL_WORLD_SIZE", "2"},
                     {"GROUP_RANK", "1"},
                     {"MASTER_ADDR", "10.0.0.1"},
                     {"MASTER_PORT", "29500"},
                     {"TORCHELASTIC_USE_AGENT_STORE", "False"}},
                    {});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_world_size, 2);
  EXPECT_EQ(env->node_rank, 1);
  EXPECT_EQ(env->master_addr, "10.0.0.1");
  EXPECT_EQ(env->master_port, 29500);
  EXPECT_FALSE(env->use_agent_store);
  EXPECT_EQ(Describe(*env), "rank 3 of 4 (torchrun), store 10.0.0.1:29500");
}

TEST(LaunchEnvTest, TorchrunAgentStoreIsJoinedUnderTheAttemptPrefix) {
  absl::StatusOr<LaunchEnv> env =
      LaunchEnvFrom({{"RANK", "0"},
                     {"WORLD_SIZE", "2"},
                     {"MASTER_ADDR", "127.0.0.1"},
                     {"MASTER_PORT", "29531"},
                     {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                     {"TORCHELASTIC_RESTART_COUNT", "2"}},
                    {});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_TRUE(env->use_agent_store);
  EXPECT_EQ(env->store_prefix, "/worker/attempt_2");
}

TEST(LaunchEnvTest, SlurmVariables) {
  Environment slurm = {{"SLURM_PROCID", "5"},
                       {"SLURM_NTASKS", "8"},
                       {"SLURM_LOCALID", "1"},
                       {"SLURM_NODEID", "1"},
                       {"SLURM_NTASKS_PER_NODE", "4(x2)"},
                       {"SLURM_NODELIST", "gpu[07-08]"},
                       {"SLURM_JOB_ID", "1234567"}};
  absl::StatusOr<LaunchEnv> env = LaunchEnvFrom(slurm, {});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_world_size, 4);
  EXPECT_EQ(env->node_rank, 1);
  EXPECT_EQ(env->master_addr, "gpu07");
  EXPECT_EQ(env->master_port, 15000 + 4567);
  EXPECT_EQ(env->source, "slurm");
  slurm["MASTER_ADDR"] = "head";
  slurm["MASTER_PORT"] = "40000";
  env = LaunchEnvFrom(slurm, {});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->master_addr, "head");
  EXPECT_EQ(env->master_port, 40000);
}

TEST(LaunchEnvTest, SlurmNodeLists) {
  EXPECT_EQ(*FirstSlurmHost("node1"), "node1");
  EXPECT_EQ(*FirstSlurmHost("node1,node2"), "node1");
  EXPECT_EQ(*FirstSlurmHost("node[05-09,12],gpu1"), "node05");
  EXPECT_EQ(*FirstSlurmHost("a-b[3,4]"), "a-b3");
  for (const char* bad :
       {"", "[1-2]", "node[", "node[x]", "node]1", "node[1-2"}) {
    EXPECT_FALSE(FirstSlurmHost(bad).ok()) << bad;
  }
}

TEST(LaunchEnvTest, FlagsWinAndFallBackToTheEnvironmentForTheAddress) {
  LaunchFlags flags;
  flags.rank = 1;
  flags.world_size = 3;
  absl::StatusOr<LaunchEnv> env = LaunchEnvFrom({{"RANK", "0"},
                                                 {"WORLD_SIZE", "2"},
                                                 {"MASTER_ADDR", "127.0.0.1"},
                                                 {"MASTER_PORT", "29600"}},
                                                flags);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 1);
  EXPECT_EQ(env->world_size, 3);
  EXPECT_EQ(env->master_addr, "127.0.0.1");
  EXPECT_EQ(env->master_port, 29600);
  EXPECT_EQ(env->source, "flags");
}

TEST(LaunchEnvTest, IncompleteOrWrongEnvironmentsNameTheVariable) {
  struct Case {
    Environment environment;
    LaunchFlags flags;
    const char* message;
  };
  LaunchFlags rank_only;
  rank_only.rank = 1;
  LaunchFlags outside;
  outside.rank = 2;
  outside.world_size = 2;
  outside.master_addr = "localhost";
  outside.master_port = 1234;
  const Case cases[] = {
      {{{"RANK", "0"}}, {}, "WORLD_SIZE is not"},
      {{{"RANK", "x"}, {"WORLD_SIZE", "2"}}, {}, "RANK='x'"},
      {{{"RANK", "2"},
        {"WORLD_SIZE", "2"},
        {"MASTER_ADDR", "a"},
        {"MASTER_PORT", "1"}},
       {},
       "RANK=2 is not below the world size 2"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}}, {}, "MASTER_ADDR and MASTER_PORT"},
      {{{"RANK", "0"},
        {"WORLD_SIZE", "2"},
        {"MASTER_ADDR", "a"},
        {"MASTER_PORT", "70000"}},
       {},
       "MASTER_PORT='70000'"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}}, {}, "WORLD_SIZE='0'"},
      {{{"SLURM_PROCID", "0"}}, {}, "SLURM_NTASKS is not"},
      {{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}},
       {},
       "MASTER_ADDR and MASTER_PORT"},
      {{{"SLURM_PROCID", "0"},
        {"SLURM_NTASKS", "2"},
        {"SLURM_NODELIST", "n[1"},
        {"SLURM_JOB_ID", "7"}},
       {},
       "node list 'n[1' is malformed"},
      {{}, rank_only, "--rank needs --world_size"},
      {{}, outside, "--rank=2 is not below the world size 2"},
  };
  for (const Case& test_case : cases) {
    absl::StatusOr<LaunchEnv> env =
        LaunchEnvFrom(test_case.environment, test_case.flags);
    ASSERT_FALSE(env.ok()) << test_case.message;
    EXPECT_EQ(env.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(env.status().message(), HasSubstr(test_case.message));
  }
}

}  // namespace
}  // namespace distributed
