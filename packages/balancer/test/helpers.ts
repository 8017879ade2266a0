import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  Connection,
  connectSocket,
  DstoreError,
  Op,
  PeerLink,
  type Request,
  type Response,
  type WithoutId,
} from '@dstore/protocol';
import { FakeServer } from '@dstore/protocol/testing';
import { type Balancer, type BalancerOptions, createBalancer, type RingView } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The built balancer CLI. */
export const BALANCER_CLI = resolve(here, '../dist/cli.js');
/** The built storage-node CLI. */
export const NODE_CLI = resolve(here, '../../storage-node/dist/cli.js');

/** Everything a test starts, released in reverse order in afterEach (even after a failure). */
export class Resources {
  private readonly releasers: (() => unknown)[] = [];

  add(release: () => unknown): void {
    this.releasers.push(release);
  }

  async releaseAll(): Promise<void> {
    while (this.releasers.length > 0) {
      const release = this.releasers.pop()!;
      try {
        await release();
      } catch {
        // Best effort: one failed cleanup must not leak the rest.
      }
    }
  }
}

/** Between two checks of a condition read in this process (a field, a snapshot). */
const LOCAL_POLL_MS = 20;
/**
 * Between two checks of a condition that asks another process (`/ring`, STATS, `/metrics`): each
 * costs both sides milliseconds of CPU, so polled every 20 ms they kept most of a core busy for
 * as long as a test waited, on a CI machine short of CPU. Short enough still to see a throttled
 * migration's stream phase (half a second or more in these tests).
 */
const REMOTE_POLL_MS = 50;

/**
 * Polls `condition` until it holds (no timing assertion: the test timeout is the bound); a
 * condition answering with a promise asks another process, and is polled less often.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const answer = condition();
    const remote = typeof answer !== 'boolean';
    if (await answer) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, remote ? REMOTE_POLL_MS : LOCAL_POLL_MS));
  }
}

/** An in-process balancer on free ports, silent, stopped at release. */
export async function startBalancer(resources: Resources, options: BalancerOptions = {}): Promise<Balancer> {
  const balancer = createBalancer({ port: 0, adminPort: 0, logLevel: 'silent', ...options });
  resources.add(() => balancer.stop());
  await balancer.start();
  return balancer;
}

/** A protocol client connection to `port`, destroyed at release. */
export async function connect(resources: Resources, port: number): Promise<Connection> {
  const connection = new Connection(await connectSocket({ host: '127.0.0.1', port }), {
    requestTimeoutMs: 10_000,
  });
  resources.add(() => connection.destroy());
  return connection;
}

/** Sends a request and returns the answer or the error (never throws). */
export async function attempt(
  connection: Connection,
  message: WithoutId<Request>,
): Promise<Response | DstoreError> {
  try {
    return await connection.request(message);
  } catch (error) {
    if (error instanceof DstoreError) return error;
    throw error;
  }
}

/** The DstoreError `promise` rejects with; fails the test when it resolves or rejects with anything else. */
export async function refusal(promise: Promise<unknown>): Promise<DstoreError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof DstoreError)) throw new Error(`expected a DstoreError, got ${String(outcome)}`);
  return outcome;
}

