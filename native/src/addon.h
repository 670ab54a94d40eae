// Shared declarations of the ogurpchik native addon. The TS side of this boundary is
// src/shm/native.ts; keep the two in step.
#pragma once

#include <napi.h>
#include <v8.h>

#include <cstring>
#include <memory>
#include <string>

namespace ogurpchik {

class Waiters;
class VsockHub;

// Per-environment state (the main thread and every worker thread load their own copy of the
// addon). Owned by the environment's instance data; freed when the environment is torn down.
struct AddonState {
  std::shared_ptr<Waiters> waiters;
  std::shared_ptr<VsockHub> vsock;  // vsock.cc: the relay thread, created on first use
};

AddonState& StateOf(Napi::Env env);

// --- errors (errors.cc) ---------------------------------------------------------------------

// A JS Error for a failed system call, shaped like Node's own: message
// "ENOENT: no such file or directory, shm_open '/name'", `code` = errno name, `errno` = the
// negated errno (Node's convention, as in fs errors), `syscall`.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& subject = "");

// A TypeError for an unusable argument, with code 'EINVAL' so callers branch on one field.
Napi::Error InvalidArgument(Napi::Env env, const std::string& message);

// --- options-object readers (errors.cc) -----------------------------------------------------

Napi::Object OptionsArg(const Napi::CallbackInfo& info, const char* fn);
// Integer in [min, max]; `fallback` when the property is undefined and fallback >= min.
double IntegerOption(Napi::Object options, const char* key, double min, double max, bool required,
                     double fallback = -1);
bool BoolOption(Napi::Object options, const char* key, bool fallback);
// The first argument as an fd: a non-negative integer.
int FdArg(const Napi::CallbackInfo& info, const char* fn);

// --- V8 bridge ------------------------------------------------------------------------------

// Node-API cannot create or inspect a SharedArrayBuffer in Node 20, so these two functions reach
// through to V8. This mirrors Node's own v8impl::JsValueFromV8LocalValue /
// V8LocalValueFromJsValue (a napi_value *is* a Local's slot pointer) and ties the build to the
// Node major version whose headers it was compiled against: rebuild the addon for each major.
inline napi_value ToNapi(v8::Local<v8::Value> local) {
  return reinterpret_cast<napi_value>(*local);
}
inline v8::Local<v8::Value> ToV8(napi_value value) {
  v8::Local<v8::Value> local;
  static_assert(sizeof(local) == sizeof(value), "napi_value and v8::Local differ in size");
  memcpy(static_cast<void*>(&local), &value, sizeof(value));
  return local;
}

// --- exported functions ---------------------------------------------------------------------

Napi::Value ShmOpen(const Napi::CallbackInfo& info);
Napi::Value ShmUnlink(const Napi::CallbackInfo& info);
Napi::Value AdjustExternalMemory(const Napi::CallbackInfo& info);
Napi::Value FutexWake(const Napi::CallbackInfo& info);
Napi::Value FutexWait(const Napi::CallbackInfo& info);
Napi::Value FutexWaitSync(const Napi::CallbackInfo& info);
Napi::Value PeerCredentials(const Napi::CallbackInfo& info);
Napi::Value VsockListen(const Napi::CallbackInfo& info);
Napi::Value VsockConnect(const Napi::CallbackInfo& info);
Napi::Value VsockTakeAccepted(const Napi::CallbackInfo& info);
Napi::Value VsockLocalCid(const Napi::CallbackInfo& info);
Napi::Value VsockStats(const Napi::CallbackInfo& info);
Napi::Value RelayFd(const Napi::CallbackInfo& info);
Napi::Value RelayListenUnix(const Napi::CallbackInfo& info);
Napi::Value SocketPair(const Napi::CallbackInfo& info);
Napi::Value CloseFdExport(const Napi::CallbackInfo& info);
Napi::Value ListenSocket(const Napi::CallbackInfo& info);
// A listening, non-blocking AF_UNIX socket at `path` (1-107 bytes), file mode 0600; the caller owns
// the fd and the file. Throws (having unlinked what it bound) on failure. (listen.cc)
int ListenUnix(Napi::Env env, const std::string& path, int backlog);
Napi::Value DupFd(const Napi::CallbackInfo& info);
// doorbell.cc: eventfd doorbells polled on the caller's loop, and SCM_RIGHTS fd passing.
Napi::Value EventfdCreate(const Napi::CallbackInfo& info);
Napi::Value DoorbellRing(const Napi::CallbackInfo& info);
Napi::Value IsDoorbell(const Napi::CallbackInfo& info);
Napi::Value DoorbellWatch(const Napi::CallbackInfo& info);
Napi::Value SendFds(const Napi::CallbackInfo& info);
Napi::Value RecvFds(const Napi::CallbackInfo& info);

// Creates the environment's waiter pool (futex.cc); call from module init.
std::shared_ptr<Waiters> CreateWaiters(Napi::Env env);
// Cancels every pending futexWait of the environment and joins the waiter threads; the pending
// promises are left unsettled (their environment is going away). Runs in the cleanup hook.
void StopWaiters(Waiters& waiters);
// Stops and joins the environment's vsock relay thread and closes every fd it owns (vsock.cc).
// Runs in the cleanup hook; the thread never calls into JS, so joining it cannot deadlock.
void StopVsockHub(VsockHub& hub);

}  // namespace ogurpchik
