// The job life cycle, verbs and events, with a TestJob whose run() loops over steps with a pause
// point and a rate limit per step, on a real Engine and EventLoop. Deterministic: the tests step
// the loop until a named condition holds (bounded), and never assert on elapsed time.
#include "strata/job.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kStep = 1024;
// More steps than any test waits for.
constexpr int kEndless = std::numeric_limits<int>::max();

// run() does `steps` steps: pause point, the step's I/O (io(step), which may fail), progress,
// rate limit. With `until_complete` it then goes ready and waits for job-complete or a cancel.
class TestJob : public Job {
 public:
  TestJob(Engine& engine, JobOptions options, int steps, JobType type = JobType::kCommit)
      : Job(engine, type, std::move(options)), steps_(steps) {}

  std::vector<std::string> hooks;  // run, prepare, commit, abort, clean
  int steps_done = 0;
  int io_calls = 0;
  std::function<std::optional<Error>(int step, int call)> io;
  std::optional<Error> run_error;
  std::optional<Error> prepare_error;
  bool until_complete = false;
  bool supports_complete = false;
  bool complete_requested = false;

 protected:
  Task<Result<void>> run() override {
    hooks.push_back("run");
    progress_set_total(static_cast<uint64_t>(steps_) * kStep);
    int step = 0;
    while (step < steps_) {
      bool go_on = co_await pause_point();
      if (!go_on) co_return Result<void>{};
      if (io) {
        std::optional<Error> failed = io(step, io_calls++);
        if (failed) {
          ErrorAction action = co_await handle_error(false, *failed);
          if (action == ErrorAction::kReport) co_return *failed;
          if (action == ErrorAction::kRetry) continue;
        }
      }
      progress_add(kStep);
      steps_done = ++step;
      co_await rate_limit(kStep);
    }
    if (until_complete) co_await wait_for_complete();
    if (run_error) co_return *run_error;
    co_return Result<void>{};
  }

  Task<void> wait_for_complete() {
    set_ready();
    while (!complete_requested && !cancel_requested()) {
      bool go_on = co_await pause_point();
      if (!go_on) co_return;
      co_await rate_limit(0);
    }
  }

  Task<Result<void>> prepare() override {
    hooks.push_back("prepare");
    if (prepare_error) co_return *prepare_error;
    co_return Result<void>{};
  }
  Task<void> commit() override {
    hooks.push_back("commit");
    co_return;
  }
  Task<void> abort() override {
    hooks.push_back("abort");
    co_return;
  }
  Task<void> clean() override {
    hooks.push_back("clean");
    co_return;
  }
  Result<void> complete() override {
    if (!supports_complete) return Job::complete();
    complete_requested = true;
    return {};
  }
  // Like a mirror: a soft cancel of a ready job completes it.
  bool on_cancel(bool force) override { return force || !is_ready(); }

 private:
  int steps_;
};

class JobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manager_.add_listener([this](std::string_view name, json data) {
      if (name == "JOB_STATUS_CHANGE") {
        events_.push_back(data["status"].get<std::string>());
      } else {
        events_.push_back(std::string(name));
      }
      data_.push_back({{"event", name}, {"data", data}});
    });
  }
  void TearDown() override { run_sync(loop_, manager_.shutdown()); }

  TestJob* add(int steps, JobOptions options = {}, JobType type = JobType::kCommit) {
    if (options.id.empty()) options.id = "job0";
    auto added = manager_.add(std::make_unique<TestJob>(engine_, options, steps, type));
    EXPECT_TRUE(added) << added.error().message();
    return added ? static_cast<TestJob*>(*added) : nullptr;
  }

  // Steps the loop until `done` holds; false if it does not within `rounds` steps.
  bool run_until(const std::function<bool()>& done, int rounds = 20000) {
    for (int i = 0; i < rounds; ++i) {
      if (done()) return true;
      // One handler at a time: a job whose steps never block re-posts itself forever, so a
      // poll() that runs everything ready would not return.
      if (loop_.context().stopped()) loop_.context().restart();
      if (loop_.context().poll_one() == 0) {
        loop_.context().run_one_for(std::chrono::milliseconds(2));
      }
    }
    return done();
  }
  // Lets the loop run `rounds` steps whatever happens.
  void spin(int rounds) {
    run_until([] { return false; }, rounds);
  }
  bool gone(const std::string& id) {
    return run_until([&] { return manager_.find(id) == nullptr; });
  }
  bool reaches(const std::string& id, JobStatus status) {
    return run_until([&] {
      Job* job = manager_.find(id);
      return job != nullptr && job->status() == status;
    });
  }
  // The payload of the first `name` event.
  json event(std::string_view name) {
    for (const json& e : data_) {
      if (e["event"] == name) return e["data"];
    }
    return nullptr;
  }
  Node* memory_node(const std::string& name) {
    auto node = run_sync(loop_, engine_.add_node(json{
                                    {"driver", "memory"}, {"node-name", name}, {"size", 1 << 20}}));
    EXPECT_TRUE(node) << node.error().message();
    return node ? *node : nullptr;
  }

  EventLoop loop_;
  Engine engine_{loop_, builtin_drivers()};
  JobManager manager_{engine_};
  std::vector<std::string> events_;
  std::vector<json> data_;
};

