/**
 * Test helpers shared by every package's bad-input tests: one corpus, so the node, the balancer
 * and the client are all held to the same hostile bytes. Exported as `@dstore/protocol/testing`.
 */
import { Encoder } from '@msgpack/msgpack';
import { toWireArray } from './codec.js';
import { DEFAULT_LIMITS } from './limits.js';
import { type Message, Op } from './messages.js';

/** One hostile input: raw bytes to write to a socket, and what a server must do about it. */
export interface BadInputCase {
  readonly name: string;
  readonly bytes: Uint8Array;
  /** True when the server should close the connection (framing cannot be trusted any more). */
  readonly closes: boolean;
  /**
   * True for a Redis client's command: a native port answers it with one RESP error line (`-ERR
   * ...`, which such a client can print) instead of ERROR frames, then closes.
   */
  readonly respClient?: boolean;
}

const encoder = new Encoder();
const utf8 = new TextEncoder();

/** Frames a body with its 4-byte big-endian length prefix. */
export function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

/** Encodes a message as a complete frame (header + body). */
export function encodeFrame(message: Message): Uint8Array {
  return frame(encoder.encode(toWireArray(message)));
}

/** A frame whose header declares `length` but which carries only `body`. */
export function header(length: number, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, length >>> 0);
  out.set(body, 4);
  return out;
}

function nestedArrays(depth: number): Uint8Array {
  // array16 headers declaring 1 element each: 3 bytes per level.
  const out = new Uint8Array(depth * 3 + 1);
  for (let i = 0; i < depth; i++) out.set([0xdc, 0x00, 0x01], i * 3);
  out[depth * 3] = 0xc0;
  return out;
}

function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state >>> 24;
  }
  return out;
}

/**
 * The bad-input corpus: every case a server must survive with an error reply (or a close), never a
 * crash, a hang or a large allocation. After each, a fresh connection must still be served.
 */
