/**
 * A Jepsen-style bank over multi-key transactions, under faults. Eight accounts `{bank}:0..7` (one
 * hash tag: one ring position, one chain of 3 members) start at 100 each; concurrent clients move
 * money between them, each transfer ONE transaction (`decrby` on one account, `incrby` on another,
 * `append` of the transfer's unique id to `{bank}:log`), and read them back with read-only
 * transactions and plain MGETs, while the nemesis SIGKILLs the chain's head (and restarts it: it
 * catches up as a learner), SIGSTOPs the chain's tail past the failure timeout (and resumes it),
 * and has the chain's middle leave gracefully (a ring change). Five real dstore-node processes,
 * factor 3, an in-process balancer; memory and lmdb. Each worker runs a fixed count of operations.
 *
 * What it proves, for transactions over several keys of one hash tag:
 * - atomicity as every reader sees it: every read (transaction or MGET, served by whichever member
 *   is the tail at the time, across failovers) totals exactly 800 and its balances are exactly
 *   what the transfers named in the log it read add up to: no reader ever sees part of a transfer;
 * - durability and exactly-once: at the end each transfer id is in the log at most once, every
 *   acknowledged transfer is there, no transfer refused as not executed is there, and every
 *   account is 100 plus the effects of exactly the transfers in the log (none lost, split or
 *   applied twice);
 * - the replicas agree: every member of the healed chain holds every key at one version.
 *
 * Transfers that timed out or lost their connection (outcome unknown) may or may not be in the log;
 * the balances must agree with the log either way. The error classification is the client's own
 * (`DstoreError.notExecuted`), so this also checks that "not executed" is true.
 *
 * Timeouts as in replication-failover.test.ts (FAILOVER_TIMEOUTS): lease 1.5 s, failure timeout 3 s.
 * Set BANK_SEED to replay a run's choices of accounts and amounts (the faults' timing still varies).
 */
import { type Fault, Nemesis } from '@dstore/checker';
import { type DstoreClient, DstoreError, type Transaction } from '@dstore/client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Resources, ringSettled, sleep, waitFor } from './helpers.js';
import { type Engine, FACTOR, FAILOVER_TIMEOUTS, ReplicatedCluster } from './replicated-cluster.js';

const resources = new Resources();
let nemesis = new Nemesis();
// Each case's processes and clients go when it ends (even on failure), so that the second engine
// does not run beside the first's five nodes on CI's 2 cores; afterAll is the safety net.
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});
afterAll(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const ACCOUNTS = Array.from({ length: 8 }, (_, i) => `{bank}:${i}`);
const LOG = '{bank}:log';
const INITIAL = 100;
const TOTAL = INITIAL * ACCOUNTS.length;
const CLIENTS = 4;
const WORKERS_PER_CLIENT = 2;
/** Operations per worker: the loops are bounded by count, never by time. */
const OPERATIONS = 200;
/**
 * A worker's pause after each operation: paces the bounded loops so that they span the fault
 * schedule (about 15 s) instead of finishing before the first fault.
 */
const PACE_MS = 15;
/**
 * Shorter than the failure timeout (3 s): a transfer sent to a dead head is refused (UNAVAILABLE)
 * until its deadline, so some end "not executed", and one stuck on a paused member times out
 * (outcome unknown). Both kinds of ending are what the final check must handle.
 */
const COMMAND_TIMEOUT_MS = 2500;
const SEED =
  process.env.BANK_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.BANK_SEED);

const decoder = new TextDecoder();

/** mulberry32: a small seeded generator, so that a run's choices can be replayed (BANK_SEED). */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** ok: acknowledged; fail: refused, certainly not executed; info: unknown (timeout, connection lost). */
type Outcome = 'pending' | 'ok' | 'fail' | 'info';

interface Transfer {
  readonly id: string;
  readonly from: number;
  readonly to: number;
  readonly amount: number;
  /** The fault phase it started in, for the summary. */
  readonly phase: string;
  outcome: Outcome;
  /** The error's code and message, for a failure message. */
  error?: string;
}

