// Job: a long-running operation over the block graph (commit, stream, mirror, backup, create),
// with QEMU's job life cycle, verbs and events.
//
// A job is a coroutine (run()) plus a state machine around it. The base class runs the life
// cycle; a subclass supplies the work and the graph changes at the end:
//
//   created --start--> running --run() returns--> waiting --> pending --finalize--> concluded
//                        |  ^ paused (pause_point)                  |                 |
//                        v  | ready <-> standby                     v (error/cancel)  v
//                                                                aborting ------> null
//
// The tables (which transitions exist, which verbs each state accepts) are QEMU's JobSTT and
// JobVerbTable, in job_transition_allowed() and job_verb_allowed(). A transition the table does
// not allow is a bug in Strata and aborts the process.
//
// Events (JOB_STATUS_CHANGE, BLOCK_JOB_*) go to the JobManager's listeners, with QEMU's payloads
// and in QEMU's order: a job that succeeds emits created, running, waiting, pending,
// BLOCK_JOB_COMPLETED, concluded, null.
//
// A job holds the nodes it works on through job edges (add_node): the job is the parent, so a
// conflicting user is refused with a message naming "<type> job '<id>'".
//
// Threading: event loop thread only. A job lives in a JobManager, which creates, starts and
// frees it; the helpers below (pause_point, rate_limit, progress_*, handle_error, set_ready) are
// for the job's own run().
#pragma once

#include <coroutine>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/node.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class BlockBackend;
class Child;
class Engine;
class JobManager;

// QAPI JobStatus, in QEMU's order (the tables are indexed by it).
enum class JobStatus : uint8_t {
  kUndefined,
  kCreated,
  kRunning,
  kPaused,
  kReady,
  kStandby,
  kWaiting,
  kPending,
  kAborting,
  kConcluded,
  kNull,
};
inline constexpr int kJobStatusCount = 11;

// QAPI JobVerb.
enum class JobVerb : uint8_t {
  kCancel,
  kPause,
  kResume,
  kSetSpeed,
  kComplete,
  kFinalize,
  kDismiss,
  kChange,
};
inline constexpr int kJobVerbCount = 8;

// QAPI JobType.
enum class JobType : uint8_t {
  kCommit,
  kStream,
  kMirror,
  kBackup,
  kCreate,
  kAmend,
  kSnapshotLoad,
  kSnapshotSave,
  kSnapshotDelete,
};

// "running", "set-speed", "snapshot-load": the QAPI names.
std::string_view job_status_name(JobStatus status);
std::string_view job_verb_name(JobVerb verb);
std::string_view job_type_name(JobType type);
// True for the types query-block-jobs and the block-job-* commands see (QEMU's is_block_job).
bool is_block_job_type(JobType type);

// QEMU's JobSTT and JobVerbTable.
bool job_transition_allowed(JobStatus from, JobStatus to);
bool job_verb_allowed(JobVerb verb, JobStatus status);
// EPERM "Job '<id>' in state '<status>' cannot accept command verb '<verb>'" when the table
// refuses.
Result<void> check_job_verb(std::string_view id, JobStatus status, JobVerb verb);

// QAPI BlockdevOnError: what a job does when its I/O fails. enospc (and auto, for jobs) stop on
// ENOSPC and report anything else.
enum class BlockdevOnError : uint8_t { kReport, kIgnore, kEnospc, kStop, kAuto };
std::string_view on_error_name(BlockdevOnError policy);
// "report", "ignore", "enospc", "stop", "auto"; nullopt for anything else.
std::optional<BlockdevOnError> parse_on_error(std::string_view name);

// QAPI BlockErrorAction: what the policy decided for one error (the BLOCK_JOB_ERROR "action").
enum class BlockErrorAction : uint8_t { kReport, kIgnore, kStop };
std::string_view block_error_action_name(BlockErrorAction action);
// QEMU's block_job_error_action decision. `err` is a positive errno.
BlockErrorAction block_error_action(BlockdevOnError policy, int err);

// What handle_error tells the job's loop to do with the failed request.
enum class ErrorAction : uint8_t {
  kReport,  // give up: run() returns the error
  kIgnore,  // count the request as done and carry on
  kRetry,   // the job was stopped and resumed (or cancelled meanwhile): try the request again
};