using Events = std::vector<std::string>;
using Hooks = std::vector<std::string>;

TEST_F(JobTest, SuccessFollowsQemusEventOrder) {
  TestJob* job = add(3);
  manager_.start(*job);
  // The command that started the job returns before the job gets further.
  EXPECT_EQ(events_, (Events{"created", "running"}));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_, (Events{"created", "running", "waiting", "pending", "BLOCK_JOB_COMPLETED",
                             "concluded", "null"}));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED"), (json{{"type", "commit"},
                                                {"device", "job0"},
                                                {"len", 3 * kStep},
                                                {"offset", 3 * kStep},
                                                {"speed", 0}}));
  EXPECT_EQ(event("JOB_STATUS_CHANGE"), (json{{"id", "job0"}, {"status", "created"}}));
}

TEST_F(JobTest, RunThatNeverSuspendsStillCompletesAfterTheCommandReturns) {
  std::vector<std::string> hooks;
  TestJob* job = add(0);
  manager_.start(*job);
  EXPECT_EQ(events_, (Events{"created", "running"}));
  hooks = job->hooks;  // the job is freed once null
  EXPECT_EQ(hooks, (Hooks{"run"}));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_.back(), "null");
}

TEST_F(JobTest, FailingRunAbortsAndReportsTheError) {
  TestJob* job = add(2);
  job->run_error = fail(EIO, "boom");
  Hooks hooks;
  manager_.add_listener([&](std::string_view name, const json&) {
    if (name == "BLOCK_JOB_COMPLETED") hooks = job->hooks;
  });
  manager_.start(*job);
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_,
            (Events{"created", "running", "aborting", "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["error"], "boom");
  EXPECT_EQ(hooks, (Hooks{"run", "abort", "clean"}));
}

TEST_F(JobTest, FailingPrepareTakesTheAbortPath) {
  TestJob* job = add(1);
  job->prepare_error = fail(EPERM, "cannot reopen");
  Hooks hooks;
  manager_.add_listener([&](std::string_view name, const json&) {
    if (name == "BLOCK_JOB_COMPLETED") hooks = job->hooks;
  });
  manager_.start(*job);
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_, (Events{"created", "running", "waiting", "pending", "aborting",
                             "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["error"], "cannot reopen");
  EXPECT_EQ(hooks, (Hooks{"run", "prepare", "abort", "clean"}));
}

TEST_F(JobTest, PauseAndResume) {
  TestJob* job = add(kEndless);
  manager_.start(*job);
  ASSERT_TRUE(manager_.pause("job0"));
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
  EXPECT_FALSE(job->busy());
  json info = manager_.query_block_jobs()[0];
  EXPECT_EQ(info["paused"], true);
  EXPECT_EQ(info["status"], "paused");
  EXPECT_EQ(manager_.query_jobs()[0]["status"], "paused");
  int frozen = job->steps_done;
  spin(200);
  EXPECT_EQ(job->steps_done, frozen);

  auto again = manager_.pause("job0");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(), "Job is already paused");

  ASSERT_TRUE(manager_.resume("job0"));
  ASSERT_TRUE(run_until([&] { return job->steps_done > frozen + 2; }));
  EXPECT_EQ(job->status(), JobStatus::kRunning);
  auto not_paused = manager_.resume("job0");
  ASSERT_FALSE(not_paused);
  EXPECT_EQ(not_paused.error().message(), "Can't resume a job that was not paused");
  EXPECT_EQ(events_, (Events{"created", "running", "paused", "running"}));
}

TEST_F(JobTest, PauseBeforeStartNestsWithTheStartCount) {
  TestJob* job = add(3);
  ASSERT_TRUE(manager_.pause("job0"));  // created: pause count 1 (unstarted) + 1 (user)
  manager_.start(*job);                 // 1 left: the job pauses before its first step
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
  EXPECT_EQ(job->steps_done, 0);
  EXPECT_TRUE(job->hooks.empty());  // run() has not started
  ASSERT_TRUE(manager_.resume("job0"));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_, (Events{"created", "running", "paused", "running", "waiting", "pending",
                             "BLOCK_JOB_COMPLETED", "concluded", "null"}));
}

TEST_F(JobTest, CancelAtAPausePoint) {
  TestJob* job = add(kEndless);
  manager_.start(*job);
  ASSERT_TRUE(run_until([&] { return job->steps_done >= 2; }));
  Hooks hooks;
  manager_.add_listener([&](std::string_view name, const json&) {
    if (name == "BLOCK_JOB_CANCELLED") hooks = job->hooks;
  });
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", false)));  // job-cancel: always forced
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_,
            (Events{"created", "running", "aborting", "BLOCK_JOB_CANCELLED", "concluded", "null"}));
  EXPECT_EQ(hooks, (Hooks{"run", "abort", "clean"}));
  json cancelled = event("BLOCK_JOB_CANCELLED");
  EXPECT_EQ(cancelled["len"], uint64_t{kEndless} * kStep);
  EXPECT_GE(cancelled["offset"].get<uint64_t>(), 2 * kStep);
}

TEST_F(JobTest, CancelWhilePaused) {
  TestJob* job = add(kEndless);
  manager_.start(*job);
  ASSERT_TRUE(manager_.pause("job0"));
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
  // block-job-cancel refuses a paused job unless forced.
  auto soft = run_sync(loop_, manager_.cancel("job0", false, JobApi::kBlockJob));
  ASSERT_FALSE(soft);
  EXPECT_EQ(soft.error().message(), "The block job for device 'job0' is currently paused");
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true, JobApi::kBlockJob)));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_, (Events{"created", "running", "paused", "running", "aborting",
                             "BLOCK_JOB_CANCELLED", "concluded", "null"}));
}

