#include "thread_pool.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace swcnn {
namespace {

// More threads than this gain nothing on the layer sizes of a CNN and
// cost memory (each keeps its own scratch buffers).
constexpr int kMaxThreads = 64;

int configured_threads() {
  if (const char* env = std::getenv("SWCNN_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && n > 0) return static_cast<int>(std::min<long>(n, kMaxThreads));
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    return std::clamp(CPU_COUNT(&set), 1, kMaxThreads);
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, kMaxThreads);
}

// The items of one parallel call, taken by every thread that joins it.
struct Items {
  std::atomic<int64_t> next{0};       // the next item to hand out
  std::atomic<int64_t> remaining{0};  // items not yet finished (or skipped)
  std::atomic<bool> failed{false};
  std::exception_ptr error;           // the first exception, guarded by the caller's mutex

  void reset(int64_t count) {
    next.store(0);
    remaining.store(count);
    failed.store(false);
    error = nullptr;
  }

  // Takes items until none are left; records the first exception and skips
  // the items after it. Whoever finishes the last item calls done.notify_one()
  // under `mutex`. `fn` is only used for an item taken: a thread that joins
  // after the call has ended finds none and never touches it.
  void drain(const std::function<void(int64_t)>* fn, int64_t count, std::mutex& mutex,
             std::condition_variable& done) {
    for (int64_t i; (i = next.fetch_add(1)) < count;) {
      if (!failed.load()) {
        try {
          (*fn)(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex);
          if (!error) error = std::current_exception();
          failed.store(true);
        }
      }
      if (remaining.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mutex);
        done.notify_one();
      }
    }
  }
};

class ThreadPool {
 public:
  explicit ThreadPool(int size) {
    for (int i = 1; i < size; ++i) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (...) {  // std::system_error, bad_alloc: run with the threads we have
        break;
      }
    }
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void run(int64_t count, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || inside_worker_ || count == 1 || workers_.empty()) {
      for (int64_t i = 0; i < count; ++i) fn(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      count_ = count;
      items_.reset(count);
      open_ = true;
      ++generation_;
    }
    wake_.notify_all();
    items_.drain(&fn, count, mutex_, done_);
    // Wait for the items still running on workers, and for workers that have
    // joined to leave; not for workers that have yet to wake (a woken thread
    // may wait milliseconds for a CPU that another runtime's threads hold):
    // closing the job makes them go back to sleep when they do wake.
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return items_.remaining.load() == 0 && inside_ == 0; });
    open_ = false;
    job_ = nullptr;
    if (items_.error) std::rethrow_exception(items_.error);
  }

 private:
  void work() {
    inside_worker_ = true;
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int64_t)>* job;
      int64_t count;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || (open_ && generation_ != seen); });
        if (stopping_) return;
        seen = generation_;
        job = job_;
        count = count_;
        ++inside_;  // the caller waits for this worker before it ends the job
      }
      items_.drain(job, count, mutex_, done_);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--inside_ == 0 && items_.remaining.load() == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;   // held by the one caller the pool serves at a time
  std::mutex mutex_;  // guards the fields below (the atomics are also read without it)
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t count_ = 0;
  Items items_;
  int inside_ = 0;     // workers that joined the open job and have not left it
  bool open_ = false;  // a job is being run: waking workers may join it
  uint64_t generation_ = 0;
  bool stopping_ = false;
  static thread_local bool inside_worker_;
};

thread_local bool ThreadPool::inside_worker_ = false;

ThreadPool& pool() {
  // Never destroyed: workers must not be joined during static destruction,
  // when a kernel might still run from another exiting thread.
  static ThreadPool* instance = new ThreadPool(configured_threads());
  return *instance;
}

thread_local Executor* current_executor = nullptr;
std::atomic<int64_t> lent_calls{0};
thread_local bool inside_lent_task = false;  // running an item on a lent thread

// One call's items on an Executor's threads. Shared, because a scheduled task
// may start after the call has returned (its runtime's threads were busy and
// the caller did every item): such a task finds no item left and touches
// nothing but this state.
struct LentJob {
  const std::function<void(int64_t)>* fn;
  int64_t count;
  Items items;
  std::mutex mutex;
  std::condition_variable done;

  LentJob(const std::function<void(int64_t)>* fn, int64_t count) : fn(fn), count(count) {
    items.reset(count);
  }
  void drain() { items.drain(fn, count, mutex, done); }
};

