// block-commit of an intermediate image (QEMU's commit_start with top below the active layer):
// the data of top and everything between top and base is copied into base, then the overlay
// above top is pointed at base and the intermediate nodes drop out of the chain.
//
// While the job runs:
//   - a commit_top filter sits above top (every parent of top now reads through it); it takes no
//     permission on top and shares everything, so the overlay keeps reading the chain as before;
//   - top and every node down to base (excluded) are held by "intermediate node" job edges that
//     share only WRITE and WRITE_UNCHANGED: nobody else gets a consistent read of them;
//   - base is held by a "base" job edge, and written through the job's own handle, which needs
//     CONSISTENT_READ and WRITE (and RESIZE when base is smaller than top);
//   - the backing links from commit_top down to base are frozen;
//   - a base that was read-only is reopened read-write for the duration (with auto-read-only
//     storage below it, that is when its storage becomes writable), and read-only again at the
//     end, on success, failure and cancel alike.
// At the end, on success: the links are unfrozen, commit_top's parents are moved to base, and
// each overlay records base as its backing file (reopened read-write for that moment if it was
// read-only). On failure or cancel the parents go back to top. Either way commit_top goes away.
//
// Threading: event loop thread only.
#pragma once

#include <string>

#include "strata/job.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Node;

struct CommitArgs {
  Node* top = nullptr;   // the image to commit (below the active layer)
  Node* base = nullptr;  // the image to commit into, in top's backing chain
  // What overlays record as their new backing file; empty: base's filename.
  std::string backing_file;
  // Record "raw" as the backing format when base is a protocol node.
  bool backing_mask_protocol = false;
  std::string filter_node_name;  // commit_top's node-name; empty: automatic
};

// Sets up the job as QEMU's commit_start does and starts it. Errors leave the graph as it was
// (the base back to read-only, no filter, no job edges); the job, if it was already created, goes
// created -> null (QEMU's job_early_fail).
Task<Result<Job*>> start_commit_job(JobManager& manager, Engine& engine, JobOptions options,
                                    CommitArgs args);

}  // namespace strata
