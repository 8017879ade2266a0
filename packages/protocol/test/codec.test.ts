import { Encoder } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_LIMITS,
  ErrorCode,
  type Message,
  MessageCodec,
  Op,
  ProtocolError,
  type ReplicaStateName,
  resolveLimits,
  toWireArray,
} from '../src/index.js';

const limits = resolveLimits({ maxBatchKeys: 64 });
const codec = new MessageCodec(limits);
const raw = new Encoder();

const id = fc.integer({ min: 0, max: 0xffff_ffff });
// Bias toward the bytes that break naive string handling.
const byte = fc.oneof(fc.constantFrom(0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1), fc.integer({ min: 0, max: 255 }));
const key = fc.array(byte, { minLength: 1, maxLength: 64 }).map((bytes) => Uint8Array.from(bytes));
const longKey = fc.integer({ min: 1, max: limits.maxKeyBytes }).map((n) => new Uint8Array(n).fill(0xff));
const anyKey = fc.oneof({ weight: 9, arbitrary: key }, { weight: 1, arbitrary: longKey });
const value = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.array(byte, { maxLength: 300 }).map((bytes) => Uint8Array.from(bytes)),
);
const shortString = fc.string({ minLength: 1, maxLength: 40 });
const role = fc.constantFrom('client', 'balancer', 'node' as const);
const statsMap = fc
  .dictionary(
    fc.string({ maxLength: 20 }).filter((name) => !['__proto__', 'constructor', 'prototype'].includes(name)),
    fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string({ maxLength: 30 })),
    { maxKeys: 40 },
  )
  .map((entries) => Object.assign(Object.create(null), entries) as Record<string, number | string>);

const position = fc.integer({ min: 0, max: 0xffff_ffff });
// Bias toward the ends of the range: 0 and 2^32-1 are the encodings most likely to go wrong.
const uint32 = fc.oneof(fc.constantFrom(0, 1, 0x7fff_ffff, 0xffff_ffff), position);
const position2 = fc.record({ start: position, end: position });

/** One arbitrary per message type, so every op is covered. */
const replicaState = fc.constantFrom<ReplicaStateName>(
  'up',
  'syncing',
  'promoting',
  'failed',
  'dead',
  'entering',
  'exiting',
  'dropped',
);

/** RING, MAP or MAP_PUSH, its members with addresses and/or replication states (optional trailing lists). */
function mapMessage(
  op: typeof Op.RING | typeof Op.MAP | typeof Op.MAP_PUSH,
  addressed: boolean,
  replicated: boolean,
): fc.Arbitrary<Message> {
  const member = fc.record({
    id: shortString,
    weight: fc.integer({ min: 1, max: 1000 }),
    host: fc.constantFrom('127.0.0.1', '::1', 'node-a.local'),
    port: fc.integer({ min: 0, max: 65535 }),
    replicaState,
    // A weight change on a union ring: the previous weight (differs from the weight, or absent).
    previousWeight: fc.option(fc.integer({ min: 1, max: 1000 }), { nil: undefined }),
  });
  return fc
    .record({
      op: fc.constant(op),
      id,
      epoch: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      generation: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      algorithm: fc.constantFrom('vnode', 'ketama'),
      vnodes: fc.integer({ min: 0, max: 1000 }),
      nodes: fc.array(
        member.map(({ host, port, replicaState: state, previousWeight, ...rest }) => ({
          ...rest,
          ...(addressed ? { host, port } : {}),
          ...(replicated ? { replicaState: state } : {}),
          ...(replicated && previousWeight !== undefined && previousWeight !== rest.weight
            ? { previousWeight }
            : {}),
        })),
        { minLength: addressed || replicated ? 1 : 0, maxLength: 20 },
      ),
      replicationFactor: replicated ? fc.integer({ min: 1, max: 7 }) : fc.constant(undefined),
      // The map's hash tag (written after the replication fields, so only with them here).
      hashTag: replicated ? fc.constantFrom(undefined, '{}', '$$') : fc.constant(undefined),
      // Only RING switches a ring change or holds its changed chains (replication step 5).
      change:
        replicated && op === Op.RING
          ? fc.constantFrom('none' as const, 'switching' as const, 'holding' as const)
          : fc.constant('none' as const),
    })
    .map(({ replicationFactor, change, hashTag, ...message }) =>
      replicationFactor === undefined
        ? message
        : {
            ...message,
            replicationFactor,
            ...(change === 'none' ? {} : { [change]: true }),
            ...(hashTag === undefined ? {} : { hashTag }),
          },
    );
}

