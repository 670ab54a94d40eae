// AF_VSOCK sockets and fd-owned byte streams. Node cannot wrap an AF_VSOCK fd in a net.Socket
// (ERR_INVALID_FD_TYPE), so the addon does the I/O itself: every fd here is watched with a
// uv_poll_t on the calling thread's own loop (main thread or worker), and JS callbacks run on
// that loop through MakeCallback (so promise jobs and nextTicks run after them as usual).
//
//   vsockListen({ cid?, port? })            -> { fd, cid, port }   (bound, listening, non-blocking)
//   vsockConnect({ cid, port, timeoutMs? }) -> Promise<fd>         (cid 2, the host, is refused)
//   socketpair()                            -> [fd, fd]            (AF_UNIX stream, for tests)
//   new FdStream(fd, { onData, onDrain, onClose })  write/pause/resume/end/destroy
//   new FdAcceptor(fd, onConnection(err, fd))       close
//
// Every live watcher is in the environment's registry; the cleanup hook closes them all (fds and
// uv handles) when the environment goes away, leaving pending promises unsettled.
#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <deque>
#include <optional>
#include <unordered_set>
#include <vector>

#include "addon.h"

namespace ogurpchik {

namespace {

constexpr unsigned int kHostCid = 2;
constexpr size_t kHighWaterMark = 64 * 1024;
constexpr size_t kReadChunk = 64 * 1024;

uv_loop_t* LoopOf(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "ogurpchik: no event loop for this environment");
  }
  return loop;
}

// Something holding uv handles and possibly an fd; closed exactly once.
struct Watch {
  virtual ~Watch() = default;
  // Stops callbacks, closes the fd and the uv handles (memory freed by their close callbacks).
  virtual void Teardown() = 0;
  // Set by the cleanup hook: the environment is going away, touch nothing of Node-API's.
  bool registryGone_ = false;
};

}  // namespace

struct FdRegistry {
  std::unordered_set<Watch*> live;
  Napi::FunctionReference fdStream;
  Napi::FunctionReference fdAcceptor;
  bool tornDown = false;
};

namespace {

FdRegistry& RegistryOf(Napi::Env env) {
  return *StateOf(env).fds;
}

int FdArg(Napi::Env env, Napi::Value value, const char* fn) {
  if (!value.IsNumber()) throw InvalidArgument(env, std::string(fn) + ": fd must be a number");
  double fd = value.As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= 2147483647.0) || static_cast<int>(fd) != fd) {
    throw InvalidArgument(env, std::string(fn) + ": fd must be a non-negative integer");
  }
  return static_cast<int>(fd);
}

