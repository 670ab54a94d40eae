# Built with `npm run build:native` (node-gyp rebuild --directory native); output:
# native/build/Release/ogurpchik_native.node, loaded only by src/native/addon.ts.
# Linux only: futex(2), SO_PEERCRED, AF_VSOCK and /dev/shm semantics are Linux's.
{
  "targets": [
    {
      "target_name": "ogurpchik_native",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/shm.cc",
        "src/futex.cc",
        "src/peer.cc",
        "src/vsock.cc",
        "src/listen.cc",
        "src/doorbell.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lrt", "-lpthread"]
    }
  ]
}
