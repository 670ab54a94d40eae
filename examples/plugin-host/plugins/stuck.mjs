// A plugin with a worse bug: one request sends it into an endless loop. Its thread never returns
// to its event loop, so it cannot even notice the host's cancel; only terminating the thread helps.
export const handler = {
  onRequest({ op }) {
    if (op === 'hang') for (;;);
    return `${op}: done`;
  },
};
