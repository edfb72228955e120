// Splitting a batch into blocks of columns, run one after the other or, when the program is
// compiled with OpenMP and Eigen is allowed more than one thread, on several threads.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "nflow/detail/types.hpp"

namespace nflow::detail {

/// Calls f(first_column, column_count) for consecutive blocks of at most `block` columns
/// covering [0, cols). The blocks do not depend on the thread count, so neither does any
/// result. With OpenMP and Eigen::nbThreads() > 1 (and not already inside a parallel region)
/// the blocks are shared among Eigen::nbThreads() threads; an exception thrown by f on any
/// thread is rethrown on the calling thread after the others finish.
template <class F>
void for_each_block(Index cols, Index block, F&& f) {
  const Index blocks = block > 0 ? (cols + block - 1) / block : 0;
#ifdef _OPENMP
  const int threads = Eigen::nbThreads();
  if (blocks > 1 && threads > 1 && !omp_in_parallel()) {
    std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::min <Index>(threads, blocks))
    for (Index k = 0; k < blocks; ++k) {
      try {
        f(k * block, std::min(block, cols - k * block));
      } catch (...) {
#pragma omp critical(nflow_for_each_block)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  for (Index k = 0; k < blocks; ++k)
    f(k * block, std::min(block, cols - k * block));
}

}  // namespace nflow::detail
