/**
 * `soak`: a long run under randomized faults, checked for linearizability (issue #14's soak, for
 * releases; CI runs the short, fixed-schedule versions in packages/balancer/test).
 *
 * A balancer process (with `--data-dir`, on a fixed port so that it can be SIGKILLed and restarted
 * under its clients) and 3 to 5 storage node processes; rounds of `--round-seconds` each, until
 * `--minutes` have passed. In every round 4 clients x 2 workers read, write, delete, append to and
 * run transactions (an APPEND then a GET) on 12 keys of that round (fresh keys per round, so an
 * operation of unknown outcome from an earlier round
 * cannot be mistaken for a violation), through the balancer or routing directly (alternating with
 * `--routing both`), while the round's faults run: 2 or 3 drawn from the menu below with a seeded
 * random generator (`--seed` replays a run's choices; the load's timing still varies).
 *
 * Beside it, every round runs @dstore/checker's bank on fresh accounts of a per-round hash tag
 * (`{bank-r<round>}:0..7` at 100 each, and `{bank-r<round>}:log`): 4 workers on the same clients
 * move money between them, each transfer ONE multi-key transaction (`decrby`, `incrby`, `append`
 * of its unique id to the log), and read all of them back by read-only transactions and MGETs
 * (a bounded count of operations, paced to span the round).
 *
 * | fault | what | when |
 * |---|---|---|
 * | join | a new node joins (a migration streams its ranges in) | fewer than 5 nodes (6 with replication) |
 * | leave | SIGTERM: a graceful leave (its ranges stream out) | more than 3 nodes (factor + 1 with replication) |
 * | pause | SIGSTOP for 0.3-3 s (past the heartbeat and command timeouts), then SIGCONT | always |
 * | kill | SIGKILL a node, restart it on its data after 0.1-1 s | lmdb only: a memory node's keys die with it |
 * | weight | SIGKILL a node, restart it at once with another `--weight` (0.5, 1, 1.5, 2): a ring change | lmdb, or with replication |
 * | balancer | SIGKILL the balancer, restart it on its map after 0.1-1 s | always |
 *
 * With `--replication-factor N` (2-5) the cluster starts with 5 nodes and keeps N + 1 to 6; besides
 * joins, graceful leaves, short pauses and balancer kills (ring changes move chains: step 5 of the
 * design), the faults are failures and returns: `fail-kill` SIGKILLs 1 to N - 1 nodes at once,
 * waits until the balancer marked them `failed` (failover), then restarts them (lmdb on their data,
 * memory empty); `fail-pause` SIGSTOPs one past the failure timeout and resumes it (stale, on an
 * old epoch: it must never answer from it); `kill` SIGKILLs one and restarts it at once, before
 * the failure timeout (a memory node comes back empty: it must not serve until it caught up);
 * `dead` SIGKILLs one for good: the balancer (`--dead-after 5000`) declares it dead and removes
 * it, its ranges re-copied to restore N copies; `join-balancer` starts a join and SIGKILLs the
 * balancer 0.1-1.5 s later, in the middle of the ring change, which its restart resumes.
 * Every returning member catches up (learners: `syncing`, `promoting`, `up`) before the round
 * goes on, so the cluster is whole again after each fault.
 *
 * After each round: the load stops, the cluster settles (every node up, no migration), one more
 * process reads the round's keys, and the round's history is checked (@dstore/checker, WGL). The
 * bank's final state is read (a read-only transaction and an MGET, which must agree) and
 * `checkBank` holds the round's bank to atomic, durable, exactly-once transfers: every read
 * totals 800 and is exactly the transfers of the log it read, and its log is a prefix of the final
 * one; the final log names every acknowledged transfer, each id at most once, none refused as not
 * executed; the final balances are 100 plus the effects of the log's transfers.
 * Every round also writes one durable key (acknowledged) and every later round on the same
 * cluster reads all of them back: no acknowledged write may be lost over the cluster's life. A
 * violation (of linearizability or of the bank), a lost durable key, or a cluster that does not
 * settle within 60 s stops the soak with exit code 1; the round's history (`round-<i>.jsonl`), its
 * bank (`round-<i>-bank.json`: the recording, the final state and every violation) and the
 * processes' logs are kept in the run's folder (printed).
 *
 *   pnpm build && pnpm --filter @dstore/examples soak                       # 10 minutes, lmdb
 *   pnpm --filter @dstore/examples soak -- --minutes 30 --engine memory --routing direct --seed 7
 *   pnpm --filter @dstore/examples soak -- --replication-factor 3 --engine memory
 *   pnpm --filter @dstore/examples soak -- --replication-factor 3 --faults balancer,fail-kill   # only these
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BankCheckResult,
  type BankFinal,
  bankKeys,
  checkBank,
  checkHistory,
  formatBankResult,
  formatCheckResult,
  HistoryRecorder,
  type ManagedProcess,
  Nemesis,
  readBankFinal,
  runRegisterOperation,
  setupBank,
  startBank,
  startWorkload,
  summarizeBank,
} from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import { seededRandom } from '@dstore/protocol/testing';
import { scriptFlags } from './bench-load.js';
import { adminJson, cliPath, sleep } from './cluster.js';
import { freePort } from './redis-peers.js';

type Engine = 'memory' | 'lmdb';
type Routing = 'balancer' | 'direct';

const SOAK_OPTIONS = {
  minutes: { type: 'string' },
  'round-seconds': { type: 'string' },
  engine: { type: 'string' },
  routing: { type: 'string' },
  seed: { type: 'string' },
  'replication-factor': { type: 'string' },
  faults: { type: 'string' },
  keep: { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

const USAGE =
  'usage: soak [--minutes 10] [--round-seconds 40 (>= 5)] [--engine lmdb|memory] [--routing both|balancer|direct] [--seed N] [--replication-factor 1-5] [--faults join,leave,pause,kill,weight,fail-kill,fail-pause,dead,join-balancer,balancer] [--keep]';

const flags = scriptFlags(SOAK_OPTIONS, USAGE);

const MINUTES = Number(flags.minutes ?? 10);
const ROUND_MS = Number(flags['round-seconds'] ?? 40) * 1000;
const ENGINE = (flags.engine ?? 'lmdb') as Engine;
const ROUTINGS: Routing[] =
  (flags.routing ?? 'both') === 'both' ? ['balancer', 'direct'] : [flags.routing as Routing];
const SEED = Number(flags.seed ?? Date.now() % 1_000_000);
const FACTOR = Number(flags['replication-factor'] ?? 1);
/** The fault kinds a round may draw (`--faults pause,balancer`); all by default. */
const FAULT_NAMES = flags.faults?.split(',').map((name) => name.trim());
if (
  !(MINUTES > 0) ||
  !(ROUND_MS >= 5000) ||
  !['memory', 'lmdb'].includes(ENGINE) ||
  !ROUTINGS.every((routing) => routing === 'balancer' || routing === 'direct') ||
  !Number.isInteger(SEED) ||
  !(Number.isInteger(FACTOR) && FACTOR >= 1 && FACTOR <= 5)
) {
  console.error(USAGE);
  process.exit(2);
}

