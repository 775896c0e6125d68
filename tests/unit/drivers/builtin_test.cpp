#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "strata/builtin_drivers.h"

namespace strata {
namespace {

TEST(BuiltinDrivers, ListsEachDriverOnce) {
  std::vector<std::string> names;
  for (const DriverClass* cls : builtin_drivers()) {
    ASSERT_NE(cls, nullptr);
    ASSERT_NE(cls->open, nullptr) << cls->name;
    names.emplace_back(cls->name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"file", "null-co", "memory", "raw", "qcow2",
                                                 "fault-inject", "copy-on-read"}));
}

TEST(BuiltinDrivers, Kinds) {
  for (const DriverClass* cls : builtin_drivers()) {
    DriverKind want =
        (cls->name == "raw" || cls->name == "qcow2") ? DriverKind::kFormat : DriverKind::kProtocol;
    if (cls->name == "fault-inject" || cls->name == "copy-on-read") want = DriverKind::kFilter;
    EXPECT_EQ(cls->kind, want) << cls->name;
  }
}

}  // namespace
}  // namespace strata
