// The job tables against qemu-block-semantics.md 6.1 (QEMU's JobSTT and JobVerbTable): every
// pair of states and every (verb, state) pair, plus the names and the on-error decisions.
#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "strata/job.h"

namespace strata {
namespace {

using S = JobStatus;
using V = JobVerb;

std::vector<S> all_states() {
  std::vector<S> out;
  for (int i = 0; i < kJobStatusCount; ++i) out.push_back(static_cast<S>(i));
  return out;
}

std::vector<V> all_verbs() {
  std::vector<V> out;
  for (int i = 0; i < kJobVerbCount; ++i) out.push_back(static_cast<V>(i));
  return out;
}

TEST(JobTable, StatusAndVerbNamesAreQapis) {
  const std::vector<std::string> states = {"undefined", "created",   "running", "paused",
                                           "ready",     "standby",   "waiting", "pending",
                                           "aborting",  "concluded", "null"};
  for (int i = 0; i < kJobStatusCount; ++i) {
    EXPECT_EQ(job_status_name(static_cast<S>(i)), states[i]);
  }
  const std::vector<std::string> verbs = {"cancel",   "pause",    "resume",  "set-speed",
                                          "complete", "finalize", "dismiss", "change"};
  for (int i = 0; i < kJobVerbCount; ++i) EXPECT_EQ(job_verb_name(static_cast<V>(i)), verbs[i]);
  EXPECT_EQ(job_type_name(JobType::kCommit), "commit");
  EXPECT_EQ(job_type_name(JobType::kSnapshotDelete), "snapshot-delete");
  EXPECT_TRUE(is_block_job_type(JobType::kStream));
  EXPECT_FALSE(is_block_job_type(JobType::kCreate));
}

TEST(JobTable, EveryTransitionPairMatchesTheSemanticsTable) {
  const std::set<std::pair<S, S>> allowed = {
      {S::kUndefined, S::kCreated}, {S::kCreated, S::kRunning},  {S::kCreated, S::kAborting},
      {S::kCreated, S::kNull},      {S::kRunning, S::kPaused},   {S::kRunning, S::kReady},
      {S::kRunning, S::kWaiting},   {S::kRunning, S::kAborting}, {S::kPaused, S::kRunning},
      {S::kReady, S::kStandby},     {S::kReady, S::kWaiting},    {S::kReady, S::kAborting},
      {S::kStandby, S::kReady},     {S::kWaiting, S::kPending},  {S::kWaiting, S::kAborting},
      {S::kPending, S::kConcluded}, {S::kPending, S::kAborting}, {S::kAborting, S::kConcluded},
      {S::kAborting, S::kAborting}, {S::kConcluded, S::kNull},
  };
  int count = 0;
  for (S from : all_states()) {
    for (S to : all_states()) {
      bool want = allowed.count({from, to}) != 0;
      EXPECT_EQ(job_transition_allowed(from, to), want)
          << job_status_name(from) << " -> " << job_status_name(to);
      count += want;
    }
  }
  EXPECT_EQ(count, 20);
}

TEST(JobTable, EveryVerbStatePairMatchesTheSemanticsTable) {
  const std::set<S> live = {S::kCreated, S::kRunning, S::kPaused, S::kReady, S::kStandby};
  std::set<S> cancel = live;
  cancel.insert(S::kWaiting);
  cancel.insert(S::kPending);
  const std::vector<std::pair<V, std::set<S>>> table = {
      {V::kCancel, cancel},
      {V::kPause, live},
      {V::kResume, live},
      {V::kSetSpeed, live},
      {V::kChange, live},
      {V::kComplete, {S::kReady, S::kStandby}},
      {V::kFinalize, {S::kPending}},
      {V::kDismiss, {S::kConcluded}},
  };
  ASSERT_EQ(table.size(), all_verbs().size());
  for (const auto& [verb, states] : table) {
    for (S s : all_states()) {
      EXPECT_EQ(job_verb_allowed(verb, s), states.count(s) != 0)
          << job_verb_name(verb) << " in " << job_status_name(s);
    }
  }
}

TEST(JobTable, RefusedVerbUsesQemusText) {
  auto r = check_job_verb("job0", S::kRunning, V::kFinalize);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), EPERM);
  EXPECT_EQ(r.error().message(),
            "Job 'job0' in state 'running' cannot accept command verb 'finalize'");
  EXPECT_TRUE(check_job_verb("job0", S::kPending, V::kFinalize));
  auto speed = check_job_verb("j", S::kConcluded, V::kSetSpeed);
  ASSERT_FALSE(speed);
  EXPECT_EQ(speed.error().message(),
            "Job 'j' in state 'concluded' cannot accept command verb 'set-speed'");
}

TEST(JobTable, OnErrorPolicies) {
  struct Row {
    BlockdevOnError policy;
    int err;
    BlockErrorAction want;
  };
  const Row rows[] = {
      {BlockdevOnError::kReport, EIO, BlockErrorAction::kReport},
      {BlockdevOnError::kReport, ENOSPC, BlockErrorAction::kReport},
      {BlockdevOnError::kIgnore, EIO, BlockErrorAction::kIgnore},
      {BlockdevOnError::kIgnore, ENOSPC, BlockErrorAction::kIgnore},
      {BlockdevOnError::kStop, EIO, BlockErrorAction::kStop},
      {BlockdevOnError::kStop, ENOSPC, BlockErrorAction::kStop},
      {BlockdevOnError::kEnospc, EIO, BlockErrorAction::kReport},
      {BlockdevOnError::kEnospc, ENOSPC, BlockErrorAction::kStop},
      {BlockdevOnError::kAuto, EPERM, BlockErrorAction::kReport},
      {BlockdevOnError::kAuto, ENOSPC, BlockErrorAction::kStop},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(block_error_action(row.policy, row.err), row.want)
        << on_error_name(row.policy) << " errno " << row.err;
  }
}

TEST(JobTable, OnErrorNamesRoundTrip) {
  for (const char* name : {"report", "ignore", "enospc", "stop", "auto"}) {
    auto parsed = parse_on_error(name);
    ASSERT_TRUE(parsed) << name;
    EXPECT_EQ(on_error_name(*parsed), name);
  }
  EXPECT_FALSE(parse_on_error("Stop"));
  EXPECT_FALSE(parse_on_error(""));
  EXPECT_EQ(block_error_action_name(BlockErrorAction::kStop), "stop");
}

}  // namespace
}  // namespace strata
