/**
 * Replication step 5 on the node side, after the switch: the next ring arrives `holding`, and the
 * chains that changed on the switching ring stay frozen until a ring without the flag arrives.
 *
 * Why it matters: the coordinator installs the next ring node by node. A node still on the
 * switching ring serves a changed range's reads at its previous tail; if the new head accepted a
 * write of that range as soon as it had the next ring (a direct client follows its MOVED there),
 * the write would be acknowledged by the next chain while the old tail still answered reads
 * without it: a stale read. Three real nodes, factor 2; node-c leaves the ring.
 */
import { HashRing } from '@dstore/hashring';
import {
  type Connection,
  DstoreError,
  ErrorCode,
  Op,
  type ReplicaStateName,
  type Response,
  type RingMember,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBalancer } from './fake-balancer.js';
import { answerOf, Resources, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const PREVIOUS = ['node-a', 'node-b', 'node-c'] as const;
const LEAVING = 'node-c';
const FACTOR = 2;

function readValue(answer: Response | DstoreError): string | null {
  if (answer instanceof DstoreError) throw answer;
  if (answer.op !== Op.VALUE) throw new Error(`expected VALUE, got op ${answer.op}`);
  return answer.value === null ? null : new TextDecoder().decode(answer.value);
}

/** Three memory nodes holding leases from a fake balancer, and a balancer-role connection to each. */
async function cluster() {
  const balancer = new FakeBalancer(resources);
  balancer.lease = 60_000;
  const balancerPort = await balancer.start();
  const ports = new Map<string, number>();
  for (const id of PREVIOUS) {
    const node = await resources.node({ id, join: `127.0.0.1:${balancerPort}`, heartbeatIntervalMs: 100 });
    ports.set(id, node.address.port);
  }
  while (balancer.count(Op.HEARTBEAT) < 6) await sleep(20);
  const control = new Map<string, Connection>();
  for (const id of PREVIOUS) control.set(id, await resources.peer(ports.get(id)!));
  /** A RING of `ids` at `epoch` with `states` (absent: up) and a ring-change flag. */
  const ringOf = (
    epoch: number,
    ids: readonly string[],
    states: Readonly<Record<string, ReplicaStateName>>,
    flag: { switching?: true; holding?: true } = {},
  ) => ({
    op: Op.RING,
    epoch,
    generation: 1,
    algorithm: 'vnode',
    vnodes: 0,
    replicationFactor: FACTOR,
    ...flag,
    nodes: ids.map(
      (id): RingMember => ({
        id,
        weight: 1,
        host: '127.0.0.1',
        port: ports.get(id)!,
        replicaState: states[id] ?? 'up',
      }),
    ),
  });
  const send = async (ids: readonly string[], ring: ReturnType<typeof ringOf>): Promise<void> => {
    for (const id of ids) expect(await control.get(id)!.request(ring)).toMatchObject({ op: Op.OK });
  };
  return { control, ringOf, send };
}

/** A key whose chain on the previous ring ends at the leaving member, and one untouched by the change. */
function keys() {
  const previous = HashRing.from(
    PREVIOUS.map((id) => ({ id })),
    { algorithm: 'vnode' },
  );
  let changed = '';
  let unchanged = '';
  for (let i = 0; changed === '' || unchanged === ''; i++) {
    const key = `k-${i}`;
    const chain = previous.chainOf(key, FACTOR).desired;
    if (changed === '' && chain[1] === LEAVING) changed = key;
    if (unchanged === '' && !chain.includes(LEAVING)) unchanged = key;
  }
  const head = previous.chainOf(changed, FACTOR).desired[0]!;
  // On the next ring (node-c gone) the chain is [head, the other remaining member].
  const newTail = PREVIOUS.find((id) => id !== head && id !== LEAVING)!;
  const unchangedHead = previous.chainOf(unchanged, FACTOR).desired[0]!;
  return { changed, head, newTail, unchanged, unchangedHead };
}

describe('the next ring of a replicated ring change (holding)', () => {
  it('keeps the changed chains frozen on every node that has it until a ring without the flag; the old tail serves only current reads meanwhile', async () => {
    const { control, ringOf, send } = await cluster();
    const { changed, head, newTail, unchanged, unchangedHead } = keys();
    const set = (id: string, key: string, value: string, epoch: number) =>
      answerOf(control.get(id)!.request({ op: Op.SET, key: toBytes(key), value: toBytes(value), epoch }));
    const get = (id: string, key: string, epoch: number) =>
      answerOf(control.get(id)!.request({ op: Op.GET, key: toBytes(key), epoch }));

    // The union ring (node-c exiting): the changed key's write path is head -> node-c -> newTail.
    const union = { [LEAVING]: 'exiting' as const };
    await send(PREVIOUS, ringOf(10, PREVIOUS, union));
    expect(await set(head, changed, 'v1', 10)).toMatchObject({ op: Op.OK });
    await send(PREVIOUS, ringOf(11, PREVIOUS, union, { switching: true }));

    // The next ring reaches the head and the new tail only; node-c still has the switching ring.
    const next = PREVIOUS.filter((id) => id !== LEAVING);
    await send(next, ringOf(12, next, {}, { holding: true }));
    const frozen = await set(head, changed, 'v2', 12);
    expect(frozen).toBeInstanceOf(DstoreError);
    expect((frozen as DstoreError).code).toBe(ErrorCode.BUSY);
    expect((frozen as DstoreError).notExecuted).toBe(true);
    // The old tail still answers reads of its previous chain: nothing newer was acknowledged.
    expect(readValue(await get(LEAVING, changed, 11))).toBe('v1');
    expect(readValue(await get(newTail, changed, 12))).toBe('v1');
    // A chain the change does not touch takes writes as usual.
    expect(await set(unchangedHead, unchanged, 'u1', 12)).toMatchObject({ op: Op.OK });

    // Another holding ring (a member failed meanwhile, say) keeps the same chains frozen.
    await send(next, ringOf(13, next, {}, { holding: true }));
    const stillFrozen = await set(head, changed, 'v2', 13);
    expect((stillFrozen as DstoreError).code).toBe(ErrorCode.BUSY);

    // Every node has the next ring: node-c no longer answers for the range.
    await send([LEAVING], ringOf(13, next, {}, { holding: true }));
    const moved = await get(LEAVING, changed, 13);
    expect(moved).toBeInstanceOf(DstoreError);
    expect((moved as DstoreError).code).toBe(ErrorCode.NOT_OWNER);

    // The next ring alone: the head takes the write, the new tail serves it.
    await send(next, ringOf(14, next, {}));
    expect(await set(head, changed, 'v2', 14)).toMatchObject({ op: Op.OK });
    expect(readValue(await get(newTail, changed, 14))).toBe('v2');
  });

  it('a node whose first ring is a holding one (restarted meanwhile: it never saw the switch) refuses every write until the ring without the flag', async () => {
    const { control, ringOf, send } = await cluster();
    const { changed, head, unchanged, unchangedHead } = keys();
    const set = (id: string, key: string, epoch: number) =>
      answerOf(control.get(id)!.request({ op: Op.SET, key: toBytes(key), value: toBytes('v'), epoch }));
    const next = PREVIOUS.filter((id) => id !== LEAVING);
    await send(next, ringOf(12, next, {}, { holding: true }));
    for (const [id, key] of [
      [head, changed],
      [unchangedHead, unchanged],
    ] as const) {
      const refused = await set(id, key, 12);
      expect((refused as DstoreError).code, key).toBe(ErrorCode.BUSY);
      expect((refused as DstoreError).notExecuted).toBe(true);
    }
    await send(next, ringOf(13, next, {}));
    expect(await set(head, changed, 13)).toMatchObject({ op: Op.OK });
    expect(await set(unchangedHead, unchanged, 13)).toMatchObject({ op: Op.OK });
  });
});
