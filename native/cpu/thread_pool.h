// A persistent pool of worker threads shared by every CPU kernel.
//
// Threads are started once (lazily, on first use) and sized from the CPUs
// this process may run on (sched_getaffinity), capped at kMaxThreads;
// SWCNN_NUM_THREADS overrides the size. A kernel call hands the pool a
// count of independent items; the calling thread works too, so a pool of
// size n runs n - 1 workers and never oversubscribes the CPUs it was sized
// for. A call made while the pool is busy (a second Python thread, or XLA
// running two custom calls at once) or from inside a worker runs on the
// calling thread alone instead of waiting: no deadlock, no oversubscription.
//
// Failures never terminate the process: a worker that cannot start leaves a
// smaller pool, and an exception thrown by an item (bad_alloc, say) is
// caught and rethrown to the caller once the call has finished.
//
// A framework that lends its own threads installs a swcnn::Executor for the
// duration of a kernel call (swcnn/executor.h); the pool stays asleep then.
// With use_openmp_threads(true) (the torch backend) calls without an
// Executor run on the process's OpenMP team instead of the pool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

#include "swcnn/executor.h"

namespace swcnn {

// The number of threads a kernel call may use (the caller included).
int num_threads();

// Runs fn(i) for every i in [0, count), on up to num_threads() threads.
// Items are handed out dynamically, so callers must not depend on which
// thread runs which item. Rethrows the first exception an item threw.
void parallel_for_each(int64_t count, const std::function<void(int64_t)>& fn);

// Calls fn(begin, end) on disjoint chunks covering [0, count), one chunk per
// thread, each of at least `grain` items (except the last): small problems
// stay on the calling thread.
template <typename Fn>
void parallel_for(int64_t count, int64_t grain, Fn&& fn) {
  if (count <= 0) return;
  const int64_t chunks = std::min<int64_t>(
      num_threads(), std::max<int64_t>(1, count / std::max<int64_t>(grain, 1)));
  const int64_t step = (count + chunks - 1) / chunks;
  parallel_for_each(chunks, [&](int64_t chunk) {
    const int64_t begin = chunk * step, end = std::min(count, begin + step);
    if (begin < end) fn(begin, end);
  });
}

}  // namespace swcnn