/** Everything the workload saw: every transfer tried (recorded before it is sent) and what broke. */
class Bank {
  readonly transfers = new Map<string, Transfer>();
  /** Atomicity violations and unexpected answers seen during the run, with their evidence. */
  readonly violations: string[] = [];
  readonly reads = { transaction: 0, mget: 0, failed: 0 };
  phase = 'before faults';
  /** Workers whose bounded loop ended. */
  workersDone = 0;
  /** When each phase began (ms since the load started), for DSTORE_DIAG=1. */
  readonly timeline: string[] = [];
  private readonly started = Date.now();

  constructor(readonly engine: Engine) {}

  enter(phase: string): void {
    this.phase = phase;
    this.timeline.push(`${Date.now() - this.started}ms ${phase}`);
  }

  /** One line per phase: transfers by outcome, for failure messages and DSTORE_DIAG=1. */
  summary(): string {
    const byPhase = new Map<string, Record<Outcome, number>>();
    for (const transfer of this.transfers.values()) {
      const counts = byPhase.get(transfer.phase) ?? { pending: 0, ok: 0, fail: 0, info: 0 };
      counts[transfer.outcome]++;
      byPhase.set(transfer.phase, counts);
    }
    const phases = [...byPhase].map(
      ([phase, c]) => `${phase}: ok ${c.ok} fail ${c.fail} info ${c.info} pending ${c.pending}`,
    );
    const reads = `reads checked: ${this.reads.transaction} transactions, ${this.reads.mget} MGETs, ${this.reads.failed} failed`;
    return `seed ${SEED} (${this.engine}); ${phases.join('; ')}; ${reads}; timeline ${this.timeline.join(', ')}`;
  }
}

/** The transfer ids of a log value (`id,id,...,`), in order, duplicates kept. */
function logIds(log: string | null): string[] {
  return log === null ? [] : log.split(',').filter((id) => id !== '');
}

/**
 * Why `balances` with `log` is not a state some prefix of whole transfers could leave, or
 * undefined: each balance must be 100 plus the effects of exactly the transfers the log names
 * (each once, each one we sent), and the total 800.
 */
function inconsistency(
  bank: Bank,
  balances: readonly (number | null)[],
  ids: readonly string[],
): string | undefined {
  const expected = ACCOUNTS.map(() => INITIAL);
  const seen = new Set<string>();
  for (const id of ids) {
    const transfer = bank.transfers.get(id);
    if (transfer === undefined) return `the log names ${id}, which no client sent`;
    if (seen.has(id)) return `the log names ${id} twice`;
    seen.add(id);
    expected[transfer.from]! -= transfer.amount;
    expected[transfer.to]! += transfer.amount;
  }
  if (balances.some((balance) => balance === null)) return `an account is missing: ${balances.join(',')}`;
  const total = balances.reduce<number>((sum, balance) => sum + (balance ?? 0), 0);
  if (total !== TOTAL) return `total ${total}, not ${TOTAL}: balances ${balances.join(',')}`;
  if (balances.some((balance, i) => balance !== expected[i])) {
    return `balances ${balances.join(',')}, but the ${ids.length} transfers of the log make ${expected.join(',')}`;
  }
  return undefined;
}

/** A stored value as a balance: its decimal text, or null when missing or not an integer. */
function balanceOf(value: Uint8Array | null | undefined): number | null {
  if (value === null || value === undefined) return null;
  const text = decoder.decode(value);
  return /^-?\d+$/.test(text) ? Number(text) : null;
}

/**
 * Every account and the log in one read-only transaction: one atomic read at the chain's tail.
 * Resolves the balances and the log, or a step's error (a refusal of a GET alone is unexpected).
 */