const KEYS_PER_ROUND = 12;
const CLIENTS = 4;
const WORKERS = 8;
/** Short, so that requests caught by a pause time out (outcome unknown) and run after SIGCONT. */
const COMMAND_TIMEOUT_MS = 1000;
/**
 * With replication the cluster keeps more members than the factor, so that a failure of up to
 * factor - 1 of them at a time (or a dead one) leaves every chain a serving member.
 */
const MIN_NODES = FACTOR > 1 ? FACTOR + 1 : 3;
const MAX_NODES = FACTOR > 1 ? 6 : 5;
const INITIAL_NODES = FACTOR > 1 ? 5 : 3;
/** Replication: a member failed this long is declared dead (the `dead` fault waits for it). */
const DEAD_AFTER_MS = 5000;
/** Replication: failure detection and lease of the balancer (a lease well under the timeout). */
const FAILURE_TIMEOUT_MS = 3000;
const LEASE_MS = 1000;
const SETTLE_TIMEOUT_MS = 60_000;
/** Each worker waits this long before each operation: at most 8 x 250 = 2,000 operations/s. */
const PACE_MS = 4;
/** The bank's workers per round (on the round's clients, beside the register workers). */
const BANK_WORKERS = 4;
/**
 * A bank worker's pause after each operation: its bounded loop then spans a default round (40 s)
 * without flooding the cluster beside the register load.
 */
