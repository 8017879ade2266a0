import { describe, expect, it } from 'vitest';
import { HashRing, RangeIndex, ringOfSpec, Topology } from '../src/index.js';

const members = [
  { id: 'node-1', weight: 1 },
  { id: 'node-2', weight: 2 },
  { id: 'node-3', weight: 1 },
];
const keys = Array.from({ length: 2000 }, (_, i) => new TextEncoder().encode(`key-${i}`));

describe('ringOfSpec', () => {
  it('builds the ring HashRing.from builds (vnodes 0 = the default)', () => {
    for (const algorithm of ['vnode', 'ketama'] as const) {
      const fromSpec = ringOfSpec({ algorithm, vnodes: 0, nodes: members });
      const direct = HashRing.from(members, { algorithm });
      for (const key of keys) expect(fromSpec.get(key)).toBe(direct.get(key));
    }
    const small = ringOfSpec({ algorithm: 'vnode', vnodes: 16, nodes: members });
    expect(small.vnodes).toBe(16);
  });

  it('refuses an unknown algorithm', () => {
    expect(() => ringOfSpec({ algorithm: 'crc16', vnodes: 0, nodes: members })).toThrow();
  });
});

describe('Topology', () => {
  it('owns keys on the routed ring and names the old owner only for moving ranges', () => {
    const before = ringOfSpec({ algorithm: 'vnode', vnodes: 0, nodes: members.slice(0, 2) });
    const after = ringOfSpec({ algorithm: 'vnode', vnodes: 0, nodes: members });
    const moves = before.diff(after);
    const index = new RangeIndex<string>(moves, (range) => (range as (typeof moves)[number]).from);
    const streaming = new Topology(after, 7, after, index);
    const settled = new Topology(after, 7);
    expect(settled.changing).toBe(false);
    expect(streaming.changing).toBe(true);
    let moved = 0;
    for (const key of keys) {
      const owner = streaming.ownerOf(key)!;
      expect(owner).toBe(after.get(key));
      const fallback = streaming.fallbackOf(key, owner);
      if (before.get(key) === owner) expect(fallback).toBeUndefined();
      else {
        moved++;
        expect(fallback).toBe(before.get(key));
      }
      expect(settled.fallbackOf(key, owner)).toBeUndefined();
    }
    expect(moved).toBeGreaterThan(0);
    expect(new Topology(HashRing.from([]), 0).ownerOf(keys[0]!)).toBeUndefined();
  });
});
