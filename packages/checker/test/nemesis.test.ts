/**
 * The nemesis on real processes (a small echo server standing in for a dstore CLI): start, pause,
 * resume, SIGKILL, restart, a schedule recorded in the history, and a cleanup that leaves nothing
 * running (paused processes included).
 */
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { HistoryRecorder, type ManagedProcess, Nemesis } from '../src/index.js';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'echo-server.mjs');

interface EchoReady {
  readonly event: 'ready';
  readonly port: number;
  readonly pid: number;
}

let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  nemesis = new Nemesis();
});

function echoProcess(name = 'echo'): ManagedProcess<EchoReady> {
  return nemesis.process<EchoReady>({ name, script: SCRIPT, args: [] });
}

/** Whether the process `pid` exists (signal 0 checks without sending anything). */
function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends a line; resolves with the first answer, or undefined if none came within `waitMs`. */
function ask(socket: Socket, line: string, waitMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.off('data', onData);
      resolve(undefined);
    }, waitMs);
    const onData = (data: Buffer) => {
      clearTimeout(timer);
      resolve(data.toString());
    };
    socket.once('data', onData);
    socket.write(`${line}\n`);
  });
}

async function open(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

describe('ManagedProcess', () => {
  it('pauses (answers nothing, sockets stay open) and resumes (the answer arrives)', async () => {
    const echo = echoProcess();
    const ready = await echo.start();
    const socket = await open(ready.port);
    try {
      expect(await ask(socket, 'one', 5000)).toBe(`${ready.pid} one\n`);
      echo.pause();
      expect(await ask(socket, 'two', 300)).toBeUndefined();
      const late = new Promise<string>((resolve) => socket.once('data', (data) => resolve(data.toString())));
      echo.resume();
      expect(await late).toBe(`${ready.pid} two\n`);
    } finally {
      socket.destroy();
    }
  });

  it('SIGKILL ends it; restart runs it again with the same options', async () => {
    const echo = echoProcess();
    const first = await echo.start();
    await echo.kill();
    expect(echo.alive).toBe(false);
    expect(exists(first.pid)).toBe(false);
    const second = await echo.restart();
    expect(second.pid).not.toBe(first.pid);
    expect(echo.alive).toBe(true);
    expect(echo.ready).toBe(second);
  });

  it('a start that fails says why, with the stderr', async () => {
    const broken = nemesis.process({
      name: 'broken',
      script: join(dirname(SCRIPT), 'missing.mjs'),
      args: [],
    });
    await expect(broken.start()).rejects.toThrow(/broken exited .* before ready: .*missing\.mjs/s);
  });
});

describe('Nemesis', () => {
  it('runs a schedule, records each fault in the history, and cleans up paused processes too', async () => {
    const recorder = new HistoryRecorder();
    nemesis = new Nemesis(recorder);
    const [a, b] = [echoProcess('a'), echoProcess('b')];
    const [readyA, readyB] = await Promise.all([a.start(), b.start()]);
    await nemesis.run([
      { afterMs: 0, f: 'pause', target: 'a', run: () => a.pause() },
      { afterMs: 10, f: 'kill', target: 'b', run: () => b.kill() },
      { afterMs: 10, f: 'restart', target: 'b', run: () => b.restart() },
    ]);
    expect(recorder.events.map((event) => `${event.process} ${event.f} ${event.value}`)).toEqual([
      'nemesis pause a',
      'nemesis pause done a',
      'nemesis kill b',
      'nemesis kill done b',
      'nemesis restart b',
      'nemesis restart done b',
    ]);
    const restartedB = b.ready.pid;
    expect(restartedB).not.toBe(readyB.pid);
    await nemesis.cleanup();
    expect([exists(readyA.pid), exists(restartedB)]).toEqual([false, false]);
  });
});
