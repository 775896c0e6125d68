#include "strata/perm.h"

#include <array>
#include <string_view>
#include <utility>

namespace strata {
namespace {

struct PermName {
  Perm bit;
  std::string_view message_name;
  std::string_view qapi_name;
};
constexpr std::array<PermName, 4> kPermNames{{
    {Perm::kConsistentRead, "consistent read", "consistent-read"},
    {Perm::kWrite, "write", "write"},
    {Perm::kWriteUnchanged, "write unchanged", "write-unchanged"},
    {Perm::kResize, "resize", "resize"},
}};

}  // namespace

std::string perm_names(Perm p) {
  std::string out;
  for (const PermName& n : kPermNames) {
    if (!has_any(p, n.bit)) continue;
    if (!out.empty()) out += ", ";
    out += n.message_name;
  }
  return out;
}

std::string perm_qapi_name(Perm single_bit) {
  for (const PermName& n : kPermNames) {
    if (n.bit == single_bit) return std::string(n.qapi_name);
  }
  return "unknown";
}

std::string role_names(ChildRole roles) {
  static constexpr std::array<std::pair<ChildRole, std::string_view>, 5> kNames{{
      {ChildRole::kData, "DATA"},
      {ChildRole::kMetadata, "METADATA"},
      {ChildRole::kFiltered, "FILTERED"},
      {ChildRole::kCow, "COW"},
      {ChildRole::kPrimary, "PRIMARY"},
  }};
  std::string out;
  for (const auto& [bit, name] : kNames) {
    if (!has_role(roles, bit)) continue;
    if (!out.empty()) out += "|";
    out += name;
  }
  return out;
}

}  // namespace strata
