/**
 * A deterministic reproduction of the violation `linearizable.test.ts` found (fixtures/README.md):
 * during a graceful leave, a direct client's DEL of a moving key runs on the new owner, which
 * answers ASK naming the leaving node; the client has no link to it and sends the whole DEL again
 * through the balancer, which runs it on the new owner a second time. A write acknowledged between
 * the two runs is lost.
 *
 * The balancer runs as a process and is paused (SIGSTOP) while that second DEL waits in its socket,
 * which fixes the interleaving: the DELs ran once (a read sees every key deleted), new values are
 * written and acknowledged, the balancer resumes, and a last read must see those values. Every
 * operation goes into one history and the checker decides. Fixed: the client now asks the
 * balancer for the old owner's half only (a DEL with the fall-back flag); on the old client 23 of
 * the 60 keys read null in every run.
 */
import {
  checkHistory,
  formatCheckResult,
  HistoryRecorder,
  type ManagedProcess,
  Nemesis,
  type PendingOperation,
} from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import { afterEach, describe, expect, it } from 'vitest';
import type { RingView } from '../src/index.js';
import { directClient, withMap } from './direct-client.js';
import {
  BALANCER_CLI,
  type BalancerReady,
  balancerArgs,
  NODE_CLI,
  type NodeReady,
  Resources,
  sleep,
  waitFor,
} from './helpers.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

/** Set when the reproduction got as far as the check (a broken setup must not pass unnoticed). */
let reachedCheck = false;

const KEYS = Array.from({ length: 60 }, (_, i) => `dd-${i}`);
/** Keys that keep the leave's stream busy while the test runs. */
const FILLER = 3000;

async function ringOf(balancer: ManagedProcess<BalancerReady>): Promise<RingView> {
  const response = await fetch(`http://127.0.0.1:${balancer.ready.adminPort}/ring`);
  return (await response.json()) as RingView;
}

/** Runs `operation` recorded as `f` on `key` by a fresh process (each operation its own process). */
async function recorded(
  recorder: HistoryRecorder,
  f: string,
  key: string,
  value: string | undefined,
  operation: () => Promise<string | null | boolean | undefined>,
): Promise<void> {
  const pending: PendingOperation = recorder.invoke(recorder.newProcess(), f, key, value);
  try {
    const result = await operation();
    pending.ok(f === 'write' ? undefined : (result ?? null));
  } catch (error) {
    pending.info(String(error));
  }
}

describe('direct DEL of a key moving away from a leaving node', () => {
  it('takes effect once: a write acknowledged after it survives', { timeout: 60_000 }, async () => {
    const recorder = new HistoryRecorder();
    nemesis = new Nemesis(recorder);
    const balancer = nemesis.process<BalancerReady>({
      name: 'balancer',
      script: BALANCER_CLI,
      args: balancerArgs(['--heartbeat-timeout', '1000', '--log-level', 'warn']),
    });
    const port = (await balancer.start()).port;
    const nodes = ['node-1', 'node-2', 'node-3'].map((id) =>
      nemesis.process<NodeReady>({
        name: id,
        script: NODE_CLI,
        args: ['--port', '0', '--id', id, '--join', `127.0.0.1:${port}`, '--migration-rate', '500'],
      }),
    );
    for (const node of nodes) await node.start();
    await waitFor(async () => {
      const ring = await ringOf(balancer);
      return ring.map.transition === null && ring.nodes.filter((node) => node.status === 'up').length === 3;
    }, 'three nodes up');

    const loader = createClient({ host: '127.0.0.1', port });
    resources.add(() => loader.disconnect());
    for (let start = 0; start < FILLER; start += 500) {
      await loader.mset(
        Array.from({ length: 500 }, (_, i): [string, string] => [`filler-${start + i}`, 'x']),
      );
    }
    await Promise.all(
      KEYS.map((key) => recorded(recorder, 'write', key, `${key}.0`, () => loader.set(key, `${key}.0`))),
    );
    const [deleter, writer, reader] = (await Promise.all(
      [0, 1, 2].map(() => withMap(directClient(resources, port, { commandTimeout: 20_000 }))),
    )) as [DstoreClient, DstoreClient, DstoreClient];

    // node-2 leaves: its keys move to node-1 and node-3 (slowly: the filler). Once the clients
    // route on the new ring, the balancer is paused.
    void nodes[1]!.terminate();
    let epoch = 0;
    await waitFor(async () => {
      const ring = await ringOf(balancer);
      epoch = ring.epoch;
      return ring.map.transition?.phase === 'stream';
    }, 'the leave streaming');
    await waitFor(
      () => [deleter, writer, reader].every((client) => client.routingStats!.mapEpoch >= epoch),
      'the clients on the new ring',
    );
    recorder.nemesis('pause', 'balancer');
    balancer.pause();

    // 1. DEL every key: run on its owner; for the moving ones, the second run waits in the balancer.
    const deletes = KEYS.map((key) => recorded(recorder, 'delete', key, undefined, () => deleter.del(key)));
    await sleep(500);
    // 2. Every key reads as deleted: each DEL took effect.
    await Promise.all(
      KEYS.map((key) => recorded(recorder, 'read', key, undefined, () => reader.getString(key))),
    );
    // 3. New values, acknowledged.
    await Promise.all(
      KEYS.map((key) => recorded(recorder, 'write', key, `${key}.1`, () => writer.set(key, `${key}.1`))),
    );
    recorder.nemesis('resume', 'balancer');
    balancer.resume();
    await Promise.all(deletes);
    // 4. They must still be there.
    await Promise.all(
      KEYS.map((key) => recorded(recorder, 'read', key, undefined, () => reader.getString(key))),
    );

    const result = checkHistory(recorder.events);
    reachedCheck = true;
    if (result.verdict !== 'ok') console.log(formatCheckResult(result).split('\n').slice(0, 16).join('\n'));
    expect(result.verdict).toBe('ok');
  });

  it('(the reproduction above ran up to its check)', () => {
    expect(reachedCheck).toBe(true);
  });
});
