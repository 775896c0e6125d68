// strata-img create: qemu-img create's command line, checks, "Formatting ..." line and errors
// (qemu-img.c img_create and block.c bdrv_img_create in QEMU 7.2):
//
//   create [-f fmt] [-o options] [-b backing_file [-F backing_fmt]] [-u] [-q] filename [size]
//
// The -o list is parsed as QemuOpts does it against the format's create options (strata/driver.h
// ImageCreator); the format's creator then does its own checks and writes the image. Unless -u
// is given, the backing file is opened (read-only, shared) to check it and to take the size
// from it when none is given. Strata never probes a format: without -F the backing file is
// refused as qemu-img 7.2 does, and only the "Detected format" hint looks at its first bytes.
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "image.h"
#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/driver.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

constexpr LongOption kLongOptions[] = {{"help", false, 'h'}, {"object", true, kObject}};

// An error of bdrv_img_create: reported as "<prog>: <filename>: <message>", then the hint.
struct CreateError {
  std::string message;
  std::string hint;  // printed as is after the message line (may lack a final newline)
};

// qemu_strtosz: decimal digits with an optional fraction, or 0x hex, and an optional suffix
// (B, k, M, G, T, P, E; any case). nullopt if malformed; UINT64_MAX marks a value out of range.
std::optional<uint64_t> parse_qemu_size(const std::string& text) {
  const char* s = text.c_str();
  if (!std::isdigit(static_cast<unsigned char>(*s))) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  uint64_t value = 0;
  double fraction = 0;
  const bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  value = std::strtoull(s, &end, hex ? 16 : 10);
  if (errno == ERANGE) return UINT64_MAX;
  if (!hex && *end == '.') {
    char* fend = nullptr;
    fraction = std::strtod(end, &fend);
    if (fend == end + 1 && !std::isdigit(static_cast<unsigned char>(end[1]))) fend = end + 1;
    if (std::memchr(end, 'e', size_t(fend - end)) || std::memchr(end, 'E', size_t(fend - end))) {
      return std::nullopt;
    }
    end = fend;
  }
  uint64_t mul = 1;
  static constexpr std::string_view kSuffixes = "BKMGTPE";
  if (*end != '\0') {
    const size_t pos = kSuffixes.find(char(std::toupper(static_cast<unsigned char>(*end))));
    if (pos == std::string_view::npos || (hex && pos != 0)) return std::nullopt;
    mul = uint64_t{1} << (10 * pos);
    ++end;
  }
  if (*end != '\0' || (mul == 1 && fraction != 0)) return std::nullopt;
  if (value > (UINT64_MAX - uint64_t(fraction * double(mul))) / mul) return UINT64_MAX;
  return value * mul + uint64_t(fraction * double(mul));
}

// qemu-img's is_valid_option_list: not empty, no leading comma, no unescaped trailing comma.
bool valid_option_list(const std::string& list) {
  if (list.empty() || list[0] == ',') return false;
  size_t i = list.size();
  while (i > 0 && list[i - 1] == ',') --i;
  return (list.size() - i) % 2 == 0;
}

// Splits QemuOpts text ("a=1,b=x,,y,c") into (key, value) pairs; a key alone means "on".
std::vector<std::pair<std::string, std::string>> split_options(const std::string& list) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string key, value;
  bool in_value = false;
  for (size_t i = 0; i <= list.size(); ++i) {
    if (i == list.size() || (list[i] == ',' && !(i + 1 < list.size() && list[i + 1] == ','))) {
      if (!key.empty() || in_value) out.emplace_back(key, in_value ? value : "on");
      key.clear(), value.clear(), in_value = false;
      continue;
    }
    char c = list[i];
    if (c == ',') ++i;  // ",," is a comma
    if (!in_value && c == '=') {
      in_value = true;
    } else {
      (in_value ? value : key) += c;
    }
  }
  return out;
}

bool has_help_option(const std::string& list) {
  for (const auto& [key, value] : split_options(list)) {
    if ((key == "help" || key == "?") && value == "on") return true;
  }
  return false;
}

std::string_view type_name(CreateOptionType type) {
  switch (type) {
    case CreateOptionType::kBool:
      return "bool (on/off)";
    case CreateOptionType::kSize:
      return "size";
    case CreateOptionType::kNumber:
      return "num";
    default:
      return "str";
  }
}

