/**
 * The bench's echo handler. As a module URL it is loaded inside the server's connection worker
 * (the named export `handler`); the same object passed directly runs on the main thread.
 */
export const handler = {
  async onRequest(req: unknown): Promise<unknown> {
    return req;
  },
};
