// Futex wait/wake on a 32-bit word inside a SharedArrayBuffer, across processes.
//
// V8's Atomics.wait/notify keep their waiter lists inside the process, so they never wake a
// waiter in another process. These use futex(2) without FUTEX_PRIVATE_FLAG: the kernel keys a
// shared futex on the page's backing object, so a wake in one process reaches a wait in every
// process that maps the same segment.
//
// futexWait must never block the JS thread, so each pending wait sits on a thread of a small
// per-environment pool (not libuv's pool: a wait may last forever and would starve fs/dns work).
// The thread delivers the result through a thread-safe function, which resolves the promise on
// the calling thread's loop. Threads are reused while waits keep coming and exit after 30 s idle.
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_set>

#include "addon.h"

namespace ogurpchik {
namespace {

constexpr auto kIdleThreadLifetime = std::chrono::seconds(30);
// While stopping, wake the words of pending waits this often: a thread may be between checking
// the stop flag and entering FUTEX_WAIT, where one wake would be lost.
constexpr auto kStopRewakeInterval = std::chrono::milliseconds(5);

long Futex(int32_t* word, int op, int32_t value, const timespec* timeout) {
  return syscall(SYS_futex, word, op, value, timeout, nullptr, FUTEX_BITSET_MATCH_ANY);
}

int WakeWord(int32_t* word, int count) {
  return static_cast<int>(Futex(word, FUTEX_WAKE, count, nullptr));
}

struct Deadline {
  bool infinite = true;
  timespec at{};  // CLOCK_MONOTONIC, absolute: an EINTR retry keeps the original deadline
};

Deadline DeadlineAfter(double ms) {
  Deadline d;
  if (std::isinf(ms) || ms > 1e12) return d;  // > 30 years: no deadline
  d.infinite = false;
  clock_gettime(CLOCK_MONOTONIC, &d.at);
  long long ns = static_cast<long long>(ms * 1e6);
  d.at.tv_sec += ns / 1000000000LL;
  d.at.tv_nsec += ns % 1000000000LL;
  if (d.at.tv_nsec >= 1000000000L) {
    d.at.tv_sec += 1;
    d.at.tv_nsec -= 1000000000L;
  }
  return d;
}

enum class Outcome { kWoken, kNotEqual, kTimedOut, kCancelled, kFailed };

struct WaitResult {
  Outcome outcome;
  int err = 0;  // for kFailed
};

// Sleeps until woken, the word no longer holds `expected`, the deadline passes, or `cancel`
// turns true (checked on every return from the kernel). A wake may be spurious, as with any
// futex: callers re-check their condition.
WaitResult WaitOnWord(int32_t* word, int32_t expected, const Deadline& deadline,
                      const std::atomic<bool>* cancel) {
  for (;;) {
    if (cancel != nullptr && cancel->load(std::memory_order_acquire)) return {Outcome::kCancelled};
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (plain FUTEX_WAIT's is relative).
    long r = Futex(word, FUTEX_WAIT_BITSET, expected, deadline.infinite ? nullptr : &deadline.at);
    if (r == 0) return {Outcome::kWoken};
    switch (errno) {
      case EAGAIN:
        return {Outcome::kNotEqual};
      case ETIMEDOUT:
        return {Outcome::kTimedOut};
      case EINTR:
        continue;
      default:
        return {Outcome::kFailed, errno};
    }
  }
}

struct Word {
  std::shared_ptr<v8::BackingStore> store;
  int32_t* address;
};

// Reads { buffer: SharedArrayBuffer, byteOffset } into an aligned word address.
Word WordOption(Napi::Object options) {
  Napi::Env env = options.Env();
  v8::Local<v8::Value> buffer = ToV8(options.Get("buffer"));
  if (!buffer->IsSharedArrayBuffer()) {
    throw InvalidArgument(env, "option 'buffer' must be a SharedArrayBuffer");
  }
  std::shared_ptr<v8::BackingStore> store = buffer.As<v8::SharedArrayBuffer>()->GetBackingStore();
  if (store->ByteLength() < 4) throw InvalidArgument(env, "option 'buffer' is shorter than one word");
  double offset = IntegerOption(options, "byteOffset", 0, static_cast<double>(store->ByteLength() - 4), true);
  if (std::fmod(offset, 4) != 0) throw InvalidArgument(env, "option 'byteOffset' must be a multiple of 4");
  auto* address = reinterpret_cast<int32_t*>(static_cast<char*>(store->Data()) + static_cast<size_t>(offset));
  return {std::move(store), address};
}

int32_t ExpectedOption(Napi::Object options) {
  // Accept the int32 and uint32 spellings of a word (0xffffffff and -1 are the same bits).
  double n = IntegerOption(options, "expected", -2147483648.0, 4294967295.0, true);
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<int64_t>(n)));
}

double TimeoutOption(Napi::Object options) {
  Napi::Value value = options.Get("timeoutMs");
  if (value.IsUndefined()) return INFINITY;
  double ms = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : NAN;
  if (!(ms >= 0)) throw InvalidArgument(options.Env(), "option 'timeoutMs' must be a number >= 0 or Infinity");
  return ms;
}

const char* kResultOk = "ok";
const char* kResultNotEqual = "not-equal";
const char* kResultTimedOut = "timed-out";

}  // namespace