const messages: fc.Arbitrary<Message>[] = [
  fc.record({
    op: fc.constant(Op.HELLO),
    id,
    version: fc.integer({ min: 0, max: 0xffff_ffff }),
    role,
    user: fc.option(shortString, { nil: undefined }),
    nonce: fc.option(fc.uint8Array({ minLength: 1, maxLength: 32 }), { nil: undefined }),
    node: fc.option(shortString, { nil: undefined }),
  }),
  fc.record({ op: fc.constant(Op.AUTH), id, proof: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ op: fc.constant(Op.AUTH_OK), id, signature: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ op: fc.constant(Op.GET), id, key: anyKey }),
  fc.record({ op: fc.constant(Op.GET), id, key: anyKey, fallback: fc.constant(true) }),
  fc.record({ op: fc.constant(Op.GET), id, key: anyKey, epoch: fc.nat({ max: 0xffff_ffff }) }),
  fc.record({
    op: fc.constant(Op.DEL),
    id,
    key: anyKey,
    fallback: fc.constant(true),
    epoch: fc.nat({ max: 0xffff_ffff }),
  }),
  fc.record({ op: fc.constant(Op.SET), id, key: anyKey, value: anyKey, epoch: fc.nat({ max: 0xffff_ffff }) }),
  fc.record({
    op: fc.constant(Op.MGET),
    id,
    keys: fc.array(anyKey, { maxLength: 4 }),
    epoch: fc.nat({ max: 0xffff_ffff }),
  }),
  fc.record({ op: fc.constant(Op.DEL), id, key: anyKey, fallback: fc.constant(true) }),
  // RING, MAP and MAP_PUSH with and without their optional trailing addresses and replication.
  ...([Op.RING, Op.MAP, Op.MAP_PUSH] as const).flatMap((op) =>
    [
      [false, false],
      [true, false],
      [true, true],
      [false, true],
    ].map(([addressed, replicated]) => mapMessage(op, addressed!, replicated!)),
  ),
  fc.record({
    op: fc.constant(Op.MIGRATE),
    id,
    epoch: fc.nat(),
    target: shortString,
    host: shortString,
    port: fc.integer({ min: 0, max: 65535 }),
    ranges: fc.array(position2, { maxLength: 200 }),
  }),
  fc.record({
    op: fc.constant(Op.MIGRATE_PUT),
    id,
    epoch: fc.nat(),
    entries: fc.array(fc.record({ key, value, writeEpoch: uint32, version: uint32 }), {
      maxLength: limits.maxBatchKeys,
    }),
  }),
  fc.record({
    op: fc.constant(Op.PURGE),
    id,
    epoch: fc.nat(),
    ranges: fc.array(position2, { maxLength: 200 }),
  }),
  // A returning member's catch-up: the stale copies of ranges that differ from their tail's.
  fc.record({
    op: fc.constant(Op.PURGE),
    id,
    epoch: fc.nat(),
    ranges: fc.array(position2, { maxLength: 200 }),
    staleUpTo: fc.nat(),
  }),
  fc.record({
    op: fc.constant(Op.DIGEST),
    id,
    below: fc.nat(),
    ranges: fc.array(position2, { maxLength: 200 }),
  }),
  fc.record({ op: fc.constant(Op.SET), id, key: anyKey, value }),
  fc.record({ op: fc.constant(Op.DEL), id, key: anyKey }),
  fc.record({ op: fc.constant(Op.MGET), id, keys: fc.array(key, { maxLength: limits.maxBatchKeys }) }),
  fc.record({
    op: fc.constant(Op.MSET),
    id,
    entries: fc.array(fc.record({ key, value }), { maxLength: limits.maxBatchKeys }),
  }),
  fc.record({ op: fc.constant(Op.PING), id }),
  fc.record({ op: fc.constant(Op.STATS), id }),
  fc.record({
    op: fc.constant(Op.JOIN),
    id,
    nodeId: shortString,
    host: shortString,
    port: fc.integer({ min: 0, max: 65535 }),
    weight: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.double({ min: 0.001, max: 1e6, noNaN: true })),
  }),
  fc.record({
    op: fc.constant(Op.JOIN),
    id,
    nodeId: shortString,
    host: shortString,
    port: fc.integer({ min: 0, max: 65535 }),
    weight: fc.integer({ min: 1, max: 1000 }),
    identity: fc.option(shortString, { nil: undefined }),
    generation: fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }),
    availableBytes: fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }),
  }),
  fc.record({
    op: fc.constant(Op.LEAVE),
    id,
    nodeId: shortString,
    identity: fc.option(shortString, { nil: undefined }),
  }),
  fc.record({
    op: fc.constant(Op.HEARTBEAT),
    id,
    nodeId: shortString,
    keyCount: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  }),
  fc.record({
    op: fc.constant(Op.HEARTBEAT),
    id,
    nodeId: shortString,
    keyCount: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    degraded: fc.string({ maxLength: 40 }),
    usedBytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    availableBytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  }),
  fc.record({ op: fc.constant(Op.OK), id }),
  fc.record({ op: fc.constant(Op.OK), id, lease: fc.integer({ min: 0, max: 2 ** 31 }) }),
  fc.record({ op: fc.constant(Op.VALUE), id, value: fc.option(value, { nil: null }) }),
  fc.record({ op: fc.constant(Op.VALUE), id, value: fc.constant(null), deleted: fc.constant(true) }),
  fc.record({
    op: fc.constant(Op.VALUES),
    id,
    values: fc.array(fc.option(value, { nil: null }), { maxLength: limits.maxBatchKeys }),
  }),
  fc.record({ op: fc.constant(Op.COUNT), id, count: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }) }),
  // MIGRATE's answer also carries the bytes it sent.
  fc.record({
    op: fc.constant(Op.COUNT),
    id,
    count: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    bytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  }),
  fc.record({ op: fc.constant(Op.STATS_RESULT), id, stats: statsMap }),
  fc.record({
    op: fc.constant(Op.HELLO_OK),
    id,
    version: fc.nat(),
    role,
    serverId: fc.string({ maxLength: 40 }),
    challenge: fc.option(
      fc.record({
        nonce: fc.uint8Array({ minLength: 1, maxLength: 32 }),
        salt: fc.uint8Array({ maxLength: 32 }),
        kdf: fc.constantFrom('scrypt:16384,8,1', 'hmac-sha256'),
      }),
      { nil: undefined },
    ),
  }),
  fc.record({ op: fc.constant(Op.CLUSTER_MAP), id, subscribe: fc.boolean() }),
  fc.record(
    {
      op: fc.constant(Op.SCAN),
      id,
      cursor: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      count: fc.integer({ min: 0, max: limits.maxBatchKeys }),
      match: fc.uint8Array({ minLength: 1, maxLength: 40 }),
    },
    { requiredKeys: ['op', 'id', 'cursor'] },
  ),
  fc.record(
    {
      op: fc.constant(Op.SCAN),
      id,
      cursor: fc.integer({ min: 0, max: 2 ** 30 }),
      count: fc.integer({ min: 0, max: limits.maxBatchKeys }),
      epoch: fc.nat(),
      moving: fc.constant(true),
    },
    { requiredKeys: ['op', 'id', 'cursor', 'epoch'] },
  ),
  fc.record({ op: fc.constant(Op.DBSIZE), id }),
  fc.record({
    op: fc.constant(Op.KEYS),
    id,
    cursor: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    keys: fc.array(key, { maxLength: limits.maxBatchKeys }),
  }),
  fc.record({
    op: fc.constant(Op.MOVED),
    id,
    epoch: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    nodeId: shortString,
    host: fc.constantFrom('127.0.0.1', '', 'node-a.local'),
    port: fc.integer({ min: 0, max: 65535 }),
  }),
  fc.record(
    {
      op: fc.constant(Op.ASK),
      id,
      epoch: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      nodeId: shortString,
      host: fc.constantFrom('127.0.0.1', '', 'node-a.local'),
      port: fc.integer({ min: 0, max: 65535 }),
      count: fc.integer({ min: 0, max: 1 }),
    },
    { requiredKeys: ['op', 'id', 'epoch', 'nodeId', 'host', 'port'] },
  ),
  ...dataModelMessages(),
  fc.record({
    op: fc.constant(Op.ERROR),
    id,
    // Unknown codes must survive: a newer peer may send codes this version does not define.
    code: fc.oneof(fc.constantFrom(...Object.values(ErrorCode)), fc.string({ maxLength: 30 })),
    message: fc.string({ maxLength: 200 }),
  }),
];

