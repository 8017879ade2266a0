/**
 * Per-key linearizability under membership changes and crashes, checked by @dstore/checker.
 *
 * Several clients (each with two workers) read, write and delete the SAME few keys — every key has
 * many writers, which the one-writer-per-key History of the other load tests cannot check — while
 * a 4th node joins, a node leaves gracefully (SIGTERM), a node is paused (SIGSTOP) past the
 * heartbeat and command timeouts and resumed, and, on lmdb, a node is SIGKILLed and restarted on
 * its data dir; through the balancer and with `routing: 'direct'` clients. A filler of a few thousand keys, streamed at a low migration rate,
 * keeps each migration running long enough for the load to meet its fall-back reads and
 * double deletes. At the end one more process reads every key: what survived is part of the
 * history too. The whole history (faults included) must be linearizable: one value per key at a
 * time, never a stale read, a lost acknowledged write or a resurrected delete.
 *
 * Memory nodes are not SIGKILLed: without replication their keys die with the process (that is
 * what "acknowledged" means for the memory engine), so a kill would rightly fail the check.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type CheckResult,
  checkHistory,
  type Fault,
  formatCheckResult,
  HistoryRecorder,
  type ManagedProcess,
  Nemesis,
  type OperationMix,
  parseHistory,
  runRegisterOperation,
  startWorkload,
} from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import { afterEach, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { directClient, withMap } from './direct-client.js';
import {
  NODE_CLI,
  type NodeReady,
  Resources,
  sleep,
  startBalancer,
  temporaryDir,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

type Engine = 'memory' | 'lmdb';
type Routing = 'balancer' | 'direct';

/** Keys every worker writes: few, so each gets many concurrent writers. */
const KEYS = Array.from({ length: 12 }, (_, i) => `lin-${i}`);
/** Keys written once before the load, so that every migration streams for a while. */
const FILLER = 3000;
const CLIENTS = 4;
const WORKERS = 8;
/**
 * Short, so that requests caught by the SIGSTOP time out (outcome unknown: `info`) and are then
 * executed after SIGCONT, which is what `info` must allow.
 */
const COMMAND_TIMEOUT_MS = 1000;

/**
 * Reads, writes, deletes and APPENDs (an atomic read-modify-write on the owner: one lost, applied
 * twice or reordered shows in the values read and the lengths answered). Direct-routing clients'
 * deletes once took effect twice during a leave (found by this test; fixtures/README.md, and the
 * deterministic reproduction in linearizable-direct-delete.test.ts); fixed, so every case has them.
 */
const MIX: OperationMix = { read: 5, write: 3, delete: 1, append: 1, appendRead: 1 };

const cases: { engine: Engine; routing: Routing; mix: OperationMix }[] = [
  { engine: 'memory', routing: 'balancer', mix: MIX },
  { engine: 'lmdb', routing: 'balancer', mix: MIX },
  { engine: 'memory', routing: 'direct', mix: MIX },
  { engine: 'lmdb', routing: 'direct', mix: MIX },
];

/** The cluster of one case: an in-process balancer and dstore-node processes under the nemesis. */
class Cluster {
  readonly nodes = new Map<string, ManagedProcess<NodeReady>>();

  constructor(
    readonly balancer: Balancer,
    private readonly engine: Engine,
  ) {}

  /** Starts (or restarts, on the same data dir) node `id`. */
  async start(id: string): Promise<void> {
    let node = this.nodes.get(id);
    if (node === undefined) {
      const args = ['--port', '0', '--id', id, '--join', `127.0.0.1:${this.balancer.address.port}`];
      args.push('--heartbeat-interval', '200', '--migration-rate', '3000', '--log-level', 'warn');
      if (this.engine === 'lmdb')
        args.push('--engine', 'lmdb', '--data-dir', temporaryDir(resources, `dstore-lin-${id}-`));
      node = nemesis.process<NodeReady>({ name: id, script: NODE_CLI, args });
      this.nodes.set(id, node);
    }
    await node.start();
  }

  /** Waits until the balancer has `count` nodes, all up, and no migration runs. */
  settled(count: number): Promise<void> {
    return waitForNodesUp(this.balancer, count);
  }

  /** Waits until a migration streams (the load then meets the moving ranges). */
  streaming(): Promise<void> {
    return waitFor(
      () => this.balancer.membership.clusterMap.transition?.phase === 'stream',
      'a migration streaming',
    );
  }
}

/** The clients of a case: through the balancer, or routing straight to the nodes. */
async function clientsFor(routing: Routing, port: number): Promise<DstoreClient[]> {
  const clients: DstoreClient[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    if (routing === 'direct')
      clients.push(await withMap(directClient(resources, port, { commandTimeout: COMMAND_TIMEOUT_MS })));
    else {
      const client = createClient({ host: '127.0.0.1', port, commandTimeout: COMMAND_TIMEOUT_MS });
      resources.add(() => client.disconnect());
      clients.push(client);
    }
  }
  return clients;
}

