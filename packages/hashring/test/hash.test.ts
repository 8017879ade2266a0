import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { md5, murmur3Bytes, murmur3String } from '../src/index.js';

const utf8 = (s: string) => new TextEncoder().encode(s);

describe('murmur3 x86_32', () => {
  it('matches the reference vectors', () => {
    expect(murmur3String('', 0)).toBe(0);
    expect(murmur3String('', 1)).toBe(0x514e28b7);
    expect(murmur3String('', 0xffffffff)).toBe(0x81f16f39);
    expect(murmur3Bytes(new Uint8Array([0xff, 0xff, 0xff, 0xff]), 4, 0)).toBe(0x76293b50);
    expect(murmur3Bytes(new Uint8Array([0x21, 0x43, 0x65, 0x87]), 4, 0)).toBe(0xf55b516b);
    expect(murmur3Bytes(new Uint8Array([0x21, 0x43, 0x65]), 3, 0)).toBe(0x7e4a8634);
    expect(murmur3Bytes(new Uint8Array([0x21, 0x43]), 2, 0)).toBe(0xa0f7b07a);
    expect(murmur3Bytes(new Uint8Array([0x21]), 1, 0)).toBe(0x72661cf4);
    expect(murmur3String('hello', 0)).toBe(0x248bfa47);
    expect(murmur3String('Hello, world!', 1234)).toBe(0xfaf6cdb3);
    expect(murmur3String('The quick brown fox jumps over the lazy dog', 0)).toBe(0x2e4ff723);
  });

  it('hashes a string exactly as its UTF-8 bytes (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.integer({ min: 0, max: 0xffffffff }), (s, seed) => {
        const bytes = utf8(s);
        expect(murmur3String(s, seed)).toBe(murmur3Bytes(bytes, bytes.length, seed));
      }),
      { numRuns: 500 },
    );
  });
});

describe('md5', () => {
  it('matches RFC 1321 vectors', () => {
    const hex = (s: string) => Buffer.from(md5(utf8(s))).toString('hex');
    expect(hex('')).toBe('d41d8cd98f00b204e9800998ecf8427e');
    expect(hex('abc')).toBe('900150983cd24fb0d6963f7d28e17f72');
    expect(hex('message digest')).toBe('f96b697d7cb7938d525a2f31aaf161d0');
    expect(hex('1234567890'.repeat(8))).toBe('57edf4a22be3c955ac49da2e2107b67a');
  });

  it('agrees with node:crypto on arbitrary bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const expected = createHash('md5').update(bytes).digest('hex');
        expect(Buffer.from(md5(bytes)).toString('hex')).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });
});

describe('md5 string paths', () => {
  it('ASCII fast path and UTF-8 path agree with node:crypto (property)', async () => {
    const { md5Hash32 } = await import('../src/md5.js');
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 40 })),
        (s) => {
          expect(md5Hash32(s)).toBe(createHash('md5').update(s, 'utf8').digest().readUInt32LE(0));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('long and non-ASCII keys (scratch buffer growth)', () => {
  it('hash long multi-byte strings exactly as their bytes', async () => {
    const { md5Hash32 } = await import('../src/md5.js');
    for (const s of ['é'.repeat(1000), '🔑'.repeat(3000), `${'a'.repeat(5000)}ж`, 'x'.repeat(10_000)]) {
      const bytes = utf8(s);
      expect(murmur3String(s, 7)).toBe(murmur3Bytes(bytes, bytes.length, 7));
      expect(md5Hash32(s)).toBe(createHash('md5').update(bytes).digest().readUInt32LE(0));
    }
  });
});