// Calls `fn` from a uv callback: handle + callback scope; a JS exception becomes an uncaught one.
void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, napi_async_context ctx,
                  const std::initializer_list<napi_value>& args) {
  if (fn.IsEmpty()) return;
  try {
    fn.MakeCallback(env.Global(), args, ctx);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

// Runs a uv callback's body: a C++ exception (a Node-API call failing, e.g. while a worker is being
// terminated and JS can no longer run) must not unwind into libuv.
template <typename F>
void Guarded(Napi::Env env, F&& body) {
  try {
    body();
  } catch (const Napi::Error& e) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
  } catch (...) {
  }
}

// ---- poll handle shared by streams and acceptors -------------------------------------------

struct PollBox {
  uv_poll_t poll;
  void* owner;  // FdStream* or FdAcceptor*
};

// ---- FdStream ------------------------------------------------------------------------------

class FdStream : public Napi::ObjectWrap<FdStream>, public Watch {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdStream",
                       {InstanceMethod("write", &FdStream::Write), InstanceMethod("pause", &FdStream::Pause),
                        InstanceMethod("resume", &FdStream::Resume), InstanceMethod("end", &FdStream::End),
                        InstanceMethod("destroy", &FdStream::Destroy)});
  }

  FdStream(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdStream>(info) {
    Napi::Env env = info.Env();
    int fd = FdArg(env, info[0], "FdStream");
    if (info.Length() < 2 || !info[1].IsObject()) throw InvalidArgument(env, "FdStream: expected callbacks object");
    Napi::Object cbs = info[1].As<Napi::Object>();
    auto take = [&](const char* key, Napi::FunctionReference& ref) {
      Napi::Value v = cbs.Get(key);
      if (v.IsFunction()) ref = Napi::Persistent(v.As<Napi::Function>());
      else if (!v.IsUndefined()) throw InvalidArgument(env, std::string("FdStream: ") + key + " must be a function");
    };
    take("onData", onData_);
    take("onDrain", onDrain_);
    take("onClose", onClose_);
    env_ = env;
    napi_async_init(env, Value(), Napi::String::New(env, "ogurpchik.FdStream"), &ctx_);
    box_ = new PollBox();
    box_->owner = this;
    int r = uv_poll_init(LoopOf(env), &box_->poll, fd);
    if (r != 0) {
      delete box_;
      box_ = nullptr;
      throw ErrnoError(env, -r, "uv_poll_init");
    }
    box_->poll.data = box_;
    fd_ = fd;
    RegistryOf(env).live.insert(this);
    Ref();  // alive while open, whatever JS holds
    UpdatePoll();
  }

  ~FdStream() override {
    if (box_ != nullptr && !registryGone_) Teardown();
    if (ctx_ != nullptr && !registryGone_) napi_async_destroy(env_, ctx_);
  }

  void Teardown() override {
    if (box_ == nullptr) return;
    uv_poll_stop(&box_->poll);
    box_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&box_->poll), [](uv_handle_t* h) { delete static_cast<PollBox*>(h->data); });
    box_ = nullptr;
    ::close(fd_);
    fd_ = -1;
  }

 private:
  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* box = static_cast<PollBox*>(handle->data);
    if (box->owner == nullptr) return;
    auto* self = static_cast<FdStream*>(box->owner);
    Guarded(self->env_, [&] { self->Handle(status, events); });
  }

  bool open() const { return box_ != nullptr; }

  void Handle(int status, int events) {
    Napi::HandleScope scope(env_);
    if (status < 0) {  // libuv reports POLLERR as UV_EBADF; prefer the socket's own error
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = -status;
      return Close(err, "poll");
    }
    if (events & UV_WRITABLE) {
      if (!Flush()) return;
    }
    if ((events & (UV_READABLE | UV_DISCONNECT)) && !paused_ && !readEof_) {
      if (!ReadSome()) return;
    }
    if (readEof_ && wrShut_) return Close(0, nullptr);
    if (open()) UpdatePoll();
  }

  // Returns false when the stream closed.
  bool Flush() {
    while (!queue_.empty()) {
      std::vector<uint8_t>& head = queue_.front();
      ssize_t n = ::send(fd_, head.data() + headOffset_, head.size() - headOffset_, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        Close(errno, "write");
        return false;
      }
      headOffset_ += static_cast<size_t>(n);
      queued_ -= static_cast<size_t>(n);
      if (headOffset_ == head.size()) {
        queue_.pop_front();
        headOffset_ = 0;
      }
    }
    if (queue_.empty()) {
      if (ending_ && !wrShut_) {
        ::shutdown(fd_, SHUT_WR);
        wrShut_ = true;
      }
      if (needDrain_) {
        needDrain_ = false;
        CallFromLoop(env_, onDrain_, ctx_, {});
        if (!open()) return false;
      }
    }
    return true;
  }

  bool ReadSome() {
    for (int i = 0; i < 16 && !paused_ && open(); i++) {
      uint8_t buf[kReadChunk];
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        Close(errno, "read");
        return false;
      }
      if (n == 0) {
        readEof_ = true;
        ending_ = true;  // the peer is done: finish writing, then close (like allowHalfOpen: false)
        if (queue_.empty() && !wrShut_) {
          ::shutdown(fd_, SHUT_WR);
          wrShut_ = true;
        }
        return true;
      }
      Napi::Buffer<uint8_t> chunk = Napi::Buffer<uint8_t>::Copy(env_, buf, static_cast<size_t>(n));
      CallFromLoop(env_, onData_, ctx_, {chunk});
    }
    return open();
  }

  void UpdatePoll() {
    int want = 0;
    if (!paused_ && !readEof_) want |= UV_READABLE | UV_DISCONNECT;
    if (!queue_.empty() || (ending_ && !wrShut_)) want |= UV_WRITABLE;
    if (want == 0) uv_poll_stop(&box_->poll);
    else uv_poll_start(&box_->poll, want, OnPoll);
  }

  // Closes; calls onClose(err?) when `syscall` names a failure or the stream ended.
  void Close(int err, const char* syscall, bool notify = true) {
    if (!open()) return;
    RegistryOf(env_).live.erase(this);
    Teardown();
    queue_.clear();
    queued_ = 0;
    if (notify) {
      if (err != 0) CallFromLoop(env_, onClose_, ctx_, {ErrnoError(env_, err, syscall).Value()});
      else CallFromLoop(env_, onClose_, ctx_, {});
    }
    Unref();
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray()) throw InvalidArgument(env, "FdStream.write: expected a Uint8Array");
    if (!open() || ending_) return Napi::Boolean::New(env, true);
    Napi::Uint8Array arr = info[0].As<Napi::Uint8Array>();
    const uint8_t* data = arr.Data();
    size_t length = arr.ByteLength();
    size_t done = 0;
    if (queue_.empty()) {
      while (done < length) {
        ssize_t n = ::send(fd_, data + done, length - done, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          break;  // EAGAIN: queue the rest; a real error shows again in Flush, which closes
        }
        done += static_cast<size_t>(n);
      }
    }
    if (done < length) {
      queue_.emplace_back(data + done, data + length);
      queued_ += length - done;
      UpdatePoll();
    }
    bool ok = queued_ < kHighWaterMark;
    if (!ok) needDrain_ = true;
    return Napi::Boolean::New(env, ok);
  }

  Napi::Value Pause(const Napi::CallbackInfo& info) {
    paused_ = true;
    if (open()) UpdatePoll();
    return info.Env().Undefined();
  }

  Napi::Value Resume(const Napi::CallbackInfo& info) {
    paused_ = false;
    if (open()) UpdatePoll();
    return info.Env().Undefined();
  }

  Napi::Value End(const Napi::CallbackInfo& info) {
    if (open() && !ending_) {
      ending_ = true;
      UpdatePoll();  // the writable callback shuts the write side once the queue is empty
    }
    return info.Env().Undefined();
  }

  // Closes now, dropping queued bytes; onClose is not called (the caller knows).
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    Close(0, nullptr, false);
    return info.Env().Undefined();
  }

 private:
  Napi::Env env_ = nullptr;
  napi_async_context ctx_ = nullptr;
  Napi::FunctionReference onData_, onDrain_, onClose_;
  PollBox* box_ = nullptr;
  int fd_ = -1;
  std::deque<std::vector<uint8_t>> queue_;
  size_t headOffset_ = 0;
  size_t queued_ = 0;
  bool needDrain_ = false;
  bool paused_ = false;
  bool ending_ = false;
  bool wrShut_ = false;
  bool readEof_ = false;
};

