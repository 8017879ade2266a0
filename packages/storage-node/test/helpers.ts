import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Connection,
  connectSocket,
  DstoreError,
  handshake,
  Op,
  PROTOCOL_VERSION,
  type Response,
  type RingMember,
  type RingRequest,
} from '@dstore/protocol';
import { type Logger, pino } from 'pino';
import { createStorageNode, type StorageNode, type StorageNodeOptions } from '../src/index.js';

/** The built CLI the end-to-end tests spawn. */
export const CLI_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');

/** A logger that drops everything (tests assert on behaviour, not logs). */
export const silentLogger = pino({ level: 'silent' });

/** One pino log record, as written. */
export interface LogRecord {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** pino's number for the 'error' level. */
export const ERROR_LEVEL = 50;
/** pino's number for the 'warn' level. */
export const WARN_LEVEL = 40;

/** A logger at `level` that keeps every record in memory, for tests about what a node logs. */
export function capturingLogger(level = 'debug'): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const logger = pino(
    { level },
    {
      write(line: string): void {
        records.push(JSON.parse(line) as LogRecord);
      },
    },
  );
  return { logger, records };
}

/** Everything a test started, torn down in afterEach even when the test failed. */
/** Both engines as `describe.each` cases: the memory engine, and lmdb in a fresh directory of `resources`. */
export function engineCases(resources: Resources): { name: string; options: () => StorageNodeOptions }[] {
  return [
    { name: 'memory', options: () => ({ engine: 'memory' }) },
    { name: 'lmdb', options: () => ({ engine: 'lmdb', dataDir: resources.tempDir() }) },
  ];
}

export class Resources {
  private readonly cleanups: (() => Promise<void> | void)[] = [];

  /** Registers a cleanup; run in reverse order. */
  defer(cleanup: () => Promise<void> | void): void {
    this.cleanups.push(cleanup);
  }

  /** A fresh temporary directory removed at cleanup. */
  tempDir(prefix = 'dstore-node-test-'): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.defer(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Starts an in-process node on port 0, stopped at cleanup. */
  async node(options: StorageNodeOptions = {}): Promise<StorageNode> {
    const node = createStorageNode({ port: 0, logger: silentLogger, ...options });
    await node.start();
    this.defer(() => node.stop());
    return node;
  }

  /** A protocol Connection to `port` after a successful HELLO, closed at cleanup. */
  async client(port: number, token?: string): Promise<Connection> {
    const connection = await this.connection(port);
    const credentials =
      token === undefined ? undefined : { kind: 'user' as const, user: 'default', password: token };
    await handshake(connection, 'client', { credentials });
    return connection;
  }

  /**
   * A protocol Connection that said HELLO as a cluster peer (no cluster secret: accepted over
   * loopback), as a balancer does: it may send RING, MIGRATE and PURGE. Closed at cleanup.
   */
  async peer(port: number, role: 'balancer' | 'node' = 'balancer'): Promise<Connection> {
    const connection = await this.connection(port);
    await handshake(connection, role);
    return connection;
  }

  /** A protocol Connection without HELLO, destroyed at cleanup. */
  async connection(port: number): Promise<Connection> {
    const socket = await connectSocket({ host: '127.0.0.1', port });
    const connection = new Connection(socket);
    this.defer(() => connection.destroy());
    return connection;
  }

  /** A raw TCP socket, destroyed at cleanup. */
  async rawSocket(port: number): Promise<Socket> {
    const socket = await new Promise<Socket>((resolvePromise, reject) => {
      const s = connect({ host: '127.0.0.1', port }, () => resolvePromise(s));
      s.once('error', reject);
    });
    socket.on('error', () => undefined);
    this.defer(() => {
      socket.destroy();
    });
    return socket;
  }

  /** Spawns the built CLI, waits for its ready line; SIGKILLed at cleanup if still running. */
  async spawnNode(args: readonly string[]): Promise<SpawnedNode> {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolveExit) =>
      child.once('exit', (code) => resolveExit(code)),
    );
    this.defer(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    });
    const ready = await readReadyLine(child);
    return { child, ready, exited, stderr: () => stderrOf(child) };
  }

  /** Runs every cleanup, newest first; one failing does not stop the others. */
  async cleanup(): Promise<void> {
    while (this.cleanups.length > 0) {
      const cleanup = this.cleanups.pop() as () => Promise<void> | void;
      try {
        await cleanup();
      } catch {
        // Best effort: the remaining resources must still be released.
      }
    }
  }
}

/** The ready line a dstore-node prints first on stdout. */
export interface ReadyLine {
  readonly event: 'ready';
  readonly service: 'dstore-node';
  readonly id: string;
  readonly host: string;
  readonly port: number;
}

/** A spawned dstore-node child. */
export interface SpawnedNode {
  readonly child: ChildProcess;
  readonly ready: ReadyLine;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  readonly stderr: () => string;
}

const stderrBuffers = new WeakMap<ChildProcess, string[]>();

function stderrOf(child: ChildProcess): string {
  return (stderrBuffers.get(child) ?? []).join('');
}

function readReadyLine(child: ChildProcess): Promise<ReadyLine> {
  const chunks: string[] = [];
  stderrBuffers.set(child, chunks);
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => chunks.push(chunk));
  return new Promise<ReadyLine>((resolveReady, reject) => {
    let stdout = '';
    child.stdout?.setEncoding('utf8');
    const onData = (chunk: string): void => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline < 0) return;
      child.stdout?.off('data', onData);
      child.stdout?.resume();
      try {
        resolveReady(JSON.parse(stdout.slice(0, newline)) as ReadyLine);
      } catch (error) {
        reject(error);
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) =>
      reject(new Error(`dstore-node exited with ${code} before ready: ${chunks.join('')}`)),
    );
  });
}

/** Protocol version used in raw HELLO frames. */
export const VERSION = PROTOCOL_VERSION;

/** The answer of `promise`, or the typed error it failed with (anything else is rethrown). */
export async function answerOf(promise: Promise<Response>): Promise<Response | DstoreError> {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof DstoreError) return error;
    throw error;
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolveSleep) => setTimeout(resolveSleep, ms));
}

/** Waits until `predicate()` is true, polling; fails after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Reads everything a raw socket receives until it closes (or `timeoutMs`), and whether it closed. */
export function collectUntilClose(
  socket: Socket,
  timeoutMs: number,
): Promise<{ bytes: Buffer; closed: boolean }> {
  return new Promise((resolveCollect) => {
    const chunks: Buffer[] = [];
    const done = (closed: boolean): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolveCollect({ bytes: Buffer.concat(chunks), closed });
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('data', onData);
    socket.once('close', () => done(true));
  });
}

/**
 * A RING request as a balancer sends it (generation 1, the vnode ring) of `nodes` at `epoch`;
 * `extra` adds the replication fields (`replicationFactor`, `switching`, `holding`).
 */
export function ringRequest(
  epoch: number,
  nodes: readonly RingMember[],
  extra: Pick<RingRequest, 'replicationFactor' | 'switching' | 'holding'> = {},
): Omit<RingRequest, 'id'> {
  return { op: Op.RING, epoch, generation: 1, algorithm: 'vnode', vnodes: 0, ...extra, nodes: [...nodes] };
}