const BANK_PACE_MS = 20;
/**
 * The bound of each bank worker's loop. It also bounds the recording: every read keeps the log it
 * read, whose length grows with the transfers, so memory and check time grow with its square.
 */
const BANK_OPERATIONS = 2000;
/** The weights the `weight` fault gives a node. */
const WEIGHTS = [0.5, 1, 1.5, 2] as const;
/** Keys written before the rounds, so that every migration streams for a while. */
const FILLER = 3000;

interface Ready {
  readonly port: number;
  readonly adminPort?: number;
}

/** The soak's processes: one balancer on fixed ports, nodes that come and go. */
class SoakCluster {
  readonly nemesis: Nemesis;
  readonly balancer: ManagedProcess<Ready>;
  /** Nodes currently in the cluster (joined and not left), by id. */
  readonly nodes = new Map<string, ManagedProcess<Ready>>();
  /** Nodes that left, kept for their logs. */
  readonly departed: ManagedProcess<Ready>[] = [];
  private nextNode = 1;

  constructor(
    readonly root: string,
    readonly port: number,
    readonly adminPort: number,
  ) {
    // Faults enter each round's history from `round` (one recorder per round), not from here.
    this.nemesis = new Nemesis();
    this.balancer = this.nemesis.process<Ready>({
      name: 'balancer',
      script: cliPath('@dstore/balancer'),
      args: [
        ...['--port', String(port), '--admin-port', String(adminPort)],
        ...['--data-dir', join(root, 'balancer'), '--heartbeat-timeout', '1000', '--log-level', 'warn'],
        // Always given: without it a new map gets the balancer's default (3).
        '--replication-factor',
        String(FACTOR),
        ...(FACTOR > 1 ? ['--failure-timeout', String(FAILURE_TIMEOUT_MS), '--lease', String(LEASE_MS)] : []),
        ...(FACTOR > 1 ? ['--dead-after', String(DEAD_AFTER_MS)] : []),
      ],
    });
  }

  /** Nodes' weights other than 1, by id (the `weight` fault restarts a node with another one). */
  readonly weights = new Map<string, number>();

  /** Starts a node with a new id (a node that left cannot come back under its id). */
  async join(): Promise<string> {
    const id = `node-${this.nextNode++}`;
    await this.startNode(id);
    return id;
  }

  /**
   * SIGKILLs `id` and starts it again with `--weight weight` (lmdb: on its data; memory: empty,
   * a new incarnation that must catch up first): the JOIN with another weight is a ring change.
   */
  async reweigh(id: string, weight: number): Promise<void> {
    const node = this.nodes.get(id)!;
    this.departed.push(node);
    await node.kill('SIGKILL');
    this.weights.set(id, weight);
    await this.startNode(id);
  }

  private async startNode(id: string): Promise<void> {
    const args = ['--port', '0', '--id', id, '--join', `127.0.0.1:${this.port}`];
    args.push('--heartbeat-interval', '200', '--migration-rate', '3000', '--log-level', 'warn');
    args.push('--engine', ENGINE, '--weight', String(this.weights.get(id) ?? 1));
    if (ENGINE === 'lmdb') args.push('--data-dir', join(this.root, id));
    const node = this.nemesis.process<Ready>({ name: id, script: cliPath('@dstore/storage-node'), args });
    this.nodes.set(id, node);
    await node.start();
  }