TEST_F(JobTest, CancelOfAJobThatNeverStarted) {
  TestJob* job = add(3);
  Hooks hooks;
  manager_.add_listener([&](std::string_view name, const json& data) {
    if (name == "JOB_STATUS_CHANGE" && data["status"] == "concluded") hooks = job->hooks;
  });
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true)));
  EXPECT_EQ(manager_.find("job0"), nullptr);
  // No BLOCK_JOB_CANCELLED for a job that never ran, and it is dismissed at once.
  EXPECT_EQ(events_, (Events{"created", "aborting", "concluded", "null"}));
  EXPECT_EQ(hooks, (Hooks{"abort", "clean"}));
}

TEST_F(JobTest, ManualFinalizeStopsInPending) {
  TestJob* job = add(2, {.id = "job0", .auto_finalize = false});
  manager_.start(*job);
  auto early = run_sync(loop_, manager_.finalize("job0"));
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().message(),
            "Job 'job0' in state 'running' cannot accept command verb 'finalize'");
  ASSERT_TRUE(reaches("job0", JobStatus::kPending));
  spin(50);
  EXPECT_EQ(job->status(), JobStatus::kPending);
  EXPECT_EQ(job->hooks, (Hooks{"run"}));
  EXPECT_EQ(event("BLOCK_JOB_PENDING"), (json{{"type", "commit"}, {"id", "job0"}}));
  EXPECT_EQ(events_, (Events{"created", "running", "waiting", "pending", "BLOCK_JOB_PENDING"}));

  Hooks hooks;
  manager_.add_listener([&](std::string_view name, const json&) {
    if (name == "BLOCK_JOB_COMPLETED") hooks = job->hooks;
  });
  ASSERT_TRUE(run_sync(loop_, manager_.finalize("job0")));
  // Finalize does the graph work and emits the events before it returns.
  EXPECT_EQ(events_, (Events{"created", "running", "waiting", "pending", "BLOCK_JOB_PENDING",
                             "BLOCK_JOB_COMPLETED", "concluded", "null"}));
  EXPECT_EQ(hooks, (Hooks{"run", "prepare", "commit", "clean"}));
  EXPECT_EQ(manager_.find("job0"), nullptr);
}

