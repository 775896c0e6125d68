// qcow2's `qemu-img create -o` options: their list (names, types, help, defaults in QEMU 7.2's
// order) and their conversion to CreateOptions with QEMU's QAPI visitor texts.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>

#include "format/qcow2/qcow2_create.h"

namespace strata::qcow2 {

namespace {

using Type = CreateOptionType;

// qcow2's create options and then file-posix's, in QEMU 7.2's order (the order of the
// "Formatting ..." line).
constexpr CreateOptionDesc kOptions[] = {
    {"encryption", Type::kBool,
     "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", ""},
    {"encrypt.format", Type::kString, "Encrypt the image, format choices: 'aes', 'luks'", ""},
    {"encrypt.key-secret", Type::kString, "ID of secret providing qcow AES key or LUKS passphrase",
     ""},
    {"encrypt.cipher-alg", Type::kString, "Name of encryption cipher algorithm", ""},
    {"encrypt.cipher-mode", Type::kString, "Name of encryption cipher mode", ""},
    {"encrypt.ivgen-alg", Type::kString, "Name of IV generator algorithm", ""},
    {"encrypt.ivgen-hash-alg", Type::kString, "Name of IV generator hash algorithm", ""},
    {"encrypt.hash-alg", Type::kString, "Name of encryption hash algorithm", ""},
    {"encrypt.iter-time", Type::kNumber, "Time to spend in PBKDF in milliseconds", ""},
    {"cluster_size", Type::kSize, "qcow2 cluster size", "65536"},
    {"extended_l2", Type::kBool, "Extended L2 tables", "off"},
    {"preallocation", Type::kString,
     "Preallocation mode (allowed values: off, metadata, falloc, full)", ""},
    {"compression_type", Type::kString, "Compression method used for image cluster compression",
     "zlib"},
    {"size", Type::kSize, "Virtual disk size", ""},
    {"compat", Type::kString, "Compatibility level (v2 [0.10] or v3 [1.1])", ""},
    {"backing_file", Type::kString, "File name of a base image", ""},
    {"backing_fmt", Type::kString, "Image format of the base image", ""},
    {"data_file", Type::kString, "File name of an external data file", ""},
    {"data_file_raw", Type::kBool, "The external data file must stay valid as a raw image", ""},
    {"lazy_refcounts", Type::kBool, "Postpone refcount updates", "off"},
    {"refcount_bits", Type::kNumber, "Width of a reference count entry in bits", "16"},
    {"nocow", Type::kBool, "Turn off copy-on-write (valid only on btrfs)", ""},
    {"extent_size_hint", Type::kSize, "Extent size hint for the image file, 0 to disable", ""},
};
constexpr size_t kFormatOptionCount = 21;

// QEMU's BlockdevDriver names (qapi/block-core.json, 7.2), for backing-fmt.
constexpr std::string_view kBlockdevDrivers[] = {
    "blkdebug",     "blklogwrites", "blkreplay", "blkverify",
    "bochs",        "cloop",        "compress",  "copy-before-write",
    "copy-on-read", "dmg",          "file",      "snapshot-access",
    "ftp",          "ftps",         "gluster",   "host_cdrom",
    "host_device",  "http",         "https",     "iscsi",
    "libnfs",       "luks",         "nbd",       "nfs",
    "null-aio",     "null-co",      "nvme",      "parallels",
    "preallocate",  "qcow",         "qcow2",     "qed",
    "quorum",       "raw",          "rbd",       "replication",
    "ssh",          "throttle",     "vdi",       "vhdx",
    "vmdk",         "vpc",          "vvfat",
};

const std::string* value_of(const CreateOptionValues& values, std::string_view key) {
  auto it = values.find(key);
  return it == values.end() ? nullptr : &it->second;
}

Result<PreallocMode> prealloc_from(const std::string& text) {
  for (PreallocMode m :
       {PreallocMode::kOff, PreallocMode::kMetadata, PreallocMode::kFalloc, PreallocMode::kFull}) {
    if (prealloc_mode_name(m) == text) return m;
  }
  return fail(EINVAL, "Parameter 'preallocation' does not accept value '{}'", text);
}

// Turns one validated number or size text into its value.
uint64_t number_of(const std::string& text) { return std::strtoull(text.c_str(), nullptr, 10); }

Result<void> create_from_values(const std::string& filename, const CreateOptionValues& values) {
  Result<CreateOptions> options = create_options_from_values(values);
  if (!options) {
    // QEMU has created the files by then, and removes them when the options are refused.
    ::unlink(filename.c_str());
    if (const std::string* d = value_of(values, "data_file")) ::unlink(d->c_str());
    return options.error();
  }
  Result<CreateLayout> layout = create_qcow2(filename, std::move(*options));
  if (!layout) return layout.error();
  return {};
}

}  // namespace

Result<CreateOptions> create_options_from_values(const CreateOptionValues& values) {
  CreateOptions o;
  if (const std::string* v = value_of(values, "encrypt.format")) {
    return fail(ENOTSUP, "Strata does not create encrypted images (encrypt.format={})", *v);
  }
  if (const std::string* v = value_of(values, "encryption"); v && parse_create_bool(*v) == true) {
    return fail(ENOTSUP, "Strata does not create encrypted images (encryption=on)");
  }
  if (const std::string* v = value_of(values, "data_file")) o.data_file = *v;
  if (const std::string* v = value_of(values, "data_file_raw")) {
    o.data_file_raw = parse_create_bool(*v).value_or(false);
  }
  if (const std::string* v = value_of(values, "extended_l2")) {
    o.extended_l2 = parse_create_bool(*v).value_or(false);
  }
  if (const std::string* v = value_of(values, "size")) o.size = number_of(*v);
  if (const std::string* v = value_of(values, "compat")) {
    // compat=0.10/1.1 become version=v2/v3 before QEMU's visitor sees them.
    if (*v == "0.10" || *v == "v2") {
      o.version = 2;
    } else if (*v == "1.1" || *v == "v3") {
      o.version = 3;
    } else {
      return fail(EINVAL, "Parameter 'version' does not accept value '{}'", *v);
    }
  }
  if (const std::string* v = value_of(values, "backing_file")) o.backing_file = *v;
  if (const std::string* v = value_of(values, "backing_fmt")) {
    if (std::find(std::begin(kBlockdevDrivers), std::end(kBlockdevDrivers), *v) ==
        std::end(kBlockdevDrivers)) {
      return fail(EINVAL, "Parameter 'backing-fmt' does not accept value '{}'", *v);
    }
    o.backing_fmt = *v;
  }
  if (const std::string* v = value_of(values, "cluster_size")) o.cluster_size = number_of(*v);
  if (const std::string* v = value_of(values, "preallocation")) {
    Result<PreallocMode> mode = prealloc_from(*v);
    if (!mode) return mode.error();
    o.preallocation = *mode;
  }
  if (const std::string* v = value_of(values, "lazy_refcounts")) {
    o.lazy_refcounts = parse_create_bool(*v).value_or(false);
  }
  if (const std::string* v = value_of(values, "refcount_bits")) o.refcount_bits = number_of(*v);
  if (const std::string* v = value_of(values, "compression_type")) {
    if (*v == "zlib") {
      o.compression_type = CompressionType::kZlib;
    } else if (*v == "zstd") {
      o.compression_type = CompressionType::kZstd;
    } else {
      return fail(EINVAL, "Parameter 'compression-type' does not accept value '{}'", *v);
    }
  }
  return o;
}

const ImageCreator kQcow2Creator = {"qcow2", kOptions, kFormatOptionCount, true,
                                    create_from_values};

}  // namespace strata::qcow2