/** A child process started from a CLI, with its parsed ready line. */
export interface Spawned<Ready> {
  readonly child: ChildProcess;
  readonly ready: Ready;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

/** The ready line of dstore-node. */
export interface NodeReady {
  readonly event: 'ready';
  readonly id: string;
  readonly host: string;
  readonly port: number;
}

/** The ready line of dstore-balancer. */
export interface BalancerReady {
  readonly event: 'ready';
  readonly host: string;
  readonly port: number;
  readonly adminPort: number;
}

/** Spawns `node script ...args`, resolves with its first stdout line parsed; killed at release. */
export function spawnCli<Ready>(
  resources: Resources,
  script: string,
  args: string[],
): Promise<Spawned<Ready>> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  resources.add(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited;
    }
  });
  return new Promise((resolveReady, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`${script} not ready: ${stderr}`)), 15_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolveReady({ child, ready: JSON.parse(line) as Ready, stderr: () => stderr, exited });
      } catch (error) {
        reject(error);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited with ${code} before ready: ${stderr}`));
    });
  });
}

/** The flags of a balancer process on free client and admin ports, replication factor 1, then `extra`. */
export function balancerArgs(extra: readonly string[] = []): string[] {
  return ['--port', '0', '--admin-port', '0', '--replication-factor', '1', ...extra];
}

/**
 * A balancer process (the built CLI) on free client and admin ports, replication factor 1, logging
 * warnings; `extra` flags after those. Killed at release.
 */
export function spawnBalancer(resources: Resources, extra: string[] = []): Promise<Spawned<BalancerReady>> {
  return spawnCli<BalancerReady>(resources, BALANCER_CLI, balancerArgs(['--log-level', 'warn', ...extra]));
}

/** Starts a real storage node (memory engine) registering with the balancer at `balancerPort`. */
export function spawnNode(
  resources: Resources,
  id: string,
  balancerPort: number,
  extra: string[] = [],
): Promise<Spawned<NodeReady>> {
  return spawnCli<NodeReady>(resources, NODE_CLI, [
    '--port',
    '0',
    '--id',
    id,
    '--engine',
    'memory',
    '--join',
    `127.0.0.1:${balancerPort}`,
    '--heartbeat-interval',
    '200',
    '--log-level',
    'warn',
    ...extra,
  ]);
}

/**
 * Waits until the balancer has `count` nodes, all up, in a settled ring (no migration running);
 * `timeoutMs` as {@link waitFor}'s (replicated joins are ring changes: give them longer).
 */
export function waitForNodesUp(balancer: Balancer, count: number, timeoutMs?: number): Promise<void> {
  return waitFor(
    () => {
      const nodes = [...balancer.membership.nodes];
      return nodes.length === count && nodes.every((node) => node.up) && ringSettled(balancer);
    },
    `${count} nodes up`,
    timeoutMs,
  );
}

/** The ring holds every registered node, forwarding uses it, and no migration runs or waits. */
export function ringSettled(balancer: Balancer): boolean {
  const membership = balancer.membership;
  const progress = membership.migrator.snapshot();
  return (
    membership.ring.size === membership.size &&
    membership.routingRing === membership.ring &&
    membership.clusterMap.transition === null &&
    !progress.active &&
    progress.queuedChanges === 0
  );
}

/** Starts a fake node, stopped at release. */
export async function startFakeNode(resources: Resources, id: string): Promise<FakeServer> {
  const node = await new FakeServer({ role: 'node', id }).start();
  node.stats = { 'latency.p99_us': 7 };
  resources.add(() => node.stop());
  return node;
}

/** A fresh temporary directory, removed at release. */
export function temporaryDir(resources: Resources, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  resources.add(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The `/ring` document of a balancer process. */
export async function ringOf(balancer: Spawned<BalancerReady>): Promise<RingView> {
  const response = await fetch(`http://127.0.0.1:${balancer.ready.adminPort}/ring`);
  return (await response.json()) as RingView;
}

/**
 * Waits until the balancer process routes on a ring of exactly `ids` (the nodes with a share),
 * all up, with no transition in the map and no migration running; resolves with that `/ring`.
 */
export async function waitForRing(
  balancer: Spawned<BalancerReady>,
  ids: readonly string[],
  timeoutMs = 60_000,
): Promise<RingView> {
  let last: RingView | undefined;
  await waitFor(
    async () => {
      last = await ringOf(balancer);
      const inRing = last.nodes.filter((node) => node.share > 0);
      return (
        last.map.transition === null &&
        !last.migration.active &&
        inRing.length === ids.length &&
        ids.every((id) => inRing.some((node) => node.id === id && node.status === 'up'))
      );
    },
    `ring of ${ids.join(', ')}`,
    timeoutMs,
  );
  return last as RingView;
}

/** A client link that reconnects on its own (a balancer restart drops it), closed at release. */
export function clientLink(resources: Resources, port: number): PeerLink {
  const link = new PeerLink({
    host: '127.0.0.1',
    port,
    role: 'client',
    connectTimeoutMs: 1000,
    backoff: { initialDelayMs: 20, maxDelayMs: 200 },
    connection: { requestTimeoutMs: 3000 },
  });
  resources.add(() => link.close());
  link.start();
  return link;
}

/** A storage node's STATS, asked directly on its port. */
export async function nodeStats(port: number): Promise<Record<string, number | string>> {
  const connection = new Connection(await connectSocket({ host: '127.0.0.1', port }), {
    requestTimeoutMs: 5000,
  });
  try {
    const answer = await connection.request({ op: Op.STATS });
    if (answer.op !== Op.STATS_RESULT) throw new Error(`STATS answered op ${answer.op}`);
    return { ...answer.stats };
  } finally {
    connection.destroy();
  }
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Writes raw bytes to `port`; resolves with what came back once the server closed the socket or
 * `settleMs` passed (the bad-input suites of both ports).
 */
export function sendRaw(
  port: number,
  bytes: Uint8Array,
  settleMs: number,
): Promise<{ closedByServer: boolean; reply: string }> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let reply = '';
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
    });
    let finished = false;
    const finish = (closedByServer: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ closedByServer, reply });
    };
    const timer = setTimeout(() => finish(false), settleMs);
    socket.once('close', () => finish(true));
    socket.once('end', () => finish(true));
    socket.once('connect', () => socket.write(bytes));
  });
}

/** The first `count` keys `<prefix><n>` whose owner on `balancer`'s ring is node `id`. */
export function keysOwnedBy(balancer: Balancer, id: string, prefix: string, count: number): string[] {
  const keys: string[] = [];
  for (let index = 0; keys.length < count; index++) {
    if (balancer.ring.get(`${prefix}${index}`) === id) keys.push(`${prefix}${index}`);
  }
  return keys;
}