TEST_F(JobTest, CancelInPendingAborts) {
  TestJob* job = add(1, {.id = "job0", .auto_finalize = false});
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kPending));
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true)));
  EXPECT_EQ(events_, (Events{"created", "running", "waiting", "pending", "BLOCK_JOB_PENDING",
                             "aborting", "BLOCK_JOB_CANCELLED", "concluded", "null"}));
}

TEST_F(JobTest, ManualDismissKeepsTheJobConcluded) {
  TestJob* job = add(1, {.id = "job0", .auto_dismiss = false});
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kConcluded));
  spin(50);
  EXPECT_EQ(job->status(), JobStatus::kConcluded);
  json listed = manager_.query_jobs();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0], (json{{"id", "job0"},
                             {"type", "commit"},
                             {"status", "concluded"},
                             {"current-progress", kStep},
                             {"total-progress", kStep}}));
  auto pause = manager_.pause("job0");
  ASSERT_FALSE(pause);
  EXPECT_EQ(pause.error().message(),
            "Job 'job0' in state 'concluded' cannot accept command verb 'pause'");
  ASSERT_TRUE(manager_.dismiss("job0"));
  EXPECT_EQ(events_.back(), "null");
  auto again = manager_.dismiss("job0");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(), "Job not found");
}

TEST_F(JobTest, FailedJobKeepsItsErrorUntilDismissed) {
  TestJob* job = add(1, {.id = "job0", .auto_dismiss = false});
  job->run_error = fail(EIO, "Input/output error");
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kConcluded));
  EXPECT_EQ(manager_.query_jobs()[0]["error"], "Input/output error");
  EXPECT_EQ(manager_.query_block_jobs()[0]["error"], "Input/output error");
}

TEST_F(JobTest, OnErrorReportFailsTheJob) {
  TestJob* job = add(3, {.id = "job0", .on_error = BlockdevOnError::kReport});
  job->io = [](int step, int) -> std::optional<Error> {
    if (step == 1) return fail(EIO, "Input/output error");
    return std::nullopt;
  };
  manager_.start(*job);
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(event("BLOCK_JOB_ERROR"),
            (json{{"device", "job0"}, {"operation", "write"}, {"action", "report"}}));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["error"], "Input/output error");
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["offset"], kStep);
}

TEST_F(JobTest, OnErrorIgnoreCarriesOn) {
  TestJob* job = add(3, {.id = "job0", .on_error = BlockdevOnError::kIgnore});
  job->io = [](int step, int) -> std::optional<Error> {
    if (step == 1) return fail(EIO, "Input/output error");
    return std::nullopt;
  };
  manager_.start(*job);
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(event("BLOCK_JOB_ERROR")["action"], "ignore");
  EXPECT_FALSE(event("BLOCK_JOB_COMPLETED").contains("error"));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["offset"], 3 * kStep);
}

TEST_F(JobTest, OnErrorStopPausesUntilResumedThenRetries) {
  TestJob* job = add(3, {.id = "job0", .on_error = BlockdevOnError::kStop});
  std::vector<int> step_one_calls;
  job->io = [&](int step, int call) -> std::optional<Error> {
    if (step != 1) return std::nullopt;
    step_one_calls.push_back(call);
    if (step_one_calls.size() == 1) return fail(EIO, "Input/output error");
    return std::nullopt;
  };
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
  EXPECT_EQ(event("BLOCK_JOB_ERROR"),
            (json{{"device", "job0"}, {"operation", "write"}, {"action", "stop"}}));
  EXPECT_TRUE(job->user_paused());
  json info = manager_.query_block_jobs()[0];
  EXPECT_EQ(info["io-status"], "failed");
  EXPECT_EQ(info["paused"], true);
  spin(100);
  EXPECT_EQ(step_one_calls.size(), 1u);
  ASSERT_TRUE(manager_.resume("job0"));
  EXPECT_EQ(job->io_status(), "ok");
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(step_one_calls.size(), 2u);  // retried once after the resume
  EXPECT_FALSE(event("BLOCK_JOB_COMPLETED").contains("error"));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["offset"], 3 * kStep);
}

