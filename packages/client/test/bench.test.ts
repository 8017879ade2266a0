import { seededRandom } from '@dstore/protocol/testing';
import { describe, expect, it } from 'vitest';
import { nodeReportsFrom } from '../src/bench/node-stats.js';
import { Workload } from '../src/bench/workload.js';
import { ScrambledZipfianGenerator, ZipfianGenerator } from '../src/bench/zipfian.js';

describe('zipfian', () => {
  it('draws in range with rank 0 the most popular and a heavy head', () => {
    const generator = new ZipfianGenerator(1000, 0.99, seededRandom(1));
    const counts = new Array<number>(1000).fill(0);
    let outOfRange = 0;
    for (let i = 0; i < 100_000; i++) {
      const item = generator.next();
      if (item >= 0 && item < 1000) counts[item]!++;
      else outOfRange++;
    }
    expect(outOfRange).toBe(0);
    expect(counts[0]).toBe(Math.max(...counts));
    expect(counts[0]!).toBeGreaterThan(counts[1]!);
    const head = counts.slice(0, 10).reduce((a, b) => a + b, 0);
    // Theory for theta 0.99 over 1000 items: the top 1% of items take about 39% of draws.
    expect(head / 100_000).toBeGreaterThan(0.3);
    expect(head / 100_000).toBeLessThan(0.5);
  });

  it('scrambles the popular items over the key space', () => {
    const generator = new ScrambledZipfianGenerator(1000, 0.99, seededRandom(2));
    const counts = new Map<number, number>();
    for (let i = 0; i < 20_000; i++) {
      const item = generator.next();
      counts.set(item, (counts.get(item) ?? 0) + 1);
    }
    expect([...counts.keys()].every((item) => item >= 0 && item < 1000)).toBe(true);
    const hottest = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
    expect(hottest).not.toBe(0);
  });

  it('rejects bad parameters', () => {
    expect(() => new ZipfianGenerator(0)).toThrow(RangeError);
    expect(() => new ZipfianGenerator(10, 1)).toThrow(RangeError);
  });
});

describe('workload', () => {
  it('follows the read ratio, stays in the keyspace and reuses one value buffer', () => {
    const workload = new Workload({
      keyspace: 50,
      readRatio: 0.8,
      valueSize: 64,
      distribution: 'uniform',
      random: seededRandom(3),
    });
    let reads = 0;
    for (let i = 0; i < 10_000; i++) {
      if (workload.nextType() === 'get') reads++;
      const index = Number(workload.nextKey().slice('bench:'.length));
      if (!(index >= 0 && index < 50)) throw new Error(`key index ${index} out of range`);
    }
    expect(reads / 10_000).toBeGreaterThan(0.75);
    expect(reads / 10_000).toBeLessThan(0.85);
    expect(workload.value.length).toBe(64);
    expect(
      () => new Workload({ keyspace: 0, readRatio: 0.5, valueSize: 1, distribution: 'uniform' }),
    ).toThrow();
  });
});

describe('node reports from balancer STATS', () => {
  it('groups node.<id>.* entries by node, ids with dots included', () => {
    const reports = nodeReportsFrom({
      role: 'balancer',
      'node.node-2.keys': 7,
      'node.node-2.latency.p50_us': 40,
      'node.node-2.latency.p99_us': 90,
      'node.node-10.status': 'down',
      'node.a.b.latency.p50_us': 5,
      'node.node-2.ops.get': 3,
    });
    expect(reports.map((node) => node.id)).toEqual(['a.b', 'node-2', 'node-10']);
    expect(reports[1]).toMatchObject({ status: 'up', keys: 7, latency: { p50Us: 40, p99Us: 90, maxUs: 0 } });
    expect(reports[2]).toMatchObject({ status: 'down', keys: undefined, latency: undefined });
  });
});