async function readByTransaction(
  client: DstoreClient,
): Promise<{ balances: (number | null)[]; log: string | null } | string> {
  let read: Transaction<(Uint8Array | null)[]> = client.transaction(ACCOUNTS[0]!).get();
  for (const key of [...ACCOUNTS.slice(1), LOG]) read = read.on(key).get();
  const results = await read.exec();
  if (results === null) return 'a read-only transaction without WATCH answered null';
  const refused = results.find((result) => result instanceof DstoreError);
  if (refused instanceof DstoreError) return `a GET step was refused: ${refused.code} ${refused.message}`;
  const values = results.filter((result): result is Uint8Array | null => !(result instanceof DstoreError));
  const log = values[ACCOUNTS.length];
  return {
    balances: values.slice(0, ACCOUNTS.length).map(balanceOf),
    log: log === null || log === undefined ? null : decoder.decode(log),
  };
}

/** Every account and the log in one MGET: the keys share a position, so one request to the tail. */
async function readByMget(
  client: DstoreClient,
): Promise<{ balances: (number | null)[]; log: string | null }> {
  const values = await client.mget([...ACCOUNTS, LOG]);
  const log = values[ACCOUNTS.length];
  return {
    balances: values.slice(0, ACCOUNTS.length).map(balanceOf),
    log: log === null || log === undefined ? null : decoder.decode(log),
  };
}

/** One transfer: the three steps in one transaction, its outcome recorded. */
async function transfer(bank: Bank, client: DstoreClient, id: string, random: () => number): Promise<void> {
  const from = Math.floor(random() * ACCOUNTS.length);
  const to = (from + 1 + Math.floor(random() * (ACCOUNTS.length - 1))) % ACCOUNTS.length;
  const amount = 1 + Math.floor(random() * 20);
  // Recorded before it is sent: a reader may see it in the log before its answer arrives.
  const record: Transfer = { id, from, to, amount, phase: bank.phase, outcome: 'pending' };
  bank.transfers.set(id, record);
  try {
    const results = await client
      .transaction(ACCOUNTS[from]!)
      .decrby(amount)
      .on(ACCOUNTS[to]!)
      .incrby(amount)
      .on(LOG)
      .append(`${id},`)
      .exec();
    record.outcome = 'ok';
    // Without WATCH it never answers null; a step refused alone (the others ran, as in Redis)
    // would split the transfer: neither can happen with integers this small.
    if (results === null) bank.violations.push(`transfer ${id} answered null without WATCH`);
    else {
      const refused = results.find((result) => result instanceof DstoreError);
      if (refused instanceof DstoreError) {
        bank.violations.push(`transfer ${id}: a step was refused alone: ${refused.code} ${refused.message}`);
      }
    }
  } catch (error) {
    if (!(error instanceof DstoreError)) {
      // Not the client's error: a bug, whose effect is unknown.
      record.outcome = 'info';
      bank.violations.push(`transfer ${id} failed with a non-DstoreError: ${String(error)}`);
      return;
    }
    // The client's own classification: true only when the transfer certainly did not run.
    record.outcome = error.notExecuted ? 'fail' : 'info';
    record.error = `${error.code}: ${error.message}`;
  }
}

/** One read, by transaction or MGET, checked against its own log at once. */
async function read(bank: Bank, client: DstoreClient, by: 'transaction' | 'mget'): Promise<void> {
  let answer: { balances: (number | null)[]; log: string | null } | string;
  try {
    answer = by === 'transaction' ? await readByTransaction(client) : await readByMget(client);
  } catch (error) {
    // A read refused or timed out during a fault: nothing to check.
    if (!(error instanceof DstoreError)) bank.violations.push(`a ${by} read failed: ${String(error)}`);
    bank.reads.failed++;
    return;
  }
  if (typeof answer === 'string') {
    bank.violations.push(`${by} read during "${bank.phase}": ${answer}`);
    return;
  }
  bank.reads[by]++;
  const ids = logIds(answer.log);
  const wrong = inconsistency(bank, answer.balances, ids);
  if (wrong !== undefined) bank.violations.push(`${by} read during "${bank.phase}": ${wrong}`);
}

/** One worker's bounded loop: transfers (60%), read-only transactions (25%), MGETs (15%). */
async function worker(bank: Bank, client: DstoreClient, name: string, random: () => number): Promise<void> {
  for (let n = 0; n < OPERATIONS; n++) {
    const pick = random();
    if (pick < 0.6) await transfer(bank, client, `${name}-${n}`, random);
    else await read(bank, client, pick < 0.85 ? 'transaction' : 'mget');
    await sleep(PACE_MS);
  }
  bank.workersDone++;
}

