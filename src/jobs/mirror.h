// Active block-commit (QEMU's commit_active_start on the mirror job): top is the active layer,
// or has a writer, so its data cannot simply be copied down once. The job copies everything
// allocated between top and base into base, then keeps base in sync while guests write:
//
//   - a mirror_top filter is put above top (every parent of top now reaches it through the
//     filter); it passes requests through, takes no CONSISTENT_READ on top (everything between
//     top and base is unreadable to others while the job runs) and shares WRITE;
//   - a dirty bitmap on top records every write that reaches top (dirty_bitmap.h); it starts
//     out with everything allocated above base;
//   - the job copies dirty ranges into base, several in flight, clearing their bits first, so
//     a write that lands meanwhile makes its range dirty again;
//   - once nothing is dirty the job is READY (BLOCK_JOB_READY) and goes on copying what
//     guests write, until job-complete (pivot) or block-job-cancel (no pivot; base holds top's
//     data as it was at that moment, consistent);
//   - the pivot: writes through mirror_top wait at a gate while the last dirty ranges are
//     copied and base is flushed; then top's parents (mirror_top) move to base, the queued
//     writes go on into base, and mirror_top's parents (the devices) move to base too. Nothing
//     is lost: the gate is closed from the last check of the bitmap to the moment the writes
//     reach base instead of top.
//
// Base: a read-only base is reopened read-write for the duration (with auto-read-only storage,
// that is when its storage becomes writable). After a pivot it takes top's place and top's
// read-only state (QEMU's mirror_exit_common). Without a pivot (failure, cancel, or a soft
// cancel of a ready job) it goes back to read-only; QEMU leaves it writable after a soft
// cancel, Strata does not: nobody writes it any more.
//
// Node edges the job holds (QEMU's): the job's read handle on mirror_top ("main node"), a
// write handle on base (with RESIZE when base is smaller than top), a "target" job edge on
// base and "intermediate node" edges on everything between top and base, which share only
// WRITE and WRITE_UNCHANGED. The links from mirror_top down to base are frozen.
//
// Threading: event loop thread only.
#pragma once

#include <string>

#include "strata/job.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Node;

struct ActiveCommitArgs {
  Node* top = nullptr;           // the active layer (or a node with a writer)
  Node* base = nullptr;          // in top's backing chain
  std::string filter_node_name;  // mirror_top's node-name; empty: automatic
};

// Sets up the job as QEMU's commit_active_start and mirror_start_job do and starts it (type
// "commit"). Errors leave the graph as it was: base back to read-only, no filter; a job that
// was already created goes created -> null.
Task<Result<Job*>> start_active_commit_job(JobManager& manager, Engine& engine, JobOptions options,
                                           ActiveCommitArgs args);

}  // namespace strata