/** Compares bytes as plain arrays: decoded bytes are views of a Buffer, sent ones may be Uint8Arrays. */
/** The data model's requests and answers (expiry, atomic operations, PULL/ENTRY). */
function dataModelMessages(): fc.Arbitrary<Message>[] {
  const epoch = fc.nat({ max: 0xffff_ffff });
  const safe = fc.integer({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER });
  const positive = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
  const int64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
  const version = fc.nat({ max: Number.MAX_SAFE_INTEGER });
  const expiry = fc.oneof(
    fc.constant({ kind: 'keep' as const }),
    fc.record({ kind: fc.constantFrom('in' as const, 'at' as const), ms: positive }),
  );
  return [
    fc.record(
      {
        op: fc.constant(Op.SET_WITH),
        id,
        key: anyKey,
        value,
        condition: fc.constantFrom('nx' as const, 'xx' as const),
        get: fc.constant(true as const),
        expiry,
        epoch,
      },
      { requiredKeys: ['op', 'id', 'key', 'value'] },
    ),
    fc.record(
      {
        op: fc.constant(Op.EXPIRE),
        id,
        key: anyKey,
        mode: fc.constantFrom('in' as const, 'at' as const, 'persist' as const),
        ms: safe,
        condition: fc.constantFrom(
          'nx' as const,
          'xx' as const,
          'gt' as const,
          'lt' as const,
          'xx-lt' as const,
        ),
        epoch,
        get: fc.constant(true as const),
      },
      { requiredKeys: ['op', 'id', 'key', 'mode', 'ms'] },
    ),
    ...([Op.TTL, Op.PEXPIRETIME, Op.GETDEL] as const).map((op) =>
      fc.record({ op: fc.constant(op), id, key: anyKey, epoch }, { requiredKeys: ['op', 'id', 'key'] }),
    ),
    fc.record(
      { op: fc.constant(Op.EXISTS), id, keys: fc.array(key, { maxLength: limits.maxBatchKeys }), epoch },
      { requiredKeys: ['op', 'id', 'keys'] },
    ),
    fc.record(
      { op: fc.constant(Op.INCRBY), id, key: anyKey, delta: int64, epoch },
      { requiredKeys: ['op', 'id', 'key', 'delta'] },
    ),
    // SETRANGE with an offset, and APPEND (no offset: nil on the wire).
    fc.record(
      {
        op: fc.constant(Op.SETRANGE),
        id,
        key: anyKey,
        value,
        offset: fc.integer({ min: 0, max: 0xffff_ffff }),
        epoch,
      },
      { requiredKeys: ['op', 'id', 'key', 'value'] },
    ),
    // INCRBYFLOAT: the increment's text as the user wrote it, any bytes (the owner reads it).
    fc.record(
      {
        op: fc.constant(Op.INCRBYFLOAT),
        id,
        key: anyKey,
        increment: fc.uint8Array({ maxLength: 64 }),
        epoch,
      },
      { requiredKeys: ['op', 'id', 'key', 'increment'] },
    ),
    fc.record(
      {
        op: fc.constant(Op.SETBIT),
        id,
        key: anyKey,
        offset: fc.integer({ min: 0, max: 0xffff_ffff }),
        bit: fc.constantFrom(0 as const, 1 as const),
        epoch,
      },
      { requiredKeys: ['op', 'id', 'key', 'offset', 'bit'] },
    ),
    // READ_PART: each part with exactly the fields it takes.
    fc
      .record({
        part: fc.constantFrom('strlen', 'getrange', 'getbit', 'bitcount', 'bitpos'),
        start: fc.integer({ min: -1_000_000, max: 1_000_000 }),
        end: fc.option(fc.integer({ min: -1_000_000, max: 1_000_000 }), { nil: undefined }),
        offset: fc.integer({ min: 0, max: 0xffff_ffff }),
        ranged: fc.boolean(),
        bits: fc.boolean(),
        bit: fc.constantFrom(0 as const, 1 as const),
        id,
        key: anyKey,
        epoch: fc.option(fc.integer({ min: 0, max: 0xffff_ffff }), { nil: undefined }),
      })
      .map(({ part, start, end, offset, ranged, bits, bit, id: requestId, key, epoch }) => {
        const fields = (() => {
          switch (part) {
            case 'strlen':
              return {};
            case 'getrange':
              return { start, end: end ?? 0 };
            case 'getbit':
              return { start: offset };
            case 'bitcount':
              return ranged ? { start, end: end ?? 0, ...(bits ? { unit: 'bit' as const } : {}) } : {};
            case 'bitpos':
              return {
                bit,
                ...(ranged
                  ? {
                      start,
                      ...(end === undefined ? {} : { end }),
                      ...(bits ? { unit: 'bit' as const } : {}),
                    }
                  : {}),
              };
          }
        })();
        return {
          op: Op.READ_PART,
          id: requestId,
          key,
          part,
          ...fields,
          ...(epoch === undefined ? {} : { epoch }),
        } as Message;
      }),
    fc.record({ op: fc.constant(Op.PULL), id, key: anyKey }),
    fc.record({ op: fc.constant(Op.INTEGER), id, value: int64 }),
    // Versions: compare-and-set SET_WITH, GET_VERSIONED, DEL_VERSIONED, FLUSH and their answers.
    fc.record(
      {
        op: fc.constant(Op.SET_WITH),
        id,
        key: anyKey,
        value,
        expiry,
        epoch,
        ifVersion: version,
        withVersion: fc.constant(true as const),
      },
      { requiredKeys: ['op', 'id', 'key', 'value'] },
    ),
    fc.record(
      { op: fc.constant(Op.GET_VERSIONED), id, key: anyKey, epoch },
      { requiredKeys: ['op', 'id', 'key'] },
    ),
    fc.record(
      { op: fc.constant(Op.DEL_VERSIONED), id, key: anyKey, ifVersion: version, epoch },
      { requiredKeys: ['op', 'id', 'key'] },
    ),
    fc.record({ op: fc.constant(Op.FLUSH), id }),
    fc.record({
      op: fc.constant(Op.REPLICATE),
      id,
      epoch: fc.nat(),
      batch: version,
      entries: fc.array(
        fc.oneof(
          fc.record({
            key,
            value,
            writeEpoch: uint32,
            version,
            expireAt: fc.oneof(fc.constant(0), positive),
          }),
          fc.record({ key, value: fc.constant(null), writeEpoch: uint32, version, expireAt: fc.constant(0) }),
        ),
        { maxLength: 50 },
      ),
    }),
    fc.record({ op: fc.constant(Op.REPLICATED), id, batch: version }),
    fc.record({ op: fc.constant(Op.REPLICATED), id, batch: version, full: fc.constant(true as const) }),
    fc.record({ op: fc.constant(Op.VERSIONED), id, value: fc.option(value, { nil: null }), version }),
    fc.record({ op: fc.constant(Op.VERSION), id, written: fc.boolean(), version }),
    fc.record({
      op: fc.constant(Op.ENTRY),
      id,
      entry: fc.option(
        fc.record(
          { value, writeEpoch: uint32, version, expireAt: positive },
          { requiredKeys: ['value', 'writeEpoch', 'version'] },
        ),
        { nil: null },
      ),
    }),
    fc.record({
      op: fc.constant(Op.MIGRATE_PUT),
      id,
      epoch: fc.nat(),
      entries: fc.array(
        fc.record(
          { key, value, writeEpoch: uint32, version, expireAt: positive },
          { requiredKeys: ['key', 'value', 'writeEpoch', 'version'] },
        ),
        { minLength: 1, maxLength: 50 },
      ),
    }),
  ];
}