// QEMU's ratelimit: a quota of bytes per time slice (100 ms for jobs); a dispatch that passes
// the quota extends the slice, and the next one waits until the extended slice ends. Pure: the
// caller passes the time, so tests need no clock. Speed 0 is unlimited.
class RateLimiter {
 public:
  static constexpr uint64_t kSliceNs = 100'000'000;

  // Bytes per second.
  void set_speed(uint64_t speed, uint64_t slice_ns = kSliceNs);
  // Accounts `bytes` dispatched at `now_ns` and returns how many ns to wait before the next
  // dispatch (0: go on now).
  uint64_t calculate_delay(uint64_t now_ns, uint64_t bytes);

 private:
  uint64_t slice_ns_ = kSliceNs;
  uint64_t slice_quota_ = 0;  // 0: unlimited
  uint64_t slice_start_ = 0;
  uint64_t slice_end_ = 0;
  uint64_t dispatched_ = 0;
};

// The options every job takes (QMP's job-id, speed, on-error, auto-finalize, auto-dismiss).
struct JobOptions {
  std::string id;
  int64_t speed = 0;  // bytes per second, 0 = unlimited; negative is refused at creation
  BlockdevOnError on_error = BlockdevOnError::kReport;
  bool auto_finalize = true;
  bool auto_dismiss = true;
};

// How events leave the job layer: a name ("JOB_STATUS_CHANGE") and QEMU's data object.
using JobEventListener = std::function<void(std::string_view name, nlohmann::json data)>;

class Job : public Parent {
 public:
  Job(Engine& engine, JobType type, JobOptions options);
  ~Job() override;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  const std::string& id() const { return options_.id; }
  JobType type() const { return type_; }
  JobStatus status() const { return status_; }
  uint64_t progress_current() const { return progress_current_; }
  uint64_t progress_total() const { return progress_total_; }
  uint64_t speed() const { return speed_; }
  bool auto_finalize() const { return options_.auto_finalize; }
  bool auto_dismiss() const { return options_.auto_dismiss; }
  BlockdevOnError on_error() const { return options_.on_error; }
  Engine& engine() { return *engine_; }

  // QEMU's flags: busy (the coroutine is running, not waiting at a pause point or asleep),
  // paused (the pause count is non-zero), user_paused (a user or a stop error paused it).
  bool busy() const { return busy_; }
  bool paused() const { return pause_count_ > 0; }
  bool user_paused() const { return user_paused_; }
  // Force-cancelled: the job must stop (QEMU's job_is_cancelled).
  bool is_cancelled() const { return force_cancel_; }
  // Any cancel, including a soft one on a ready job, which completes it (job_cancel_requested).
  bool cancel_requested() const { return cancelled_; }
  bool is_ready() const { return status_ == JobStatus::kReady || status_ == JobStatus::kStandby; }
  // The job's error once it failed or was cancelled ("Operation canceled").
  const std::optional<Error>& error() const { return error_; }
  // QAPI BlockDeviceIoStatus: "ok", "failed", "nospace" (set by a stop error until resumed).
  std::string_view io_status() const { return io_status_; }

  // "commit job 'job0'" (QEMU's child_job_get_parent_desc).
  std::string parent_description() const override;

  // query-jobs' JobInfo and query-block-jobs' BlockJobInfo.
  nlohmann::json query_job() const;
  nlohmann::json query_block_job() const;

  // ---- for the job's own run() ----

