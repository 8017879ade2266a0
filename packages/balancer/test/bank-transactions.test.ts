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
 * (`DstoreError.notExecuted`), so this also checks that "not executed" is true. The workload and
 * every one of these checks are @dstore/checker's bank (`startBank`, `checkBank`), which the
 * release soak runs too; `checkBank` also holds every read's log to be a prefix of the final one
 * (no read saw a transfer that was later lost).
 *
 * Timeouts as in replication-failover.test.ts (FAILOVER_TIMEOUTS): lease 1.5 s, failure timeout 3 s.
 * Set BANK_SEED to replay a run's choices of accounts and amounts (the faults' timing still varies).
 */
import {
  type BankRecording,
  bankKeys,
  checkBank,
  type Fault,
  formatBankResult,
  Nemesis,
  type RunningBank,
  readBankFinal,
  setupBank,
  startBank,
  summarizeBank,
} from '@dstore/checker';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Resources, ringSettled, waitFor } from './helpers.js';
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

const BANK = bankKeys('{bank}');
const LOG = BANK.log;
const INITIAL = 100;
const CLIENTS = 4;
const WORKERS_PER_CLIENT = 2;
const WORKERS = CLIENTS * WORKERS_PER_CLIENT;
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

/** The run's summary for failure messages and DSTORE_DIAG=1: engine, seed, transfers by phase. */
const summaryOf = (engine: Engine, recording: BankRecording): string =>
  `${engine} (BANK_SEED replays the seed): ${summarizeBank(recording)}`;

/** Every member up, serving in a settled ring, the bank's chain whole again. */
function healed(cluster: ReplicatedCluster): boolean {
  return (
    [...cluster.states.values()].every((state) => state === 'up') &&
    ringSettled(cluster.balancer) &&
    cluster.chainOf(LOG).length === FACTOR
  );
}

/**
 * Waits until `count` transfers were started, so that the next fault meets the load; or until the
 * bounded loops ended (a slow machine), when the fault runs without load rather than the test
 * waiting for transfers that never come.
 */
function underWay(bank: RunningBank, count: number): Fault {
  return {
    afterMs: 0,
    f: 'load',
    target: `${count} transfers`,
    run: () =>
      waitFor(() => bank.transfersStarted >= count || bank.finished, 'the workload under way', 30_000),
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
      for (const key of BANK.accounts) expect(cluster.chainOf(key), key).toEqual(chain);

      // One MSET: the accounts share a position, so they are written on one node in one request.
      await setupBank(cluster.client(8000), BANK, INITIAL);
      const clients = Array.from({ length: CLIENTS }, () => cluster.client(COMMAND_TIMEOUT_MS));
      // Transfers (60%), read-only transactions (25%), MGETs (15%); worker i uses client i % 4.
      const bank = startBank({
        keys: BANK,
        stores: clients,
        initial: INITIAL,
        workers: WORKERS,
        operationsPerWorker: OPERATIONS,
        pauseMs: PACE_MS,
        seed: SEED,
        phase: 'before faults',
      });

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
          underWay(bank, bank.transfersStarted + 50),
          step(0, 'pause', tail, () => tailNode.pause()),
          until('failed', tail, () => cluster.stateOf(tail) === 'failed'),
          step(500, 'resume', tail, () => tailNode.resume()),
          until('up', tail, () => cluster.stateOf(tail) === 'up'),
        ]);
        // A graceful leave (SIGTERM) of the chain's middle: a ring change that gives the bank's
        // chain another member, its keys copied to it while transfers go on.
        const middle = cluster.chainOf(LOG)[1]!;
        await nemesis.run([
          underWay(bank, bank.transfersStarted + 50),
          step(0, 'leave', middle, () => cluster.nodes.get(middle)!.terminate()),
          until('left', middle, () => {
            const map = cluster.balancer.membership.clusterMap;
            return map.transition === null && !map.ring.members.some((member) => member.id === middle);
          }),
        ]);
      })();
      // A failed fault step (a waitFor that timed out) fails the test once the workers stopped
      // after their current operation (at most a command timeout); afterEach stops the rest.
      await faults.catch(async (error: unknown) => {
        await bank.stop();
        throw error;
      });
      const stats = await bank.done;
      await waitFor(() => healed(cluster), 'the cluster healed and settled', 40_000);
      const summary = summaryOf(engine, bank.recording);
      if (process.env.DSTORE_DIAG === '1') console.log(summary);

      // The load really ran (not a timing bound: a count of answers).
      expect(stats.transfers.ok, summary).toBeGreaterThan(100);
      expect(stats.reads.transaction + stats.reads.mget, summary).toBeGreaterThan(50);

      // The final state, read both ways (they must agree), after the faults healed; then the
      // checker: 1. every read during the run totals 800 and is the transfers of the log it read
      // (no part of a transfer seen), its log a prefix of the final one; 2. the final log names
      // each id at most once, every acknowledged transfer, none refused as not executed, none
      // nobody sent (unknown ones either way); 3. the final balances are 100 plus the effects of
      // exactly the log's transfers (none lost, split or doubled), 800 in all; no transfer
      // pending, no answer a correct store never gives (a step refused alone, null).
      const final = await readBankFinal(cluster.client(8000), BANK);
      const result = checkBank(bank.recording, final);
      expect(result.violations.slice(0, 20), `${formatBankResult(result)}\n${summary}`).toEqual([]);

      // 4. Every member of the healed chain holds the same value of every key, at one version.
      expect(cluster.chainOf(LOG)).toHaveLength(FACTOR);
      for (const key of [...BANK.accounts, LOG]) await cluster.expectOnChain(key);
    });
  },
);
