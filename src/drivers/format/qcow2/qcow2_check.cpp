// qcow2 consistency check and repair (placeholder until the checker lands).
#include <cerrno>

#include "qcow2.h"

namespace strata::qcow2 {

Task<Result<void>> Qcow2Driver::repair_dirty() {
  co_return fail(ENOTSUP, "repairing refcounts is not implemented yet");
}

}  // namespace strata::qcow2
