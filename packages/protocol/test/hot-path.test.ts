import { Decoder, Encoder } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  fromWireArray,
  type Message,
  MessageCodec,
  Op,
  ProtocolError,
  type Request,
  resolveLimits,
  toWireArray,
} from '../src/index.js';
import { checkBodyShape } from '../src/internal.js';

// The hand-written writer and reader of GET/SET/DEL/OK/VALUE/COUNT/REPLICATE/REPLICATED must be invisible: the same
// bytes as the generic MessagePack encoder, and for any body (valid, mutated, truncated) the same
// message or the same error as the generic decoder.

const limits = resolveLimits({ maxKeyBytes: 300, maxValueBytes: 70_000 });
const codec = new MessageCodec(limits);
const raw = new Encoder();
const rawDecoder = new Decoder();

/** What the generic path alone makes of a body: the message, or the error's code and text. */
function generic(body: Uint8Array): Message | { error: string } {
  try {
    checkBodyShape(body, limits);
    let fields: unknown[];
    try {
      fields = rawDecoder.decode(body) as unknown[];
    } catch (error) {
      throw new ProtocolError('MALFORMED_FRAME', `undecodable body: ${(error as Error).message}`);
    }
    return fromWireArray(fields, limits);
  } catch (error) {
    const e = error as ProtocolError;
    return { error: `${e.code} ${e.requestId} ${e.message}` };
  }
}

/**
 * A comparable rendering (fields in order, bytes as base64 with their class): deep equality of
 * large byte arrays element by element would make this test take minutes.
 */
function render(result: Message | { error: string }): string {
  return JSON.stringify(result, (_name, value: unknown) =>
    value instanceof Uint8Array
      ? `${value.constructor.name}:${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')}`
      : typeof value === 'bigint'
        ? `bigint:${value}`
        : value,
  );
}

function viaCodec(body: Uint8Array): Message | { error: string } {
  try {
    return codec.decode(body);
  } catch (error) {
    const e = error as ProtocolError;
    return { error: `${e.code} ${e.requestId} ${e.message}` };
  }
}

const uint32 = fc.oneof(
  fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffff_ffff),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
// Sizes around the bin8/bin16/bin32 boundaries and the limits, plus short random bytes.
const bytesOf = (sizes: number[]) =>
  fc.oneof(
    fc.constantFrom(...sizes).map((n) => new Uint8Array(n).fill(0xab)),
    fc.uint8Array({ maxLength: 40 }),
  );
const key = bytesOf([1, 255, 256, 300, 301]).filter((k) => k.length > 0);
const valueBytes = bytesOf([0, 255, 256, 65_535, 65_536, 70_000, 70_001]);
const epoch = fc.option(uint32, { nil: undefined });
// Versions, expiry times, REPLICATE's epoch and batch: below 2^53 (uint64 above 2^32-1).
const uint53 = fc.oneof(
  fc.constantFrom(0, 0x7f, 0xffff_ffff, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER),
  fc.integer({ min: 0, max: 0xffff_ffff }),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
);
const smallValue = bytesOf([0, 100, 255, 256, 70_001]);
const replicatedEntry = fc.oneof(
  fc.record({ key, value: smallValue, writeEpoch: uint32, version: uint53, expireAt: uint53 }),
  fc.record({ key, value: fc.constant(null), writeEpoch: uint32, version: uint53, expireAt: fc.constant(0) }),
);

const hotMessage: fc.Arbitrary<Message> = fc.oneof(
  fc
    .record({ op: fc.constantFrom(Op.GET, Op.DEL), id: uint32, key, fallback: fc.boolean(), epoch })
    .map(({ op, id, key, fallback, epoch }) => {
      const base = { op, id, key, ...(fallback ? { fallback: true } : {}) };
      return (epoch === undefined ? base : { ...base, epoch }) as Message;
    }),
  fc
    .record({ id: uint32, key, value: valueBytes, epoch })
    .map(({ id, key, value, epoch }) =>
      epoch === undefined
        ? ({ op: Op.SET, id, key, value } as Message)
        : ({ op: Op.SET, id, key, value, epoch } as Message),
    ),
  uint32.map((id) => ({ op: Op.OK, id }) as Message),
  fc
    .record({ id: uint32, value: fc.option(valueBytes, { nil: null }), deleted: fc.boolean() })
    .map(({ id, value, deleted }) =>
      deleted
        ? ({ op: Op.VALUE, id, value, deleted: true } as Message)
        : ({ op: Op.VALUE, id, value } as Message),
    ),
  fc.record({ id: uint32, count: uint32 }).map(({ id, count }) => ({ op: Op.COUNT, id, count }) as Message),
  // INTEGER: a uint32 by hand; negative or larger values through the generic path (same bytes).
  fc
    .record({ id: uint32, value: fc.oneof(uint32.map(BigInt), fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n)) })
    .map(({ id, value }) => ({ op: Op.INTEGER, id, value }) as Message),
  // 0, 1 and 2 entries are fixarrays (5, 10, 15 fields), 3 and more array16.
  fc
    .record({
      id: uint32,
      epoch: uint53,
      batch: uint53,
      entries: fc.array(replicatedEntry, { maxLength: 6 }),
    })
    .map((fields) => ({ op: Op.REPLICATE, ...fields }) as Message),
  fc
    .record({ id: uint32, batch: uint53, full: fc.boolean() })
    .map(
      ({ id, batch, full }) =>
        (full ? { op: Op.REPLICATED, id, batch, full } : { op: Op.REPLICATED, id, batch }) as Message,
    ),
);

