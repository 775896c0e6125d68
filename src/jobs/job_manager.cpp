// JobManager (strata/job.h): job ids, lookups, queries, the verbs with QEMU's texts, event
// fan-out, and freeing jobs once they are null and none of their coroutines is running.
#include <algorithm>
#include <cassert>
#include <cctype>
#include <cerrno>

#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/job.h"

namespace strata {
namespace {

// QEMU's id_wellformed: a letter, then letters, digits, '-', '.' and '_'.
bool id_wellformed(std::string_view id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  return std::all_of(id.begin() + 1, id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
}

}  // namespace

JobManager::JobManager(Engine& engine) : engine_(&engine) {}

JobManager::~JobManager() {
  // Freeing a job whose coroutine is still suspended would leave it to be resumed into freed
  // memory; shutdown() first.
  for ([[maybe_unused]] const auto& job : jobs_) assert(job->active_tasks_ == 0);
  for ([[maybe_unused]] const auto& job : retired_) assert(job->active_tasks_ == 0);
}

int JobManager::add_listener(JobEventListener listener) {
  int handle = next_listener_++;
  listeners_.emplace(handle, std::move(listener));
  return handle;
}

void JobManager::remove_listener(int handle) { listeners_.erase(handle); }

void JobManager::emit(std::string_view name, const nlohmann::json& data) {
  // A listener may add or remove listeners; it does not change who hears this event.
  auto listeners = listeners_;
  for (auto& [handle, listener] : listeners) listener(name, data);
}

Result<Job*> JobManager::add(std::unique_ptr<Job> job) {
  const std::string& id = job->id();
  if (id.empty()) return fail(EINVAL, "An explicit job ID is required");
  if (!id_wellformed(id)) return fail(EINVAL, "Invalid job ID '{}'", id);
  if (find(id) != nullptr) return fail(EEXIST, "Job ID '{}' already in use", id);

  Job* added = job.get();
  added->events_ = [this](std::string_view name, nlohmann::json data) { emit(name, data); };
  added->on_idle_ = [this](Job& idle) { on_job_idle(idle); };
  jobs_.push_back(std::move(job));
  added->transition(JobStatus::kCreated);
  auto speed = added->set_speed(added->options_.speed);
  if (!speed) {
    added->dismiss();
    return speed.error();
  }
  return added;
}

Task<void> JobManager::early_fail(Job& job) {
  assert(job.status() == JobStatus::kCreated);
  ++job.active_tasks_;
  co_await job.release_nodes();
  --job.active_tasks_;
  job.dismiss();
}

void JobManager::start(Job& job) { job.start(); }

Job* JobManager::find(std::string_view id) const {
  for (const auto& job : jobs_) {
    if (job->id() == id) return job.get();
  }
  return nullptr;
}

Result<Job*> JobManager::lookup(std::string_view id, JobApi api) const {
  Job* job = find(id);
  if (api == JobApi::kJob) {
    if (job == nullptr) return fail(ENOENT, "Job not found");
    return job;
  }
  if (job == nullptr || !is_block_job_type(job->type())) {
    return fail(ErrorClass::kDeviceNotActive, ENOENT, "Block job '{}' not found", id);
  }
  return job;
}

std::vector<Job*> JobManager::jobs() const {
  std::vector<Job*> out;
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) out.push_back(it->get());
  return out;
}

nlohmann::json JobManager::query_jobs() const {
  nlohmann::json out = nlohmann::json::array();
  for (Job* job : jobs()) out.push_back(job->query_job());
  return out;
}

nlohmann::json JobManager::query_block_jobs() const {
  nlohmann::json out = nlohmann::json::array();
  for (Job* job : jobs()) {
    if (is_block_job_type(job->type())) out.push_back(job->query_block_job());
  }
  return out;
}

Result<void> JobManager::pause(std::string_view id, JobApi api) {
  auto job = lookup(id, api);
  if (!job) return job.error();
  return (*job)->user_pause();
}

Result<void> JobManager::resume(std::string_view id, JobApi api) {
  auto job = lookup(id, api);
  if (!job) return job.error();
  return (*job)->user_resume();
}

Task<Result<void>> JobManager::cancel(std::string id, bool force, JobApi api) {
  auto found = lookup(id, api);
  if (!found) co_return found.error();
  Job* job = *found;
  if (api == JobApi::kJob) {
    force = true;  // job-cancel has no soft form
  } else if (job->user_paused() && !force) {
    co_return fail(EBUSY, "The block job for device '{}' is currently paused", id);
  }
  auto allowed = check_job_verb(job->id(), job->status(), JobVerb::kCancel);
  if (!allowed) co_return allowed;
  ++job->active_tasks_;
  co_await job->cancel(force);
  --job->active_tasks_;
  on_job_idle(*job);
  co_return Result<void>{};
}

Result<void> JobManager::complete(std::string_view id, JobApi api) {
  auto job = lookup(id, api);
  if (!job) return job.error();
  return (*job)->user_complete();
}

Task<Result<void>> JobManager::finalize(std::string id, JobApi api) {
  auto found = lookup(id, api);
  if (!found) co_return found.error();
  Job* job = *found;
  ++job->active_tasks_;
  Result<void> result = co_await job->user_finalize();
  --job->active_tasks_;
  on_job_idle(*job);
  co_return result;
}

Result<void> JobManager::dismiss(std::string_view id, JobApi api) {
  auto job = lookup(id, api);
  if (!job) return job.error();
  return (*job)->user_dismiss();
}

Result<void> JobManager::set_speed(std::string_view id, int64_t speed, JobApi api) {
  auto job = lookup(id, api);
  if (!job) return job.error();
  return (*job)->set_speed(speed);
}

Task<void> JobManager::shutdown() {
  // QEMU's job_cancel_sync_all: force-cancel each job and wait for it to go away. A job with
  // auto-dismiss off concludes and is then dismissed on the next round.
  while (!jobs_.empty() || !retired_.empty()) {
    // By id: a job freed while another one's cancel was suspended is simply not found.
    std::vector<std::string> ids;
    for (Job* job : jobs()) ids.push_back(job->id());
    for (const std::string& id : ids) {
      Job* job = find(id);
      if (job == nullptr) continue;
      if (job->status() == JobStatus::kConcluded) {
        job->dismiss();
      } else if (!job->is_cancelled() && !job->finalizing_) {
        ++job->active_tasks_;
        co_await job->cancel(true);
        --job->active_tasks_;
        on_job_idle(*job);
      }
    }
    reap();
    if (jobs_.empty() && retired_.empty()) break;
    auto tick = engine_->loop().sleep_ms(1);
    co_await tick;
  }
}

void JobManager::on_job_idle(Job& job) {
  if (job.status() == JobStatus::kNull) {
    auto it = std::find_if(jobs_.begin(), jobs_.end(),
                           [&job](const std::unique_ptr<Job>& j) { return j.get() == &job; });
    if (it != jobs_.end()) {
      retired_.push_back(std::move(*it));
      jobs_.erase(it);
    }
  }
  if (reap_posted_ || retired_.empty()) return;
  // Freed from the loop, never from inside one of the job's own calls.
  reap_posted_ = true;
  std::weak_ptr<bool> alive = alive_;
  engine_->loop().post([this, alive] {
    if (alive.expired()) return;
    reap_posted_ = false;
    reap();
  });
}

void JobManager::reap() {
  std::erase_if(retired_, [](const std::unique_ptr<Job>& job) { return job->active_tasks_ == 0; });
}

}  // namespace strata