export function badInputCorpus(): BadInputCase[] {
  const key = utf8.encode('key');
  const cases: BadInputCase[] = [
    { name: 'length 0', bytes: header(0), closes: false },
    { name: 'length 1, empty array body', bytes: frame(new Uint8Array([0x90])), closes: false },
    { name: 'length 2^16 with no body', bytes: header(2 ** 16), closes: false },
    { name: 'length 2^31-1', bytes: header(2 ** 31 - 1, new Uint8Array([0x93])), closes: true },
    { name: 'length 2^32-1', bytes: header(2 ** 32 - 1, new Uint8Array([0x93])), closes: true },
    { name: 'length over the frame limit', bytes: header(DEFAULT_LIMITS.maxFrameBytes + 1), closes: true },
    {
      name: 'array32 header declaring 2^32-1 elements',
      bytes: frame(new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff])),
      closes: false,
    },
    {
      name: 'map32 header declaring 2^32-1 entries',
      bytes: frame(new Uint8Array([0xdf, 0xff, 0xff, 0xff, 0xff])),
      closes: false,
    },
    {
      name: 'bin32 declaring 4 GiB',
      bytes: frame(new Uint8Array([0x93, 0x02, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff])),
      closes: false,
    },
    {
      name: 'str32 declaring 4 GiB',
      bytes: frame(new Uint8Array([0x93, 0x02, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff])),
      closes: false,
    },
    { name: '20,000 nested array16 headers', bytes: frame(nestedArrays(20_000)), closes: false },
    { name: 'nested array as key', bytes: frame(encoder.encode([Op.GET, 1, [[key]]])), closes: false },
    { name: 'map as key', bytes: frame(encoder.encode([Op.GET, 1, { a: 1 }])), closes: false },
    {
      name: '__proto__ map key in STATS_RESULT',
      bytes: frame(new Uint8Array([0x93, 0x44, 0x01, 0x81, 0xa9, ...utf8.encode('__proto__'), 0x01])),
      closes: false,
    },
    {
      name: 'extension type (timestamp)',
      bytes: frame(new Uint8Array([0x93, 0x02, 0x01, 0xd6, 0xff, 0, 0, 0, 0])),
      closes: false,
    },
    { name: 'reserved byte 0xc1', bytes: frame(new Uint8Array([0x93, 0x02, 0x01, 0xc1])), closes: false },
    { name: 'not an array (a string)', bytes: frame(encoder.encode('GET key')), closes: false },
    { name: 'op is a string', bytes: frame(encoder.encode(['GET', 1, key])), closes: false },
    { name: 'unknown op 42', bytes: frame(encoder.encode([42, 7, key])), closes: false },
    { name: 'unknown op 200 (response range)', bytes: frame(encoder.encode([200, 7, key])), closes: false },
    { name: 'negative request id', bytes: frame(encoder.encode([Op.GET, -1, key])), closes: false },
    { name: 'request id over 2^32', bytes: frame(encoder.encode([Op.GET, 2 ** 40, key])), closes: false },
    { name: 'key is a number', bytes: frame(encoder.encode([Op.GET, 1, 12345])), closes: false },
    { name: 'key is nil', bytes: frame(encoder.encode([Op.GET, 1, null])), closes: false },
    { name: 'empty key', bytes: frame(encoder.encode([Op.GET, 1, new Uint8Array(0)])), closes: false },
    { name: 'missing key', bytes: frame(encoder.encode([Op.GET, 1])), closes: false },
    { name: 'SET without value', bytes: frame(encoder.encode([Op.SET, 1, key])), closes: false },
    { name: 'SET value is a boolean', bytes: frame(encoder.encode([Op.SET, 1, key, true])), closes: false },
    {
      name: 'key over maxKeyBytes',
      bytes: frame(encoder.encode([Op.GET, 1, new Uint8Array(DEFAULT_LIMITS.maxKeyBytes + 1)])),
      closes: false,
    },
    {
      name: 'value over maxValueBytes',
      bytes: frame(encoder.encode([Op.SET, 1, key, new Uint8Array(DEFAULT_LIMITS.maxValueBytes + 1)])),
      closes: false,
    },
    {
      name: 'MGET count larger than its keys',
      bytes: frame(encoder.encode([Op.MGET, 1, 1000, key])),
      closes: false,
    },
    {
      name: 'MGET over maxBatchKeys',
      bytes: frame(encoder.encode([Op.MGET, 1, DEFAULT_LIMITS.maxBatchKeys + 1, key])),
      closes: false,
    },
    { name: 'MSET odd entries', bytes: frame(encoder.encode([Op.MSET, 1, 2, key, key, key])), closes: false },
    {
      name: 'MIGRATE_PUT entries without writeEpoch and version',
      bytes: frame(encoder.encode([Op.MIGRATE_PUT, 1, 1, 2, key, key, key, key])),
      closes: false,
    },
    {
      name: 'MIGRATE_PUT version past 2^53',
      bytes: frame(encoder.encode([Op.MIGRATE_PUT, 1, 1, 1, key, key, 1, 2 ** 60])),
      closes: false,
    },
    {
      name: 'SET_WITH IF_VERSION without the version',
      bytes: frame(encoder.encode([Op.SET_WITH, 1, key, key, 128, 0])),
      closes: false,
    },
    {
      name: 'DEL_VERSIONED with a negative ifVersion',
      bytes: frame(encoder.encode([Op.DEL_VERSIONED, 1, key, -1])),
      closes: false,
    },
    {
      name: 'GET_VERSIONED key is nil',
      bytes: frame(encoder.encode([Op.GET_VERSIONED, 1, null])),
      closes: false,
    },
    {
      name: 'MIGRATE_PUT writeEpoch over 2^32-1',
      bytes: frame(encoder.encode([Op.MIGRATE_PUT, 1, 1, 1, key, key, 2 ** 32, 0])),
      closes: false,
    },
    {
      name: 'REPLICATE count larger than its entries',
      bytes: frame(encoder.encode([Op.REPLICATE, 1, 1, 1, 2, key, key, 1, 1, 0])),
      closes: false,
    },
    {
      name: 'REPLICATE delete with an expiry time',
      bytes: frame(encoder.encode([Op.REPLICATE, 1, 1, 1, 1, key, null, 1, 1, 5])),
      closes: false,
    },
    {
      name: 'REPLICATE version past 2^53',
      bytes: frame(encoder.encode([Op.REPLICATE, 1, 1, 1, 1, key, key, 1, 2 ** 60, 0])),
      closes: false,
    },
    {
      name: 'JOIN with port 70000',
      bytes: frame(encoder.encode([Op.JOIN, 1, 'n', '127.0.0.1', 70000, 1])),
      closes: false,
    },
    {
      name: 'JOIN with weight NaN',
      bytes: frame(encoder.encode([Op.JOIN, 1, 'n', '127.0.0.1', 1, Number.NaN])),
      closes: false,
    },
    {
      name: 'MAP_PUSH announcing more member addresses than it carries',
      bytes: frame(encoder.encode([Op.MAP_PUSH, 1, 3, 1, 'vnode', 0, 1, 'n', 1, 1, '127.0.0.1'])),
      closes: false,
    },
    {
      name: 'MAP_PUSH with a negative epoch',
      bytes: frame(encoder.encode([Op.MAP_PUSH, 1, -1, 1, 'vnode', 0, 0])),
      closes: false,
    },
    {
      name: 'HELLO with unknown role',
      bytes: frame(encoder.encode([Op.HELLO, 1, 1, 'root', null])),
      closes: false,
    },
    {
      name: 'trailing garbage inside the frame',
      bytes: frame(new Uint8Array([...encoder.encode([Op.PING, 1]), 0xff, 0x00])),
      closes: false,
    },
    {
      name: 'truncated body (declared longer than sent)',
      bytes: header(50, encoder.encode([Op.PING, 1])),
      closes: false,
    },
    { name: 'truncated header (2 bytes)', bytes: new Uint8Array([0x00, 0x00]), closes: false },
    { name: '64 KiB of NUL bytes', bytes: new Uint8Array(65_536), closes: false },
    { name: '4 KiB of random bytes', bytes: pseudoRandomBytes(4096, 42), closes: true },
    {
      name: 'text protocol (a Redis command)',
      bytes: utf8.encode('*1\r\n$4\r\nPING\r\n'),
      closes: true,
      respClient: true,
    },
    { name: 'HTTP request', bytes: utf8.encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), closes: true },
  ];
  return cases;
}