TEST_F(JobTest, OnErrorEnospcStopsOnlyOnEnospc) {
  TestJob* job = add(3, {.id = "job0", .on_error = BlockdevOnError::kEnospc});
  job->io = [](int step, int call) -> std::optional<Error> {
    if (step == 1 && call == 1) return fail(ENOSPC, "No space left on device");
    if (step == 2) return fail(EIO, "Input/output error");
    return std::nullopt;
  };
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
  EXPECT_EQ(job->io_status(), "nospace");
  ASSERT_TRUE(manager_.resume("job0"));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["error"], "Input/output error");
}

TEST_F(JobTest, CancelWhileStoppedOnAnError) {
  TestJob* job = add(3, {.id = "job0", .on_error = BlockdevOnError::kStop});
  job->io = [](int, int) -> std::optional<Error> { return fail(EIO, "Input/output error"); };
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true)));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_.at(events_.size() - 3), "BLOCK_JOB_CANCELLED");
}

TEST_F(JobTest, ReadyJobCompletesOnJobComplete) {
  TestJob* job = add(2);
  job->until_complete = true;
  job->supports_complete = true;
  manager_.start(*job);
  auto early = manager_.complete("job0");
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().message(),
            "Job 'job0' in state 'running' cannot accept command verb 'complete'");
  ASSERT_TRUE(reaches("job0", JobStatus::kReady));
  EXPECT_EQ(event("BLOCK_JOB_READY"), (json{{"type", "commit"},
                                            {"device", "job0"},
                                            {"len", 2 * kStep},
                                            {"offset", 2 * kStep},
                                            {"speed", 0}}));
  EXPECT_EQ(manager_.query_block_jobs()[0]["ready"], true);
  ASSERT_TRUE(manager_.complete("job0"));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_, (Events{"created", "running", "ready", "BLOCK_JOB_READY", "waiting", "pending",
                             "BLOCK_JOB_COMPLETED", "concluded", "null"}));
}

TEST_F(JobTest, ReadyJobPausesIntoStandby) {
  TestJob* job = add(1);
  job->until_complete = true;
  job->supports_complete = true;
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kReady));
  ASSERT_TRUE(manager_.pause("job0"));
  ASSERT_TRUE(reaches("job0", JobStatus::kStandby));
  EXPECT_EQ(manager_.query_block_jobs()[0]["ready"], true);
  ASSERT_TRUE(manager_.resume("job0"));
  ASSERT_TRUE(reaches("job0", JobStatus::kReady));
}

TEST_F(JobTest, CompleteOnAJobThatCannotComplete) {
  TestJob* job = add(1);
  job->until_complete = true;
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kReady));
  auto r = manager_.complete("job0");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "The active block job 'job0' cannot be completed");
}

TEST_F(JobTest, SoftCancelOfAReadyJobCompletesIt) {
  TestJob* job = add(1);
  job->until_complete = true;
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kReady));
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", false, JobApi::kBlockJob)));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_.at(events_.size() - 3), "BLOCK_JOB_COMPLETED");
  EXPECT_FALSE(event("BLOCK_JOB_COMPLETED").contains("error"));
}

TEST_F(JobTest, ForcedCancelOfAReadyJobCancelsIt) {
  TestJob* job = add(1);
  job->until_complete = true;
  manager_.start(*job);
  ASSERT_TRUE(reaches("job0", JobStatus::kReady));
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true, JobApi::kBlockJob)));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(events_.at(events_.size() - 3), "BLOCK_JOB_CANCELLED");
}

TEST_F(JobTest, JobIdsFollowQemusRules) {
  auto empty = manager_.add(std::make_unique<TestJob>(engine_, JobOptions{}, 1));
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().message(), "An explicit job ID is required");
  for (const char* bad : {"1job", "-x", "job 0", "j@b"}) {
    auto r = manager_.add(std::make_unique<TestJob>(engine_, JobOptions{.id = bad}, 1));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().message(), std::string("Invalid job ID '") + bad + "'");
  }
  ASSERT_NE(add(1, {.id = "a-b.c_9"}), nullptr);
  auto dup = manager_.add(std::make_unique<TestJob>(engine_, JobOptions{.id = "a-b.c_9"}, 1));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().message(), "Job ID 'a-b.c_9' already in use");
  EXPECT_EQ(events_, (Events{"created"}));
}

