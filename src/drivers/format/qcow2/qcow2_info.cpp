// qcow2's format-specific facts for `info` (placeholder; see qcow2.h).
#include "qcow2.h"

namespace strata::qcow2 {

std::string Qcow2Driver::specific_info_json() const { return {}; }

}  // namespace strata::qcow2
