// A minimal parallel-for over an index range, on std::thread.
//
// Kernels stay free of framework thread pools so every front door can use
// them as they are. Threads are started per call; with the work sizes of a
// convolution layer (hundreds of microseconds and up) their start-up cost
// is small, and `grain` keeps small problems on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace swcnn {

// Number of worker threads to use (SWCNN_NUM_THREADS overrides the default,
// which is the number of hardware threads).
int num_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, count), each of at
// least `grain` items (except the last), from up to num_threads() threads.
template <typename Fn>
void parallel_for(int64_t count, int64_t grain, Fn&& fn) {
  if (count <= 0) return;
  const int64_t chunks =
      std::min<int64_t>(num_threads(), std::max<int64_t>(1, count / std::max<int64_t>(grain, 1)));
  if (chunks <= 1) {
    fn(int64_t{0}, count);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(chunks - 1);
  const int64_t step = (count + chunks - 1) / chunks;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t begin = c * step, end = std::min(count, begin + step);
    if (begin < end) workers.emplace_back([&fn, begin, end] { fn(begin, end); });
  }
  fn(int64_t{0}, std::min(count, step));
  for (auto& worker : workers) worker.join();
}

}  // namespace swcnn