TEST_F(JobTest, NegativeSpeedFailsCreationAfterCreated) {
  auto r = manager_.add(std::make_unique<TestJob>(engine_, JobOptions{.id = "j", .speed = -1}, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Parameter 'speed' expects a non-negative value");
  EXPECT_EQ(events_, (Events{"created", "null"}));
  EXPECT_EQ(manager_.find("j"), nullptr);
}

TEST_F(JobTest, LookupsUseQemusTexts) {
  auto job = manager_.lookup("nope", JobApi::kJob);
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().message(), "Job not found");
  EXPECT_EQ(job.error().error_class(), ErrorClass::kGenericError);
  auto block = manager_.lookup("nope", JobApi::kBlockJob);
  ASSERT_FALSE(block);
  EXPECT_EQ(block.error().message(), "Block job 'nope' not found");
  EXPECT_EQ(block.error().error_class(), ErrorClass::kDeviceNotActive);
  // A create job is a job but not a block job.
  ASSERT_NE(add(1, {.id = "c0"}, JobType::kCreate), nullptr);
  EXPECT_TRUE(manager_.lookup("c0", JobApi::kJob));
  EXPECT_FALSE(manager_.lookup("c0", JobApi::kBlockJob));
  EXPECT_EQ(manager_.query_jobs().size(), 1u);
  EXPECT_EQ(manager_.query_block_jobs().size(), 0u);
}

TEST_F(JobTest, QueriesListNewestFirst) {
  ASSERT_NE(add(1, {.id = "first"}), nullptr);
  ASSERT_NE(add(1, {.id = "second"}), nullptr);
  json jobs = manager_.query_block_jobs();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0]["device"], "second");
  EXPECT_EQ(jobs[1], (json{{"type", "commit"},
                           {"device", "first"},
                           {"len", 0},
                           {"offset", 0},
                           {"busy", false},
                           {"paused", true},
                           {"speed", 0},
                           {"io-status", "ok"},
                           {"ready", false},
                           {"status", "created"},
                           {"auto-finalize", true},
                           {"auto-dismiss", true}}));
}

TEST_F(JobTest, RateLimitSleepsUntilTheSpeedIsRaised) {
  // One byte per second: after its first 1 KiB step the job owes ~100 s of sleep.
  TestJob* job = add(3, {.id = "job0", .speed = 1});
  manager_.start(*job);
  ASSERT_TRUE(run_until([&] { return job->steps_done == 1; }));
  spin(20);
  EXPECT_EQ(job->steps_done, 1);
  EXPECT_FALSE(job->busy());
  // Slower still: does not wake the job.
  ASSERT_TRUE(manager_.set_speed("job0", 1));
  spin(20);
  EXPECT_EQ(job->steps_done, 1);
  EXPECT_EQ(manager_.query_block_jobs()[0]["speed"], 1);
  // Unlimited: the sleep ends and the job runs to the end.
  ASSERT_TRUE(manager_.set_speed("job0", 0));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(event("BLOCK_JOB_COMPLETED")["offset"], 3 * kStep);
}

TEST_F(JobTest, CancelWakesASleepingJob) {
  TestJob* job = add(3, {.id = "job0", .speed = 1});
  manager_.start(*job);
  ASSERT_TRUE(run_until([&] { return job->steps_done == 1; }));
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true)));
  ASSERT_TRUE(gone("job0"));
  EXPECT_EQ(event("BLOCK_JOB_CANCELLED")["offset"], kStep);
}

TEST_F(JobTest, PauseWakesASleepingJobToItsPausePoint) {
  TestJob* job = add(3, {.id = "job0", .speed = 1});
  manager_.start(*job);
  ASSERT_TRUE(run_until([&] { return job->steps_done == 1; }));
  ASSERT_TRUE(manager_.pause("job0"));
  ASSERT_TRUE(reaches("job0", JobStatus::kPaused));
}

TEST_F(JobTest, SetSpeedChecks) {
  ASSERT_NE(add(1), nullptr);
  auto negative = manager_.set_speed("job0", -5);
  ASSERT_FALSE(negative);
  EXPECT_EQ(negative.error().message(), "Parameter 'speed' expects a non-negative value");
  auto missing = manager_.set_speed("nope", 5);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "Block job 'nope' not found");
}

