// One check macro for MPI: file:line, rank, host and MPI's own error text.
#pragma once
#include <mpi.h>

#include "qforge/errors.h"

#define QFORGE_MPI_CHECK(call)                                                                             \
  do {                                                                                                     \
    const int qforge_mpi_rc = (call);                                                                      \
    if (qforge_mpi_rc != MPI_SUCCESS) {                                                                    \
      char qforge_mpi_text[MPI_MAX_ERROR_STRING] = "";                                                     \
      int qforge_mpi_len = 0;                                                                              \
      MPI_Error_string(qforge_mpi_rc, qforge_mpi_text, &qforge_mpi_len);                                   \
      throw ::qforge::LibraryError(std::string("MPI error in ") + #call + " at " +                         \
                                   ::qforge::error_location(__FILE__, __LINE__) + ": " + qforge_mpi_text); \
    }                                                                                                      \
  } while (0)
