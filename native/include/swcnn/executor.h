// Threads a framework lends to the CPU kernels.
//
// By default the kernels run on swcnn's own persistent pool. A framework
// with an intra-op pool of its own (XLA hands FFI handlers one) installs an
// Executor for the duration of a kernel call; the call's items then run on
// the calling thread and on tasks scheduled there, and swcnn's pool stays
// asleep: one set of threads per process instead of two competing for the
// same CPUs.
//
// Example (a front door):
//   MyThreads threads(...);             // an Executor over the framework's pool
//   swcnn::ScopedExecutor scope(&threads);
//   swcnn::conv_forward_cpu(...);       // runs on the framework's threads
#pragma once

#include <cstdint>
#include <functional>

namespace swcnn {

// Another runtime's threads, lent to the kernels.
class Executor {
 public:
  virtual ~Executor() = default;
  // Threads the runtime runs tasks on (the kernels use the caller and at
  // most threads() - 1 tasks at a time).
  virtual int threads() const = 0;
  // Runs `task` on one of them, some time later (or now, on this thread).
  virtual void schedule(std::function<void()> task) = 0;
};

// While alive, kernel calls made on this thread run their items on
// `executor` (which must outlive the scope) instead of swcnn's pool.
class ScopedExecutor {
 public:
  explicit ScopedExecutor(Executor* executor);
  ~ScopedExecutor();
  ScopedExecutor(const ScopedExecutor&) = delete;
  ScopedExecutor& operator=(const ScopedExecutor&) = delete;

 private:
  Executor* previous_;
};

// How many parallel kernel steps have run on a lent Executor (or on OpenMP's
// threads) so far, in this process (for tests: the front doors that lend
// threads do lend them).
int64_t lent_parallel_calls();

// Kernel calls made with no Executor installed run on the threads of the
// OpenMP runtime already loaded in this process (torch's libgomp, found by
// name: swcnn never links or loads one) instead of swcnn's pool. Torch's
// OpenMP threads spin for a while after each of torch's own parallel ops; a
// second pool on the same CPUs would compete with them, so on the torch
// backend the kernels take those threads' turn. Returns whether an OpenMP
// runtime was found (false: swcnn's pool stays in use); `on` false goes back
// to the pool. The OpenMP runtime's own limits then apply: libgomp ends the
// process if it cannot start a thread, and a forked child must not use it.
bool use_openmp_threads(bool on);

// omp_get_max_threads() of the runtime in use (0 when none): lets the caller
// check that it is the runtime it expects (torch: torch.get_num_threads()).
int openmp_max_threads();

}  // namespace swcnn
