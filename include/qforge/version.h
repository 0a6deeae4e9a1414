#pragma once
#include <string>

namespace qforge {
// The project version, e.g. "0.1.0".
std::string version();
// Versions of the libraries this build links (LibTorch, MPI, HDF5, yaml-cpp).
std::string build_info();
}  // namespace qforge
