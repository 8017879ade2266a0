/**
 * `bench:node-cpu` (issue #13): a storage node's CPU per request served, on its own, in a shape
 * that a shared machine disturbs less than a whole cluster: one memory node (this checkout's CLI,
 * and with --baseline-root the one of another built checkout, side by side), given a
 * one-member ring by a peer connection, then driven in batches: `batch` requests written in one
 * tick (one write), the next batch once every answer is in. So every read of the node holds
 * `batch` requests and every answer batch leaves in one write, whatever the scheduling, and the
 * node's CPU per request (its threads' run time from /proc, in ns) measures its own work per
 * request plus 1/batch of a read and a write.
 *
 * Two paths, each `ops/2` SETs then `ops/2` GETs of 100-byte values over 10,000 keys (every key
 * written once first, then a warm-up):
 * - `direct`: a client connection sending the ring's epoch, as `routing: 'direct'` does (the
 *   node's direct-routing checks);
 * - `balancer`: a peer connection sending the epoch, as the balancer forwards (the fence and the
 *   ownership check).
 *
 *   pnpm build && pnpm --filter @dstore/examples bench:node-cpu -- --baseline-root /path/to/built/checkout
 *
 * With --baseline-root, both builds' nodes run side by side and each case alternates between them
 * in short segments (A B B A ...), so the load of a shared machine, which drifts over seconds,
 * falls on both alike; the ratio is the median of the rounds' ratios of segment medians.
 *
 * Flags: --ops (200000 per case and round), --segments (6), --batches (1,16), --paths
 * (direct,balancer), --rounds (3), --warmup (20000), --baseline-root (a built checkout whose node
 * CLI is compared in the same run), --node-args (more arguments for every node, space-separated,
 * e.g. --node-args="--idle-timeout 0"). Linux only (/proc). `DSTORE_CLUSTER_NODE_FLAGS` adds Node.js
 * flags to every node, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import {
  Connection,
  connectSocket,
  type DstoreError,
  handshake,
  Op,
  type Request,
  type WithoutId,
} from '@dstore/protocol';
import { cpuSeconds, median, scriptArgs, writeSyscalls } from './bench-load.js';
import { cliPath, nodeFlags } from './cluster.js';

const { values: flags } = parseArgs({
  args: scriptArgs(),
  options: {
    ops: { type: 'string', default: '200000' },
    batches: { type: 'string', default: '1,16' },
    paths: { type: 'string', default: 'direct,balancer' },
    rounds: { type: 'string', default: '3' },
    segments: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '20000' },
    'baseline-root': { type: 'string' },
    'node-args': { type: 'string', default: '' },
  },
});
const OPS = Number(flags.ops);
const BATCHES = flags.batches.split(',').map(Number);
const PATHS = flags.paths.split(',') as ('direct' | 'balancer')[];
const ROUNDS = Number(flags.rounds);
const SEGMENTS = Number(flags.segments);
const WARMUP = Number(flags.warmup);
const BASELINE_ROOT = flags['baseline-root'];
const NODE_ARGS = flags['node-args'].split(' ').filter((arg) => arg !== '');
const KEYSPACE = 10_000;
const EPOCH = 1;
const NODE_ID = 'node-a';

const KEYS = Array.from({ length: KEYSPACE }, (_, i) => new TextEncoder().encode(`key:${i}`));
const VALUE = new Uint8Array(100).fill(0x61);

interface RunningNode {
  readonly child: ChildProcess;
  readonly port: number;
}

async function startNode(distRoot: string | undefined): Promise<RunningNode> {
  const cli = cliPath('@dstore/storage-node', distRoot);
  const args = [
    ...nodeFlags(),
    cli,
    '--port',
    '0',
    '--id',
    NODE_ID,
    '--engine',
    'memory',
    '--log-level',
    'warn',
    ...NODE_ARGS,
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let stdout = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline >= 0) resolve((JSON.parse(stdout.slice(0, newline)) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`dstore-node exited with ${code}`)));
  });
  return { child, port };
}

async function stopNode(node: RunningNode): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  const exited = new Promise((resolve) => node.child.once('exit', resolve));
  node.child.kill('SIGTERM');
  const kill = setTimeout(() => node.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(kill);
}

async function connect(port: number, role: 'client' | 'balancer'): Promise<Connection> {
  const connection = new Connection(await connectSocket({ host: '127.0.0.1', port }), {
    maxInFlight: 4096,
    requestTimeoutMs: 30_000,
  });
  await handshake(connection, role);
  return connection;
}

/** Sends `count` requests, `batch` per tick, the next batch once the previous one is answered. */
function runBatches(
  connection: Connection,
  count: number,
  batch: number,
  request: (i: number) => WithoutId<Request>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let outstanding = 0;
    const answered = (error: DstoreError | undefined): void => {
      if (error !== undefined) {
        reject(error);
        return;
      }
      if (--outstanding > 0) return;
      if (sent >= count) resolve();
      else send();
    };
    const send = (): void => {
      const end = Math.min(count, sent + batch);
      for (; sent < end; sent++) {
        outstanding++;
        const refusal = connection.requestWith(request(sent), answered);
        if (refusal !== undefined) {
          reject(refusal);
          return;
        }
      }
    };
    send();
  });
}

/** SETs then GETs, `ops` in all, `batch` per write, over the keyspace in a fixed scattered order. */
async function load(connection: Connection, ops: number, batch: number, offset: number): Promise<void> {
  const keyOf = (i: number) => KEYS[((i + offset) * 7919) % KEYSPACE]!;
  const half = Math.floor(ops / 2);
  await runBatches(connection, half, batch, (i) => ({
    op: Op.SET,
    key: keyOf(i),
    value: VALUE,
    epoch: EPOCH,
  }));
  await runBatches(connection, half, batch, (i) => ({ op: Op.GET, key: keyOf(i), epoch: EPOCH }));
}

