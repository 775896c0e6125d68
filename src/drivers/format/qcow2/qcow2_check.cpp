// qcow2 consistency check and repair (being written; see qcow2.h).
#include <cerrno>

#include "qcow2.h"

namespace strata::qcow2 {

Task<Result<void>> Qcow2Driver::repair_dirty() {
  co_return fail(ENOTSUP, "repairing refcounts is not implemented yet");
}

Task<Result<CheckResult>> Qcow2Driver::check(CheckFix) {
  co_return fail(ENOTSUP, "This image format does not support checks");
}

}  // namespace strata::qcow2
