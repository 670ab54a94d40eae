// Module entry of the ogurpchik native addon: shared memory, cross-process futex, peer
// credentials, AF_VSOCK relays. Context-aware: the main thread and every worker thread get their own
// AddonState, created here and released when their environment is torn down.
#include "addon.h"

// node_version.h defines NAPI_VERSION as the runtime's; keep the one binding.gyp asked for.
#pragma push_macro("NAPI_VERSION")
#undef NAPI_VERSION
#include <node_version.h>
#pragma pop_macro("NAPI_VERSION")

namespace ogurpchik {

AddonState& StateOf(Napi::Env env) {
  return *env.GetInstanceData<AddonState>();
}

namespace {

void CleanupEnvironment(void* arg) {
  // A worker may exit while futexWait() promises are pending; their threads sleep in the kernel
  // and must be woken and joined before the environment (and its loop) is gone.
  auto* state = static_cast<AddonState*>(arg);
  StopWaiters(*state->waiters);
  if (state->vsock) StopVsockHub(*state->vsock);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new AddonState();
  env.SetInstanceData<AddonState>(state);  // deleted by Node-API when the environment goes
  state->waiters = CreateWaiters(env);
  // Registered after CreateWaiters made its thread-safe function: cleanup hooks run last-in,
  // first-out, so the waiter threads are stopped before Node tears that function down.
  napi_add_env_cleanup_hook(env, CleanupEnvironment, state);

  // The loader refuses a binary built for another Node ABI (see ToNapi in addon.h).
  exports.Set("moduleVersion", Napi::Number::New(env, NODE_MODULE_VERSION));
  exports.Set("shmOpen", Napi::Function::New(env, ShmOpen, "shmOpen"));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink, "shmUnlink"));
  exports.Set("adjustExternalMemory", Napi::Function::New(env, AdjustExternalMemory, "adjustExternalMemory"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWaitSync", Napi::Function::New(env, FutexWaitSync, "futexWaitSync"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("vsockListen", Napi::Function::New(env, VsockListen, "vsockListen"));
  exports.Set("vsockConnect", Napi::Function::New(env, VsockConnect, "vsockConnect"));
  exports.Set("vsockTakeAccepted", Napi::Function::New(env, VsockTakeAccepted, "vsockTakeAccepted"));
  exports.Set("vsockLocalCid", Napi::Function::New(env, VsockLocalCid, "vsockLocalCid"));
  exports.Set("vsockStats", Napi::Function::New(env, VsockStats, "vsockStats"));
  exports.Set("relayFd", Napi::Function::New(env, RelayFd, "relayFd"));
  exports.Set("relayListenUnix", Napi::Function::New(env, RelayListenUnix, "relayListenUnix"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFdExport, "closeFd"));
  exports.Set("listenSocket", Napi::Function::New(env, ListenSocket, "listenSocket"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("eventfd", Napi::Function::New(env, EventfdCreate, "eventfd"));
  exports.Set("doorbellRing", Napi::Function::New(env, DoorbellRing, "doorbellRing"));
  exports.Set("isDoorbell", Napi::Function::New(env, IsDoorbell, "isDoorbell"));
  exports.Set("doorbellWatch", Napi::Function::New(env, DoorbellWatch, "doorbellWatch"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
  return exports;
}

}  // namespace
}  // namespace ogurpchik

// NODE_API_MODULE pastes its second argument into an identifier, so it needs a plain name.
static Napi::Object InitOgurpchik(Napi::Env env, Napi::Object exports) {
  return ogurpchik::Init(env, exports);
}

NODE_API_MODULE(ogurpchik_native, InitOgurpchik)
