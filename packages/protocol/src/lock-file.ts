/**
 * A lock file that keeps a second process off a directory (a balancer's map, a storage node's
 * data): it holds the owner's pid and, where Linux's /proc tells it, when that process started. A
 * lock whose owner is gone (SIGKILL) is taken over, and so is one whose pid now names another
 * process: after a reboot, or in a container, a crashed owner's pid is reused, and a pid alone
 * would keep the directory locked for good.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';

/**
 * When process `pid` started (clock ticks since boot, /proc/<pid>/stat's 22nd field), and whether
 * it is a zombie; undefined where /proc cannot tell (not Linux, or no such process).
 */
function processStart(pid: number): { readonly start: string; readonly zombie: boolean } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // The command name (2nd field) may hold spaces and parentheses: count fields after its last `)`.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = fields[19];
  return start === undefined ? undefined : { start, zombie: fields[0] === 'Z' };
}

/** What this process writes in its lock files: `pid` or `pid start`. */
function ownText(): string {
  const self = processStart(process.pid);
  return self === undefined ? String(process.pid) : `${process.pid} ${self.start}`;
}

/**
 * Whether the lock's owner still runs: the pid answers signal 0, is no zombie (dead, not yet
 * reaped by its parent) and, when the lock says when its owner started, started then.
 */
function ownerRunning(pid: number, start: string | undefined): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const running = processStart(pid);
  if (running === undefined) return true;
  return !running.zombie && (start === undefined || running.start === start);
}

/**
 * Takes the lock file at `path` (its directory must exist) for this process. Returns undefined
 * when taken (also when this process already held it), or the pid of the live process that holds
 * it. Other file system errors are thrown.
 */
export function takeLockFile(path: string): number | undefined {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, ownText());
      } finally {
        closeSync(fd);
      }
      return undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      // Released between our attempt and this read: try again.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    const [pid, start] = text.trim().split(' ');
    const owner = Number.parseInt(pid ?? '', 10);
    if (owner === process.pid) return undefined;
    if (Number.isSafeInteger(owner) && owner > 0 && ownerRunning(owner, start)) return owner;
    // The owner died without releasing it, or its pid now names another process: take it over.
    try {
      unlinkSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  // Another process took it over at the same moment, twice: report it as held.
  const [pid] = readFileSync(path, 'utf8').trim().split(' ');
  return Number.parseInt(pid ?? '0', 10);
}

/** Removes the lock file at `path` if this process holds it. */
export function releaseLockFile(path: string): void {
  try {
    if (readFileSync(path, 'utf8') === ownText()) unlinkSync(path);
  } catch {
    // Already gone: nothing to release.
  }
}
