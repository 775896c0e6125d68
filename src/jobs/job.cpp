// Job (strata/job.h): the life cycle QEMU's job.c and blockjob.c define, on Strata's coroutines.
//
// One coroutine per job, main(), runs the initial pause point, run(), and then the completion
// path; the verbs (driven by the JobManager) change counters and flags and wake main() where it
// waits: at a pause point (pause_waiters_) or asleep in rate_limit (wake_sleep_). Wake-ups are
// posted to the loop, never resumed inside a verb, so a verb always returns before the job
// moves on (QEMU's job_enter from the monitor behaves the same way for the client).
//
// The completion path follows QEMU's order exactly, because clients see it in the events:
//   update_rc: a force-cancelled job without an error gets ECANCELED; an error -> aborting;
//   success: waiting, pending (+ BLOCK_JOB_PENDING without auto-finalize), and with
//            auto-finalize at once: prepare, then finalize_single;
//   failure: finalize_single (QEMU's transaction abort, for a transaction of one job);
//   finalize_single: commit or abort, clean, release the job's edges, BLOCK_JOB_CANCELLED if
//            force-cancelled else BLOCK_JOB_COMPLETED (not for a job that never started),
//            concluded, and null unless auto-dismiss is off (a never-started job always goes).
#include "strata/job.h"

#include <asio/steady_timer.hpp>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"

namespace strata {
namespace {

uint64_t now_ns() {
  auto now = std::chrono::steady_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
}

struct TimerAwaiter {
  asio::steady_timer* timer;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> waiter) {
    timer->async_wait([waiter](const asio::error_code&) { waiter.resume(); });
  }
  void await_resume() const noexcept {}
};

struct PauseAwaiter {
  std::vector<std::coroutine_handle<>>* waiters;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> waiter) { waiters->push_back(waiter); }
  void await_resume() const noexcept {}
};

}  // namespace

Job::Job(Engine& engine, JobType type, JobOptions options)
    : engine_(&engine), type_(type), options_(std::move(options)) {}

Job::~Job() {
  // A job freed before it finished (a manager torn down early) still lets go of its nodes.
  for (Child* edge : nodes_) spawn(engine_->detach_child(edge));
}

std::string Job::parent_description() const {
  return fmt::format("{} job '{}'", job_type_name(type_), id());
}

nlohmann::json Job::query_job() const {
  nlohmann::json info = {
      {"id", id()},
      {"type", job_type_name(type_)},
      {"status", job_status_name(status_)},
      {"current-progress", progress_current_},
      {"total-progress", progress_total_},
  };
  if (error_) info["error"] = error_->message();
  return info;
}

nlohmann::json Job::query_block_job() const {
  nlohmann::json info = {
      {"type", job_type_name(type_)},
      {"device", id()},
      {"len", progress_total_},
      {"offset", progress_current_},
      {"busy", busy_},
      {"paused", pause_count_ > 0},
      {"speed", speed_},
      {"io-status", io_status_},
      {"ready", is_ready()},
      {"status", job_status_name(status_)},
      {"auto-finalize", options_.auto_finalize},
      {"auto-dismiss", options_.auto_dismiss},
  };
  if (error_) info["error"] = error_->message();
  return info;
}

// ---- state and events ----

void Job::transition(JobStatus to) {
  JobStatus from = status_;
  if (!job_transition_allowed(from, to)) {
    // A bug in Strata, as QEMU's assert(JobSTT[s0][s1]) is in QEMU.
    std::fprintf(stderr, "job '%s': disallowed state transition %s -> %s\n", id().c_str(),
                 std::string(job_status_name(from)).c_str(),
                 std::string(job_status_name(to)).c_str());
    std::abort();
  }
  status_ = to;
  if (from != to) emit("JOB_STATUS_CHANGE", {{"id", id()}, {"status", job_status_name(to)}});
}

void Job::emit(std::string_view name, nlohmann::json data) {
  if (events_) events_(name, std::move(data));
}

nlohmann::json Job::block_event_data() const {
  return {{"type", job_type_name(type_)},
          {"device", id()},
          {"len", progress_total_},
          {"offset", progress_current_},
          {"speed", speed_}};
}

// ---- the job's own helpers ----

Task<bool> Job::pause_point() {
  if (pause_count_ == 0 || is_cancelled()) co_return !is_cancelled();
  // Several coroutines of one job may reach a pause point at once (a copy's requests in flight
  // that fail together under on-error=stop): the first one pauses the job and resumes it, the
  // others just wait with it.
  bool first = pause_waiters_.empty();
  JobStatus before = status_;
  if (first) {
    transition(before == JobStatus::kReady ? JobStatus::kStandby : JobStatus::kPaused);
    busy_ = false;
  }
  co_await PauseAwaiter{&pause_waiters_};
  if (first) {
    busy_ = true;
    transition(before);
  }
  co_return !is_cancelled();
}

