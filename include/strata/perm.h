// Permissions and child roles: the vocabulary of the block graph.
//
// A permission set is attached to every edge: `perm` is what the parent uses, `shared` what it
// lets other parents of the same node use. The bit values are QEMU's, because they also name
// the byte offsets of image locks (100 + bit, 200 + bit) that Strata and QEMU processes check
// against each other. 0x10 (the removed GRAPH_MOD) is reserved.
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

enum class Perm : uint8_t {
  kNone = 0,
  kConsistentRead = 0x1,
  kWrite = 0x2,
  kWriteUnchanged = 0x4,
  kResize = 0x8,
  kAll = 0xf,
};

constexpr Perm operator|(Perm a, Perm b) {
  return static_cast<Perm>(static_cast<uint8_t>(a) | static_cast<uint8_t>(b));
}
constexpr Perm operator&(Perm a, Perm b) {
  return static_cast<Perm>(static_cast<uint8_t>(a) & static_cast<uint8_t>(b));
}
constexpr Perm operator~(Perm a) {
  return static_cast<Perm>(~static_cast<uint8_t>(a) & static_cast<uint8_t>(Perm::kAll));
}
constexpr Perm& operator|=(Perm& a, Perm b) { return a = a | b; }
constexpr Perm& operator&=(Perm& a, Perm b) { return a = a & b; }
// True if every bit of `b` is in `a`.
constexpr bool has_all(Perm a, Perm b) { return (a & b) == b; }
// True if any bit of `b` is in `a`.
constexpr bool has_any(Perm a, Perm b) { return (a & b) != Perm::kNone; }
constexpr uint8_t bits(Perm p) { return static_cast<uint8_t>(p); }

// Permissions that make storage need write access.
constexpr Perm kWritePerms = Perm::kWrite | Perm::kWriteUnchanged | Perm::kResize;

// "write, resize": the names QEMU uses in error messages, lowest bit first.
std::string perm_names(Perm p);
// "write", "resize": the QAPI names (BlockPermission), lowest bit first.
std::string perm_qapi_name(Perm single_bit);

// What a child is to its parent (QEMU's BdrvChildRole bits).
enum class ChildRole : uint8_t {
  kNone = 0,
  kData = 0x1,      // stores guest data
  kMetadata = 0x2,  // stores metadata the format driver may write on its own
  kFiltered = 0x4,  // shows exactly the parent's data (filters, raw without offset/size)
  kCow = 0x8,       // the backing child
  kPrimary = 0x10,  // the child whose filename best names the parent
  kImage = kData | kMetadata | kPrimary,
};
constexpr ChildRole operator|(ChildRole a, ChildRole b) {
  return static_cast<ChildRole>(static_cast<uint8_t>(a) | static_cast<uint8_t>(b));
}
constexpr ChildRole operator&(ChildRole a, ChildRole b) {
  return static_cast<ChildRole>(static_cast<uint8_t>(a) & static_cast<uint8_t>(b));
}
constexpr bool has_role(ChildRole roles, ChildRole r) { return (roles & r) != ChildRole::kNone; }

// "DATA|METADATA|PRIMARY", for graph dumps.
std::string role_names(ChildRole roles);

}  // namespace strata
