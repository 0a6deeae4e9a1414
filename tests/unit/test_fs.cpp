#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "util/fs.h"

using namespace qforge;
namespace fs = std::filesystem;

TEST(RemoveTree, RemovesEverythingUnderThePathAndNothingALinkPointsTo) {
  const fs::path root = fs::temp_directory_path() / ("qforge-remove-tree-" + std::to_string(::getpid()));
  const fs::path outside = root.string() + "-outside.txt";
  fs::create_directories(root / "a" / "b");
  std::ofstream(root / "a" / "b" / "deep.bin") << "x";
  std::ofstream(root / "top.txt") << "y";
  std::ofstream(outside) << "kept";
  fs::create_symlink(outside, root / "a" / "link");
  fs::create_directory_symlink(fs::temp_directory_path(), root / "dir_link");

  remove_tree(root.string());

  EXPECT_FALSE(fs::exists(fs::symlink_status(root)));
  EXPECT_TRUE(fs::exists(outside));  // a link is removed, not followed
  EXPECT_TRUE(fs::exists(fs::temp_directory_path()));
  fs::remove(outside);
  remove_tree(root.string());  // nothing there: nothing to do, no error
}
