// A plugin with a bug: every third request throws. The host gets RpcError REMOTE; the plugin lives on.
export const handler = {
  onRequest({ n }) {
    if (n % 3 === 0) throw new RangeError(`cannot handle ${n}`);
    return n * n;
  },
};
