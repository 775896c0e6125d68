// The job tables (strata/job.h): QEMU's names for states, verbs, types and error policies, its
// state transition table (JobSTT) and its verb table (JobVerbTable). Pure; table-tested.
#include <array>
#include <cerrno>

#include "strata/job.h"

namespace strata {
namespace {

constexpr std::array<std::string_view, kJobStatusCount> kStatusNames = {
    "undefined", "created", "running",  "paused",    "ready", "standby",
    "waiting",   "pending", "aborting", "concluded", "null",
};

constexpr std::array<std::string_view, kJobVerbCount> kVerbNames = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize", "dismiss", "change",
};

// Rows: from; columns: to, in JobStatus order (U C R P Y S W D X E N).
constexpr bool kTransitions[kJobStatusCount][kJobStatusCount] = {
    /* undefined */ {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    /* created   */ {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
    /* running   */ {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
    /* paused    */ {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    /* ready     */ {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
    /* standby   */ {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    /* waiting   */ {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
    /* pending   */ {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    /* aborting  */ {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    /* concluded */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    /* null      */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

// Rows: verbs in JobVerb order; columns: states (U C R P Y S W D X E N).
constexpr bool kVerbs[kJobVerbCount][kJobStatusCount] = {
    /* cancel    */ {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    /* pause     */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* resume    */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* set-speed */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* complete  */ {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
    /* finalize  */ {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    /* dismiss   */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
    /* change    */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
};

constexpr std::array<std::string_view, 5> kOnErrorNames = {"report", "ignore", "enospc", "stop",
                                                           "auto"};

}  // namespace

std::string_view job_status_name(JobStatus status) {
  return kStatusNames[static_cast<size_t>(status)];
}

std::string_view job_verb_name(JobVerb verb) { return kVerbNames[static_cast<size_t>(verb)]; }

std::string_view job_type_name(JobType type) {
  switch (type) {
    case JobType::kCommit:
      return "commit";
    case JobType::kStream:
      return "stream";
    case JobType::kMirror:
      return "mirror";
    case JobType::kBackup:
      return "backup";
    case JobType::kCreate:
      return "create";
    case JobType::kAmend:
      return "amend";
    case JobType::kSnapshotLoad:
      return "snapshot-load";
    case JobType::kSnapshotSave:
      return "snapshot-save";
    case JobType::kSnapshotDelete:
      return "snapshot-delete";
  }
  return "";
}

bool is_block_job_type(JobType type) {
  return type == JobType::kBackup || type == JobType::kCommit || type == JobType::kMirror ||
         type == JobType::kStream;
}

bool job_transition_allowed(JobStatus from, JobStatus to) {
  return kTransitions[static_cast<size_t>(from)][static_cast<size_t>(to)];
}

bool job_verb_allowed(JobVerb verb, JobStatus status) {
  return kVerbs[static_cast<size_t>(verb)][static_cast<size_t>(status)];
}

Result<void> check_job_verb(std::string_view id, JobStatus status, JobVerb verb) {
  if (job_verb_allowed(verb, status)) return {};
  return fail(EPERM, "Job '{}' in state '{}' cannot accept command verb '{}'", id,
              job_status_name(status), job_verb_name(verb));
}

std::string_view on_error_name(BlockdevOnError policy) {
  return kOnErrorNames[static_cast<size_t>(policy)];
}

std::optional<BlockdevOnError> parse_on_error(std::string_view name) {
  for (size_t i = 0; i < kOnErrorNames.size(); ++i) {
    if (kOnErrorNames[i] == name) return static_cast<BlockdevOnError>(i);
  }
  return std::nullopt;
}

std::string_view block_error_action_name(BlockErrorAction action) {
  switch (action) {
    case BlockErrorAction::kReport:
      return "report";
    case BlockErrorAction::kIgnore:
      return "ignore";
    case BlockErrorAction::kStop:
      return "stop";
  }
  return "";
}

BlockErrorAction block_error_action(BlockdevOnError policy, int err) {
  switch (policy) {
    case BlockdevOnError::kEnospc:
    case BlockdevOnError::kAuto:
      return err == ENOSPC ? BlockErrorAction::kStop : BlockErrorAction::kReport;
    case BlockdevOnError::kStop:
      return BlockErrorAction::kStop;
    case BlockdevOnError::kIgnore:
      return BlockErrorAction::kIgnore;
    case BlockdevOnError::kReport:
      return BlockErrorAction::kReport;
  }
  return BlockErrorAction::kReport;
}

}  // namespace strata
