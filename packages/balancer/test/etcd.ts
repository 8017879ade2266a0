import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** A throwaway single-member etcd on loopback, for tests. */
export interface TestEtcd {
  /** Client URL, `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** SIGTERM, then SIGKILL if it has not exited after a few seconds; removes the data dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL at once (a crash); the data dir stays until {@link stop}. */
  kill(): Promise<void>;
}

const READY_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5_000;
/** Port races (another process took a port between our probe and etcd's bind) are retried. */
const START_ATTEMPTS = 3;

/** The etcd binary on PATH; a clear error (with the install command) when there is none. */
function findEtcd(): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'etcd');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  throw new Error(
    'etcd is not installed (no `etcd` on PATH): the etcd map store tests need a real etcd. ' +
      'Install it with `apt-get install etcd-server` (Debian/Ubuntu; .ci/run does this in CI).',
  );
}

/** A port that was free a moment ago: listen on port 0 and close. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function healthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
    const body = (await response.json()) as { health?: unknown };
    return body.health === 'true' || body.health === true;
  } catch {
    return false;
  }
}

async function startOnce(binary: string): Promise<TestEtcd | { retry: string }> {
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'dstore-etcd-'));
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    binary,
    [
      '--name=default',
      `--data-dir=${join(dir, 'data')}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=default=${peer}`,
      '--initial-cluster-state=new',
      '--logger=zap',
      '--log-level=error',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // The last output, for the error when it does not come up.
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  // A test runner that dies (or forgets stop()) must not leave an etcd behind.
  const onExit = (): void => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited(child);
        clearTimeout(timer);
      }
      process.removeListener('exit', onExit);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  const kill = async (): Promise<void> => {
    child.kill('SIGKILL');
    await exited(child);
  };

  const until = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      if (output.includes('address already in use')) return { retry: output };
      throw new Error(`etcd exited before it was ready (code ${child.exitCode}):\n${output}`);
    }
    if (await healthy(endpoint)) return { endpoint, stop, kill };
    if (Date.now() > until) {
      await stop();
      throw new Error(`etcd did not answer on ${endpoint} within ${READY_TIMEOUT_MS} ms:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Starts the real `etcd` binary on free loopback ports with a temporary data dir, and resolves
 * once it reports healthy. The caller must `stop()` it (afterAll/afterEach); a process exit
 * kills it anyway. Throws (never skips) when etcd is not installed.
 */
export async function startEtcd(): Promise<TestEtcd> {
  const binary = findEtcd();
  let last = '';
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const started = await startOnce(binary);
    if (!('retry' in started)) return started;
    last = started.retry;
  }
  throw new Error(`etcd could not bind free ports after ${START_ATTEMPTS} attempts:\n${last}`);
}
