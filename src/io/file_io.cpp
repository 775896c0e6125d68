#include "strata/file_io.h"

namespace strata {

std::string_view aio_mode_name(AioMode mode) {
  switch (mode) {
    case AioMode::kAuto:
      return "auto";
    case AioMode::kIoUring:
      return "io_uring";
    case AioMode::kThreads:
      return "threads";
  }
  return "auto";
}

}  // namespace strata