  // Waits while the job is paused (pause count > 0): the status shows paused (standby when it
  // was ready) meanwhile. Returns false when the job was cancelled: stop working and return.
  Task<bool> pause_point();
  // Accounts `bytes` against `speed` and sleeps as long as the speed requires (QEMU's
  // ratelimit, 100 ms slices). Always lets the loop run once, even at speed 0, so that verbs
  // get through between chunks; is a pause point; returns early on cancel or when set_speed
  // raises the speed.
  Task<void> rate_limit(uint64_t bytes);
  // QEMU's progress: offset (current) and len (total).
  void progress_add(uint64_t bytes) { progress_current_ += bytes; }
  void progress_set_total(uint64_t total) { progress_total_ = total; }
  void progress_increase_total(uint64_t delta) { progress_total_ += delta; }
  // Applies on-error to a failed request: emits BLOCK_JOB_ERROR {device, operation, action}
  // and returns kReport or kIgnore; for stop, pauses the job as if by the user (io-status
  // failed/nospace), waits for job-resume, and returns kRetry.
  Task<ErrorAction> handle_error(bool is_read, Error error);
  // running -> ready, with BLOCK_JOB_READY.
  void set_ready();
  // Sleeps up to `ns` (0: one turn of the loop), as QEMU's job_sleep_ns; cut short by pause,
  // cancel, a faster speed and wake(). Not a pause point: call pause_point() after it.
  Task<void> sleep(uint64_t ns) { return sleep_ns(ns); }
  // Cuts a sleep() short: new work arrived, or job-complete.
  void wake() { wake_sleep(); }

  // QEMU's block_job_add_bdrv: holds `node` through an edge called `edge_name` ("main node",
  // "base", "intermediate node", "source", "target", "active node"), with the job as parent.
  // The edge is released when the job finishes (after clean()). Errors: permission conflicts.
  Result<Child*> add_node(Node& node, std::string edge_name, Perm perm, Perm shared);
  // QEMU's block_job_remove_all_bdrv: lets go of every job edge now, for a job whose graph
  // changes need them gone first (commit's abort). Otherwise the base does it after clean().
  Task<void> release_nodes();
  // An I/O handle on `node` with the job's own permissions (QEMU's commit/mirror create an
  // unnamed BlockBackend, so conflicts name "an unnamed block device").
  Result<std::unique_ptr<BlockBackend>> attach_backend(Node& node, Perm perm, Perm shared);

 protected:
  // The work. Returns an error to fail the job. Called once, after start.
  virtual Task<Result<void>> run() = 0;
  // At finalize, before commit: graph changes that may fail (an error takes the abort path).
  // These are Tasks because graph changes (reopen, detaching edges) are.
  virtual Task<Result<void>> prepare();
  // Success / failure-or-cancel, then clean() in both cases.
  virtual Task<void> commit();
  virtual Task<void> abort();
  virtual Task<void> clean();
  // job-complete on a ready job. Default: "The active block job '<id>' cannot be completed".
  virtual Result<void> complete();
  // A cancel request: returns whether it is a forced one. Default true (QEMU: a job without a
  // .cancel is always force-cancelled); a mirror returns `force || !is_ready()`, so a soft
  // cancel of a ready mirror completes it.
  virtual bool on_cancel(bool /*force*/) { return true; }

 private:
  friend class JobManager;

  // The life cycle (job.cpp), driven by the JobManager's verbs.
  void transition(JobStatus to);
  void emit(std::string_view name, nlohmann::json data);
  nlohmann::json block_event_data() const;
  void start();
  Task<void> main();
  Task<void> completed();
  Task<void> do_finalize();
  Task<void> finalize_single();
  void conclude();
  void dismiss();
  void update_rc();
  void cancel_async(bool force);
  Task<void> cancel(bool force);
  Result<void> user_pause();
  Result<void> user_resume();
  Result<void> user_complete();
  Task<Result<void>> user_finalize();
  Result<void> user_dismiss();
  Result<void> set_speed(int64_t speed);
  void pause();
  void resume();
  void wake_paused();
  void wake_sleep();
  Task<void> sleep_ns(uint64_t ns);

  Engine* engine_;
  JobType type_;
  JobOptions options_;
  JobStatus status_ = JobStatus::kUndefined;
  JobEventListener events_;            // set by the JobManager
  std::function<void(Job&)> on_idle_;  // the JobManager frees a null job that is idle
  int pause_count_ = 1;                // the job starts paused until start()
  bool user_paused_ = false;
  bool busy_ = false;
  bool started_ = false;
  bool deferred_ = false;    // run() returned
  bool finalizing_ = false;  // prepare/commit/abort/clean under way
  bool cancelled_ = false;
  bool force_cancel_ = false;
  int active_tasks_ = 0;  // coroutines of this job still running (main, verbs)
  std::optional<Error> error_;
  std::string_view io_status_ = "ok";
  uint64_t progress_current_ = 0;
  uint64_t progress_total_ = 0;
  uint64_t speed_ = 0;
  RateLimiter limiter_;
  std::vector<std::coroutine_handle<>> pause_waiters_;  // the first one changed the status
  std::function<void()> wake_sleep_;  // cancels the rate-limit timer while asleep
  std::vector<Child*> nodes_;
};

