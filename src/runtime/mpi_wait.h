// Waiting for a non-blocking MPI collective with a deadline: a blocking call
// would wait forever on a peer behind a broken link, since TCP holds a silent
// connection open for many minutes.
#pragma once
#include <mpi.h>

#include <chrono>
#include <memory>
#include <string>

namespace qforge {

// Polls `request` until it completes or `timeout` passes (zero: no deadline),
// answering other ranks' peer probes meanwhile. Past the deadline the request
// cannot be cancelled (MPI forbids it for collectives): `buffers` are kept
// alive for good, as MPI may still write them, and a LibraryError names the
// call, this rank and host, and the ranks that no longer answer.
void wait_for_collective(MPI_Request& request, std::chrono::milliseconds timeout, const std::string& what,
                         std::shared_ptr<const void> buffers);

}  // namespace qforge