  /**
   * Replication: waits until the balancer marked every one of `ids` failed (taken out of its
   * chains after the failure timeout); throws past the settle timeout.
   */
  async markedFailed(ids: readonly string[]): Promise<void> {
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    while (Date.now() < deadline) {
      try {
        const ring = await adminJson<RingDocument>(this.admin, '/ring');
        const byId = new Map(ring.nodes.map((node) => [node.id, node]));
        if (ids.every((id) => byId.get(id)?.replicaState === 'failed')) return;
      } catch {
        // The balancer may be restarting (a balancer fault of the same round): ask again.
      }
      await sleep(100);
    }
    throw new Error(`${ids.join(', ')} not marked failed within ${SETTLE_TIMEOUT_MS} ms`);
  }

  async leave(id: string): Promise<void> {
    const node = this.nodes.get(id)!;
    this.nodes.delete(id);
    this.departed.push(node);
    await node.terminate();
  }

  /**
   * Replication: SIGKILLs `id` for good and waits until the balancer declared it dead (after
   * `--dead-after`) and removed it (its ranges re-copied); throws past the settle timeout.
   */
  async killForGood(id: string): Promise<void> {
    const node = this.nodes.get(id)!;
    this.nodes.delete(id);
    this.departed.push(node);
    await node.kill('SIGKILL');
    const deadline = Date.now() + FAILURE_TIMEOUT_MS + DEAD_AFTER_MS + SETTLE_TIMEOUT_MS;
    while (Date.now() < deadline) {
      try {
        const ring = await adminJson<RingDocument>(this.admin, '/ring');
        if (!ring.nodes.some((member) => member.id === id)) return;
      } catch {
        // The balancer may be restarting: ask again.
      }
      await sleep(200);
    }
    throw new Error(`${id} was not declared dead and removed in time`);
  }

