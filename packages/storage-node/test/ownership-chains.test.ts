/**
 * A node's view of the map's replication: the factor and members' states a RING carries (through
 * the real codec, as they arrive on the wire), and the chains derived from them, which must be
 * the ones the balancer and direct clients derive (`HashRing.chainOf` on the same ring).
 */
import { HashRing } from '@dstore/hashring';
import { MessageCodec, Op, type ReplicaStateName, type RingRequest } from '@dstore/protocol';
import { describe, expect, it } from 'vitest';
import { Ownership } from '../src/ownership.js';

const codec = new MessageCodec();

/** A RING as the node decodes it off the wire. */
function received(ring: Omit<RingRequest, 'op' | 'id'>): RingRequest {
  const decoded = codec.decode(codec.encode({ op: Op.RING, id: 1, ...ring }).slice());
  if (decoded.op !== Op.RING) throw new Error(`decoded op ${decoded.op}`);
  return decoded;
}

const ids = ['n1', 'n2', 'n3', 'n4'];

/** RING at epoch 3 with factor 3, the members at ports from `basePort`, in the states `stateOf` gives. */
function factorThree(basePort: number, stateOf: (id: string) => ReplicaStateName): RingRequest {
  return received({
    epoch: 3,
    generation: 7,
    algorithm: 'vnode',
    vnodes: 0,
    nodes: ids.map((id, i) => ({
      id,
      weight: 1,
      host: '127.0.0.1',
      port: basePort + i,
      replicaState: stateOf(id),
    })),
    replicationFactor: 3,
  });
}
const keys = Array.from({ length: 200 }, (_, i) => new TextEncoder().encode(`key-${i}`));

describe('Ownership replication fields', () => {
  it('reads a RING without them as factor 1: every chain is the owner alone', () => {
    const ownership = new Ownership(() => 'n1');
    expect(ownership.chainOf(keys[0]!)).toBeUndefined();
    ownership.apply(
      received({
        epoch: 1,
        generation: 7,
        algorithm: 'vnode',
        vnodes: 0,
        nodes: ids.map((id) => ({ id, weight: 1 })),
      }),
    );
    expect(ownership.replicationFactor).toBe(1);
    const ring = ownership.ring!;
    for (const key of keys) {
      const chain = ownership.chainOf(key)!;
      expect(chain.head).toBe(ring.get(key));
      expect(chain.tail).toBe(ring.get(key));
      expect(chain.underReplicated).toBe(false);
      // Routing is unchanged: the node refuses exactly the keys whose head is another member.
      expect(ownership.refusal(key, false)).toBe(chain.head === 'n1' ? undefined : chain.head);
    }
  });

  it('derives the chains the balancer derives from the factor and states of the RING', () => {
    const ownership = new Ownership(() => 'n2');
    const states = { n1: 'up', n2: 'up', n3: 'failed', n4: 'dead' } as const;
    ownership.apply(factorThree(9000, (id) => states[id as keyof typeof states]));
    expect(ownership.replicationFactor).toBe(3);
    expect(Object.fromEntries(ownership.replicaStates)).toEqual(states);
    const ring = HashRing.from(ids.map((id) => ({ id })));
    const expectedStates = new Map(Object.entries(states));
    for (const key of keys) {
      const chain = ownership.chainOf(key)!;
      expect(chain).toEqual(ring.chainOf(key, 3, expectedStates));
      expect(chain.desired).not.toContain('n4');
      expect(chain.serving).not.toContain('n3');
    }
    // The same epoch again (a member's new address) carries states too: they are replaced.
    ownership.apply(factorThree(9100, () => 'up'));
    expect([...ownership.replicaStates.values()]).toEqual(['up', 'up', 'up', 'up']);
    expect(ownership.addressOf('n1')).toEqual({ host: '127.0.0.1', port: 9100 });
  });

  it("answers chainOf from its per-point cache with the ring's chains, through new epochs and states", () => {
    const ownership = new Ownership(() => 'n2');
    const ring = HashRing.from(ids.map((id) => ({ id })));
    // More keys than the ring has points, each looked up twice: hits and misses of every point.
    const many = Array.from({ length: 20_000 }, (_, i) => new TextEncoder().encode(`k:${i}`));
    const check = (states: Record<string, ReplicaStateName>) => {
      const expected = new Map(Object.entries(states));
      for (let round = 0; round < 2; round++) {
        for (const key of many) {
          const want = ring.chainOf(key, 3, expected);
          const got = ownership.chainOf(key)!;
          if (got.serving.join() !== want.serving.join() || got.desired.join() !== want.desired.join())
            expect(got).toEqual(want);
        }
      }
      for (const key of keys) expect(ownership.chainOf(key)).toEqual(ring.chainOf(key, 3, expected));
    };
    ownership.apply(factorThree(9000, () => 'up'));
    check({ n1: 'up', n2: 'up', n3: 'up', n4: 'up' });
    // The same epoch again with other states (a member failed): the cached chains are dropped.
    const failed = { n1: 'up', n2: 'up', n3: 'failed', n4: 'up' } as const;
    ownership.apply(factorThree(9000, (id) => failed[id as keyof typeof failed]));
    check(failed);
    // A new epoch: a member dead.
    const dead = { n1: 'dead', n2: 'up', n3: 'up', n4: 'up' } as const;
    ownership.apply({ ...factorThree(9000, (id) => dead[id as keyof typeof dead]), epoch: 4 });
    check(dead);
  });
});
