/**
 * Recovery benchmark (not a test): how long the cluster is unavailable when a balancer dies.
 *
 * 1. Balancer restart: a balancer (child process, `--data-dir`) in front of 3 memory nodes; a
 *    client sends GETs back to back; the balancer is SIGKILLed and started again on the same port
 *    and data dir. Reported: ms from the SIGKILL to the first successful GET (and, for the
 *    record, to the restarted balancer's ready line). The restarted balancer routes on the stored
 *    map at once; what remains is process start, the nodes' links and their reconnect backoff.
 * 2. Coordinator takeover on etcd (skipped when `etcd` is not on PATH): two balancers on one etcd
 *    (`--etcd-lease-ttl` BENCH_REC_TTL, default 2 s); once the second follows the first, the
 *    coordinator is SIGKILLed; reported: ms until the other balancer's /ring says it coordinates,
 *    and until a JOIN sent to it succeeds. A JOIN is sent every 20 ms without waiting for the
 *    previous one: a follower holds a JOIN it forwards to a dead coordinator (up to its connect
 *    timeout, 4 s by default) rather than failing it, so one probe at a time would measure the
 *    probe's own 2 s request timeout.
 *
 *   pnpm build && pnpm --filter @dstore/balancer exec tsx bench/recovery.ts
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Op, PeerLink, toBytes } from '@dstore/protocol';
import { BALANCER_CLI, killAll, NODE_CLI, startProcess } from './processes.js';

const ROUNDS = Number(process.env.BENCH_REC_ROUNDS ?? 5);
const TTL = Number(process.env.BENCH_REC_TTL ?? 2);
/** Processes not started by startProcess (etcd). */
const others: ChildProcess[] = [];
const dirs: string[] = [];

const start = startProcess;

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

interface RingView {
  readonly map: { readonly role: string; readonly coordinator?: string };
  readonly nodes: { readonly status: string }[];
}

async function ring(adminPort: number): Promise<RingView> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/ring`);
  return (await response.json()) as RingView;
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(5);
  }
}

function clientLink(port: number, role: 'client' | 'node' = 'client'): PeerLink {
  const link = new PeerLink({
    host: '127.0.0.1',
    port,
    role,
    connectTimeoutMs: 1000,
    backoff: { initialDelayMs: 10, maxDelayMs: 100 },
    connection: { requestTimeoutMs: 2000 },
  });
  link.on('error', () => undefined);
  link.start();
  return link;
}

function stats(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return `median ${median.toFixed(0)} ms, min ${sorted[0]!.toFixed(0)}, max ${sorted.at(-1)!.toFixed(0)}`;
}

async function restartBench(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'dstore-bench-map-'));
  dirs.push(dataDir);
  const args = (port: number) => [
    '--port',
    String(port),
    '--admin-port',
    '0',
    '--data-dir',
    dataDir,
    '--log-level',
    'warn',
  ];
  let balancer = start(BALANCER_CLI, args(0));
  const { port, adminPort } = await balancer.ready;
  for (const id of ['node-1', 'node-2', 'node-3']) {
    await start(NODE_CLI, [
      '--port',
      '0',
      '--id',
      id,
      '--engine',
      'memory',
      '--join',
      `127.0.0.1:${port}`,
      // Their "lost the balancer" warnings after each SIGKILL are expected here.
      '--log-level',
      'error',
    ]).ready;
  }
  await until(
    async () => (await ring(adminPort!)).nodes.filter((node) => node.status === 'up').length === 3,
    'nodes up',
  );
  const link = clientLink(port);
  await until(async () => link.isReady, 'client');
  const key = toBytes('recovery-probe');
  const toFirstOk: number[] = [];
  const toReady: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const killedAt = performance.now();
    balancer.child.kill('SIGKILL');
    await new Promise((done) => balancer.child.once('exit', done));
    balancer = start(BALANCER_CLI, args(port));
    void balancer.ready.then(() => toReady.push(performance.now() - killedAt));
    for (;;) {
      try {
        await link.request({ op: Op.GET, key });
        break;
      } catch {
        await sleep(1);
      }
    }
    toFirstOk.push(performance.now() - killedAt);
    await sleep(300);
  }
  console.log(`balancer SIGKILL -> restarted balancer's ready line: ${stats(toReady)} (${ROUNDS} rounds)`);
  console.log(`balancer SIGKILL -> first successful GET through it:  ${stats(toFirstOk)} (${ROUNDS} rounds)`);
  await link.close();
}