  /**
   * Waits until the balancer has exactly the current nodes, all up (and `up` in their chains: a
   * member that returned after a failure has caught up), and no migration runs or waits.
   */
  async settled(): Promise<void> {
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    let last = '';
    while (Date.now() < deadline) {
      try {
        const ring = await adminJson<RingDocument>(this.admin, '/ring');
        last = JSON.stringify({
          nodes: ring.nodes,
          transition: ring.map.transition,
          migration: ring.migration,
        });
        const byId = new Map(ring.nodes.map((node) => [node.id, node]));
        const up = (id: string) => byId.get(id)?.status === 'up' && byId.get(id)?.replicaState === 'up';
        if (
          ring.nodes.length === this.nodes.size &&
          [...this.nodes.keys()].every(up) &&
          ring.map.transition === null &&
          !ring.migration.active &&
          ring.migration.queuedChanges === 0
        )
          return;
      } catch (error) {
        last = (error as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`the cluster did not settle within ${SETTLE_TIMEOUT_MS} ms; last /ring: ${last}`);
  }

  /** The balancer as {@link adminJson} addresses it. */
  private get admin(): { readonly balancer: { host: string; adminPort: number } } {
    return { balancer: { host: '127.0.0.1', adminPort: this.adminPort } };
  }
}

/** The part of the balancer's `/ring` document the soak reads. */
interface RingDocument {
  readonly nodes: readonly { readonly id: string; readonly status: string; readonly replicaState: string }[];
  readonly map: { readonly transition: unknown };
  readonly migration: { readonly active: boolean; readonly queuedChanges: number };
}

/** A fault the round may draw: whether it applies now, and what it does. */
interface FaultKind {
  readonly name: string;
  readonly applies: (cluster: SoakCluster) => boolean;
  readonly run: (cluster: SoakCluster, random: () => number) => Promise<string>;
}

const pick = <T>(items: readonly T[], random: () => number): T => items[Math.floor(random() * items.length)]!;
const between = (low: number, high: number, random: () => number) =>
  low + Math.floor(random() * (high - low));

const FAULTS: readonly FaultKind[] = [
  {
    name: 'join',
    applies: (cluster) => cluster.nodes.size < MAX_NODES,
    run: async (cluster) => `join ${await cluster.join()}`,
  },
  {
    name: 'leave',
    applies: (cluster) => cluster.nodes.size > MIN_NODES,
    run: async (cluster, random) => {
      const id = pick([...cluster.nodes.keys()], random);
      await cluster.leave(id);
      return `leave ${id}`;
    },
  },
  {
    name: 'pause',
    applies: () => true,
    run: async (cluster, random) => {
      const id = pick([...cluster.nodes.keys()], random);
      const node = cluster.nodes.get(id)!;
      // With replication, well under the failure timeout: the node must stay in its chains.
      const ms = FACTOR > 1 ? between(200, FAILURE_TIMEOUT_MS / 2, random) : between(300, 3000, random);
      node.pause();
      await sleep(ms);
      node.resume();
      return `pause ${id} ${ms} ms`;
    },
  },
  {
    name: 'kill',
    // Restarted before the failure timeout. With replication a memory node comes back empty under
    // a new incarnation: the balancer must take it out of its chains until it caught up.
    applies: () => FACTOR > 1 || ENGINE === 'lmdb',
    run: async (cluster, random) => {
      const id = pick([...cluster.nodes.keys()], random);
      const node = cluster.nodes.get(id)!;
      const ms = between(100, 1000, random);
      await node.kill('SIGKILL');
      await sleep(ms);
      await node.start();
      return `kill ${id}, restart after ${ms} ms`;
    },
  },
  {
    name: 'fail-kill',
    applies: () => FACTOR > 1,
    run: async (cluster, random) => {
      // 1 to factor - 1 at once: every key keeps a copy.
      const count = between(1, FACTOR, random);
      const candidates = [...cluster.nodes.keys()];
      const ids = Array.from(
        { length: count },
        () => candidates.splice(between(0, candidates.length, random), 1)[0]!,
      );
      await Promise.all(ids.map((id) => cluster.nodes.get(id)!.kill('SIGKILL')));
      await cluster.markedFailed(ids);
      await Promise.all(ids.map((id) => cluster.nodes.get(id)!.start()));
      return `kill ${ids.join(' + ')} past the failure timeout (failover), then restart (catch up)`;
    },
  },
  {
    name: 'fail-pause',
    applies: () => FACTOR > 1,
    run: async (cluster, random) => {
      const id = pick([...cluster.nodes.keys()], random);
      const node = cluster.nodes.get(id)!;
      node.pause();
      try {
        await cluster.markedFailed([id]);
        await sleep(between(0, 1000, random));
      } finally {
        node.resume();
      }
      return `pause ${id} past the failure timeout (failover; stale, it must not answer), then resume (catch up)`;
    },
  },
  {
    name: 'dead',
    applies: (cluster) => FACTOR > 1 && cluster.nodes.size > MIN_NODES,
    run: async (cluster, random) => {
      const id = pick([...cluster.nodes.keys()], random);
      await cluster.killForGood(id);
      return `kill ${id} for good: declared dead after --dead-after, removed (N copies restored)`;
    },
  },
  {
    name: 'weight',
    // A node restarted with another --weight: a ring change (with replication, routed on a union
    // ring with the member's previous weight). A memory node comes back empty: factor 1 would lose its keys.
    applies: () => FACTOR > 1 || ENGINE === 'lmdb',
    run: async (cluster, random) => {
      const id = pick([...cluster.nodes.keys()], random);
      const was = cluster.weights.get(id) ?? 1;
      const weight = pick(
        WEIGHTS.filter((candidate) => candidate !== was),
        random,
      );
      await cluster.reweigh(id, weight);
      return `restart ${id} with weight ${weight} (was ${was})`;
    },
  },
  {
    name: 'join-balancer',
    applies: (cluster) => FACTOR > 1 && cluster.nodes.size < MAX_NODES,
    run: async (cluster, random) => {
      const id = await cluster.join();
      const ms = between(100, 1500, random);
      await sleep(ms);
      await cluster.balancer.kill('SIGKILL');
      await sleep(between(100, 1000, random));
      await cluster.balancer.start();
      return `join ${id}, kill the balancer ${ms} ms into the ring change, restart it (resumes the change)`;
    },
  },
  {
    name: 'balancer',
    applies: () => true,
    run: async (cluster, random) => {
      const ms = between(100, 1000, random);
      await cluster.balancer.kill('SIGKILL');
      await sleep(ms);
      await cluster.balancer.start();
      return `kill the balancer, restart after ${ms} ms`;
    },
  },
];

const unknownFault = FAULT_NAMES?.find((name) => !FAULTS.some((fault) => fault.name === name));
if (unknownFault !== undefined) {
  console.error(
    `soak: unknown fault '${unknownFault}' (faults: ${FAULTS.map((fault) => fault.name).join(', ')})`,
  );
  process.exit(2);
}

function clientsFor(routing: Routing, port: number): DstoreClient[] {
  return Array.from({ length: CLIENTS }, () =>
    createClient({
      host: '127.0.0.1',
      port,
      commandTimeout: COMMAND_TIMEOUT_MS,
      ...(routing === 'direct' ? { routing: 'direct' as const } : {}),
    }),
  );
}

interface RoundResult {
  readonly faults: string[];
  readonly ok: number;
  readonly fail: number;
  readonly info: number;
  readonly checkMs: number;
  /** The round's bank, checked. */
  readonly bank: BankCheckResult;
}

/** One round: load on fresh keys under drawn faults, settle, final reads, check. Throws on a violation. */
async function round(
  cluster: SoakCluster,
  recorder: HistoryRecorder,
  index: number,
  routing: Routing,
  random: () => number,
): Promise<RoundResult> {
  const keys = Array.from({ length: KEYS_PER_ROUND }, (_, i) => `soak-r${index}-k${i}`);
  // Fresh accounts per round (as the keys): a transfer of unknown outcome from an earlier round
  // cannot land in this round's log.
  const bankKeysOfRound = bankKeys(`{bank-r${index}}`);
  const setup = createClient({ host: '127.0.0.1', port: cluster.port, commandTimeout: 5000 });
  try {
    await setupBank(setup, bankKeysOfRound);
  } finally {
    await setup.disconnect();
  }
  const clients = clientsFor(routing, cluster.port);
  try {
    const bank = startBank({
      keys: bankKeysOfRound,
      stores: clients,
      workers: BANK_WORKERS,
      operationsPerWorker: BANK_OPERATIONS,
      pauseMs: BANK_PACE_MS,
      // Replays with --seed (worker i draws from this + i): apart from the register load's seeds.
      seed: SEED + 1_000_000 + index * 100,
      phase: 'before faults',
    });
    const load = startWorkload({
      recorder,
      keys,
      workers: WORKERS,
      // Stopped once the round is over; these bound it if its faults take unusually long.
      maxOperations: 150_000,
      durationMs: ROUND_MS + SETTLE_TIMEOUT_MS,
      random: seededRandom(SEED + 1 + index),
      // APPENDs too: an atomic read-modify-write lost, doubled or reordered shows in what is read.
      mix: { read: 5, write: 3, delete: 1, append: 1, appendRead: 1 },
      // Paced: the checker's cost grows with the history, and a round must stay checkable.
      execute: async (operation, worker) => {
        await sleep(PACE_MS);
        return runRegisterOperation(clients[worker % CLIENTS]!, operation);
      },
    });
    const faults: string[] = [];
    const count = between(2, 4, random);
    const started = performance.now();
    try {
      for (let i = 0; i < count && performance.now() - started < ROUND_MS * 0.6; i++) {
        await sleep(between(200, Math.max(400, ROUND_MS / (count + 1)), random));
        const kinds = FAULTS.filter(
          (fault) =>
            (FAULT_NAMES === undefined || FAULT_NAMES.includes(fault.name)) && fault.applies(cluster),
        );
        if (kinds.length === 0) break;
        const kind = pick(kinds, random);
        recorder.nemesis(kind.name);
        bank.enter(kind.name);
        const done = await kind.run(cluster, random);
        recorder.nemesis(`${kind.name} done`, done);
        bank.enter(`after ${kind.name}`);
        faults.push(done);
        console.log(`  ${new Date().toISOString()} round ${index}: ${done}`);
        await cluster.settled();
      }
      await sleep(Math.max(0, ROUND_MS - (performance.now() - started)));
    } finally {
      await Promise.all([load.stop(), bank.stop()]);
    }
    const stats = await load.done;
    await cluster.settled();
    const reader = recorder.newProcess();
    const final = createClient({ host: '127.0.0.1', port: cluster.port, commandTimeout: 5000 });
    let bankFinal: BankFinal;
    try {
      for (const key of keys) {
        const pending = recorder.invoke(reader, 'read', key);
        pending.ok(await final.getString(key));
      }
      bankFinal = await readBankFinal(final, bankKeysOfRound);
    } finally {
      await final.disconnect();
    }
    const checkStarted = performance.now();
    const result = checkHistory(recorder.events, { timeLimitMs: 120_000 });
    const bankResult = checkBank(bank.recording, bankFinal);
    const checkMs = performance.now() - checkStarted;
    if (result.verdict !== 'ok' || !bankResult.valid) {
      // Both kept whichever failed: one may explain the other.
      const history = join(cluster.root, `round-${index}.jsonl`);
      recorder.dump(history);
      const bankFile = join(cluster.root, `round-${index}-bank.json`);
      writeFileSync(
        bankFile,
        JSON.stringify({ recording: bank.recording, final: bankFinal, result: bankResult }, null, 1),
      );
      const reports = [
        ...(result.verdict === 'ok' ? [] : [formatCheckResult(result)]),
        ...(bankResult.valid ? [] : [`${formatBankResult(bankResult)}\n${summarizeBank(bank.recording)}`]),
      ];
      throw new Error(`round ${index}: ${reports.join('\n')}\nhistory: ${history}\nbank: ${bankFile}`);
    }
    return { faults, ok: stats.ok, fail: stats.fail, info: stats.info, checkMs, bank: bankResult };
  } finally {
    await Promise.all(clients.map((client) => client.disconnect()));
  }
}

/**
 * Writes round `index`'s durable key and reads back every one of the earlier rounds; throws on a
 * loss.
 */
async function checkDurable(port: number, index: number): Promise<void> {
  const client = createClient({ host: '127.0.0.1', port, commandTimeout: 5000 });
  try {
    await client.set(`soak-durable-${index}`, `round-${index}`);
    for (let earlier = 0; earlier <= index; earlier++) {
      const value = await client.getString(`soak-durable-${earlier}`);
      if (value !== `round-${earlier}`)
        throw new Error(`acknowledged write lost: soak-durable-${earlier} reads ${JSON.stringify(value)}`);
    }
  } finally {
    await client.disconnect();
  }
}

async function writeFiller(port: number): Promise<void> {
  const client = createClient({ host: '127.0.0.1', port, commandTimeout: 5000 });
  try {
    for (let start = 0; start < FILLER; start += 500) {
      const entries = Array.from({ length: Math.min(500, FILLER - start) }, (_, i): [string, string] => [
        `soak-filler-${start + i}`,
        'x'.repeat(64),
      ]);
      await client.mset(entries);
    }
  } finally {
    await client.disconnect();
  }
}

/** Starts the cluster: the balancer, the first nodes, the filler keys. */
/** Starts the balancer and the first nodes, settled and filled; `started` gets the cluster first (its processes are stopped and their logs kept even when this fails). */
async function startCluster(root: string, started: (cluster: SoakCluster) => void): Promise<SoakCluster> {
  mkdirSync(root, { recursive: true });
  const [port, adminPort] = [await freePort(), await freePort()];
  const cluster = new SoakCluster(root, port, adminPort);
  started(cluster);
  await cluster.balancer.start();
  for (let i = 0; i < INITIAL_NODES; i++) await cluster.join();
  await cluster.settled();
  await writeFiller(port);
  return cluster;
}

async function main(): Promise<number> {
  const root = mkdtempSync(join(tmpdir(), 'dstore-soak-'));
  const random = seededRandom(SEED);
  console.log(
    `soak: ${MINUTES} min, rounds of ${ROUND_MS / 1000} s, engine ${ENGINE}, routing ${ROUTINGS.join('+')}, replication factor ${FACTOR}, seed ${SEED}, folder ${root}`,
  );
  let failed = false;
  let cluster: SoakCluster | undefined;
  const until = performance.now() + MINUTES * 60_000;
  try {
    let totals = { rounds: 0, ok: 0, info: 0, faults: 0, transfers: 0, acknowledged: 0, inLogs: 0, reads: 0 };
    cluster = await startCluster(join(root, 'cluster'), (starting) => {
      cluster = starting;
    });
    for (let index = 0; performance.now() < until; index++) {
      const routing = ROUTINGS[index % ROUTINGS.length]!;
      // A history per round: the checker's cost grows with its length and its unknown outcomes.
      const recorder = new HistoryRecorder();
      const result = await round(cluster, recorder, index, routing, random);
      const bank = result.bank.transfers;
      await checkDurable(cluster.port, index);
      totals = {
        ...totals,
        rounds: totals.rounds + 1,
        ok: totals.ok + result.ok,
        info: totals.info + result.info,
        faults: totals.faults + result.faults.length,
        transfers: totals.transfers + bank.ok + bank.fail + bank.info + bank.pending,
        acknowledged: totals.acknowledged + bank.ok,
        inLogs: totals.inLogs + result.bank.inFinalLog,
        reads: totals.reads + result.bank.reads,
      };
      console.log(
        `round ${index} (${routing}, ${cluster.nodes.size} nodes): linearizable, ${result.ok} ok / ${result.fail} fail / ${result.info} info; bank consistent, ${bank.ok} ok / ${bank.fail} fail / ${bank.info} info transfers, ${result.bank.inFinalLog} in the log, ${result.bank.reads} reads; checked in ${Math.round(result.checkMs)} ms; faults: ${result.faults.join('; ')}`,
      );
    }
    console.log(
      `soak passed: ${totals.rounds} rounds, ${totals.ok} operations ok, ${totals.info} of unknown outcome, ${totals.faults} faults; bank: ${totals.transfers} transfers checked (${totals.acknowledged} acknowledged, ${totals.inLogs} in the logs), ${totals.reads} reads checked; every durable key read back`,
    );
    return 0;
  } catch (error) {
    failed = true;
    console.error(`soak FAILED (seed ${SEED}): ${(error as Error).message}`);
    if (cluster !== undefined) {
      const processes = [cluster.balancer, ...cluster.nodes.values(), ...cluster.departed];
      for (const proc of processes)
        writeFileSync(join(cluster.root, `${proc.name}.stderr.log`), proc.stderr());
    }
    console.error(`history and process logs kept in ${root}`);
    return 1;
  } finally {
    await cluster?.nemesis.cleanup();
    if (!failed && flags.keep !== true) rmSync(root, { recursive: true, force: true });
  }
}

process.exitCode = await main();