Task<void> Job::sleep_ns(uint64_t ns) {
  busy_ = false;
  if (ns == 0) {
    co_await engine_->loop().yield();
  } else {
    asio::steady_timer timer(engine_->loop().context(), std::chrono::nanoseconds(ns));
    wake_sleep_ = [&timer] { timer.cancel(); };
    co_await TimerAwaiter{&timer};
    wake_sleep_ = nullptr;
  }
  busy_ = true;
}

Task<void> Job::rate_limit(uint64_t bytes) {
  // QEMU's block_job_ratelimit_sleep: sleep at least once; after a sleep cut short (pause,
  // set-speed) recompute, since the speed may have changed meanwhile.
  uint64_t delay = limiter_.calculate_delay(now_ns(), bytes);
  for (;;) {
    if (is_cancelled()) co_return;
    if (pause_count_ == 0) co_await sleep_ns(delay);
    co_await pause_point();
    if (delay == 0 || is_cancelled()) co_return;
    delay = limiter_.calculate_delay(now_ns(), 0);
  }
}

Task<ErrorAction> Job::handle_error(bool is_read, Error error) {
  BlockErrorAction action = block_error_action(options_.on_error, error.err());
  if (is_block_job_type(type_)) {
    emit("BLOCK_JOB_ERROR", {{"device", id()},
                             {"operation", is_read ? "read" : "write"},
                             {"action", block_error_action_name(action)}});
  }
  if (action == BlockErrorAction::kReport) co_return ErrorAction::kReport;
  if (action == BlockErrorAction::kIgnore) co_return ErrorAction::kIgnore;
  // stop: a pause the user sees and ends with job-resume (QEMU makes it a user pause).
  if (!user_paused_) {
    pause();
    user_paused_ = true;
  }
  if (io_status_ == "ok") io_status_ = error.err() == ENOSPC ? "nospace" : "failed";
  co_await pause_point();
  co_return ErrorAction::kRetry;
}

void Job::set_ready() {
  transition(JobStatus::kReady);
  if (is_block_job_type(type_)) emit("BLOCK_JOB_READY", block_event_data());
}

Result<Child*> Job::add_node(Node& node, std::string edge_name, Perm perm, Perm shared) {
  // The edge starts out holding nothing; its real permissions are then checked against the
  // node's other parents in one refresh, which names this job in a conflict.
  auto attached = engine_->attach_child(*this, node, std::move(edge_name), ChildRole::kNone);
  if (!attached) return attached.error();
  Child* edge = *attached;
  edge->set_perms(perm, shared);
  auto refreshed = engine_->refresh_perms(node);
  if (!refreshed) {
    // The failed refresh restored everything but this edge, which held nothing before.
    edge->set_perms(Perm::kNone, Perm::kAll);
    spawn(engine_->detach_child(edge));
    return refreshed.error();
  }
  nodes_.push_back(edge);
  return edge;
}

Result<std::unique_ptr<BlockBackend>> Job::attach_backend(Node& node, Perm perm, Perm shared) {
  return engine_->attach_backend(node, "", perm, shared);
}

Task<void> Job::release_nodes() {
  std::vector<Child*> edges = std::exchange(nodes_, {});
  for (Child* edge : edges) {
    auto detach = engine_->detach_child(edge);
    co_await detach;
  }
}

// ---- default hooks ----

Task<Result<void>> Job::prepare() { co_return Result<void>{}; }
Task<void> Job::commit() { co_return; }
Task<void> Job::abort() { co_return; }
Task<void> Job::clean() { co_return; }

Result<void> Job::complete() {
  return fail(EINVAL, "The active block job '{}' cannot be completed", id());
}

// ---- life cycle ----

void Job::start() {
  assert(status_ == JobStatus::kCreated && !started_);
  started_ = true;
  --pause_count_;
  busy_ = true;
  transition(JobStatus::kRunning);
  ++active_tasks_;
  spawn(main());
}

Task<void> Job::main() {
  // Every job may be paused before its work starts (QEMU's job_co_entry).
  bool go_on = co_await pause_point();
  if (go_on) {
    Result<void> result = co_await run();
    if (!result) error_ = result.error();
  }
  deferred_ = true;
  busy_ = false;
  // QEMU finishes the job from a bottom half: the command that started or woke the job returns
  // before the job's completion events.
  co_await engine_->loop().yield();
  co_await completed();
  --active_tasks_;
  if (on_idle_) on_idle_(*this);
}

void Job::update_rc() {
  if (!error_ && is_cancelled()) error_ = Error(ECANCELED, std::strerror(ECANCELED));
  if (error_) transition(JobStatus::kAborting);
}

Task<void> Job::completed() {
  update_rc();
  if (error_) {
    co_await finalize_single();
    co_return;
  }
  transition(JobStatus::kWaiting);
  transition(JobStatus::kPending);
  if (!options_.auto_finalize) {
    if (is_block_job_type(type_)) {
      emit("BLOCK_JOB_PENDING", {{"type", job_type_name(type_)}, {"id", id()}});
    }
    co_return;
  }
  co_await do_finalize();
}