/**
 * A message as JSON with object keys sorted, bytes as hex and bigints as text: two messages
 * render alike exactly when their fields are equal, whatever order they were set in. Compared as
 * strings, the round trips cost a third of what toEqual over the parsed objects did.
 */
function normalise(message: Message): string {
  return JSON.stringify(message, (_name, field: unknown) => {
    if (field instanceof Uint8Array) {
      return { bytes: Buffer.from(field.buffer, field.byteOffset, field.byteLength).toString('hex') };
    }
    if (typeof field === 'bigint') return { bigint: field.toString() };
    if (field === null || typeof field !== 'object' || Array.isArray(field)) return field;
    const record = field as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(record)
        .sort()
        .map((key) => [key, record[key]]),
    );
  });
}

/**
 * A failing case's name: bytes by length and first bytes. JSON.stringify spells a typed array out
 * index by index, megabytes for the value-limit cases (most of their tests' time).
 */
function label(fields: unknown): string {
  return JSON.stringify(fields, (_name, field: unknown) =>
    field instanceof Uint8Array
      ? `<${field.length} bytes ${Buffer.from(field.subarray(0, 16)).toString('hex')}>`
      : field,
  );
}

describe('MessageCodec round trip', () => {
  for (const arbitrary of messages) {
    const sample = fc.sample(arbitrary, { numRuns: 1, seed: 1 })[0]!;
    it(`op ${sample.op} round-trips`, () => {
      fc.assert(
        fc.property(arbitrary, (message) => {
          const body = codec.encode(message).slice();
          const decoded = codec.decode(body);
          expect(normalise(decoded)).toBe(normalise(message));
        }),
        { numRuns: 300 },
      );
    });
  }

  it('ids 0 and 2^32-1 round-trip', () => {
    for (const edge of [0, 1, 0x7fff_ffff, 0xffff_ffff]) {
      expect(codec.decode(codec.encode({ op: Op.PING, id: edge }).slice()).id).toBe(edge);
    }
  });

  it('encodes string keys as UTF-8 bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 50 }), (text) => {
        const body = raw.encode([Op.GET, 1, text]);
        const decoded = codec.decode(body);
        expect(decoded.op).toBe(Op.GET);
        expect(Buffer.from((decoded as { key: Uint8Array }).key)).toEqual(Buffer.from(text, 'utf8'));
      }),
    );
  });

  it('ignores trailing extra fields (forward compatibility)', () => {
    fc.assert(
      fc.property(
        fc.oneof(...messages),
        fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), fc.constant(null), fc.boolean()), {
          minLength: 1,
          maxLength: 5,
        }),
        (message, extras) => {
          const wire = toWireArray(message);
          // GET/DEL own an optional trailing flag at index 3; extras go after it (0 = not set).
          if ((message.op === Op.GET || message.op === Op.DEL) && wire.length === 3) wire.push(0);
          // Data requests own an optional trailing fence epoch after their fields (nil = not set).
          const fenced = [
            Op.GET,
            Op.DEL,
            Op.SET,
            Op.MGET,
            Op.MSET,
            Op.SET_WITH,
            Op.EXPIRE,
            Op.TTL,
            Op.PEXPIRETIME,
            Op.GETDEL,
            Op.EXISTS,
            Op.INCRBY,
            Op.SETRANGE,
            Op.INCRBYFLOAT,
            Op.SETBIT,
            Op.READ_PART,
            Op.GET_VERSIONED,
            Op.DEL_VERSIONED,
          ] as number[];
          // A SET_WITH with ifVersion carries its epoch (or nil) before the version already.
          const versioned = message.op === Op.SET_WITH && message.ifVersion !== undefined;
          if (
            fenced.includes(message.op) &&
            !versioned &&
            !('epoch' in message && message.epoch !== undefined)
          )
            wire.push(null);
          // EXPIRE owns an optional trailing get flag after its epoch (0 = not set).
          if (message.op === Op.EXPIRE && wire.length === 7) wire.push(0);
          // VALUE owns an optional trailing deleted flag at index 3 (0 = not set).
          if (message.op === Op.VALUE && wire.length === 3) wire.push(0);
          // REPLICATED owns an optional trailing full flag at index 3 (0 = not set).
          if (message.op === Op.REPLICATED && wire.length === 3) wire.push(0);
          // JOIN owns an optional trailing identity at index 6 (nil = not set).
          if (message.op === Op.JOIN && wire.length === 6) wire.push(null);
          // ... and an optional trailing generation at index 7 (nil = not set).
          if (message.op === Op.JOIN && wire.length === 7) wire.push(null);
          // ... and an optional trailing availableBytes at index 8 (nil = not set).
          if (message.op === Op.JOIN && wire.length === 8) wire.push(null);
          // HELLO owns an optional trailing nonce at index 5, HELLO_OK a challenge from index 5.
          if ((message.op === Op.HELLO || message.op === Op.HELLO_OK) && wire.length === 5) wire.push(null);
          // HELLO owns an optional trailing node id at index 6 (nil = not set).
          if (message.op === Op.HELLO && wire.length === 6) wire.push(null);
          // RING owns an optional trailing address count after its members (nil = none).
          const map = message.op === Op.RING || message.op === Op.MAP || message.op === Op.MAP_PUSH;
          if (
            map &&
            !message.nodes.some((node) => node.host !== undefined) &&
            message.replicationFactor === undefined
          )
            wire.push(null);
          // RING, MAP and MAP_PUSH own an optional trailing replication factor after it (nil = 1).
          if (map && message.replicationFactor === undefined) wire.push(null);
          // ... and a trailing ring-change flag after the replica states (nil = none).
          if (
            map &&
            message.replicationFactor !== undefined &&
            !('switching' in message) &&
            !('holding' in message) &&
            !message.nodes.some((node) => node.previousWeight !== undefined) &&
            message.hashTag === undefined
          )
            wire.push(null);
          // ... and a trailing previous-weights count after the flag (nil = no weight change).
          if (
            map &&
            message.replicationFactor !== undefined &&
            !message.nodes.some((node) => node.previousWeight !== undefined) &&
            message.hashTag === undefined
          )
            wire.push(null);
          // ... and a trailing hash tag after the previous weights (nil = keys placed whole).
          if (map && message.replicationFactor !== undefined && message.hashTag === undefined)
            wire.push(null);
          // PURGE owns an optional trailing staleUpTo after its ranges (nil = not set).
          if (message.op === Op.PURGE && message.staleUpTo === undefined) wire.push(null);
          // COUNT owns an optional trailing byte count at index 3 (nil = not set).
          if (message.op === Op.COUNT && wire.length === 3) wire.push(null);
          // ASK owns an optional trailing count at index 6 (nil = not set).
          if (message.op === Op.ASK && wire.length === 6) wire.push(null);
          // SCAN owns an optional trailing fence (epoch, moving flag) at 5..6 (nil = not set).
          if (message.op === Op.SCAN && wire.length === 5) wire.push(null, 0);
          // HEARTBEAT owns optional trailing storage fields at 4..6 (nil degraded = not set).
          if (message.op === Op.HEARTBEAT && wire.length === 4) wire.push(null, null, null);
          // OK owns an optional trailing lease at index 2 (nil = none).
          if (message.op === Op.OK && wire.length === 2) wire.push(null);
          // LEAVE owns an optional trailing identity at index 3 (nil = none).
          if (message.op === Op.LEAVE && wire.length === 3) wire.push(null);
          // MIGRATE_PUT owns an optional trailing list of expiry times (nil count = none).
          if (message.op === Op.MIGRATE_PUT && !message.entries.some((entry) => entry.expireAt !== undefined))
            wire.push(null);
          const body = raw.encode([...wire, ...extras]);
          expect(normalise(codec.decode(body))).toBe(normalise(message));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('refuses SCAN with an empty or oversized pattern, a count over the batch limit or a negative cursor', () => {
    const cases: [unknown[], string][] = [
      [[Op.SCAN, 1, 0, 10, new Uint8Array(0)], ErrorCode.INVALID_ARGUMENT],
      [[Op.SCAN, 1, 0, 10, new Uint8Array(limits.maxKeyBytes + 1)], ErrorCode.INVALID_ARGUMENT],
      [[Op.SCAN, 1, 0, limits.maxBatchKeys + 1, null], ErrorCode.MALFORMED_FRAME],
      [[Op.SCAN, 1, -1, 10, null], ErrorCode.MALFORMED_FRAME],
      [[Op.SCAN, 1, 2 ** 53, 10, null], ErrorCode.MALFORMED_FRAME],
      [[Op.KEYS, 1, 0, 2, new Uint8Array([1])], ErrorCode.MALFORMED_FRAME],
    ];
    for (const [fields, code] of cases) {
      expect(
        catchError(() => codec.decode(raw.encode(fields))),
        label(fields),
      ).toMatchObject({ code });
    }
  });

  it('reads a map without replication fields as factor 1, and refuses bad replication fields', () => {
    const head = [Op.RING, 1, 5, 9, 'vnode', 0, 2, 'a', 1, 'b', 1, 2, 'h', 1, 'h', 2];
    const plain = codec.decode(raw.encode(head));
    if (plain.op !== Op.RING) throw new Error(`decoded op ${plain.op}`);
    expect(plain.replicationFactor).toBeUndefined();
    expect(plain.nodes.map((node) => node.replicaState)).toEqual([undefined, undefined]);
    expect(codec.decode(raw.encode([...head, 3, 2, 'up', 'failed']))).toMatchObject({
      replicationFactor: 3,
      nodes: [
        { id: 'a', replicaState: 'up' },
        { id: 'b', replicaState: 'failed' },
      ],
    });
    // No addresses (nil), then the factor: the states still belong to the members.
    expect(
      codec.decode(raw.encode([Op.MAP, 1, 5, 9, 'vnode', 0, 1, 'a', 1, null, 2, 1, 'dead'])),
    ).toMatchObject({ replicationFactor: 2, nodes: [{ id: 'a', replicaState: 'dead' }] });
    const cases: unknown[][] = [
      [...head, 0, 2, 'up', 'up'],
      [...head, 3, 1, 'up'],
      [...head, 3, 2, 'up', 'gone'],
      [...head, 3, 2, 'up'],
      [...head, 'three', 2, 'up', 'up'],
    ];
    for (const fields of cases) {
      expect(
        catchError(() => codec.decode(raw.encode(fields))),
        label(fields),
      ).toMatchObject({
        code: ErrorCode.MALFORMED_FRAME,
      });
    }
  });

  it('carries previous weights after the ring-change flag: absent, nil or equal = no weight change', () => {
    const head = [Op.RING, 1, 5, 9, 'vnode', 0, 2, 'a', 2, 'b', 1, null, 3, 2, 'up', 'up'];
    const ring = (trailer: unknown[]) => {
      const decoded = codec.decode(raw.encode([...head, ...trailer]));
      if (decoded.op !== Op.RING) throw new Error(`decoded op ${decoded.op}`);
      return decoded;
    };
    expect(ring([]).nodes.map((node) => node.previousWeight)).toEqual([undefined, undefined]);
    expect(ring([null, null]).nodes.map((node) => node.previousWeight)).toEqual([undefined, undefined]);
    // a: 1 -> 2 (grows); b keeps 1. The flag still reads before them.
    const changed = ring([1, 2, 1, 1]);
    expect(changed.switching).toBe(true);
    expect(changed.nodes).toEqual([
      { id: 'a', weight: 2, replicaState: 'up', previousWeight: 1 },
      { id: 'b', weight: 1, replicaState: 'up' },
    ]);
    // What the encoder writes: nil for no flag, then every member's previous weight.
    const message = {
      op: Op.MAP_PUSH,
      id: 3,
      epoch: 7,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      replicationFactor: 3,
      nodes: [
        { id: 'a', weight: 2, previousWeight: 0.5, replicaState: 'up' },
        { id: 'b', weight: 1.5, replicaState: 'entering' },
      ],
    } as const;
    expect(toWireArray(message).slice(-4)).toEqual([null, 2, 0.5, 1.5]);
    expect(codec.decode(codec.encode(message))).toEqual(message);
    const cases: [unknown[], string][] = [
      [[null, 1, 1], ErrorCode.MALFORMED_FRAME],
      [[null, 2, 1], ErrorCode.MALFORMED_FRAME],
      [[null, 2, 1, 0], ErrorCode.INVALID_ARGUMENT],
      [[null, 2, 1, 'one'], ErrorCode.MALFORMED_FRAME],
    ];
    for (const [trailer, code] of cases) {
      expect(
        catchError(() => ring(trailer)),
        label(trailer),
      ).toMatchObject({ code });
    }
  });

  it('carries the hash tag last: after nil placeholders, after previous weights, and without replication', () => {
    const head = [Op.MAP, 1, 5, 9, 'vnode', 0, 2, 'a', 2, 'b', 1, null, 3, 2, 'up', 'up'];
    const map = (trailer: unknown[]) => {
      const decoded = codec.decode(raw.encode([...head, ...trailer]));
      if (decoded.op !== Op.MAP) throw new Error(`decoded op ${decoded.op}`);
      return decoded;
    };
    expect(map([]).hashTag).toBeUndefined();
    expect(map([null, null, null]).hashTag).toBeUndefined();
    expect(map([null, null, '{}']).hashTag).toBe('{}');
    // After a weight change's previous weights.
    expect(map([null, 2, 1, 1, '$$'])).toMatchObject({
      hashTag: '$$',
      nodes: [{ id: 'a', previousWeight: 1 }, { id: 'b' }],
    });
    // A map without replication fields: the encoder writes factor 1 with every member up.
    const message = {
      op: Op.MAP_PUSH,
      id: 3,
      epoch: 7,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      nodes: [{ id: 'a', weight: 1 }],
      hashTag: '{}',
    } as const;
    // No addresses (nil), factor 1, one state, no flag (nil), no weights (nil), the tag.
    expect(toWireArray(message).slice(-7)).toEqual([null, 1, 1, 'up', null, null, '{}']);
    expect(codec.decode(codec.encode(message))).toEqual({
      ...message,
      replicationFactor: 1,
      nodes: [{ id: 'a', weight: 1, replicaState: 'up' }],
    });
    for (const trailer of [
      [null, null, '{'],
      [null, null, '{}}'],
      [null, null, 7],
    ]) {
      expect(
        catchError(() => map(trailer)),
        label(trailer),
      ).toMatchObject({ code: ErrorCode.MALFORMED_FRAME });
    }
  });

  it('answers unknown ops with UNKNOWN_OP carrying the request id', () => {
    const known = new Set<number>(Object.values(Op));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }).filter((op) => !known.has(op)),
        id,
        (op, requestId) => {
          const error = catchError(() => codec.decode(raw.encode([op, requestId, 'x'])));
          expect(error).toBeInstanceOf(ProtocolError);
          expect(error).toMatchObject({ code: ErrorCode.UNKNOWN_OP, requestId, fatal: false });
        },
      ),
    );
  });

  it('keeps the request id on a bad op', () => {
    const error = catchError(() => codec.decode(raw.encode(['GET', 77, 'x'])));
    expect(error).toMatchObject({ code: ErrorCode.MALFORMED_FRAME, requestId: 77 });
  });

  it('enforces key, value, batch and string limits with their codes', () => {
    const small = new MessageCodec({ maxKeyBytes: 4, maxValueBytes: 8, maxBatchKeys: 2, maxStringBytes: 6 });
    const cases: [unknown[], string][] = [
      [[Op.GET, 1, new Uint8Array(5)], ErrorCode.KEY_TOO_LARGE],
      [[Op.GET, 1, new Uint8Array(0)], ErrorCode.INVALID_ARGUMENT],
      [[Op.SET, 1, new Uint8Array(1), new Uint8Array(9)], ErrorCode.VALUE_TOO_LARGE],
      [[Op.MGET, 1, 3, 'a', 'b', 'c'], ErrorCode.BATCH_TOO_LARGE],
      [[Op.MGET, 1, 2, 'a'], ErrorCode.MALFORMED_FRAME],
      [[Op.LEAVE, 1, 'abcdefg'], ErrorCode.MALFORMED_FRAME],
      // 3 characters, 9 bytes in UTF-8: the limit is in bytes.
      [[Op.LEAVE, 1, 'ééé'.replace(/é/g, '\u20ac')], ErrorCode.MALFORMED_FRAME],
      [[Op.JOIN, 1, 'n', 'h', 1, 0], ErrorCode.INVALID_ARGUMENT],
      [[Op.HELLO, 1, 2, 'root', null], ErrorCode.MALFORMED_FRAME],
    ];
    for (const [fields, code] of cases) {
      expect(catchError(() => small.decode(raw.encode(fields)))).toMatchObject({ code });
    }
    expect(small.decode(raw.encode([Op.LEAVE, 1, 'abcdef']))).toMatchObject({ nodeId: 'abcdef' });
  });

  it('refuses map keys that reach a prototype', () => {
    for (const name of ['__proto__', 'constructor', 'prototype']) {
      const error = catchError(() => codec.decode(raw.encode([Op.STATS_RESULT, 1, { [name]: 1 }])));
      expect(error).toMatchObject({ code: ErrorCode.MALFORMED_FRAME });
    }
  });

  it('encodes MIGRATE_PUT as the README shows: key, value, writeEpoch, version per entry', () => {
    const body = new MessageCodec().encode({
      op: Op.MIGRATE_PUT,
      id: 12,
      epoch: 3,
      entries: [{ key: Uint8Array.of(0x61), value: Uint8Array.of(0x31), writeEpoch: 2, version: 300 }],
    });
    expect(Buffer.from(body).toString('hex')).toBe('980e0c0301c40161c4013102cd012c');
  });

  it('refuses data-model frames with contradictory or out-of-range fields, naming the request', () => {
    const cases: [unknown[], string][] = [
      // SET_WITH: NX and XX together; two expiries; a relative expiry of 0; unknown flag bits.
      [[Op.SET_WITH, 4, 'k', 'v', 1 | 2, 0], ErrorCode.INVALID_ARGUMENT],
      [[Op.SET_WITH, 4, 'k', 'v', 8 | 16, 10], ErrorCode.INVALID_ARGUMENT],
      [[Op.SET_WITH, 4, 'k', 'v', 16, 0], ErrorCode.INVALID_ARGUMENT],
      [[Op.SET_WITH, 4, 'k', 'v', 256, 0], ErrorCode.MALFORMED_FRAME],
      // SET_WITH: a version condition with NX or GET, a version past 2^53 or missing.
      [[Op.SET_WITH, 4, 'k', 'v', 128 | 1, 0, null, 5], ErrorCode.INVALID_ARGUMENT],
      [[Op.SET_WITH, 4, 'k', 'v', 64 | 4, 0], ErrorCode.INVALID_ARGUMENT],
      [[Op.SET_WITH, 4, 'k', 'v', 128, 0, null, 2 ** 53], ErrorCode.MALFORMED_FRAME],
      [[Op.SET_WITH, 4, 'k', 'v', 128, 0], ErrorCode.MALFORMED_FRAME],
      [[Op.DEL_VERSIONED, 4, 'k', -1], ErrorCode.MALFORMED_FRAME],
      [[Op.VERSION, 4, 2, 1], ErrorCode.MALFORMED_FRAME],
      [[Op.SET_WITH, 4, 'k', 'v', 16, 2 ** 60], ErrorCode.MALFORMED_FRAME],
      // EXPIRE: an unknown mode or condition, a time that is not a safe integer.
      [[Op.EXPIRE, 4, 'k', 3, 10, 0], ErrorCode.MALFORMED_FRAME],
      [[Op.EXPIRE, 4, 'k', 0, 10, 6], ErrorCode.MALFORMED_FRAME],
      [[Op.EXPIRE, 4, 'k', 0, 1.5, 0], ErrorCode.MALFORMED_FRAME],
      // INCRBY: a delta outside the 64-bit signed range, or not canonical decimal text.
      [[Op.INCRBY, 4, 'k', '9223372036854775808'], ErrorCode.MALFORMED_FRAME],
      [[Op.INCRBY, 4, 'k', '-0'], ErrorCode.MALFORMED_FRAME],
      [[Op.INCRBY, 4, 'k', ' 1'], ErrorCode.MALFORMED_FRAME],
      [[Op.INCRBY, 4, 'k', 2 ** 60], ErrorCode.MALFORMED_FRAME],
      // SETRANGE: an offset that is no uint32, a value past the limit.
      [[Op.SETRANGE, 4, 'k', 'v', -1], ErrorCode.MALFORMED_FRAME],
      [[Op.SETRANGE, 4, 'k', 'v', 2 ** 32], ErrorCode.MALFORMED_FRAME],
      [
        [Op.SETRANGE, 4, 'k', new Uint8Array(DEFAULT_LIMITS.maxValueBytes + 1), null],
        ErrorCode.VALUE_TOO_LARGE,
      ],
      // INCRBYFLOAT: an increment that is no bin or str, or missing.
      [[Op.INCRBYFLOAT, 4, 'k', 1.5], ErrorCode.MALFORMED_FRAME],
      [[Op.INCRBYFLOAT, 4, 'k'], ErrorCode.MALFORMED_FRAME],
      // SETBIT: a bit that is neither 0 nor 1, an offset that is no uint32.
      [[Op.SETBIT, 4, 'k', 7, 2], ErrorCode.MALFORMED_FRAME],
      [[Op.SETBIT, 4, 'k', -1, 1], ErrorCode.MALFORMED_FRAME],
      [[Op.SETBIT, 4, 'k', 2 ** 32, 1], ErrorCode.MALFORMED_FRAME],
      // READ_PART: an unknown part, a field a part does not take, one it needs missing.
      [[Op.READ_PART, 4, 'k', 5, null, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 0, 1, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 0, null, null, 1, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 1, 0, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 1, 0, 1, 0, 1], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 2, -1, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 2, 2 ** 32, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 2, 7, 8, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 3, 0, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 3, null, null, 1, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 4, null, null, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 4, null, 3, 0, 1], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 4, 0, null, 0, 2], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 1, 0.5, 1, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 1, 2 ** 53, 1, 0, null], ErrorCode.MALFORMED_FRAME],
      [[Op.READ_PART, 4, 'k', 3, 0, 1, 2, null], ErrorCode.MALFORMED_FRAME],
      // EXISTS: more keys than the batch limit allows, fewer than announced.
      [[Op.EXISTS, 4, limits.maxBatchKeys + 1], ErrorCode.BATCH_TOO_LARGE],
      [[Op.EXISTS, 4, 3, 'a', 'b'], ErrorCode.MALFORMED_FRAME],
      // MIGRATE_PUT: an expiry list of another length than the entries.
      [[Op.MIGRATE_PUT, 4, 3, 1, 'k', 'v', 1, 1, 2, 5, 6], ErrorCode.MALFORMED_FRAME],
      [[Op.MIGRATE_PUT, 4, 3, 1, 'k', 'v', 1, 1, 1], ErrorCode.MALFORMED_FRAME],
      // INTEGER beyond 64 bits.
      [[Op.INTEGER, 4, '99999999999999999999'], ErrorCode.MALFORMED_FRAME],
    ];
    for (const [fields, code] of cases) {
      expect(
        catchError(() => codec.decode(raw.encode(fields))),
        label(fields),
      ).toMatchObject({
        code,
        requestId: 4,
      });
    }
    // The extremes of INCRBY's range travel exactly.
    for (const delta of [-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n, -(2n ** 53n) - 1n]) {
      const body = codec.encode({ op: Op.INCRBY, id: 1, key: new Uint8Array([1]), delta }).slice();
      expect(codec.decode(body)).toMatchObject({ delta });
    }
  });

  it('refuses MIGRATE_PUT entries whose writeEpoch is not a uint32 or version not below 2^53, or that miss them', () => {
    const entry = (writeEpoch: unknown, version: unknown): unknown[] => [
      Op.MIGRATE_PUT,
      1,
      3,
      1,
      'k',
      'v',
      writeEpoch,
      version,
    ];
    for (const bad of [-1, 2 ** 32, 1.5, '7', null, true, Number.NaN]) {
      for (const fields of bad === 2 ** 32 ? [entry(bad, 0)] : [entry(bad, 0), entry(0, bad)]) {
        expect(catchError(() => codec.decode(raw.encode(fields)))).toMatchObject({
          code: ErrorCode.MALFORMED_FRAME,
          requestId: 1,
        });
      }
    }
    // The layout before entry versions (key, value pairs only) is refused, never misread.
    const pairs = [Op.MIGRATE_PUT, 1, 3, 2, 'k1', 'v1', 'k2', 'v2'];
    expect(catchError(() => codec.decode(raw.encode(pairs)))).toMatchObject({
      code: ErrorCode.MALFORMED_FRAME,
    });
    expect(codec.decode(raw.encode(entry(0xffff_ffff, 0)))).toMatchObject({
      entries: [{ writeEpoch: 0xffff_ffff, version: 0 }],
    });
    expect(codec.decode(raw.encode(entry(0, Number.MAX_SAFE_INTEGER)))).toMatchObject({
      entries: [{ version: Number.MAX_SAFE_INTEGER }],
    });
    expect(catchError(() => codec.decode(raw.encode(entry(0, 2 ** 53))))).toMatchObject({
      code: ErrorCode.MALFORMED_FRAME,
    });
  });

  it('accepts a MIGRATE_PUT of maxBatchKeys entries and refuses one more', () => {
    const entries = Array.from({ length: limits.maxBatchKeys + 1 }, (_, i) => ({
      key: Uint8Array.of(i & 0xff, i >> 8),
      value: Uint8Array.of(i & 0xff),
      writeEpoch: i,
      version: 0xffff_ffff - i,
    }));
    const full = { op: Op.MIGRATE_PUT, id: 5, epoch: 9, entries: entries.slice(0, -1) } as const;
    expect(normalise(codec.decode(codec.encode(full).slice()))).toBe(normalise(full));
    const over = { ...full, entries };
    expect(catchError(() => codec.decode(codec.encode(over).slice()))).toMatchObject({
      code: ErrorCode.BATCH_TOO_LARGE,
    });
  });

  it('uses the default limits when none are given', () => {
    expect(new MessageCodec().limits).toEqual(DEFAULT_LIMITS);
  });
});

