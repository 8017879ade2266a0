import { describe, expect, it } from 'vitest';
import { HashRing } from '../src/index.js';
import { countOwners, maxOverMean, randomKeys } from './helpers.js';

const tenNodes = Array.from({ length: 10 }, (_, i) => ({ id: `node-${i}` }));

describe('balance', () => {
  it('vnode default: 1,000,000 keys over 10 equal nodes, max <= 1.05x mean', () => {
    const ring = HashRing.from(tenNodes);
    const keys = randomKeys(1_000_000, 1);
    const counts = countOwners((k) => ring.get(k), keys);
    const ratio = maxOverMean(counts, 10, keys.length);
    expect(counts.size).toBe(10);
    expect(ratio).toBeLessThanOrEqual(1.05);
    // The exact keyspace shares agree with the sample.
    expect(Math.max(...ring.shares().values()) * 10).toBeLessThanOrEqual(1.05);
  });

  it('rendezvous: equal nodes are balanced to within sampling noise', () => {
    const ring = HashRing.from(tenNodes.slice(0, 5), { algorithm: 'rendezvous' });
    const keys = randomKeys(200_000, 2);
    expect(
      maxOverMean(
        countOwners((k) => ring.get(k), keys),
        5,
        keys.length,
      ),
    ).toBeLessThan(1.02);
  });

  for (const algorithm of ['vnode', 'ketama', 'rendezvous'] as const) {
    it(`${algorithm}: weight 2 gets twice the share of weight 1 (within 10%)`, () => {
      const ring = HashRing.from(
        [
          { id: 'a', weight: 1 },
          { id: 'b', weight: 2 },
          { id: 'c', weight: 1 },
          { id: 'd', weight: 2 },
        ],
        { algorithm },
      );
      const keys = randomKeys(300_000, 5);
      const counts = countOwners((k) => ring.get(k), keys);
      const light = (counts.get('a')! + counts.get('c')!) / 2;
      const heavy = (counts.get('b')! + counts.get('d')!) / 2;
      expect(heavy / light).toBeGreaterThan(1.8);
      expect(heavy / light).toBeLessThan(2.2);
    });
  }
});