// qemu-img's print_block_option_help.
int print_option_help(std::string_view prog, const std::optional<std::string>& filename,
                      const std::string& format) {
  const ImageCreator* creator = find_image_creator(format);
  if (creator == nullptr) {
    report_error(prog, fmt::format("Unknown file format '{}'", format));
    return 1;
  }
  std::vector<CreateOptionDesc> opts(
      creator->options.begin(),
      creator->options.begin() +
          std::ptrdiff_t(filename ? creator->options.size() : creator->format_option_count));
  std::sort(opts.begin(), opts.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  if (filename) {
    fmt::print("Supported options:\n");
  } else {
    fmt::print("Supported {} options:\n", format);
  }
  for (const CreateOptionDesc& d : opts) {
    fmt::print("  {:<22} - {}\n", fmt::format("{}=<{}>", d.name, type_name(d.type)), d.help);
  }
  if (!filename) {
    fmt::print(
        "\nThe protocol level may support further options.\n"
        "Specify the target filename to include those options.\n");
  }
  return 0;
}

// qemu_opts_do_parse against the creator's options: names, and the syntax of each type.
// Sizes and numbers are stored as decimal digits; the last value given wins.
std::optional<CreateError> parse_values(const ImageCreator& creator, const std::string& list,
                                        CreateOptionValues& values) {
  for (const auto& option : split_options(list)) {
    const std::string& key = option.first;
    const std::string& value = option.second;
    auto desc = std::find_if(creator.options.begin(), creator.options.end(),
                             [&key](const CreateOptionDesc& d) { return d.name == key; });
    if (desc == creator.options.end()) {
      return CreateError{fmt::format("Invalid parameter '{}'", key), ""};
    }
    std::string stored = value;
    if (desc->type == CreateOptionType::kBool && !parse_create_bool(value)) {
      return CreateError{fmt::format("Parameter '{}' expects 'on' or 'off'", key), ""};
    }
    if (desc->type == CreateOptionType::kSize) {
      std::optional<uint64_t> size = parse_qemu_size(value);
      if (!size || *size == UINT64_MAX) {
        return CreateError{
            fmt::format("Parameter '{}' expects a non-negative number below 2^64", key),
            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
            "and exabytes, respectively.\n"};
      }
      stored = std::to_string(*size);
    }
    if (desc->type == CreateOptionType::kNumber) {
      char* end = nullptr;
      errno = 0;
      const uint64_t n = std::strtoull(value.c_str(), &end, 0);
      if (value.empty() || value[0] == '-' || *end != '\0' || errno != 0) {
        return CreateError{fmt::format("Parameter '{}' expects a number", key), ""};
      }
      stored = std::to_string(n);
    }
    values[key] = stored;
  }
  return std::nullopt;
}

// QEMU's qemu_opts_print: every option given or with a default, in the creator's order.
std::string formatting_line(const std::string& filename, const std::string& format,
                            const ImageCreator& creator, const CreateOptionValues& values) {
  std::string line = fmt::format("Formatting '{}', fmt={} ", filename, format);
  std::string_view sep;
  for (const CreateOptionDesc& d : creator.options) {
    auto it = values.find(d.name);
    std::string value = it != values.end() ? it->second : std::string(d.default_value);
    if (value.empty() && it == values.end()) continue;
    if (d.type == CreateOptionType::kString) {
      std::string escaped;
      for (char c : value) escaped += c == ',' ? std::string(",,") : std::string(1, c);
      value = escaped;
    }
    line += fmt::format("{}{}={}", sep, d.name, value);
    sep = " ";
  }
  return line;
}

// bdrv_get_full_backing_filename_from_filename: a relative backing name is relative to the
// directory of the new image.
std::string full_backing_name(const std::string& filename, const std::string& backing) {
  const size_t slash = filename.rfind('/');
  if (backing.empty() || backing[0] == '/' || slash == std::string::npos) return backing;
  return filename.substr(0, slash + 1) + backing;
}

// The format qemu-img would detect, for the "Detected format" hint only.
std::string detected_format(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "QFI\xfb", 4) == 0 ? "qcow2" : "raw";
}

// Opens the backing file as bdrv_img_create does; fills in the size when there is none.
std::optional<CreateError> check_backing(const std::string& filename, const std::string& backing,
                                         const std::string* backing_fmt,
                                         std::optional<uint64_t>& size) {
  const std::string full = full_backing_name(filename, backing);
  ImageSpec spec;
  spec.filename = full;
  spec.format = backing_fmt ? *backing_fmt : "raw";
  spec.read_only = true;
  spec.force_share = true;
  EventLoop loop;
  Engine engine(loop, builtin_drivers());
  auto image = open_image(loop, engine, spec, Perm::kConsistentRead, Perm::kAll);
  if (!image) {
    return CreateError{image.error().message(), "Could not open backing image.\n"};
  }
  const uint64_t length = image->node->size();
  close_image(loop, engine, *image);
  if (!backing_fmt) {
    return CreateError{"Backing file specified without backing format",
                       fmt::format("Detected format of {}.", detected_format(full))};
  }
  if (!size) size = length;
  return std::nullopt;
}