struct WaitJob {
  std::shared_ptr<v8::BackingStore> store;  // keeps the mapping alive while a thread sleeps on it
  int32_t* word;
  int32_t expected;
  Deadline deadline;
  napi_deferred deferred;
  WaitResult result{Outcome::kWoken};
};

class Waiters : public std::enable_shared_from_this<Waiters> {
 public:
  napi_threadsafe_function tsfn = nullptr;
  // Waits submitted and not yet settled; JS thread only. The thread-safe function holds the
  // loop open exactly while this is non-zero, like a timer would.
  size_t pending = 0;

  void Submit(WaitJob* job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
      // Every queued job needs a thread of its own (a wait can last forever): wake an idle one,
      // or start one when the idle threads are already spoken for by earlier queued jobs.
      if (queue_.size() <= idle_) {
        work_cv_.notify_one();
        return;
      }
      threads_++;
    }
    try {
      std::thread([self = shared_from_this()] { self->Run(); }).detach();
    } catch (const std::system_error&) {
      // No thread for this job: take it back so Stop() does not wait for a thread that never ran.
      std::lock_guard<std::mutex> lock(mu_);
      threads_--;
      queue_.erase(std::find(queue_.begin(), queue_.end(), job));
      throw;
    }
  }

  void Stop() {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    stop_flag_.store(true, std::memory_order_release);
    for (WaitJob* job : queue_) delete job;
    queue_.clear();
    work_cv_.notify_all();
    while (threads_ > 0) {
      // A spurious wake for anyone else sleeping on the same word; futex users tolerate those.
      for (WaitJob* job : active_) WakeWord(job->word, INT_MAX);
      exit_cv_.wait_for(lock, kStopRewakeInterval);
    }
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (queue_.empty() && !stopping_) {
        idle_++;
        bool got = work_cv_.wait_for(lock, kIdleThreadLifetime, [this] { return !queue_.empty() || stopping_; });
        idle_--;
        if (!got) break;
      }
      if (stopping_) break;
      WaitJob* job = queue_.front();
      queue_.pop_front();
      active_.insert(job);
      lock.unlock();
      job->result = WaitOnWord(job->word, job->expected, job->deadline, &stop_flag_);
      lock.lock();
      active_.erase(job);
      if (stopping_) {
        delete job;  // its environment is going away; nobody is left to settle the promise for
        break;
      }
      lock.unlock();
      // Stop() cannot finish while this thread counts in threads_, so the function is alive.
      if (napi_call_threadsafe_function(tsfn, job, napi_tsfn_nonblocking) != napi_ok) delete job;
      lock.lock();
    }
    threads_--;
    exit_cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable exit_cv_;
  std::deque<WaitJob*> queue_;
  std::unordered_set<WaitJob*> active_;
  size_t threads_ = 0;
  size_t idle_ = 0;
  bool stopping_ = false;
  std::atomic<bool> stop_flag_{false};  // stopping_, readable without the lock
};

namespace {

// Runs on the JS thread of the environment that submitted the job (env is null when the
// thread-safe function is being torn down with jobs still queued).
void SettleOnJsThread(napi_env raw_env, napi_value /*js_callback*/, void* context, void* data) {
  std::unique_ptr<WaitJob> job(static_cast<WaitJob*>(data));
  if (raw_env == nullptr) return;
  Waiters& waiters = **static_cast<std::shared_ptr<Waiters>*>(context);
  if (--waiters.pending == 0) napi_unref_threadsafe_function(raw_env, waiters.tsfn);
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  try {
    switch (job->result.outcome) {
      case Outcome::kFailed:
        napi_reject_deferred(env, job->deferred, ErrnoError(env, job->result.err, "futex").Value());
        return;
      case Outcome::kTimedOut:
        napi_resolve_deferred(env, job->deferred, Napi::String::New(env, kResultTimedOut));
        return;
      default:
        // futexWait() saw the word equal to `expected` before handing over, so a thread that
        // finds it changed (EAGAIN) was in effect woken: report 'ok', as Atomics.waitAsync would.
        napi_resolve_deferred(env, job->deferred, Napi::String::New(env, kResultOk));
        return;
    }
  } catch (const Napi::Error& error) {
    napi_reject_deferred(env, job->deferred, error.Value());
  }
}

}  // namespace

