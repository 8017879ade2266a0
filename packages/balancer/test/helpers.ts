import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  Connection,
  connectSocket,
  DstoreError,
  FrameServer,
  Op,
  PeerLink,
  type Request,
  type Response,
  type WithoutId,
} from '@dstore/protocol';
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

/** Polls `condition` until it holds (no timing assertion: the test timeout is the bound). */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 20));
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

/** Waits until the balancer has `count` nodes, all up, in a settled ring (no migration running). */
export function waitForNodesUp(balancer: Balancer, count: number): Promise<void> {
  return waitFor(() => {
    const nodes = [...balancer.membership.nodes];
    return nodes.length === count && nodes.every((node) => node.up) && ringSettled(balancer);
  }, `${count} nodes up`);
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

/**
 * A fake storage node for unit tests: a FrameServer that keeps keys in a Map, answers HELLO with
 * its id, and can register with a balancer (JOIN + heartbeats) like a real node.
 */
export class FakeNode {
  readonly store = new Map<string, Uint8Array>();
  readonly received: Request[] = [];
  /** When set, requests are held (not answered) until {@link releaseHeld}, like a stalled node. */
  stalled = false;
  private readonly held: [Request, Connection][] = [];
  private readonly server: FrameServer;
  private link: PeerLink | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  port = 0;

  constructor(readonly id: string) {
    this.server = new FrameServer({ onRequest: (request, connection) => this.serve(request, connection) });
  }

  async start(): Promise<this> {
    this.port = (await this.server.listen()).port;
    return this;
  }

  /** JOINs the balancer and heartbeats every `intervalMs`. */
  async register(balancerPort: number, intervalMs = 100): Promise<void> {
    const link = new PeerLink({ host: '127.0.0.1', port: balancerPort, role: 'node' });
    this.link = link;
    const joined = new Promise<void>((done) => {
      link.on('ready', () => {
        void link
          .request({ op: Op.JOIN, nodeId: this.id, host: '127.0.0.1', port: this.port, weight: 1 })
          .then(() => done());
      });
    });
    link.start();
    await joined;
    this.heartbeatTimer = setInterval(() => {
      void link
        .request({ op: Op.HEARTBEAT, nodeId: this.id, keyCount: this.store.size })
        .catch(() => undefined);
    }, intervalMs);
  }

  /** Stops heartbeating (the balancer will declare the node down). */
  stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** Sends LEAVE. */
  async leave(): Promise<void> {
    await this.link?.request({ op: Op.LEAVE, nodeId: this.id });
  }

  async stop(): Promise<void> {
    this.stopHeartbeats();
    await this.link?.close();
    await this.server.close(100);
  }

  private serve(request: Request, connection: Connection): void {
    this.received.push(request);
    if (this.stalled) {
      this.held.push([request, connection]);
      return;
    }
    connection.reply(this.answer(request));
  }

  /** Stops stalling and answers every held request. */
  releaseHeld(): void {
    this.stalled = false;
    for (const [request, connection] of this.held.splice(0)) connection.reply(this.answer(request));
  }

  private answer(request: Request): Response {
    const { id } = request;
    switch (request.op) {
      case Op.HELLO:
        return { op: Op.HELLO_OK, id, version: request.version, role: 'node', serverId: this.id };
      case Op.GET:
        return { op: Op.VALUE, id, value: this.store.get(keyOf(request.key)) ?? null };
      case Op.SET:
        this.store.set(keyOf(request.key), request.value.slice());
        return { op: Op.OK, id };
      case Op.DEL:
        return { op: Op.COUNT, id, count: this.store.delete(keyOf(request.key)) ? 1 : 0 };
      case Op.MGET:
        return { op: Op.VALUES, id, values: request.keys.map((key) => this.store.get(keyOf(key)) ?? null) };
      case Op.MSET:
        for (const entry of request.entries) this.store.set(keyOf(entry.key), entry.value.slice());
        return { op: Op.OK, id };
      case Op.PING:
        return { op: Op.OK, id };
      case Op.STATS:
        return {
          op: Op.STATS_RESULT,
          id,
          stats: { id: this.id, keys: this.store.size, 'latency.p99_us': 7 },
        };
      default:
        return { op: Op.ERROR, id, code: 'UNKNOWN_OP', message: 'fake node' };
    }
  }
}

/** Map key of a byte key. */
export function keyOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** Starts a fake node, stopped at release. */
export async function startFakeNode(resources: Resources, id: string): Promise<FakeNode> {
  const node = await new FakeNode(id).start();
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
