#include "image_session.h"

#include <fmt/format.h>

#include <utility>

#include "cli.h"
#include "strata/builtin_drivers.h"

namespace strata::tools::img {

bool image_flags_valid(std::string_view prog, const ImageSpec& spec) {
  if (auto valid = check_image_spec(spec); !valid) {
    report_error(prog, valid.error().message());
    return false;
  }
  if (spec.image_opts && !spec.format.empty()) {
    report_error(prog, "--image-opts and --format are mutually exclusive");
    return false;
  }
  return true;
}

ImageSession::ImageSession() : engine_(loop_, builtin_drivers()) {}

ImageSession::~ImageSession() { close(); }

bool ImageSession::open(std::string_view prog, const ImageSpec& spec, Perm perm, Perm shared) {
  if (!image_flags_valid(prog, spec)) return false;
  auto image = open_image(loop_, engine_, spec, perm, shared);
  if (!image) {
    report_error(prog,
                 fmt::format("Could not open '{}': {}", spec.filename, image.error().message()),
                 image.error().hint());
    return false;
  }
  image_ = std::move(*image);
  return true;
}

void ImageSession::close() { close_image(loop_, engine_, image_); }

}  // namespace strata::tools::img