function catchError(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error');
}

describe('TRANSACT and RESULTS (a transaction on one key or one position)', () => {
  const k = Uint8Array.from([0x6b, 0x00, 0xff]);
  const otherKey = Uint8Array.from([0x7b, 0x6b, 0x7d, 0x01]);
  const stepOf = fc.oneof(
    fc.record({
      op: fc.constant(Op.INCRBY),
      key: fc.constant(k),
      delta: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n),
    }),
    fc.record({ op: fc.constant(Op.GET_VERSIONED), key: fc.constantFrom(k, otherKey) }),
    fc.record({ op: fc.constant(Op.TTL), key: fc.constantFrom(k, otherKey) }),
    fc.record(
      {
        op: fc.constant(Op.SET_WITH),
        key: fc.constant(k),
        value,
        condition: fc.constantFrom('nx' as const, 'xx' as const),
      },
      { requiredKeys: ['op', 'key', 'value'] },
    ),
    fc.record(
      { op: fc.constant(Op.DEL_VERSIONED), key: fc.constant(k), ifVersion: fc.nat() },
      { requiredKeys: ['op', 'key'] },
    ),
    fc.record(
      { op: fc.constant(Op.SETRANGE), key: fc.constant(k), value, offset: fc.nat() },
      { requiredKeys: ['op', 'key', 'value'] },
    ),
    fc.record({
      op: fc.constant(Op.READ_PART),
      key: fc.constant(k),
      part: fc.constant('getrange' as const),
      start: fc.integer({ min: -10, max: 10 }),
      end: fc.integer({ min: -10, max: 10 }),
    }),
  );
  const answer = fc.oneof(
    fc.record({
      op: fc.constant(Op.INTEGER),
      id: fc.constant(0),
      value: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n),
    }),
    fc.record({ op: fc.constant(Op.VALUE), id: fc.constant(0), value: fc.option(value, { nil: null }) }),
    fc.record({ op: fc.constant(Op.VERSION), id: fc.constant(0), written: fc.boolean(), version: fc.nat() }),
    fc.record({
      op: fc.constant(Op.ERROR),
      id: fc.constant(0),
      code: fc.constant(ErrorCode.NOT_AN_INTEGER),
      message: shortString,
    }),
  );

  it('round-trips any transaction and any answer', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            op: fc.constant(Op.TRANSACT),
            id,
            key: fc.constant(k),
            steps: fc.array(stepOf, { maxLength: limits.maxBatchKeys }),
            ifVersion: fc.nat(),
            epoch: fc.nat({ max: 0xffff_ffff }),
            watches: fc.array(fc.record({ key: fc.constantFrom(k, otherKey), version: fc.nat() }), {
              minLength: 1,
              maxLength: 4,
            }),
          },
          { requiredKeys: ['op', 'id', 'key', 'steps'] },
        ),
        (message) => {
          expect(codec.decode(codec.encode(message as Message).slice())).toEqual(message);
        },
      ),
    );
    fc.assert(
      fc.property(
        fc.option(fc.array(answer, { maxLength: limits.maxBatchKeys }), { nil: null }),
        id,
        (results, at) => {
          const message = { op: Op.RESULTS, id: at, results } as Message;
          expect(codec.decode(codec.encode(message).slice())).toEqual(message);
        },
      ),
    );
  });

  it('refuses steps with an id or a fence, of ops that are no step, nesting and bad watch lists', () => {
    const step = (fields: unknown[]): Uint8Array => raw.encode(fields);
    const nestedTransact = step([Op.TRANSACT, 0, 'k', null, 1, step([Op.TTL, 0, 'k'])]);
    const cases: [unknown[], string][] = [
      // Watches after the fence: an empty list, fewer than announced, an empty key, a bad version.
      [[Op.TRANSACT, 4, 'k', null, 1, step([Op.TTL, 0, 'other']), null, 0], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 0, 7, 2, 'a', 1], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 0, null, 1, '', 1], ErrorCode.INVALID_ARGUMENT],
      [[Op.TRANSACT, 4, 'k', null, 0, null, 1, 'a', -1], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 0, null, 1, 'a', 2 ** 53], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 0, null, limits.maxBatchKeys + 1], ErrorCode.BATCH_TOO_LARGE],
      [[Op.TRANSACT, 4, 'k', null, 1, step([Op.TTL, 9, 'k'])], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 1, step([Op.TTL, 0, 'k', 3])], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 1, step([Op.GET, 0, 'k'])], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 1, step([Op.FLUSH, 0])], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 1, nestedTransact], ErrorCode.MALFORMED_FRAME],
      // A step that is no message, or a bad one: the step's own error code.
      [[Op.TRANSACT, 4, 'k', null, 1, new Uint8Array([0xc1])], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 1, 'text'], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', null, 1, step([Op.INCRBY, 0, 'k', '-0'])], ErrorCode.MALFORMED_FRAME],
      [
        [
          Op.TRANSACT,
          4,
          'k',
          null,
          1,
          step([Op.SET_WITH, 0, 'k', new Uint8Array(limits.maxValueBytes + 1), 0, 0]),
        ],
        ErrorCode.VALUE_TOO_LARGE,
      ],
      // More steps than a batch, fewer than announced, a version past 2^53.
      [[Op.TRANSACT, 4, 'k', null, limits.maxBatchKeys + 1], ErrorCode.BATCH_TOO_LARGE],
      [[Op.TRANSACT, 4, 'k', null, 2, step([Op.TTL, 0, 'k'])], ErrorCode.MALFORMED_FRAME],
      [[Op.TRANSACT, 4, 'k', 2 ** 53, 0], ErrorCode.MALFORMED_FRAME],
      // RESULTS: an answer with an id, or that no step gives.
      [[Op.RESULTS, 4, 1, step([Op.COUNT, 3, 1])], ErrorCode.MALFORMED_FRAME],
      [[Op.RESULTS, 4, 1, step([Op.OK, 0])], ErrorCode.MALFORMED_FRAME],
      [[Op.RESULTS, 4, 1, step([Op.RESULTS, 0, null])], ErrorCode.MALFORMED_FRAME],
    ];
    for (const [fields, code] of cases) {
      expect(
        catchError(() => codec.decode(raw.encode(fields))),
        label(fields),
      ).toMatchObject({
        code,
        requestId: 4,
      });
    }
  });

  it('stops at one level of nesting however deep a hostile frame nests', () => {
    let body = raw.encode([Op.TTL, 0, 'k']);
    for (let depth = 0; depth < 2000; depth++) body = raw.encode([Op.TRANSACT, 0, 'k', null, 1, body]);
    const frame = raw.encode([Op.TRANSACT, 4, 'k', null, 1, body]);
    expect(catchError(() => codec.decode(frame))).toMatchObject({
      code: ErrorCode.MALFORMED_FRAME,
      requestId: 4,
    });
  });
});