/**
 * Mulberry32: a small seeded PRNG for tests, fuzzers and load generators, so a failing run
 * replays exactly from its printed seed. Not for anything security-related.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export { FakeServer, type FakeServerMode, type FakeServerOptions, keyOf } from './fake-server.js';
export { captureGolden, type GoldenCase, type RedisOracle, startRedisOracle } from './testing-redis.js';
export { type RogueKdfServer, startRogueKdfServer } from './testing-rogue.js';
export { createTestPki, type TestCertificate, type TestPki } from './testing-tls.js';

const latin1 = (text: string): Uint8Array => Uint8Array.from(text, (char) => char.charCodeAt(0));

/**
 * Hostile RESP for a RESP port (the balancer's `--resp-port`), after Redis's own protocol limits:
 * each case either gets `-ERR Protocol error: ...` and a close (`closes`), or is an incomplete or
 * refused command the server answers or waits on without holding what it declared. Whatever the
 * case, the server must keep serving its other clients.
 */
export function respBadInputCorpus(): BadInputCase[] {
  const repeat = (text: string, count: number): Uint8Array => latin1(text.repeat(count));
  return [
    { name: 'truncated bulk', bytes: latin1('*2\r\n$3\r\nGET\r\n$10\r\nabc'), closes: false },
    { name: 'truncated multibulk', bytes: latin1('*3\r\n$3\r\nSET\r\n'), closes: false },
    {
      name: 'bulk over the value limit, declared only',
      bytes: latin1(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${DEFAULT_LIMITS.maxValueBytes * 100}\r\n`),
      closes: false,
    },
    { name: 'bulk over proto-max-bulk-len', bytes: latin1('*1\r\n$600000000\r\n'), closes: true },
    { name: 'negative bulk length', bytes: latin1('*1\r\n$-5\r\n'), closes: true },
    { name: 'null bulk in a request', bytes: latin1('*1\r\n$-1\r\n'), closes: true },
    { name: 'negative multibulk count (ignored)', bytes: latin1('*-5\r\n'), closes: false },
    { name: 'huge bulk length digits', bytes: latin1('*1\r\n$99999999999999999999999999\r\n'), closes: true },
    { name: 'huge multibulk count', bytes: latin1('*2000000\r\n'), closes: true },
    { name: 'multibulk count at the limit, no elements', bytes: latin1('*1048576\r\n'), closes: false },
    { name: 'non-digit length', bytes: latin1('*1\r\n$abc\r\n'), closes: true },
    { name: 'missing CRLF after a bulk', bytes: latin1('*1\r\n$4\r\nPINGxx'), closes: true },
    { name: 'nested arrays', bytes: repeat('*1\r\n', 10_000), closes: true },
    { name: 'inline line over 64 KiB', bytes: repeat('A', 70_000), closes: true },
    { name: 'unbalanced quotes', bytes: latin1('GET "abc\r\n'), closes: true },
    { name: 'binary garbage line', bytes: Uint8Array.from([1, 2, 0xff, 0xfe, 13, 10]), closes: false },
    // No command starts with NUL; a frame does: told it reached the RESP port, at once.
    { name: 'a native dstore frame', bytes: encodeFrame({ op: Op.PING, id: 1 }), closes: true },
  ];
}