async function freePort(): Promise<number> {
  return new Promise((done, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => done(port));
    });
  });
}

async function takeoverBench(): Promise<void> {
  if (spawnSync('etcd', ['--version']).status !== 0) {
    console.log('coordinator takeover: skipped (no etcd on PATH: apt-get install etcd-server)');
    return;
  }
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const etcdDir = mkdtempSync(join(tmpdir(), 'dstore-bench-etcd-'));
  dirs.push(etcdDir);
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const etcd = spawn(
    'etcd',
    [
      '--data-dir',
      etcdDir,
      '--listen-client-urls',
      endpoint,
      '--advertise-client-urls',
      endpoint,
      '--listen-peer-urls',
      `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peerPort}`,
      '--initial-cluster',
      `default=http://127.0.0.1:${peerPort}`,
    ],
    { stdio: 'ignore' },
  );
  others.push(etcd);
  await until(async () => (await fetch(`${endpoint}/health`)).ok, 'etcd');
  const takeovers: number[] = [];
  const joins: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const args = (id: string) => [
      '--id',
      id,
      '--port',
      '0',
      '--admin-port',
      '0',
      '--etcd',
      endpoint,
      '--etcd-prefix',
      `/bench/${round}`,
      '--etcd-lease-ttl',
      String(TTL),
      '--log-level',
      'silent',
    ];
    const first = start(BALANCER_CLI, args('a'));
    const a = await first.ready;
    await until(async () => (await ring(a.adminPort!)).map.role === 'coordinator', 'a coordinates');
    const second = start(BALANCER_CLI, args('b'));
    const b = await second.ready;
    // Steady state first: b follows a (it knows the coordinator it would forward to).
    await until(async () => {
      const view = (await ring(b.adminPort!)).map;
      return view.role === 'follower' && view.coordinator?.startsWith('a@') === true;
    }, 'b follows a');
    // A node's link to b, for the JOIN probe (a fake node: nothing listens on its port).
    const nodeLink = clientLink(b.port, 'node');
    await until(async () => nodeLink.isReady, 'node link to b');
    const probe = { op: Op.JOIN, nodeId: `probe-${round}`, host: '127.0.0.1', port: 1, weight: 1 } as const;
    const killedAt = performance.now();
    first.child.kill('SIGKILL');
    const joined = new Promise<number>((done, reject) => {
      let answered = false;
      const send = (): void => {
        if (answered) return;
        if (performance.now() - killedAt > 60_000) {
          reject(new Error('timed out: JOIN through b'));
          return;
        }
        nodeLink.request(probe).then(
          () => {
            if (!answered) done(performance.now() - killedAt);
            answered = true;
          },
          () => undefined,
        );
        setTimeout(send, 20);
      };
      send();
    });
    await until(async () => (await ring(b.adminPort!)).map.role === 'coordinator', 'b takes over');
    takeovers.push(performance.now() - killedAt);
    joins.push(await joined);
    await nodeLink.close();
    second.child.kill('SIGKILL');
  }
  console.log(
    `etcd coordinator SIGKILL -> the other balancer coordinates (lease TTL ${TTL} s): ${stats(takeovers)} (${ROUNDS} rounds)`,
  );
  console.log(`etcd coordinator SIGKILL -> first JOIN through the other balancer succeeds: ${stats(joins)}`);
}

try {
  await restartBench();
  await takeoverBench();
} finally {
  killAll();
  for (const child of others) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