TEST_F(JobTest, JobEdgeConflictNamesTheJob) {
  Node* base = memory_node("base");
  ASSERT_NE(base, nullptr);
  TestJob* job = add(kEndless);
  auto edge = job->add_node(*base, "base", Perm::kConsistentRead | Perm::kWrite,
                            Perm::kConsistentRead | Perm::kWriteUnchanged);
  ASSERT_TRUE(edge) << edge.error().message();
  EXPECT_EQ((*edge)->name(), "base");
  EXPECT_EQ(base->parents().size(), 1u);

  auto writer = engine_.attach_backend(*base, "", Perm::kWrite, Perm::kAll);
  ASSERT_FALSE(writer);
  EXPECT_NE(writer.error().message().find(
                "Permission conflict on node 'base': permissions 'write' are both required by an "
                "unnamed block device (uses node 'base' as 'root' child) and unshared by commit "
                "job 'job0' (uses node 'base' as 'base' child)"),
            std::string::npos)
      << writer.error().message();
  // A reader is fine: the job shares CONSISTENT_READ.
  auto reader = engine_.attach_backend(*base, "", Perm::kConsistentRead, Perm::kAll);
  ASSERT_TRUE(reader);
  reader->reset();

  // When the job ends, its edge goes and the writer gets in.
  manager_.start(*job);
  ASSERT_TRUE(run_sync(loop_, manager_.cancel("job0", true)));
  ASSERT_TRUE(gone("job0"));
  EXPECT_TRUE(base->parents().empty());
  auto later = engine_.attach_backend(*base, "", Perm::kWrite, Perm::kAll);
  EXPECT_TRUE(later) << later.error().message();
}

TEST_F(JobTest, RefusedJobEdgeLeavesNothingBehind) {
  Node* base = memory_node("base");
  ASSERT_NE(base, nullptr);
  auto user = engine_.attach_backend(*base, "sda", Perm::kConsistentRead | Perm::kWrite,
                                     Perm::kConsistentRead);
  ASSERT_TRUE(user);
  TestJob* job = add(1);
  auto edge = job->add_node(*base, "main node", Perm::kWrite, Perm::kAll);
  ASSERT_FALSE(edge);
  EXPECT_NE(edge.error().message().find("required by commit job 'job0' (uses node 'base' as "
                                        "'main node' child) and unshared by block device 'sda'"),
            std::string::npos)
      << edge.error().message();
  spin(10);
  EXPECT_EQ(base->parents().size(), 1u);
  // The job never started: early_fail drops it (created -> null).
  run_sync(loop_, manager_.early_fail(*job));
  EXPECT_EQ(events_, (Events{"created", "null"}));
  EXPECT_EQ(manager_.find("job0"), nullptr);
}

TEST_F(JobTest, JobBackendDoesIoWithTheJobsPermissions) {
  Node* base = memory_node("base");
  ASSERT_NE(base, nullptr);
  TestJob* job = add(1);
  auto blk = job->attach_backend(*base, Perm::kConsistentRead | Perm::kWrite, Perm::kAll);
  ASSERT_TRUE(blk) << blk.error().message();
  std::vector<uint8_t> buf(4096, 0xab);
  IoVec iov(buf.data(), buf.size());
  EXPECT_TRUE(run_sync(loop_, (*blk)->write(0, buf.size(), iov)));
  EXPECT_EQ((*blk)->parent_description(), "an unnamed block device");
}

TEST_F(JobTest, ShutdownCancelsEveryJob) {
  TestJob* a = add(kEndless, {.id = "a"});
  TestJob* b = add(1, {.id = "b", .auto_finalize = false});
  ASSERT_NE(add(1, {.id = "c"}), nullptr);  // never started
  manager_.start(*a);
  manager_.start(*b);
  ASSERT_TRUE(reaches("b", JobStatus::kPending));
  run_sync(loop_, manager_.shutdown());
  EXPECT_TRUE(manager_.jobs().empty());
  int cancelled = 0;
  for (const std::string& e : events_) cancelled += e == "BLOCK_JOB_CANCELLED";
  EXPECT_EQ(cancelled, 2);  // a and b; c never started, so no event
}

}  // namespace
}  // namespace strata
