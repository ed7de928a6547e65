#include "threads.h"

#include <omp.h>
#include <pthread.h>

#include <mutex>

namespace wsq {

static void in_forked_child() {
  // Only sets the calling thread's nthreads ICV: it touches no pool state, so it is safe here.
  omp_set_num_threads(1);
}

void install_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, in_forked_child); });
}

int openmp_threads() { return omp_get_max_threads(); }

}  // namespace wsq
