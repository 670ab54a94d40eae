/**
 * The Node `fork` IPC peer (a child process of the bench, forked with `serialization: 'json'`):
 * echoes every message back as it came, as people write it. Its first message says it is ready.
 * Stops on SIGTERM or when the parent goes.
 */

process.on('message', (m) => process.send!(m));
process.once('disconnect', () => process.exit(0));
process.once('SIGTERM', () => process.exit(0));
process.send!('ready');
