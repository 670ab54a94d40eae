// Eventfd doorbells: a cross-process wake-up that lands on the waiting thread's own event loop.
//
// futexWait needs a native thread per sleeping word and a thread-safe-function hop (uv_async) to
// reach the loop: two thread wake-ups per wake. An eventfd is readable exactly when it has been
// rung, so a uv_poll on the JS thread's own loop turns a ring in another process into one
// epoll wake-up of that thread, with no thread in between. The fd crosses to the peer process
// by inheritance or SCM_RIGHTS (sendFds/recvFds).
//
// A watch is a uv_poll_t that belongs to one environment. It is closed by its close() or, when the
// environment goes first (a worker exits), by an async cleanup hook: a worker's loop must have no
// open handle left when it is closed.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "addon.h"

namespace ogurpchik {
namespace {

struct Watch {
  uv_poll_t poll;  // first member: the handle's address is the Watch's
  napi_env env;
  napi_ref callback = nullptr;  // strong while open
  napi_async_cleanup_hook_handle hook = nullptr;
  int fd;
  bool closing = false;
};

// What the JS methods of a watch hold: cleared on close, so a late call finds nothing to do
// instead of a freed Watch.
struct WatchRef {
  Watch* watch = nullptr;
};

void OnClosed(uv_handle_t* handle) {
  auto* w = reinterpret_cast<Watch*>(handle);
  // In the cleanup path this tells Node the handle is gone; otherwise it unregisters the hook.
  napi_remove_async_cleanup_hook(w->hook);
  delete w;
}

void CloseWatch(Watch* w) {
  if (w->closing) return;
  w->closing = true;
  uv_poll_stop(&w->poll);
  if (w->callback != nullptr) {
    napi_delete_reference(w->env, w->callback);
    w->callback = nullptr;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
}

void OnCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  CloseWatch(static_cast<Watch*>(arg));
}

// Calls onRing(count) on the loop's thread; an exception in it becomes an uncaught exception,
// as it would from any other I/O callback.
void CallOnRing(Watch* w, double count) {
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, arg, result;
  if (w->callback != nullptr && napi_get_reference_value(env, w->callback, &fn) == napi_ok && fn != nullptr) {
    napi_get_global(env, &recv);  // napi_make_callback wants an object as `this`
    napi_create_double(env, count, &arg);
    // napi_make_callback (not napi_call_function) so microtasks run afterwards, as after any
    // native I/O callback: a promise resolved in onRing settles before the loop sleeps again.
    if (napi_make_callback(env, nullptr, recv, fn, 1, &arg, &result) == napi_pending_exception) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

void OnPoll(uv_poll_t* handle, int status, int events) {
  auto* w = reinterpret_cast<Watch*>(handle);
  if (w->closing) return;
  if (status < 0) {
    // The fd is unusable (closed under us, or an error from epoll): stop, and say so once.
    uv_poll_stop(&w->poll);
    CallOnRing(w, status);
    return;
  }
  uint64_t count = 0;
  // Reading resets the counter: several rings since the last look are one wake-up.
  ssize_t n = read(w->fd, &count, sizeof(count));
  if (n != sizeof(count)) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;  // spurious readiness
    uv_poll_stop(&w->poll);
    CallOnRing(w, n < 0 ? -errno : -EIO);
    return;
  }
  CallOnRing(w, static_cast<double>(count));
}

constexpr size_t kMaxFds = 16;
constexpr size_t kMaxData = 4096;

int EventfdOption(Napi::Object options) {
  return static_cast<int>(IntegerOption(options, "fd", 0, 2147483647.0, true));
}

}  // namespace

// eventfd() -> fd: a non-blocking, close-on-exec eventfd with counter 0, which the caller owns.
Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "eventfd");
  return Napi::Number::New(env, fd);
}

// isDoorbell(fd) -> true when `fd` is an eventfd in non-blocking mode: what a peer's fd must be
// before this thread rings or polls it (a blocking one could stall the thread).
Napi::Value IsDoorbell(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, "isDoorbell");
  char link[64];
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
  if (n < 0) return Napi::Boolean::New(env, false);
  link[n] = 0;
  int flags = fcntl(fd, F_GETFL);
  return Napi::Boolean::New(env, strcmp(link, "anon_inode:[eventfd]") == 0 && flags >= 0 && (flags & O_NONBLOCK) != 0);
}

// doorbellRing(fd): adds 1 to the eventfd's counter, making it readable. A counter at its maximum
// (EAGAIN) is already readable, so that ring is not lost.
Napi::Value DoorbellRing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, "doorbellRing");
  uint64_t one = 1;
  for (;;) {
    if (write(fd, &one, sizeof(one)) == sizeof(one)) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;
    throw ErrnoError(env, errno, "write", "eventfd");
  }
  return env.Undefined();
}