async function writeFiller(client: DstoreClient): Promise<void> {
  for (let start = 0; start < FILLER; start += 500) {
    const entries = Array.from({ length: Math.min(500, FILLER - start) }, (_, i): [string, string] => [
      `filler-${start + i}`,
      'x'.repeat(64),
    ]);
    await client.mset(entries);
  }
}

/** One more process reads every key after the load: the final state is checked with the rest. */
async function finalReads(recorder: HistoryRecorder, client: DstoreClient): Promise<void> {
  const process = recorder.newProcess();
  for (const key of KEYS) {
    const pending = recorder.invoke(process, 'read', key);
    pending.ok(await client.getString(key));
  }
}

/**
 * A failed check: prints the checker's explanation and dumps the history (JSONL) for a closer
 * look. With DSTORE_HISTORY_DIR set, every run's history is kept there (e.g. to cross-check the
 * verdicts with another checker).
 */
function report(result: CheckResult, recorder: HistoryRecorder, name: string, extra: string): void {
  const keepDir = process.env.DSTORE_HISTORY_DIR;
  const file = join(keepDir ?? tmpdir(), `dstore-linearizable-${name}-${process.pid}.jsonl`);
  if (keepDir !== undefined || result.verdict !== 'ok') recorder.dump(file);
  if (result.verdict !== 'ok') console.log(`${formatCheckResult(result)}\nhistory: ${file}\n${extra}`);
}

/**
 * One run: 3 nodes, the load, then a join, a graceful leave, a SIGSTOP longer than the heartbeat
 * and command timeouts, and on lmdb a SIGKILL and restart; final reads; the check.
 */
async function checkUnderFaults(engine: Engine, routing: Routing, mix: OperationMix): Promise<void> {
  const recorder = new HistoryRecorder();
  nemesis = new Nemesis(recorder);
  const balancer = await startBalancer(resources, { replicationFactor: 1, heartbeatTimeoutMs: 1000 });
  const port = balancer.address.port;
  const cluster = new Cluster(balancer, engine);
  for (const id of ['node-1', 'node-2', 'node-3']) await cluster.start(id);
  await cluster.settled(3);
  const clients = await clientsFor(routing, port);
  await writeFiller(clients[0]!);

  const load = startWorkload({
    recorder,
    keys: KEYS,
    workers: WORKERS,
    maxOperations: 20_000,
    durationMs: 60_000,
    mix,
    execute: (operation, worker) => runRegisterOperation(clients[worker % CLIENTS]!, operation),
  });
  const schedule: Fault[] = [
    { afterMs: 300, f: 'join', target: 'node-4', run: () => cluster.start('node-4') },
    { afterMs: 0, f: 'migration', target: 'join', run: () => cluster.streaming() },
    { afterMs: 0, f: 'settle', target: '4 nodes', run: () => cluster.settled(4) },
    { afterMs: 200, f: 'leave', target: 'node-2', run: () => cluster.nodes.get('node-2')!.terminate() },
    { afterMs: 0, f: 'settle', target: '3 nodes', run: () => cluster.settled(3) },
    // Longer than the heartbeat timeout and the command timeout: its requests time out (info),
    // then fail fast (UNAVAILABLE); what it had received runs after SIGCONT.
    { afterMs: 200, f: 'pause', target: 'node-1', run: () => cluster.nodes.get('node-1')!.pause() },
    { afterMs: 2000, f: 'resume', target: 'node-1', run: () => cluster.nodes.get('node-1')!.resume() },
    { afterMs: 0, f: 'settle', target: '3 nodes', run: () => cluster.settled(3) },
  ];
  if (engine === 'lmdb') {
    schedule.push(
      {
        afterMs: 200,
        f: 'kill',
        target: 'node-3',
        run: () => cluster.nodes.get('node-3')!.kill('SIGKILL'),
      },
      { afterMs: 300, f: 'restart', target: 'node-3', run: () => cluster.start('node-3') },
      { afterMs: 0, f: 'settle', target: '3 nodes', run: () => cluster.settled(3) },
    );
  }
  try {
    await nemesis.run(schedule);
    await sleep(300);
  } finally {
    await load.stop();
  }
  const stats = await load.done;
  const final = createClient({ host: '127.0.0.1', port, commandTimeout: 5000 });
  resources.add(() => final.disconnect());
  await finalReads(recorder, final);

  const result = checkHistory(recorder.events, { timeLimitMs: 30_000 });
  report(result, recorder, `${engine}-${routing}`, JSON.stringify(stats));
  expect(result.verdict).toBe('ok');
  // The load really ran, and through the faults: most operations answered, every key was
  // written by several processes, and appends and deletes were answered.
  expect(stats.ok).toBeGreaterThan(500);
  for (const f of ['append', 'delete']) {
    const answered = recorder.events.filter((e) => e.f === f && e.type === 'ok').length;
    expect(answered, f).toBeGreaterThan(10);
  }
  for (const key of KEYS) {
    const writers = new Set(
      recorder.events.filter((e) => e.key === key && e.f === 'write').map((e) => e.process),
    );
    expect(writers.size, key).toBeGreaterThan(2);
  }
  if (routing === 'direct') {
    for (const client of clients) expect(client.routingStats!.direct).toBeGreaterThan(0);
  }
}