std::shared_ptr<Waiters> CreateWaiters(Napi::Env env) {
  auto waiters = std::make_shared<Waiters>();
  // The thread-safe function's context owns a reference, so the pool outlives the function.
  auto* context = new std::shared_ptr<Waiters>(waiters);
  napi_status status = napi_create_threadsafe_function(
      env, nullptr, nullptr, Napi::String::New(env, "ogurpchik:futexWait"), 0, 1,
      nullptr, [](napi_env, void*, void* hint) { delete static_cast<std::shared_ptr<Waiters>*>(hint); },
      context, SettleOnJsThread, &waiters->tsfn);
  if (status != napi_ok) {
    delete context;
    throw Napi::Error::New(env, "ogurpchik: cannot create the futex wait dispatcher");
  }
  // Idle until a wait is pending: a loaded addon alone must not keep the process alive.
  napi_unref_threadsafe_function(env, waiters->tsfn);
  return waiters;
}

void StopWaiters(Waiters& waiters) {
  waiters.Stop();
}

// futexWake({ buffer, byteOffset, count? = Infinity }) -> number of waiters woken (any process)
Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "futexWake");
  Word word = WordOption(options);
  double count = IntegerOption(options, "count", 0, INFINITY, false, INT_MAX);
  int woken = WakeWord(word.address, count > INT_MAX ? INT_MAX : static_cast<int>(count));
  if (woken < 0) throw ErrnoError(env, errno, "futex");
  return Napi::Number::New(env, woken);
}

// futexWait({ buffer, byteOffset, expected, timeoutMs? = Infinity })
//   -> Promise<'ok' | 'not-equal' | 'timed-out'>; the JS thread never blocks.
Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "futexWait");
  Word word = WordOption(options);
  int32_t expected = ExpectedOption(options);
  double timeout_ms = TimeoutOption(options);

  napi_deferred deferred;
  napi_value promise;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) {
    throw Napi::Error::New(env, "ogurpchik: napi_create_promise failed");
  }
  // Settle the cheap cases here, without a thread hop.
  if (__atomic_load_n(word.address, __ATOMIC_SEQ_CST) != expected) {
    napi_resolve_deferred(env, deferred, Napi::String::New(env, kResultNotEqual));
    return Napi::Value(env, promise);
  }
  if (timeout_ms == 0) {
    napi_resolve_deferred(env, deferred, Napi::String::New(env, kResultTimedOut));
    return Napi::Value(env, promise);
  }

  Waiters& waiters = *StateOf(env).waiters;
  auto job = std::make_unique<WaitJob>(WaitJob{std::move(word.store), word.address, expected, DeadlineAfter(timeout_ms), deferred});
  if (waiters.pending++ == 0) napi_ref_threadsafe_function(env, waiters.tsfn);
  try {
    waiters.Submit(job.get());
    job.release();  // the waiter thread owns it now
  } catch (const std::system_error& error) {
    if (--waiters.pending == 0) napi_unref_threadsafe_function(env, waiters.tsfn);
    napi_reject_deferred(env, deferred, ErrnoError(env, error.code().value(), "pthread_create").Value());
  }
  return Napi::Value(env, promise);
}

// futexWaitSync({ buffer, byteOffset, expected, timeoutMs? }) -> 'ok' | 'not-equal' | 'timed-out'
// Blocks the calling thread (like Atomics.wait): for tests and dedicated threads only.
Napi::Value FutexWaitSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "futexWaitSync");
  Word word = WordOption(options);
  int32_t expected = ExpectedOption(options);
  WaitResult r = WaitOnWord(word.address, expected, DeadlineAfter(TimeoutOption(options)), nullptr);
  switch (r.outcome) {
    case Outcome::kNotEqual:
      return Napi::String::New(env, kResultNotEqual);
    case Outcome::kTimedOut:
      return Napi::String::New(env, kResultTimedOut);
    case Outcome::kFailed:
      throw ErrnoError(env, r.err, "futex");
    default:
      return Napi::String::New(env, kResultOk);
  }
}

}  // namespace ogurpchik
