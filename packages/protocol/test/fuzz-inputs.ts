/**
 * Hostile inputs derived from valid frames, for the fuzz test and `scripts/fuzz-long.ts`. Driven
 * by a seeded PRNG so any failure reproduces from its seed and input index.
 */
import { Encoder } from '@msgpack/msgpack';
import {
  ErrorCode,
  isKnownErrorCode,
  type Message,
  type MessageCodec,
  Op,
  ProtocolError,
  toWireArray,
} from '../src/index.js';
import { FrameDecoder } from '../src/internal.js';

const encoder = new Encoder();
const LENGTHS = [0, 1, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1];
const CONTAINER_HEADERS = [
  [0x91],
  [0x9f],
  [0xdc, 0xff, 0xff],
  [0xdd, 0xff, 0xff, 0xff, 0xff],
  [0x81],
  [0xde, 0xff, 0xff],
  [0xdf, 0xff, 0xff, 0xff, 0xff],
  [0xc6, 0xff, 0xff, 0xff, 0xff],
  [0xdb, 0x7f, 0xff, 0xff, 0xff],
  [0xd6, 0xff],
  [0xc1],
];

type Random = () => number;

function int(random: Random, below: number): number {
  return Math.floor(random() * below);
}

function bytes(random: Random, max: number): Uint8Array {
  const out = new Uint8Array(int(random, max + 1));
  for (let i = 0; i < out.length; i++) out[i] = int(random, 256);
  return out;
}

function key(random: Random): Uint8Array {
  const out = bytes(random, 40);
  return out.length === 0 ? new Uint8Array([0]) : out;
}

/** A random valid message of any type. */
export function randomMessage(random: Random): Message {
  const id = int(random, 2 ** 32);
  switch (int(random, 19)) {
    case 0:
      return random() < 0.5
        ? { op: Op.HELLO, id, version: 2, role: 'client' }
        : { op: Op.HELLO, id, version: 2, role: 'client', user: 'secret', nonce: bytes(random, 18) };
    case 1:
      return { op: Op.GET, id, key: key(random) };
    case 2:
      return { op: Op.SET, id, key: key(random), value: bytes(random, 200) };
    case 3:
      return { op: Op.MGET, id, keys: Array.from({ length: int(random, 8) }, () => key(random)) };
    case 4:
      return {
        op: Op.MSET,
        id,
        entries: Array.from({ length: int(random, 6) }, () => ({
          key: key(random),
          value: bytes(random, 50),
        })),
      };
    case 5:
      return { op: Op.JOIN, id, nodeId: 'node-1', host: '127.0.0.1', port: int(random, 65536), weight: 1 };
    case 6:
      return { op: Op.HEARTBEAT, id, nodeId: 'node-1', keyCount: int(random, 1e9) };
    case 7:
      return { op: Op.VALUE, id, value: random() < 0.3 ? null : bytes(random, 200) };
    case 8:
      return { op: Op.VALUES, id, values: Array.from({ length: int(random, 8) }, () => bytes(random, 20)) };
    case 9:
      return { op: Op.STATS_RESULT, id, stats: { keys: int(random, 1000), engine: 'memory', 'ops.get': 3 } };
    case 10:
      return { op: Op.ERROR, id, code: random() < 0.5 ? 'BUSY' : 'SOME_FUTURE_CODE', message: 'nope' };
    case 11: {
      const pick = int(random, 4);
      if (pick === 0) return { op: Op.AUTH, id, proof: bytes(random, 40) };
      if (pick === 1) return { op: Op.AUTH_OK, id, signature: bytes(random, 40) };
      const challenge = { nonce: bytes(random, 18), salt: bytes(random, 16), kdf: 'scrypt:16384,8,1' };
      return pick === 2
        ? { op: Op.HELLO_OK, id, version: 2, role: 'node', serverId: 'n1' }
        : { op: Op.HELLO_OK, id, version: 2, role: 'node', serverId: 'n1', challenge };
    }
    case 12:
      return { op: Op.COUNT, id, count: int(random, 2) };
    case 13:
      return {
        op: Op.MIGRATE_PUT,
        id,
        epoch: int(random, 1000),
        entries: Array.from({ length: int(random, 6) }, () => ({
          key: key(random),
          value: bytes(random, 50),
          writeEpoch: random() < 0.2 ? 0xffff_ffff : int(random, 1000),
          version: random() < 0.2 ? 0xffff_ffff : int(random, 2 ** 32),
        })),
      };
    case 14: {
      const pick = int(random, 5);
      if (pick === 0)
        return {
          op: Op.SET_WITH,
          id,
          key: key(random),
          value: bytes(random, 50),
          condition: random() < 0.5 ? 'nx' : 'xx',
          get: true,
          expiry: { kind: 'in', ms: 1 + int(random, 1e9) },
        };
      if (pick === 1)
        return { op: Op.EXPIRE, id, key: key(random), mode: 'at', ms: int(random, 2 ** 40), condition: 'gt' };
      if (pick === 2)
        return { op: Op.INCRBY, id, key: key(random), delta: BigInt(int(random, 2 ** 32)) - 2n ** 31n };
      if (pick === 3)
        return { op: Op.EXISTS, id, keys: Array.from({ length: int(random, 8) }, () => key(random)) };
      return { op: Op.TTL, id, key: key(random), epoch: int(random, 100) };
    }
    case 15:
      return random() < 0.5
        ? { op: Op.INTEGER, id, value: random() < 0.5 ? -2n : 2n ** 62n }
        : {
            op: Op.ENTRY,
            id,
            entry: { value: bytes(random, 50), writeEpoch: 3, version: 2 ** 50, expireAt: 2 ** 41 },
          };
    case 16: {
      // Versions: reads with the version, compare-and-set and compare-and-delete, their answers.
      const pick = int(random, 5);
      const version = int(random, 2 ** 53);
      if (pick === 0) return { op: Op.GET_VERSIONED, id, key: key(random) };
      if (pick === 1)
        return {
          op: Op.SET_WITH,
          id,
          key: key(random),
          value: bytes(random, 50),
          ifVersion: version,
          withVersion: true,
        };
      if (pick === 2)
        return { op: Op.DEL_VERSIONED, id, key: key(random), ifVersion: version, epoch: int(random, 100) };
      if (pick === 3) return { op: Op.VERSION, id, written: random() < 0.5, version };
      return { op: Op.VERSIONED, id, value: random() < 0.3 ? null : bytes(random, 50), version };
    }
    case 17: {
      // A transaction on one key (its steps nest request bodies in bins) and its answer.
      const shared = key(random);
      if (random() < 0.5) {
        return {
          op: Op.TRANSACT,
          id,
          key: shared,
          steps: Array.from({ length: int(random, 6) }, () =>
            random() < 0.5
              ? { op: Op.INCRBY, key: shared, delta: BigInt(int(random, 1000)) }
              : { op: Op.SET_WITH, key: shared, value: bytes(random, 30), condition: 'nx' as const },
          ),
          ...(random() < 0.5 ? { ifVersion: int(random, 2 ** 40) } : {}),
        };
      }
      return {
        op: Op.RESULTS,
        id,
        results:
          random() < 0.2
            ? null
            : Array.from({ length: int(random, 6) }, () => ({
                op: Op.VALUE,
                id: 0,
                value: bytes(random, 30),
              })),
      };
    }
    default:
      return { op: Op.PING, id };
  }
}