// ---- FdAcceptor ----------------------------------------------------------------------------

class FdAcceptor : public Napi::ObjectWrap<FdAcceptor>, public Watch {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdAcceptor", {InstanceMethod("close", &FdAcceptor::CloseJs)});
  }

  FdAcceptor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdAcceptor>(info) {
    Napi::Env env = info.Env();
    int fd = FdArg(env, info[0], "FdAcceptor");
    if (info.Length() < 2 || !info[1].IsFunction()) throw InvalidArgument(env, "FdAcceptor: onConnection must be a function");
    onConnection_ = Napi::Persistent(info[1].As<Napi::Function>());
    env_ = env;
    napi_async_init(env, Value(), Napi::String::New(env, "ogurpchik.FdAcceptor"), &ctx_);
    box_ = new PollBox();
    box_->owner = this;
    int r = uv_poll_init(LoopOf(env), &box_->poll, fd);
    if (r != 0) {
      delete box_;
      box_ = nullptr;
      throw ErrnoError(env, -r, "uv_poll_init");
    }
    box_->poll.data = box_;
    fd_ = fd;
    RegistryOf(env).live.insert(this);
    Ref();
    uv_poll_start(&box_->poll, UV_READABLE, OnPoll);
  }

  ~FdAcceptor() override {
    if (box_ != nullptr && !registryGone_) Teardown();
    if (ctx_ != nullptr && !registryGone_) napi_async_destroy(env_, ctx_);
  }

  void Teardown() override {
    if (box_ == nullptr) return;
    uv_poll_stop(&box_->poll);
    box_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&box_->poll), [](uv_handle_t* h) { delete static_cast<PollBox*>(h->data); });
    box_ = nullptr;
    ::close(fd_);
    fd_ = -1;
  }

 private:
  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* box = static_cast<PollBox*>(handle->data);
    if (box->owner == nullptr) return;
    auto* self = static_cast<FdAcceptor*>(box->owner);
    Guarded(self->env_, [&] { self->Handle(status); });
  }

  void Handle(int status) {
    Napi::HandleScope scope(env_);
    for (int i = 0; i < 32 && box_ != nullptr; i++) {
      int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        CallFromLoop(env_, onConnection_, ctx_, {ErrnoError(env_, errno, "accept").Value()});
        return;
      }
      CallFromLoop(env_, onConnection_, ctx_, {env_.Null(), Napi::Number::New(env_, fd)});
    }
  }

  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    if (box_ != nullptr) {
      RegistryOf(env_).live.erase(this);
      Teardown();
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Env env_ = nullptr;
  napi_async_context ctx_ = nullptr;
  Napi::FunctionReference onConnection_;
  PollBox* box_ = nullptr;
  int fd_ = -1;
};