// doorbellWatch({ fd, onRing }) -> { close(), ref(), unref() }: polls `fd` on the calling thread's
// loop; onRing(count) after each ring (count > 0, rings since the last call), or once with a
// negative errno when the fd fails, after which the watch is stopped. The caller keeps owning
// `fd` and must close the watch before closing the fd. Refed (keeps the loop alive) until unref().
Napi::Value DoorbellWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "doorbellWatch");
  int fd = EventfdOption(options);
  Napi::Value on_ring = options.Get("onRing");
  if (!on_ring.IsFunction()) throw InvalidArgument(env, "doorbellWatch: option 'onRing' must be a function");

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "ogurpchik: napi_get_uv_event_loop failed");
  }
  auto* w = new Watch();
  w->env = env;
  w->fd = fd;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    delete w;  // uv_poll_init registers nothing on failure
    throw ErrnoError(env, -rc, "uv_poll_init");
  }
  napi_create_reference(env, on_ring, 1, &w->callback);
  if (napi_add_async_cleanup_hook(env, OnCleanup, w, &w->hook) != napi_ok) {
    napi_delete_reference(env, w->callback);
    w->callback = nullptr;
    w->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete reinterpret_cast<Watch*>(h); });
    throw Napi::Error::New(env, "ogurpchik: napi_add_async_cleanup_hook failed");
  }
  rc = uv_poll_start(&w->poll, UV_READABLE, OnPoll);
  if (rc != 0) {
    CloseWatch(w);
    throw ErrnoError(env, -rc, "uv_poll_start");
  }

  auto ref = std::make_shared<WatchRef>();
  ref->watch = w;
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("close", Napi::Function::New(env, [ref](const Napi::CallbackInfo& ci) {
    if (ref->watch != nullptr) {
      CloseWatch(ref->watch);
      ref->watch = nullptr;
    }
    return ci.Env().Undefined();
  }, "close"));
  handle.Set("ref", Napi::Function::New(env, [ref](const Napi::CallbackInfo& ci) {
    if (ref->watch != nullptr && !ref->watch->closing) uv_ref(reinterpret_cast<uv_handle_t*>(&ref->watch->poll));
    return ci.Env().Undefined();
  }, "ref"));
  handle.Set("unref", Napi::Function::New(env, [ref](const Napi::CallbackInfo& ci) {
    if (ref->watch != nullptr && !ref->watch->closing) uv_unref(reinterpret_cast<uv_handle_t*>(&ref->watch->poll));
    return ci.Env().Undefined();
  }, "unref"));
  return handle;
}

// sendFds({ socket, fds, data? }): sends `data` (a Uint8Array, 1 to 4096 bytes; default one zero
// byte) in one sendmsg with `fds` attached (SCM_RIGHTS) on a connected Unix socket the caller
// owns; the sender keeps its copies. Throws EAGAIN when the socket cannot take it all at once (it
// is meant for a rendezvous, not a stream under load).
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "sendFds");
  int sock = static_cast<int>(IntegerOption(options, "socket", 0, 2147483647.0, true));
  Napi::Value list = options.Get("fds");
  if (!list.IsArray()) throw InvalidArgument(env, "sendFds: option 'fds' must be an array of fds");
  Napi::Array array = list.As<Napi::Array>();
  if (array.Length() < 1 || array.Length() > kMaxFds) throw InvalidArgument(env, "sendFds: 1 to 16 fds");
  std::vector<int> fds;
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value v = array.Get(i);
    double fd = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(fd >= 0 && fd <= 2147483647.0) || static_cast<int>(fd) != fd) throw InvalidArgument(env, "sendFds: fds must be non-negative integers");
    fds.push_back(static_cast<int>(fd));
  }
  std::vector<char> data(1, 0);
  Napi::Value given = options.Get("data");
  if (!given.IsUndefined()) {
    if (!given.IsTypedArray() || given.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw InvalidArgument(env, "sendFds: option 'data' must be a Uint8Array");
    }
    Napi::Uint8Array bytes = given.As<Napi::Uint8Array>();
    if (bytes.ByteLength() < 1 || bytes.ByteLength() > kMaxData) throw InvalidArgument(env, "sendFds: 'data' must hold 1 to 4096 bytes");
    data.assign(reinterpret_cast<char*>(bytes.Data()), reinterpret_cast<char*>(bytes.Data()) + bytes.ByteLength());
  }
  iovec iov{data.data(), data.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()), 0);
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(data.size())) break;
    if (n >= 0) throw ErrnoError(env, EAGAIN, "sendmsg", "short write");  // the fds went with the first part
    if (errno == EINTR) continue;
    throw ErrnoError(env, errno, "sendmsg");
  }
  return env.Undefined();
}

// recvFds(socket) -> { data, fds } | null: receives what is waiting (up to 4096 bytes, stopping
// where the kernel keeps messages with fds apart) and any fds attached to it (made close-on-exec;
// the caller owns them) from a Unix socket the caller owns; null when nothing is waiting (EAGAIN).
// Throws EPIPE at end of stream.
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = FdArg(info, "recvFds");
  char data[kMaxData];
  iovec iov{data, sizeof(data)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  for (;;) {
    n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0 || errno != EINTR) break;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw ErrnoError(env, errno, "recvmsg");
  }
  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.push_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    // Some fds were dropped by the kernel: close the ones we got rather than hand back half a set.
    for (int fd : fds) close(fd);
    throw ErrnoError(env, EMSGSIZE, "recvmsg", "SCM_RIGHTS truncated");
  }
  if (n == 0 && fds.empty()) throw ErrnoError(env, EPIPE, "recvmsg");
  Napi::Array list = Napi::Array::New(env, fds.size());
  for (uint32_t i = 0; i < fds.size(); i++) list.Set(i, Napi::Number::New(env, fds[i]));
  Napi::Object result = Napi::Object::New(env);
  result.Set("data", Napi::Buffer<char>::Copy(env, data, static_cast<size_t>(n)));
  result.Set("fds", list);
  return result;
}

}  // namespace ogurpchik
