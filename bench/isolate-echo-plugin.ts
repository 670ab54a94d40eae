/**
 * The isolate scenario's plugin: `isolate(new URL('./isolate-echo-plugin.js', …))` starts this
 * module in its own worker thread, and the host's client calls `handler`.
 */
export const handler = {
  async onRequest(req: unknown): Promise<unknown> {
    return req;
  },
};
