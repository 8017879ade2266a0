/**
 * The workload runner and recorder against in-process stores whose behaviour is known: a
 * linearizable one (with timeouts and refusals) must pass the checker; one that serves stale reads
 * must not. Several workers share every key.
 */
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';
import { describe, expect, it } from 'vitest';
import {
  checkHistory,
  classifyFailure,
  formatCheckResult,
  HistoryRecorder,
  startWorkload,
  type WorkloadOperation,
  type WorkloadResult,
} from '../src/index.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const keys = ['k0', 'k1', 'k2', 'k3'];

/** Applies an operation to a map atomically, as one register per key would. */
function apply(map: Map<string, string>, operation: WorkloadOperation): WorkloadResult {
  switch (operation.f) {
    case 'read':
      return map.get(operation.key) ?? null;
    case 'write':
      map.set(operation.key, operation.value);
      return undefined;
    case 'delete':
      return map.delete(operation.key);
  }
}

/**
 * A linearizable store with failures: every operation takes effect at one instant between a few
 * event-loop turns; some are refused before anything happens (UNAVAILABLE: not executed); some
 * time out, whether they were applied or not, and some of those take effect only after the
 * caller was told TIMEOUT.
 */
function linearizableStore(random: () => number) {
  const map = new Map<string, string>();
  return async (operation: WorkloadOperation): Promise<WorkloadResult> => {
    const dice = random();
    if (dice < 0.05) throw new DstoreError(ErrorCode.UNAVAILABLE, 'refused');
    for (let i = Math.floor(random() * 3); i > 0; i--) await tick();
    if (dice < 0.08) {
      // Applied later, after the caller gave up.
      setTimeout(() => apply(map, operation), Math.floor(random() * 5));
      throw new DstoreError(ErrorCode.TIMEOUT, 'no answer');
    }
    const result = apply(map, operation);
    for (let i = Math.floor(random() * 3); i > 0; i--) await tick();
    if (dice < 0.1) throw new DstoreError(ErrorCode.CONNECTION_CLOSED, 'lost after sending');
    return result;
  };
}

/** Two copies, writes reach the second one late, reads ask either: stale reads. */
function laggingReplicaStore(random: () => number) {
  const primary = new Map<string, string>();
  const replica = new Map<string, string>();
  return async (operation: WorkloadOperation): Promise<WorkloadResult> => {
    await tick();
    if (operation.f === 'read') return apply(random() < 0.5 ? primary : replica, operation);
    const result = apply(primary, operation);
    setTimeout(() => apply(replica, operation), 2);
    return result;
  };
}

/** An executor over one in-memory map that answers each operation after `delayMs`. */
function slowExecutor(delayMs: number): (operation: WorkloadOperation) => Promise<WorkloadResult> {
  const map = new Map<string, string>();
  return async (operation) => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    return apply(map, operation);
  };
}

describe('startWorkload', () => {
  it('a linearizable store with refusals and timeouts passes, with fail and info recorded', async () => {
    const random = seededRandom(1);
    const recorder = new HistoryRecorder();
    const stats = await startWorkload({
      recorder,
      execute: linearizableStore(seededRandom(2)),
      keys,
      workers: 6,
      maxOperations: 1500,
      random,
      pauseAfterFailureMs: 0,
    }).done;
    expect(stats.operations).toBe(1500);
    expect(stats.fail).toBeGreaterThan(0);
    expect(stats.info).toBeGreaterThan(0);
    expect(stats.failures).toHaveProperty(ErrorCode.TIMEOUT);
    const result = checkHistory(recorder.events);
    expect(result.verdict, formatCheckResult(result)).toBe('ok');
    // Several processes wrote each key (what the old one-writer-per-key checker could not check).
    const writers = new Set(
      recorder.events.filter((e) => e.key === 'k0' && e.f === 'write').map((e) => e.process),
    );
    expect(writers.size).toBeGreaterThan(3);
    // A worker whose operation ended in info never invokes again under that process id.
    const retired = new Set(recorder.events.filter((e) => e.type === 'info').map((e) => e.process));
    const invokedAfter = recorder.events.filter(
      (e, i) =>
        e.type === 'invoke' &&
        retired.has(e.process as number) &&
        recorder.events.slice(0, i).some((p) => p.process === e.process && p.type === 'info'),
    );
    expect(invokedAfter).toEqual([]);
  });

  it('a store with a lagging replica is caught, and the report names the key and the stale read', async () => {
    const recorder = new HistoryRecorder();
    await startWorkload({
      recorder,
      execute: laggingReplicaStore(seededRandom(3)),
      keys,
      workers: 6,
      maxOperations: 1500,
      random: seededRandom(4),
    }).done;
    const result = checkHistory(recorder.events);
    expect(result.verdict).toBe('illegal');
    expect(formatCheckResult(result)).toMatch(
      /key "k\d": not linearizable[\s\S]*None of these can come next[\s\S]*read ->/,
    );
  });

  it('stops on time and on stop()', async () => {
    const recorder = new HistoryRecorder();
    const slow = slowExecutor(5);
    const timed = await startWorkload({ recorder, execute: slow, keys, durationMs: 50, maxOperations: 1e9 })
      .done;
    expect(timed.operations).toBeLessThan(1e9);
    const running = startWorkload({ recorder, execute: slow, keys, durationMs: 60_000, maxOperations: 1e9 });
    await new Promise((resolve) => setTimeout(resolve, 30));
    const stopped = await running.stop();
    expect(stopped.operations).toBe(running.started);
    expect(checkHistory(recorder.events).verdict).toBe('ok');
  });

  it('stopOnceOk() stops once that many operations were answered ok, or at its deadline', async () => {
    const recorder = new HistoryRecorder();
    const slow = slowExecutor(2);
    const running = startWorkload({ recorder, execute: slow, keys, durationMs: 60_000, maxOperations: 1e9 });
    const stats = await running.stopOnceOk(40);
    expect(stats.ok).toBeGreaterThanOrEqual(40);
    expect(running.ok).toBe(stats.ok);
    // Nothing is ever answered ok: it stops at the deadline.
    const refusing = startWorkload({
      recorder: new HistoryRecorder(),
      execute: async () => {
        await new Promise((resolve) => setTimeout(resolve, 2));
        throw new DstoreError(ErrorCode.UNAVAILABLE, 'refused', { notExecuted: true });
      },
      keys,
      durationMs: 60_000,
      maxOperations: 1e9,
      pauseAfterFailureMs: 0,
    });
    const refused = await refusing.stopOnceOk(1, 100);
    expect(refused.ok).toBe(0);
    expect(refused.fail).toBeGreaterThan(0);
  });
});

describe('classifyFailure', () => {
  it("follows dstore's classification: not executed is fail, anything else info", () => {
    expect(classifyFailure(new DstoreError(ErrorCode.UNAVAILABLE, 'x'))).toBe('fail');
    expect(classifyFailure(new DstoreError(ErrorCode.STALE_EPOCH, 'x'))).toBe('fail');
    expect(classifyFailure(new DstoreError(ErrorCode.TIMEOUT, 'x'))).toBe('info');
    expect(classifyFailure(new DstoreError(ErrorCode.CONNECTION_CLOSED, 'x'))).toBe('info');
    expect(classifyFailure(new DstoreError(ErrorCode.TIMEOUT, 'queued', { notExecuted: true }))).toBe('fail');
    expect(classifyFailure(new Error('bug'))).toBe('info');
  });
});
