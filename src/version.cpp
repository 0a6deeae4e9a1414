#include "qforge/version.h"

#include <hdf5.h>
#include <mpi.h>
#include <torch/version.h>

#include "qforge_version_config.h"
#if QFORGE_HAVE_NCCL
#include <nccl.h>
#endif

namespace qforge {

std::string version() { return QFORGE_VERSION; }

std::string build_info() {
  char mpi_lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
  int len = 0;
  MPI_Get_library_version(mpi_lib, &len);
  std::string mpi(mpi_lib, static_cast<size_t>(len));
  if (auto comma = mpi.find(','); comma != std::string::npos) mpi.resize(comma);
  std::string nccl = "NCCL: not built (LibTorch without CUDA)";
#if QFORGE_HAVE_NCCL
  int code = 0;
  ncclGetVersion(&code);
  nccl = "NCCL " + std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." +
         std::to_string(code % 100);
#endif
  return "qforge " + version() + "\nLibTorch " + TORCH_VERSION +
         (torch::cuda::is_available() ? " (CUDA available)" : " (CPU)") + "\n" + mpi + "\nHDF5 " +
         std::to_string(H5_VERS_MAJOR) + "." + std::to_string(H5_VERS_MINOR) + "." + std::to_string(H5_VERS_RELEASE) +
         "\n" + nccl;
}

}  // namespace qforge