describe.each(cases)(
  'linearizable registers with appends, many writers per key ($engine nodes, $routing clients)',
  ({ engine, routing, mix }) => {
    const faults = `a join, a graceful leave, a SIGSTOP${engine === 'lmdb' ? ', a SIGKILL and restart' : ''}`;
    it(`every key stays linearizable through ${faults}`, { timeout: 120_000 }, () =>
      checkUnderFaults(engine, routing, mix),
    );
  },
);

/**
 * A recorded history of a real violation (fixtures/README.md): illegal on key `lin-3` only, the
 * explanation naming the operation that cannot come next and the faults injected before it.
 */
function expectRecordedViolation(file: string, cannotComeNext: RegExp, faults: RegExp): void {
  const result = checkHistory(parseHistory(readFileSync(join(FIXTURES, file), 'utf8')));
  expect(result.verdict).toBe('illegal');
  expect(result.illegal.map((key) => key.key)).toEqual(['lin-3']);
  expect(result.illegal[0]!.explanation).toMatch(cannotComeNext);
  expect(result.illegal[0]!.explanation).toMatch(faults);
}

describe('a direct DEL of a moving key executed twice, once (fixtures/README.md; fixed)', () => {
  // The live check is the direct cases above (deletes in their mix); the race needs a write to land
  // between the two executions: it failed in about one run in five.
  it('the recorded history of it is found illegal at the read that missed an acknowledged write', () => {
    // During the graceful leave of node-2.
    expectRecordedViolation(
      'direct-delete-reexecuted.jsonl',
      /None of these can come next[^\n]*\n {2}#15926 process 5: read -> null \[30820\.705/,
      /Last faults injected before it: .*leave node-2 @30270\.0$/,
    );
  });
});

describe('two DELs of one value both answered 1 (fixtures/README.md; fixed)', () => {
  it('the recorded history of it is found illegal at the second DEL', () => {
    expectRecordedViolation(
      'direct-delete-counted-twice.jsonl',
      /None of these can come next[^\n]*\n {2}#15072 process 2: delete -> true \[310573\.878/,
      /leave node-2 @310418\.9$/,
    );
  });
});

describe('the same harness catches a real violation', () => {
  it('a SIGKILLed memory node loses its acknowledged writes: the checker says which key and read', {
    timeout: 60_000,
  }, async () => {
    // The control experiment of the tests above: without replication a memory node's keys die with
    // it, so acknowledged writes are lost and reads after its restart answer null. If the checker
    // (or the way the history is recorded) could not see that, the passes above would mean nothing.
    const recorder = new HistoryRecorder();
    nemesis = new Nemesis(recorder);
    const balancer = await startBalancer(resources, { replicationFactor: 1, heartbeatTimeoutMs: 1000 });
    const cluster = new Cluster(balancer, 'memory');
    for (const id of ['node-1', 'node-2', 'node-3']) await cluster.start(id);
    await cluster.settled(3);
    const [client] = await clientsFor('balancer', balancer.address.port);
    const load = startWorkload({
      recorder,
      keys: KEYS,
      workers: WORKERS,
      maxOperations: 500,
      execute: (operation) => runRegisterOperation(client!, operation),
    });
    await load.done;
    // The last word on every key is an acknowledged write, so a read of null can only be a loss.
    const writer = recorder.newProcess();
    for (const key of KEYS) {
      const pending = recorder.invoke(writer, 'write', key, `last-${key}`);
      await client!.set(key, `last-${key}`);
      pending.ok();
    }
    const victim = balancer.membership.ring.get(KEYS[0]!);
    await nemesis.run([
      { afterMs: 0, f: 'kill', target: victim, run: () => cluster.nodes.get(victim)!.kill('SIGKILL') },
      { afterMs: 0, f: 'restart', target: victim, run: () => cluster.start(victim) },
      { afterMs: 0, f: 'settle', target: '3 nodes', run: () => cluster.settled(3) },
    ]);
    await finalReads(recorder, client!);

    const result = checkHistory(recorder.events);
    expect(result.verdict).toBe('illegal');
    const lost = result.illegal.find((key) => key.key === KEYS[0]);
    expect(lost?.explanation).toMatch(new RegExp(`leaving the state "last-${KEYS[0]}"[\\s\\S]*read -> null`));
  });
});
