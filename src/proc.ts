/** What /proc says about other processes (Linux): used by discovery's pid-reuse guard and the signed-process handshake. */
import fs from 'node:fs';

/**
 * Start time of process `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or
 * undefined when there is no such process. A pid plus its start time names a process even after
 * the pid is reused. Plain TS (no addon needed); Linux only.
 */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
  // Field 2 (comm) is parenthesised and may itself contain spaces and ')', so count fields from
  // the last ')': what follows is field 3 (state) onwards, making field 22 the 20th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[19]);
}