function framed(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

function validFrame(random: Random): Uint8Array {
  return framed(encoder.encode(toWireArray(randomMessage(random))));
}

function flipBits(random: Random, input: Uint8Array): Uint8Array {
  const out = input.slice();
  const flips = 1 + int(random, 8);
  for (let i = 0; i < flips; i++) out[int(random, out.length)]! ^= 1 << int(random, 8);
  return out;
}

function setLength(random: Random, input: Uint8Array): Uint8Array {
  const out = input.slice();
  new DataView(out.buffer).setUint32(0, LENGTHS[int(random, LENGTHS.length)]!);
  return out;
}

function nestContainer(random: Random, input: Uint8Array): Uint8Array {
  // Splice a container (or long-length) header into the body, then fix the frame length so the
  // frame is well framed and only its body is hostile.
  const body = input.subarray(4);
  const at = 1 + int(random, Math.max(1, body.length - 1));
  const inserted = CONTAINER_HEADERS[int(random, CONTAINER_HEADERS.length)]!;
  const depth = 1 + int(random, 50);
  const nested = new Uint8Array(inserted.length * depth).map((_, i) => inserted[i % inserted.length]!);
  return framed(Uint8Array.from([...body.subarray(0, at), ...nested, ...body.subarray(at)]));
}

function concatenate(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

/** The next hostile input from the PRNG `random`: a valid frame, mutated one of seven ways. */
export function hostileInput(random: Random): Uint8Array {
  const frame = validFrame(random);
  switch (int(random, 7)) {
    case 0:
      return flipBits(random, frame);
    case 1:
      return setLength(random, frame);
    case 2:
      return frame.subarray(0, int(random, frame.length));
    case 3:
      return concatenate(
        Array.from({ length: 2 + int(random, 3) }, () =>
          random() < 0.5 ? validFrame(random) : flipBits(random, validFrame(random)),
        ),
      );
    case 4:
      return nestContainer(random, frame);
    case 5:
      return random() < 0.5 ? bytes(random, 300) : framed(bytes(random, 300));
    default:
      return frame;
  }
}

/** What one input produced: messages decoded and typed errors seen. */
export interface FeedOutcome {
  messages: number;
  errors: number;
}

const KNOWN: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/**
 * Feeds `input` (in up to three pieces) through a fresh FrameDecoder and MessageCodec. Throws if
 * anything other than a {@link ProtocolError} with a known code escapes.
 */
export function feed(input: Uint8Array, codec: MessageCodec, random: Random, outcome: FeedOutcome): void {
  const decoder = new FrameDecoder(codec.limits.maxFrameBytes, (body) => {
    try {
      codec.decode(body);
      outcome.messages++;
    } catch (error) {
      expectTyped(error);
      outcome.errors++;
    }
  });
  const cut1 = int(random, input.length + 1);
  const cut2 = cut1 + int(random, input.length - cut1 + 1);
  try {
    decoder.push(input.subarray(0, cut1));
    decoder.push(input.subarray(cut1, cut2));
    decoder.push(input.subarray(cut2));
  } catch (error) {
    expectTyped(error);
    outcome.errors++;
    if (decoder.bufferedBytes !== 0) throw new Error('decoder kept bytes after a fatal error');
  }
  if (decoder.bufferedBytes > input.length) throw new Error('decoder holds more than it was given');
}

function expectTyped(error: unknown): void {
  if (!(error instanceof ProtocolError) || !isKnownErrorCode(error.code) || !KNOWN.has(error.code)) {
    throw new Error(`untyped failure: ${String(error)}`, { cause: error });
  }
}
