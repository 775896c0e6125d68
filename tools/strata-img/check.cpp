// strata-img check: runs the format driver's consistency check (Driver::check) and reports it
// as qemu-img 7.2's img_check does, with its exit codes:
//   0 consistent; 1 the check could not complete (or found internal errors); 2 corruptions;
//   3 leaked clusters only; 63 the format has no check.
// With -r, the image opens read-write, the check repairs what -r allows, and if it fixed
// anything a second check (without repairs) reports the state after the repair, carrying over
// the counts of what was fixed.
#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "cli.h"
#include "image.h"
#include "image_session.h"
#include "qemu_json.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

using nlohmann::ordered_json;

struct CheckOptions {
  ImageSpec spec;
  OutputFormat output = OutputFormat::kHuman;
  CheckFix fix = CheckFix::kNone;
  bool quiet = false;
};

enum LongOnly { kOutput = kFirstOwnOption };

constexpr LongOption kLongOptions[] = {
    {"help", false, 'h'},        {"format", true, 'f'},     {"repair", true, 'r'},
    {"output", true, kOutput},   {"object", true, kObject}, {"image-opts", false, kImageOpts},
    {"force-share", false, 'U'},
};

void apply_check_option(std::string_view prog, const ParsedOption& opt, CheckOptions& o,
                        std::string& output) {
  if (apply_image_option(prog, opt, o.spec)) return;
  const std::string& arg = opt.arg;
  switch (opt.id) {
    case 'q':
      o.quiet = true;
      break;
    case kOutput:
      output = arg;
      break;
    case 'r':
      if (arg == "leaks") {
        o.fix = CheckFix::kLeaks;
      } else if (arg == "all") {
        o.fix = CheckFix::kAll;
      } else {
        usage_error(
            prog, fmt::format("Unknown option value for -r (expecting 'leaks' or 'all'): {}", arg));
      }
      break;
    case 'T': {
      auto mode = parse_cache_mode(arg);
      if (!mode) fail_exit(prog, fmt::format("Invalid source cache option: {}", arg));
      o.spec.cache = *mode;
      break;
    }
  }
}

CheckOptions parse_check_options(std::string_view prog, std::span<const std::string> args) {
  CheckOptions o;
  std::string output = "human";
  OptionParser parser(args, ":hf:r:T:qU", kLongOptions);
  while (auto opt = next_option(prog, parser)) apply_check_option(prog, *opt, o, output);
  o.spec.filename = image_filename_operand(prog, parser);
  o.spec.read_only = o.fix == CheckFix::kNone;
  o.output = output_format_option(prog, output);
  return o;
}

// QAPI ImageCheck, fields in QAPI order; counts that are zero are left out, as qemu-img does.
ordered_json check_json(const std::string& filename, std::string_view format,
                        const CheckResult& r) {
  ordered_json j;
  j["filename"] = filename;
  j["format"] = format;
  j["check-errors"] = r.check_errors;
  const auto put = [&j](const char* key, auto value) {
    if (value != 0) j[key] = value;
  };
  put("image-end-offset", r.image_end_offset);
  put("corruptions", r.corruptions);
  put("leaks", r.leaks);
  put("corruptions-fixed", r.corruptions_fixed);
  put("leaks-fixed", r.leaks_fixed);
  put("total-clusters", r.total_clusters);
  put("allocated-clusters", r.allocated_clusters);
  put("fragmented-clusters", r.fragmented_clusters);
  put("compressed-clusters", r.compressed_clusters);
  return j;
}

// qemu-img's dump_human_image_check.
std::string human_report(const CheckResult& r) {
  std::string out;
  if (r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0) {
    out += "No errors were found on the image.\n";
  } else {
    if (r.corruptions != 0) {
      out += fmt::format(
          "\n{} errors were found on the image.\n"
          "Data may be corrupted, or further writes to the image may corrupt it.\n",
          r.corruptions);
    }
    if (r.leaks != 0) {
      out += fmt::format(
          "\n{} leaked clusters were found on the image.\n"
          "This means waste of disk space, but no harm to data.\n",
          r.leaks);
    }
    if (r.check_errors != 0) {
      out += fmt::format("\n{} internal errors have occurred during the check.\n", r.check_errors);
    }
  }
  if (r.total_clusters != 0 && r.allocated_clusters != 0) {
    const double allocated = static_cast<double>(r.allocated_clusters);
    out +=
        fmt::format("{}/{} = {:.2f}% allocated, {:.2f}% fragmented, {:.2f}% compressed clusters\n",
                    r.allocated_clusters, r.total_clusters,
                    allocated * 100.0 / static_cast<double>(r.total_clusters),
                    static_cast<double>(r.fragmented_clusters) * 100.0 / allocated,
                    static_cast<double>(r.compressed_clusters) * 100.0 / allocated);
  }
  if (r.image_end_offset != 0) out += fmt::format("Image end offset: {}\n", r.image_end_offset);
  return out;
}

// Runs the check (and, after repairs, the second one). Returns the exit status.
int check_node(std::string_view prog, const CheckOptions& o, EventLoop& loop, Node& node) {
  auto first = run_sync(loop, node.driver().check(o.fix));
  if (!first && first.error().err() == ENOTSUP) {
    report_error(prog, "This image format does not support checks");
    return 63;
  }
  Result<CheckResult> result = first;
  if (first && (first->corruptions_fixed != 0 || first->leaks_fixed != 0)) {
    if (o.output == OutputFormat::kHuman && !o.quiet) {
      fmt::print(
          "The following inconsistencies were found and repaired:\n\n"
          "    {} leaked clusters\n    {} corruptions\n\n"
          "Double checking the fixed image now...\n",
          first->leaks_fixed, first->corruptions_fixed);
    }
    result = run_sync(loop, node.driver().check(CheckFix::kNone));
    if (result) {
      result->leaks_fixed = first->leaks_fixed;
      result->corruptions_fixed = first->corruptions_fixed;
    }
  }
  if (!result) {
    report_error(prog, fmt::format("Check failed: {}", std::strerror(result.error().err())));
    return 1;
  }
  if (!o.quiet) {
    if (o.output == OutputFormat::kJson) {
      fmt::print("{}\n",
                 qemu_json_pretty(check_json(o.spec.filename, node.driver_class().name, *result)));
    } else {
      fmt::print("{}", human_report(*result));
    }
  }
  if (result->check_errors != 0) {
    report_error(prog, "Check failed");
    return 1;
  }
  if (result->corruptions != 0) return 2;
  return result->leaks != 0 ? 3 : 0;
}

}  // namespace

int run_check(std::string_view prog, std::span<const std::string> args) {
  const CheckOptions o = parse_check_options(prog, args);
  Perm perm = Perm::kConsistentRead;
  if (o.fix != CheckFix::kNone) perm |= Perm::kWrite;
  ImageSession session;
  if (!session.open(prog, o.spec, perm, Perm::kAll)) return 1;
  return check_node(prog, o, session.loop(), session.node());
}

}  // namespace strata::tools::img