/** Every member up, serving in a settled ring, the bank's chain whole again. */
function healed(cluster: ReplicatedCluster): boolean {
  return (
    [...cluster.states.values()].every((state) => state === 'up') &&
    ringSettled(cluster.balancer) &&
    cluster.chainOf(LOG).length === FACTOR
  );
}

/**
 * Waits until `bank.transfers` holds `count` transfers, so that the next fault meets the load; or
 * until the bounded loops ended (a slow machine), when the fault runs without load rather than
 * the test waiting for transfers that never come.
 */
function underWay(bank: Bank, count: number): Fault {
  return {
    afterMs: 0,
    f: 'load',
    target: `${count} transfers`,
    run: () =>
      waitFor(
        () => bank.transfers.size >= count || bank.workersDone === CLIENTS * WORKERS_PER_CLIENT,
        'the workload under way',
        30_000,
      ),
  };
}

describe.each(['memory', 'lmdb'] as const)(
  'a bank over multi-key transactions under faults (%s, factor 3)',
  (engine) => {
    it('every read totals 800 and matches its log; the log holds every acknowledged transfer once, and the balances are its sum', {
      timeout: 90_000,
    }, async () => {
      nemesis = new Nemesis();
      const cluster = await ReplicatedCluster.start({
        engine,
        resources,
        nemesis,
        balancer: FAILOVER_TIMEOUTS,
      });
      // The premise: one hash tag, one chain for all of them.
      const chain = cluster.chainOf(LOG);
      for (const key of ACCOUNTS) expect(cluster.chainOf(key), key).toEqual(chain);

      const setup = cluster.client(8000);
      // One MSET: the accounts share a position, so they are written on one node in one request.
      await setup.mset(ACCOUNTS.map((key): [string, string] => [key, String(INITIAL)]));
      const bank = new Bank(engine);
      const clients = Array.from({ length: CLIENTS }, () => cluster.client(COMMAND_TIMEOUT_MS));
      const workers = clients.flatMap((client, c) =>
        Array.from({ length: WORKERS_PER_CLIENT }, (_, w) => {
          const index = c * WORKERS_PER_CLIENT + w;
          return worker(bank, client, `c${c}w${w}`, seeded(SEED + index));
        }),
      );

      // A fault: the transfers started from then on belong to its phase (the summary).
      const step = (afterMs: number, f: string, target: string, run: () => unknown): Fault => ({
        afterMs,
        f,
        target,
        run: () => {
          bank.enter(`${f} ${target}`);
          return run();
        },
      });
      // A wait for the cluster's reaction: its phase begins once `condition` holds.
      const until = (f: string, target: string, condition: () => boolean): Fault => ({
        afterMs: 0,
        f,
        target,
        run: async () => {
          await waitFor(condition, `${target} ${f}`, 40_000);
          bank.enter(`${f} ${target}`);
        },
      });
      const faults = (async () => {
        // SIGKILL of the head: transfers in flight lose their answer (unknown), the next ones are
        // refused (not executed) until the balancer marks it failed and the chain serves without it.
        const head = cluster.chainOf(LOG)[0]!;
        const headNode = cluster.nodes.get(head)!;
        await nemesis.run([
          underWay(bank, 100),
          step(0, 'kill', head, () => headNode.kill('SIGKILL')),
          until('failed', head, () => cluster.stateOf(head) === 'failed'),
          step(300, 'restart', head, () => headNode.start()),
          // Back as a learner (wiped, synced from the tails, promoted): it heads the chain again.
          until('up', head, () => cluster.stateOf(head) === 'up'),
        ]);
        // SIGSTOP of the tail (every read goes to it) until it is marked failed, i.e. past the
        // failure timeout whatever the machine's load: reads and transfers caught by it time out
        // (unknown); the new tail must hold every transfer the old one acknowledged. Then SIGCONT:
        // it returns with stale data and must catch up before it serves.
        const tail = cluster.chainOf(LOG)[FACTOR - 1]!;
        const tailNode = cluster.nodes.get(tail)!;
        await nemesis.run([
          underWay(bank, bank.transfers.size + 50),
          step(0, 'pause', tail, () => tailNode.pause()),
          until('failed', tail, () => cluster.stateOf(tail) === 'failed'),
          step(500, 'resume', tail, () => tailNode.resume()),
          until('up', tail, () => cluster.stateOf(tail) === 'up'),
        ]);
        // A graceful leave (SIGTERM) of the chain's middle: a ring change that gives the bank's
        // chain another member, its keys copied to it while transfers go on.
        const middle = cluster.chainOf(LOG)[1]!;
        await nemesis.run([
          underWay(bank, bank.transfers.size + 50),
          step(0, 'leave', middle, () => cluster.nodes.get(middle)!.terminate()),
          until('left', middle, () => {
            const map = cluster.balancer.membership.clusterMap;
            return map.transition === null && !map.ring.members.some((member) => member.id === middle);
          }),
        ]);
      })();
      // A failed fault step (a waitFor that timed out) fails the test at once; afterEach stops the rest.
      await Promise.all([faults, ...workers]);
      await waitFor(() => healed(cluster), 'the cluster healed and settled', 40_000);
      const summary = bank.summary();
      if (process.env.DSTORE_DIAG === '1') console.log(summary);

      // Nothing broke during the run: every read was a whole-transfers state.
      expect(bank.violations.slice(0, 10), `${bank.violations.length} violations; ${summary}`).toEqual([]);
      const transfers = [...bank.transfers.values()];
      // The load really ran (not a timing bound: a count of answers).
      expect(transfers.filter((t) => t.outcome === 'ok').length, summary).toBeGreaterThan(100);
      expect(bank.reads.transaction + bank.reads.mget, summary).toBeGreaterThan(50);
      expect(
        transfers.filter((t) => t.outcome === 'pending'),
        summary,
      ).toEqual([]);

      // The final state, read both ways (they must agree), after the faults healed.
      const reader = cluster.client(8000);
      const final = await readByTransaction(reader);
      if (typeof final === 'string') throw new Error(`final read: ${final}`);
      const viaMget = await readByMget(reader);
      expect(viaMget, 'the final MGET and read-only transaction agree').toEqual(final);
      const ids = logIds(final.log);

      // 1. The log: each id at most once, every acknowledged transfer present, none refused as
      //    not executed present (unknown ones either way).
      const counts = new Map<string, number>();
      for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
      const doubled = [...counts].filter(([, count]) => count > 1).map(([id]) => id);
      expect(doubled, `transfers applied twice; ${summary}`).toEqual([]);
      const unknown = ids.filter((id) => !bank.transfers.has(id));
      expect(unknown, `ids in the log no client sent; ${summary}`).toEqual([]);
      const lost = transfers.filter((t) => t.outcome === 'ok' && !counts.has(t.id));
      expect(lost, `acknowledged transfers missing from the log; ${summary}`).toEqual([]);
      const phantom = transfers.filter((t) => t.outcome === 'fail' && counts.has(t.id));
      expect(phantom, `transfers refused as not executed, yet applied; ${summary}`).toEqual([]);

      // 2. The balances are 100 plus exactly the effects of the transfers in the log: no transfer
      //    split across keys, none lost or doubled; the total is 800.
      const expected = ACCOUNTS.map(() => INITIAL);
      for (const id of ids) {
        const { from, to, amount } = bank.transfers.get(id)!;
        expected[from]! -= amount;
        expected[to]! += amount;
      }
      expect(final.balances, `final balances against the log's ${ids.length} transfers; ${summary}`).toEqual(
        expected,
      );
      expect(final.balances.reduce<number>((sum, balance) => sum + (balance ?? 0), 0)).toBe(TOTAL);

      // 3. Every member of the healed chain holds the same value of every key, at one version.
      expect(cluster.chainOf(LOG)).toHaveLength(FACTOR);
      for (const key of [...ACCOUNTS, LOG]) await cluster.expectOnChain(key);
    });
  },
);
