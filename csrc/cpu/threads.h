// OpenMP and fork(): GNU libgomp's worker pool does not survive fork(), so a kernel that opens a
// parallel region in a forked child (ProcessPoolExecutor's default start method on Linux) waits
// forever for threads that no longer exist. The child handler caps the child at one thread, as
// PyTorch does for its own pool; parallel regions then run on the forking thread alone.
#pragma once

namespace wsq {

// Registers the pthread_atfork child handler (idempotent; called when wsq._C is imported).
void install_fork_handler();

// Threads the next parallel region of wsq's kernels may use (omp_get_max_threads of the OpenMP
// runtime wsq._C is bound to: torch's own when both load the same libgomp.so.1).
int openmp_threads();

}  // namespace wsq