describe('hand-written hot frames', () => {
  it('encode to exactly the generic encoder bytes, also through encodeRequest', () => {
    fc.assert(
      fc.property(hotMessage, (message) => {
        const expected = raw.encode(toWireArray(message));
        expect(Buffer.from(codec.encode(message)).equals(Buffer.from(expected))).toBe(true);
        if (message.op <= 63) {
          const { id, ...rest } = message as Request;
          const viaRequest = codec.encodeRequest(rest, id);
          expect(Buffer.from(viaRequest).equals(Buffer.from(expected))).toBe(true);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('decode like the generic path, for valid, mutated and truncated bodies', () => {
    fc.assert(
      fc.property(
        hotMessage,
        fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 3 }),
        fc.nat(),
        fc.boolean(),
        (message, mutations, cut, truncate) => {
          const body = Uint8Array.from(raw.encode(toWireArray(message)));
          expect(render(viaCodec(body))).toBe(render(generic(body)));
          for (const { at, byte } of mutations) body[at % body.length] = byte;
          expect(render(viaCodec(body))).toBe(render(generic(body)));
          if (truncate) {
            const short = body.subarray(0, cut % body.length);
            expect(render(viaCodec(short))).toBe(render(generic(short)));
          }
        },
      ),
      { numRuns: 3000, endOnFailure: true },
    );
  });

  it('encode and decode REPLICATE and REPLICATED within the limits without the generic MessagePack path', () => {
    const encodeSpy = vi.spyOn(Encoder.prototype, 'encodeSharedRef');
    const decodeSpy = vi.spyOn(Decoder.prototype, 'decode');
    try {
      const withinLimits = fc.oneof(
        fc
          .record({
            id: uint32,
            epoch: uint53,
            batch: uint53,
            entries: fc.array(
              fc.record({
                key: fc.uint8Array({ minLength: 1, maxLength: 300 }),
                value: fc.option(fc.uint8Array({ maxLength: 300 }), { nil: null }),
                writeEpoch: uint32,
                version: uint53,
                expireAt: uint53,
              }),
              { maxLength: 20 },
            ),
          })
          .map(
            ({ entries, ...rest }) =>
              ({
                op: Op.REPLICATE,
                ...rest,
                entries: entries.map((entry) => (entry.value === null ? { ...entry, expireAt: 0 } : entry)),
              }) as Message,
          ),
        fc
          .record({ id: uint32, batch: uint53, full: fc.boolean() })
          .map(
            ({ full, ...fields }) =>
              (full ? { op: Op.REPLICATED, ...fields, full } : { op: Op.REPLICATED, ...fields }) as Message,
          ),
      );
      fc.assert(
        fc.property(withinLimits, (message) => {
          const body = Uint8Array.from(codec.encode(message));
          expect(render(codec.decode(body))).toBe(render(message));
        }),
        { numRuns: 1000 },
      );
      expect(encodeSpy).not.toHaveBeenCalled();
      expect(decodeSpy).not.toHaveBeenCalled();
    } finally {
      encodeSpy.mockRestore();
      decodeSpy.mockRestore();
    }
  });

  it('decode trailing fields, nil flags and str keys through the generic path, as before', () => {
    const cases: unknown[][] = [
      [Op.GET, 1, new Uint8Array([1]), null],
      [Op.GET, 1, new Uint8Array([1]), 0, null],
      [Op.GET, 1, 'k'],
      [Op.SET, 2, new Uint8Array([1]), new Uint8Array([2]), null],
      [Op.SET, 2, new Uint8Array([1]), new Uint8Array([2]), 3, 'future'],
      [Op.VALUE, 3, null, true],
      [Op.OK, 4, 'future'],
      [Op.COUNT, 5, 2 ** 40],
      [Op.INTEGER, 5, -1],
      [Op.INTEGER, 5, 2 ** 40],
      [Op.INTEGER, 5, '123'],
      [Op.DEL, 6, new Uint8Array(0)],
      [Op.DEL, 6, new Uint8Array(301)],
      [Op.SET, 7, new Uint8Array([1]), new Uint8Array(70_001)],
      // REPLICATE: a delete with an expiry, a count that disagrees with the fields, a version
      // past 2^53, a str key, trailing fields, a batch over the limit.
      [Op.REPLICATE, 8, 1, 1, 1, new Uint8Array([1]), null, 0, 1, 5],
      [Op.REPLICATE, 8, 1, 1, 2, new Uint8Array([1]), null, 0, 1, 0],
      [Op.REPLICATE, 8, 1, 1, 1, new Uint8Array([1]), new Uint8Array([2]), 0, 2 ** 53, 0],
      [Op.REPLICATE, 8, 1, 1, 1, 'k', new Uint8Array([2]), 0, 1, 0],
      [Op.REPLICATE, 8, 1, 1, 1, new Uint8Array([1]), new Uint8Array([2]), 0, 1, 0, 'future'],
      [Op.REPLICATE, 8, 1, 1, limits.maxBatchKeys + 1],
      [Op.REPLICATE, 8, 2 ** 53, 1, 0],
      [Op.REPLICATED, 9, 2 ** 53],
      [Op.REPLICATED, 9, -1],
      [Op.REPLICATED, 9, 1, 2],
      [Op.REPLICATED, 9, 1, 0],
      [Op.REPLICATED, 9, 1, 1, 0],
    ];
    for (const fields of cases) {
      const body = raw.encode(fields);
      expect(render(viaCodec(body))).toBe(render(generic(body)));
    }
  });
});