// ---- vsockConnect --------------------------------------------------------------------------

struct ConnectOp : Watch {
  uv_poll_t poll;
  uv_timer_t timer;
  int fd = -1;
  int handlesOpen = 0;
  bool done = false;
  napi_env env = nullptr;
  napi_deferred deferred = nullptr;
  napi_async_context ctx = nullptr;
  unsigned int cid = 0, port = 0;

  static void Closed(uv_handle_t* h) {
    auto* op = static_cast<ConnectOp*>(h->data);
    if (--op->handlesOpen == 0) delete op;
  }

  void Teardown() override {
    if (done) return;
    done = true;
    uv_poll_stop(&poll);
    uv_timer_stop(&timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), Closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), Closed);
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // Settles the promise: with the fd when err == 0, else with an errno error.
  void Finish(int err, const char* syscall) {
    if (done) return;
    Napi::Env e(env);
    RegistryOf(e).live.erase(this);
    int result = fd;
    if (err == 0) fd = -1;  // ownership goes to JS
    napi_deferred d = deferred;
    napi_async_context c = ctx;
    Teardown();  // may schedule delete; use locals below
    Napi::HandleScope scope(e);
    napi_callback_scope cs;
    napi_open_callback_scope(env, Napi::Object::New(e), c, &cs);
    std::string subject = "vsock " + std::to_string(cid) + ":" + std::to_string(port);
    if (err == 0) napi_resolve_deferred(env, d, Napi::Number::New(e, result));
    else napi_reject_deferred(env, d, ErrnoError(e, err, syscall, subject).Value());
    napi_close_callback_scope(env, cs);
    napi_async_destroy(env, c);
  }
};

}  // namespace