// Which QMP family a verb comes from: job-* finds any job ("Job not found"), block-job-* only
// block jobs ("Block job '<id>' not found", class DeviceNotActive).
enum class JobApi : uint8_t { kJob, kBlockJob };

// JobManager: the jobs of one Engine, their ids, the verbs and the event listeners. Owned by a
// front end (the daemon, a tool), not by the Engine; it must go before the Engine does.
//
//   auto job = manager.add(std::make_unique<CommitJob>(engine, ...));   // created
//   ... (*job)->add_node(...) ...; on error: co_await manager.early_fail(**job);
//   manager.start(**job);                                               // running
//
// Threading: event loop thread only.
class JobManager {
 public:
  explicit JobManager(Engine& engine);
  // REQUIRES: no job is left (co_await shutdown() first).
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Every event of every job goes to every listener, in order. Returns a handle for removal.
  int add_listener(JobEventListener listener);
  void remove_listener(int handle);

  // Registers a new job: JOB_STATUS_CHANGE created, then its speed is applied. Errors (QEMU's
  // job_create): "An explicit job ID is required", "Invalid job ID '<id>'" (a letter, then
  // letters, digits, '-', '.', '_'), "Job ID '<id>' already in use"; a negative speed fails
  // with "Parameter 'speed' expects a non-negative value" after created (then null, as QEMU's
  // job_early_fail).
  Result<Job*> add(std::unique_ptr<Job> job);
  // Drops a created job whose setup failed (QEMU's job_early_fail): its nodes are released and
  // it goes to null. REQUIRES: status created.
  Task<void> early_fail(Job& job);
  // created -> running; run() starts at once. REQUIRES: status created.
  void start(Job& job);

  // The job called `id` (not yet null), or nullptr.
  Job* find(std::string_view id) const;
  Result<Job*> lookup(std::string_view id, JobApi api) const;
  // Newest first, as QEMU lists them.
  std::vector<Job*> jobs() const;
  // query-jobs (every job) and query-block-jobs (block jobs only): arrays of QEMU's objects.
  nlohmann::json query_jobs() const;
  nlohmann::json query_block_jobs() const;

  // The verbs, with QEMU's checks and texts. job-cancel is a forced cancel; block-job-cancel
  // passes `force` and refuses a user-paused job unless forced ("The block job for device
  // '<id>' is currently paused"). cancel and finalize are Tasks: the abort or finalize path
  // (graph changes, events) runs before they return, as in QEMU.
  Result<void> pause(std::string_view id, JobApi api = JobApi::kJob);
  Result<void> resume(std::string_view id, JobApi api = JobApi::kJob);
  Task<Result<void>> cancel(std::string id, bool force, JobApi api = JobApi::kJob);
  Result<void> complete(std::string_view id, JobApi api = JobApi::kJob);
  Task<Result<void>> finalize(std::string id, JobApi api = JobApi::kJob);
  Result<void> dismiss(std::string_view id, JobApi api = JobApi::kJob);
  Result<void> set_speed(std::string_view id, int64_t speed, JobApi api = JobApi::kBlockJob);

  // Force-cancels every job (dismissing concluded ones) and waits until all are gone.
  Task<void> shutdown();

 private:
  void emit(std::string_view name, const nlohmann::json& data);
  void on_job_idle(Job& job);
  void reap();

  Engine* engine_;
  std::vector<std::unique_ptr<Job>> jobs_;     // oldest first; status created..concluded
  std::vector<std::unique_ptr<Job>> retired_;  // null, freed once their coroutines are done
  std::map<int, JobEventListener> listeners_;
  int next_listener_ = 0;
  bool reap_posted_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace strata