Task<void> Job::do_finalize() {
  finalizing_ = true;
  if (!error_) {
    Result<void> prepared = co_await prepare();
    if (!prepared) error_ = prepared.error();
  }
  co_await finalize_single();
}

Task<void> Job::finalize_single() {
  finalizing_ = true;
  update_rc();
  if (!error_) {
    co_await commit();
  } else {
    co_await abort();
  }
  co_await clean();
  co_await release_nodes();
  if (started_ && is_block_job_type(type_)) {
    if (is_cancelled()) {
      emit("BLOCK_JOB_CANCELLED", block_event_data());
    } else {
      nlohmann::json data = block_event_data();
      if (error_) data["error"] = error_->message();
      emit("BLOCK_JOB_COMPLETED", std::move(data));
    }
  }
  conclude();
}

void Job::conclude() {
  transition(JobStatus::kConcluded);
  finalizing_ = false;
  if (options_.auto_dismiss || !started_) dismiss();
}

void Job::dismiss() {
  busy_ = false;
  transition(JobStatus::kNull);
  if (on_idle_) on_idle_(*this);
}

// ---- verbs ----

void Job::pause() {
  ++pause_count_;
  // A job asleep in rate_limit wakes up to reach its pause point.
  wake_sleep();
}

void Job::resume() {
  assert(pause_count_ > 0);
  if (--pause_count_ == 0) wake_paused();
}

void Job::wake_paused() {
  // In the order they paused, so the first (which changes the status back) runs first.
  for (std::coroutine_handle<> waiter : std::exchange(pause_waiters_, {})) {
    engine_->loop().post([waiter] { waiter.resume(); });
  }
}

void Job::wake_sleep() {
  if (wake_sleep_) std::exchange(wake_sleep_, nullptr)();
}

Result<void> Job::user_pause() {
  auto allowed = check_job_verb(id(), status_, JobVerb::kPause);
  if (!allowed) return allowed;
  if (user_paused_) return fail(EBUSY, "Job is already paused");
  user_paused_ = true;
  pause();
  return {};
}

Result<void> Job::user_resume() {
  if (!user_paused_ || pause_count_ <= 0) {
    return fail(EINVAL, "Can't resume a job that was not paused");
  }
  auto allowed = check_job_verb(id(), status_, JobVerb::kResume);
  if (!allowed) return allowed;
  io_status_ = "ok";
  user_paused_ = false;
  resume();
  return {};
}

void Job::cancel_async(bool force) {
  force = on_cancel(force);
  if (user_paused_) {
    // The cancel ends the user's pause; the caller wakes the job.
    io_status_ = "ok";
    user_paused_ = false;
    assert(pause_count_ > 0);
    --pause_count_;
  }
  // A soft cancel of a job whose run() has returned changes nothing.
  if (force || !deferred_) {
    cancelled_ = true;
    force_cancel_ = force_cancel_ || force;
  }
}

Task<void> Job::cancel(bool force) {
  if (status_ == JobStatus::kConcluded) {
    dismiss();
    co_return;
  }
  cancel_async(force);
  if (!started_) {
    co_await completed();
  } else if (deferred_) {
    // run() returned. A job waiting for finalize is aborted now; one whose completion has not
    // run yet sees the cancel there.
    bool waiting = status_ == JobStatus::kWaiting || status_ == JobStatus::kPending;
    if (is_cancelled() && waiting && !finalizing_) co_await finalize_single();
  } else {
    wake_paused();
    wake_sleep();
  }
}

Result<void> Job::user_complete() {
  auto allowed = check_job_verb(id(), status_, JobVerb::kComplete);
  if (!allowed) return allowed;
  if (cancel_requested()) {
    return fail(EINVAL, "The active block job '{}' cannot be completed", id());
  }
  return complete();
}

Task<Result<void>> Job::user_finalize() {
  auto allowed = check_job_verb(id(), status_, JobVerb::kFinalize);
  if (!allowed) co_return allowed;
  // QEMU finalizes under the big lock, so a second finalize cannot arrive meanwhile; here the
  // graph changes may suspend, and one that does arrive is refused.
  if (finalizing_) co_return fail(EBUSY, "Job '{}' is already being finalized", id());
  co_await do_finalize();
  co_return Result<void>{};
}

Result<void> Job::user_dismiss() {
  auto allowed = check_job_verb(id(), status_, JobVerb::kDismiss);
  if (!allowed) return allowed;
  dismiss();
  return {};
}

Result<void> Job::set_speed(int64_t speed) {
  auto allowed = check_job_verb(id(), status_, JobVerb::kSetSpeed);
  if (!allowed) return allowed;
  if (speed < 0) return fail(EINVAL, "Parameter 'speed' expects a non-negative value");
  uint64_t old_speed = speed_;
  speed_ = static_cast<uint64_t>(speed);
  limiter_.set_speed(speed_);
  // Only a faster (or unlimited) speed can shorten a sleep.
  if (speed_ != 0 && speed_ <= old_speed) return {};
  wake_sleep();
  return {};
}

}  // namespace strata