Napi::Value VsockListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "vsockListen");
  unsigned int cid = static_cast<unsigned int>(IntegerOption(options, "cid", 0, 4294967295.0, false, VMADDR_CID_ANY));
  double portOpt = IntegerOption(options, "port", 0, 4294967295.0, false, 0);
  unsigned int port = portOpt == 0 ? VMADDR_PORT_ANY : static_cast<unsigned int>(portOpt);
  int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket", "AF_VSOCK");
  struct sockaddr_vm addr = {};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  std::string subject = "vsock " + std::to_string(cid) + ":" + std::to_string(port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    throw ErrnoError(env, err, "bind", subject);
  }
  if (::listen(fd, 128) != 0) {
    int err = errno;
    ::close(fd);
    throw ErrnoError(env, err, "listen", subject);
  }
  socklen_t length = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    int err = errno;
    ::close(fd);
    throw ErrnoError(env, err, "getsockname", subject);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("cid", Napi::Number::New(env, addr.svm_cid));
  result.Set("port", Napi::Number::New(env, addr.svm_port));
  return result;
}

Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = OptionsArg(info, "vsockConnect");
  unsigned int cid = static_cast<unsigned int>(IntegerOption(options, "cid", 0, 4294967295.0, true));
  unsigned int port = static_cast<unsigned int>(IntegerOption(options, "port", 0, 4294967295.0, true));
  double timeoutMs = IntegerOption(options, "timeoutMs", 1, 86400000, false, 5000);
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  std::string subject = "vsock " + std::to_string(cid) + ":" + std::to_string(port);
  if (cid == kHostCid) {
    // This machine's host: never dialled, by policy (see DESIGN.md §5).
    deferred.Reject(ErrnoError(env, EPERM, "connect", subject + " (the host, refused)").Value());
    return deferred.Promise();
  }
  int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    deferred.Reject(ErrnoError(env, errno, "socket", "AF_VSOCK").Value());
    return deferred.Promise();
  }
  struct sockaddr_vm addr = {};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  int r;
  do r = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  while (r != 0 && errno == EINTR);
  if (r == 0) {
    deferred.Resolve(Napi::Number::New(env, fd));
    return deferred.Promise();
  }
  if (errno != EINPROGRESS) {
    int err = errno;
    ::close(fd);
    deferred.Reject(ErrnoError(env, err, "connect", subject).Value());
    return deferred.Promise();
  }
  auto* op = new ConnectOp();
  op->fd = fd;
  op->env = env;
  op->cid = cid;
  op->port = port;
  napi_value promise;
  napi_create_promise(env, &op->deferred, &promise);
  napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "ogurpchik.vsockConnect"), &op->ctx);
  uv_loop_t* loop = LoopOf(env);
  uv_poll_init(loop, &op->poll, fd);
  uv_timer_init(loop, &op->timer);
  op->poll.data = op;
  op->timer.data = op;
  op->handlesOpen = 2;
  RegistryOf(env).live.insert(op);
  uv_poll_start(&op->poll, UV_WRITABLE, [](uv_poll_t* h, int status, int) {
    auto* op = static_cast<ConnectOp*>(h->data);
    // libuv reports POLLERR as UV_EBADF; the socket's own error says what happened.
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0 && status < 0) err = -status;
    Guarded(op->env, [&] { op->Finish(err, "connect"); });
  });
  uv_timer_start(&op->timer, [](uv_timer_t* t) {
    auto* op = static_cast<ConnectOp*>(t->data);
    Guarded(op->env, [&] { op->Finish(ETIMEDOUT, "connect"); });
  },
                 static_cast<uint64_t>(timeoutMs), 0);
  return Napi::Value(env, promise);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    throw ErrnoError(env, errno, "socketpair");
  }
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, fds[0]));
  result.Set(1u, Napi::Number::New(env, fds[1]));
  return result;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(env, info[0], "closeFd");
  if (::close(fd) != 0) throw ErrnoError(env, errno, "close");
  return env.Undefined();
}

void InitFdStreams(Napi::Env env, Napi::Object exports) {
  auto* registry = new FdRegistry();
  StateOf(env).fds = registry;
  Napi::Function stream = FdStream::Define(env);
  Napi::Function acceptor = FdAcceptor::Define(env);
  registry->fdStream = Napi::Persistent(stream);
  registry->fdAcceptor = Napi::Persistent(acceptor);
  exports.Set("FdStream", stream);
  exports.Set("FdAcceptor", acceptor);
  exports.Set("vsockListen", Napi::Function::New(env, VsockListen, "vsockListen"));
  exports.Set("vsockConnect", Napi::Function::New(env, VsockConnect, "vsockConnect"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

void StopFdStreams(FdRegistry& registry) {
  // Environment teardown: close every fd and uv handle; no JS runs, pending promises stay pending.
  std::vector<Watch*> live(registry.live.begin(), registry.live.end());
  registry.live.clear();
  for (Watch* w : live) {
    w->registryGone_ = true;
    w->Teardown();
  }
  registry.tornDown = true;
}

}  // namespace ogurpchik
