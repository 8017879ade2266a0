import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HashRing, HashRingError, type RingAlgorithm, ringOfSpec } from '../src/index.js';

const ALGORITHMS: RingAlgorithm[] = ['vnode', 'ketama', 'rendezvous'];
const members = Array.from({ length: 5 }, (_, i) => ({ id: `node-${i}` }));
const utf8 = new TextEncoder();

describe('hash tags', () => {
  for (const algorithm of ALGORITHMS) {
    const tagged = HashRing.from(members, { algorithm, hashTag: '{}' });
    const whole = HashRing.from(members, { algorithm });

    it(`${algorithm}: places a key by its tag as Redis Cluster documents`, () => {
      // Redis Cluster's examples (cluster-spec, "Hash tags").
      expect(tagged.position('{user1000}.following')).toBe(whole.position('user1000'));
      expect(tagged.position('{user1000}.followers')).toBe(whole.position('user1000'));
      expect(tagged.position('foo{{bar}}zap')).toBe(whole.position('{bar'));
      expect(tagged.position('foo{bar}{zap}')).toBe(whole.position('bar'));
      // No tag, an empty tag, or no closing character: the whole key.
      for (const key of ['foo{}{bar}', 'plain', '{unclosed', 'closed}{', '}{', '{}', '']) {
        expect(tagged.position(key)).toBe(whole.position(key));
      }
    });

    it(`${algorithm}: strings and their UTF-8 bytes agree, tag or not (property)`, () => {
      fc.assert(
        fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (before, after) => {
          for (const key of [before, `${before}{${after}}`, `{${before}}${after}`, `${before}{${after}`]) {
            expect(tagged.position(key)).toBe(tagged.position(utf8.encode(key)));
          }
        }),
      );
    });

    it(`${algorithm}: keys sharing a tag share position, owner and chain (property)`, () => {
      fc.assert(
        fc.property(
          fc.string({ minLength: 1 }).filter((tag) => !tag.includes('}')),
          fc.string(),
          fc.string(),
          (tag, a, b) => {
            const first = `${a.replaceAll('{', '')}{${tag}}${a}`;
            const second = `${b.replaceAll('{', '')}{${tag}}:${b}`;
            expect(tagged.position(first)).toBe(tagged.position(second));
            expect(tagged.get(first)).toBe(tagged.get(second));
            expect(tagged.getN(first, 3)).toEqual(tagged.getN(second, 3));
          },
        ),
      );
    });
  }

  it('any two printable ASCII characters, the same twice included (twemproxy "$$")', () => {
    const ring = HashRing.from(members, { hashTag: '$$' });
    expect(ring.hashTag).toBe('$$');
    expect(ring.position('a$x$b')).toBe(ring.position('$x$'));
    expect(ring.position('a$x$b')).toBe(HashRing.from(members).position('x'));
  });

  it('survives add, remove and withOptions, and travels in a RingSpec', () => {
    const ring = HashRing.from(members, { hashTag: '{}' });
    expect(ring.add({ id: 'node-9' }).hashTag).toBe('{}');
    expect(ring.remove('node-0').hashTag).toBe('{}');
    expect(ring.withOptions({ vnodes: 64 }).hashTag).toBe('{}');
    expect(HashRing.from(members).hashTag).toBeUndefined();
    const spec = ringOfSpec({ algorithm: 'vnode', vnodes: 0, nodes: members, hashTag: '{}' });
    expect(spec.position('{a}b')).toBe(ring.position('a'));
    expect(
      ringOfSpec({ algorithm: 'vnode', vnodes: 0, nodes: members, hashTag: '' }).hashTag,
    ).toBeUndefined();
  });

  it('refuses a tag that is not two printable ASCII characters', () => {
    for (const hashTag of ['', '{', '{}}', '{\u00e9', '\n}', 7 as unknown as string]) {
      expect(() => HashRing.from(members, { hashTag })).toThrow(HashRingError);
    }
  });

  it('diffs only rings that place keys the same way', () => {
    const tagged = HashRing.from(members, { hashTag: '{}' });
    expect(() => tagged.diff(HashRing.from(members))).toThrow(/same algorithm and hash tag/);
    expect(() => tagged.diffReplicaSets(HashRing.from(members), 3)).toThrow(/same algorithm and hash tag/);
    expect(tagged.diff(tagged.add({ id: 'node-9' })).length).toBeGreaterThan(0);
  });
});