// file-posix gives a new file an extent size hint (XFS honours it); when the hint was asked for
// and the file system refuses it, qemu-img warns and goes on.
void apply_extent_size_hint(std::string_view prog, const std::string& filename,
                            const CreateOptionValues& values) {
  const auto it = values.find("extent_size_hint");
  if (it == values.end() || it->second == "0") return;
  const int fd = ::open(filename.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  fsxattr attr{};
  int r = ::ioctl(fd, FS_IOC_FSGETXATTR, &attr);
  if (r == 0) {
    attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
    attr.fsx_extsize = uint32_t(std::strtoull(it->second.c_str(), nullptr, 10));
    r = ::ioctl(fd, FS_IOC_FSSETXATTR, &attr);
  }
  if (r < 0) {
    report_error(prog,
                 fmt::format("warning: Failed to set extent size hint: {}", std::strerror(errno)));
  }
  ::close(fd);
}

struct CreateArgs {
  std::string format = "raw";
  std::string options;
  std::optional<std::string> backing_file;
  std::optional<std::string> backing_fmt;
  bool no_backing = false;  // -u
  bool quiet = false;
};

// bdrv_img_create, up to and including the creator's call.
std::optional<CreateError> img_create(std::string_view prog, const std::string& filename,
                                      const CreateArgs& a, std::optional<uint64_t> size) {
  const ImageCreator* creator = find_image_creator(a.format);
  if (creator == nullptr) return CreateError{fmt::format("Unknown file format '{}'", a.format), ""};
  CreateOptionValues values;
  if (!a.options.empty()) {
    if (auto err = parse_values(*creator, a.options, values)) return err;
  }
  if (values.count("size") != 0) {
    if (size) return CreateError{"The image size must be specified only once", ""};
    size = std::strtoull(values["size"].c_str(), nullptr, 10);
  }
  if (a.backing_file) {
    if (!creator->supports_backing) {
      return CreateError{fmt::format("Backing file not supported for file format '{}'", a.format),
                         ""};
    }
    values["backing_file"] = *a.backing_file;
  }
  if (a.backing_fmt) {
    if (!creator->supports_backing) {
      return CreateError{
          fmt::format("Backing file format not supported for file format '{}'", a.format), ""};
    }
    values["backing_fmt"] = *a.backing_fmt;
  }
  const auto backing = values.find("backing_file");
  const auto backing_fmt = values.find("backing_fmt");
  const std::string* fmt_value = backing_fmt == values.end() ? nullptr : &backing_fmt->second;
  if (backing != values.end()) {
    if (backing->second == filename) {
      return CreateError{
          "Error: Trying to create an image with the same filename as the backing file", ""};
    }
    if (backing->second.empty()) {
      return CreateError{"Expected backing file name, got empty string", ""};
    }
    if (!a.no_backing) {
      if (auto err = check_backing(filename, backing->second, fmt_value, size)) return err;
    } else if (fmt_value == nullptr) {
      return CreateError{"Backing file specified without backing format", ""};
    }
  }
  if (!size) return CreateError{"Image creation needs a size parameter", ""};
  values["size"] = std::to_string(*size);
  if (!a.quiet) {
    fmt::print("{}\n", formatting_line(filename, a.format, *creator, values));
    std::fflush(stdout);
  }
  Result<void> created = creator->create(filename, values);
  if (created) {
    apply_extent_size_hint(prog, filename, values);
    return std::nullopt;
  }
  if (created.error().err() == EFBIG) {
    const auto cs = values.find("cluster_size");
    const bool hint = cs != values.end() && cs->second != "0";
    return CreateError{fmt::format("The image size is too large for file format '{}'{}", a.format,
                                   hint ? " (try using a larger cluster size)" : ""),
                       ""};
  }
  return CreateError{created.error().message(), created.error().hint()};
}

}  // namespace

int run_create(std::string_view prog, std::span<const std::string> args) {
  CreateArgs a;
  OptionParser parser(args, ":F:b:f:ho:qu", kLongOptions);
  while (auto opt = next_option(prog, parser)) {
    const std::string& arg = opt->arg;
    switch (opt->id) {
      case 'h':
        help(prog);
      case 'F':
        a.backing_fmt = arg;
        break;
      case 'b':
        a.backing_file = arg;
        break;
      case 'f':
        a.format = arg;
        break;
      case 'o':
        if (!valid_option_list(arg)) fail_exit(prog, fmt::format("Invalid option list: {}", arg));
        a.options = a.options.empty() ? arg : a.options + "," + arg;
        break;
      case 'q':
        a.quiet = true;
        break;
      case 'u':
        a.no_backing = true;
        break;
      case kObject:
        fail_exit(prog, "--object is not supported by strata-img");
    }
  }
  const std::vector<std::string>& rest = parser.operands();
  if (!a.options.empty() && has_help_option(a.options)) {
    return print_option_help(prog, rest.empty() ? std::nullopt : std::optional(rest[0]), a.format);
  }
  if (rest.empty()) usage_error(prog, "Expecting image file name");
  std::optional<uint64_t> size;
  if (rest.size() >= 2) {
    // qemu_strtosz's syntax (fractions, hex), qemu-img's complaints.
    const std::optional<uint64_t> v = parse_qemu_size(rest[1]);
    if (!v) size_option_error(prog, "image size", SizeArgError::kInvalid, INT64_MAX);
    if (*v > uint64_t(INT64_MAX)) {
      size_option_error(prog, "image size", SizeArgError::kTooLarge, INT64_MAX);
    }
    size = *v;
  }
  if (rest.size() > 2) usage_error(prog, fmt::format("Unexpected argument: {}", rest[2]));
  if (auto err = img_create(prog, rest[0], a, size)) {
    fmt::print(stderr, "{}: {}: {}\n{}", prog, rest[0], err->message, err->hint);
    return 1;
  }
  return 0;
}

}  // namespace strata::tools::img