/** One build's node, its ring installed, written and warmed up. */
interface Prepared {
  readonly node: RunningNode;
  readonly peer: Connection;
  readonly client: Connection;
}

async function prepare(distRoot: string | undefined): Promise<Prepared> {
  const node = await startNode(distRoot);
  try {
    const peer = await connect(node.port, 'balancer');
    await peer.request({
      op: Op.RING,
      epoch: EPOCH,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      nodes: [{ id: NODE_ID, weight: 1, host: '127.0.0.1', port: node.port }],
    });
    const client = await connect(node.port, 'client');
    // Every key once, then a warm-up of both paths: unmeasured.
    await runBatches(peer, KEYSPACE, 16, (i) => ({ op: Op.SET, key: KEYS[i]!, value: VALUE, epoch: EPOCH }));
    await load(client, WARMUP, 16, 1);
    await load(peer, WARMUP, 16, 2);
    return { node, peer, client };
  } catch (error) {
    await stopNode(node);
    throw error;
  }
}

async function release(prepared: Prepared): Promise<void> {
  prepared.peer.destroy();
  prepared.client.destroy();
  await stopNode(prepared.node);
}

/** The node's CPU µs and write syscalls per request over one segment of `ops` requests. */
async function segment(
  prepared: Prepared,
  path: 'direct' | 'balancer',
  batch: number,
  ops: number,
): Promise<{ cpuUs: number; writes: number }> {
  const pid = prepared.node.child.pid!;
  const before = cpuSeconds(pid);
  const writesBefore = writeSyscalls(pid);
  await load(path === 'direct' ? prepared.client : prepared.peer, ops, batch, 3);
  return {
    cpuUs: ((cpuSeconds(pid) - before) * 1e6) / ops,
    writes: (writeSyscalls(pid) - writesBefore) / ops,
  };
}

const builds: { readonly label: string; readonly root: string | undefined }[] = [
  { label: 'this build', root: undefined },
  ...(BASELINE_ROOT === undefined ? [] : [{ label: 'baseline build', root: BASELINE_ROOT }]),
];
console.log(
  `bench:node-cpu: one memory node per build, ${OPS} requests per case and round (half SET, half GET, ` +
    `100-byte values, ${KEYSPACE} keys) in ${SEGMENTS} segments alternating between the builds, batches of ` +
    `${BATCHES.join(', ')} per write, paths ${PATHS.join(', ')}, ${ROUNDS} rounds; node CPU from ` +
    '/proc/<pid>/task/*/schedstat\n',
);
console.log(
  '| round | case | build | node CPU µs per request (segments) | median | node writes per request |',
);
console.log('|---:|---|---|---|---:|---:|');
/** Per case and build, every segment's CPU µs per request; per case, each round's this/baseline ratio. */
const cpu = new Map<string, number[]>();
const ratios = new Map<string, number[]>();
const writes = new Map<string, number[]>();
for (let round = 1; round <= ROUNDS; round++) {
  const prepared: Prepared[] = [];
  try {
    for (const build of builds) prepared.push(await prepare(build.root));
    for (const path of PATHS) {
      for (const batch of BATCHES) {
        const name = `${path} × ${batch}`;
        const perBuild: { cpuUs: number; writes: number }[][] = builds.map(() => []);
        // A B B A A B ...: a slow drift of the machine's load falls on both builds alike.
        for (let s = 0; s < SEGMENTS; s++) {
          const order = s % 2 === 0 ? builds.keys() : [...builds.keys()].reverse();
          for (const b of order)
            perBuild[b]!.push(await segment(prepared[b]!, path, batch, Math.floor(OPS / SEGMENTS)));
        }
        const medians = perBuild.map((samples) => median(samples.map((x) => x.cpuUs)));
        builds.forEach((build, b) => {
          const key = `${build.label}\t${name}`;
          cpu.set(key, [...(cpu.get(key) ?? []), ...perBuild[b]!.map((x) => x.cpuUs)]);
          writes.set(key, [...(writes.get(key) ?? []), ...perBuild[b]!.map((x) => x.writes)]);
          console.log(
            `| ${round} | ${name} | ${build.label} | ${perBuild[b]!.map((x) => x.cpuUs.toFixed(2)).join(' ')} | ` +
              `${medians[b]!.toFixed(2)} | ${median(perBuild[b]!.map((x) => x.writes)).toFixed(3)} |`,
          );
        });
        if (builds.length > 1) ratios.set(name, [...(ratios.get(name) ?? []), medians[0]! / medians[1]!]);
      }
    }
  } finally {
    for (const p of prepared) await release(p);
  }
}

console.log(`\nMedians over ${ROUNDS} rounds × ${SEGMENTS} segments:\n`);
const twoBuilds = builds.length > 1;
console.log(
  `| case |${builds.map((b) => ` ${b.label} µs/request |`).join('')}${twoBuilds ? " this / baseline (median of the rounds' ratios) |" : ''}`,
);
console.log(`|---|${builds.map(() => '---:|').join('')}${twoBuilds ? '---:|' : ''}`);
for (const path of PATHS) {
  for (const batch of BATCHES) {
    const name = `${path} × ${batch}`;
    const medians = builds.map((build) => median(cpu.get(`${build.label}\t${name}`) ?? []));
    const ratio = twoBuilds ? ` ${median(ratios.get(name) ?? []).toFixed(2)}x |` : '';
    console.log(`| ${name} |${medians.map((m) => ` ${m.toFixed(2)} |`).join('')}${ratio}`);
  }
}