// What a lent thread (an Executor's task, an OpenMP team member) runs: the
// job's items, with nested parallel calls kept on this thread. noexcept:
// Items::drain catches what the items throw, and a failure of its own
// bookkeeping ends the process here rather than unwinding through another
// runtime's frames.
void drain_on_lent_thread(void* job) noexcept {
  const bool outer = inside_lent_task;
  inside_lent_task = true;
  static_cast<LentJob*>(job)->drain();
  inside_lent_task = outer;
}

void run_lent(Executor& executor, int64_t count, const std::function<void(int64_t)>& fn) {
  lent_calls.fetch_add(1, std::memory_order_relaxed);
  auto job = std::make_shared<LentJob>(&fn, count);
  const int64_t helpers = std::min<int64_t>(count, num_threads()) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    executor.schedule([job] { drain_on_lent_thread(job.get()); });
  }
  job->drain();
  std::unique_lock<std::mutex> lock(job->mutex);
  job->done.wait(lock, [&] { return job->items.remaining.load() == 0; });
  if (job->items.error) std::rethrow_exception(job->items.error);
}

// The entry points of an OpenMP runtime loaded by someone else (GCC's ABI,
// which libgomp and LLVM's/Intel's runtimes export): looked up by name in the
// process's global scope.
struct OpenMp {
  void (*parallel)(void (*body)(void*), void* data, unsigned threads, unsigned flags) = nullptr;
  int (*max_threads)() = nullptr;
};

std::mutex openmp_mutex;                     // serialises use_openmp_threads
std::atomic<const OpenMp*> openmp{nullptr};  // the runtime in use, or none

// One call's items on the OpenMP team of this thread: fork, drain, join. The
// job lives on this stack: every team thread has returned when the
// runtime's parallel call does.
void run_openmp(const OpenMp& runtime, int64_t count, const std::function<void(int64_t)>& fn) {
  lent_calls.fetch_add(1, std::memory_order_relaxed);
  LentJob job(&fn, count);
  const int64_t team = std::min<int64_t>(count, num_threads());  // the runtime's, capped
  runtime.parallel(&drain_on_lent_thread, &job, static_cast<unsigned>(team), 0);
  if (job.items.error) std::rethrow_exception(job.items.error);
}

}  // namespace

bool use_openmp_threads(bool on) {
  std::lock_guard<std::mutex> lock(openmp_mutex);
  openmp.store(nullptr);
  if (!on) return false;
  // Both entry points from the library that defines GOMP_parallel, so that
  // the team and its size come from one runtime.
  void* parallel = dlsym(RTLD_DEFAULT, "GOMP_parallel");
  Dl_info info;
  if (parallel == nullptr || dladdr(parallel, &info) == 0 || info.dli_fname == nullptr)
    return false;
  void* library = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (library == nullptr) return false;
  void* max_threads = dlsym(library, "omp_get_max_threads");
  dlclose(library);  // RTLD_NOLOAD took a reference; the library stays loaded by its owner
  if (max_threads == nullptr) return false;
  // Published once and never freed: a call on another thread may still read
  // an earlier one.
  auto* runtime = new OpenMp;
  runtime->parallel = reinterpret_cast<decltype(runtime->parallel)>(parallel);
  runtime->max_threads = reinterpret_cast<decltype(runtime->max_threads)>(max_threads);
  openmp.store(runtime);
  return true;
}

int openmp_max_threads() {
  const OpenMp* runtime = openmp.load();
  return runtime == nullptr ? 0 : runtime->max_threads();
}

ScopedExecutor::ScopedExecutor(Executor* executor) : previous_(current_executor) {
  current_executor = executor;
}

ScopedExecutor::~ScopedExecutor() { current_executor = previous_; }

int64_t lent_parallel_calls() { return lent_calls.load(std::memory_order_relaxed); }

int num_threads() {
  if (current_executor != nullptr)
    return std::clamp(current_executor->threads(), 1, kMaxThreads);
  if (const OpenMp* runtime = openmp.load()) return std::clamp(runtime->max_threads(), 1, kMaxThreads);
  return pool().size();
}

void parallel_for_each(int64_t count, const std::function<void(int64_t)>& fn) {
  if (count <= 0) return;
  if (inside_lent_task) {  // an item's own parallel call: this thread alone
    for (int64_t i = 0; i < count; ++i) fn(i);
  } else if (current_executor != nullptr) {
    run_lent(*current_executor, count, fn);
  } else if (const OpenMp* runtime = openmp.load(); runtime != nullptr && count > 1) {
    run_openmp(*runtime, count, fn);
  } else {
    pool().run(count, fn);
  }
}

}  // namespace swcnn
