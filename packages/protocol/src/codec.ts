import { Decoder, Encoder } from '@msgpack/msgpack';
import { ErrorCode, ProtocolError } from './errors.js';
import { type ProtocolLimits, resolveLimits } from './limits.js';
import {
  type ClusterMapSnapshot,
  type ExpireRequest,
  type HashRange,
  type HeartbeatRequest,
  type KeyValue,
  type Message,
  type MigratedEntry,
  Op,
  type PeerRole,
  REPLICA_STATE_NAMES,
  type ReadPartRequest,
  type ReplicaStateName,
  type ReplicatedEntry,
  type ReplicateRequest,
  type Request,
  type Response,
  type RingMember,
  type SetExpiry,
  type SetWithRequest,
  type StatsMap,
  type TransactStep,
  type TransactWatch,
  type ValuePart,
  type WithoutId,
} from './messages.js';
import { checkBodyShape, maxMessageElements } from './shape.js';

type Field = unknown;
const utf8 = new TextEncoder();
const PEER_ROLES: ReadonlySet<string> = new Set<PeerRole>(['client', 'balancer', 'node']);

/**
 * Encodes messages to MessagePack frame bodies and decodes bodies back into typed messages,
 * enforcing {@link ProtocolLimits}. One codec per connection: its buffers are reused.
 *
 * The data path's frames (GET, SET, DEL and their answers OK, VALUE, COUNT, INTEGER (a uint32), and replication's
 * REPLICATE and REPLICATED) are written and read by hand ({@link writeHot}, {@link readHot}): one pass over the bytes, no intermediate array, no
 * generic MessagePack walk. They produce and accept exactly the bytes the generic path does (the
 * same MessagePack encoding, byte for byte); a body the hand reader does not recognise as a
 * canonical, valid hot frame goes through the generic path (shape check, MessagePack decoder,
 * field validation), which owns every error, so limits and error codes are the same either way.
 */
export class MessageCodec {
  /** The limits this codec enforces on decode. */
  readonly limits: ProtocolLimits;
  private readonly encoder = new Encoder({ initialBufferSize: 4096, ignoreUndefined: true });
  private readonly decoder: Decoder;
  private scratch = new Uint8Array(4096);

  constructor(limits: Partial<ProtocolLimits> | ProtocolLimits = {}) {
    this.limits = resolveLimits(limits);
    this.decoder = new Decoder({
      maxStrLength: this.limits.maxFrameBytes,
      maxBinLength: this.limits.maxFrameBytes,
      maxArrayLength: maxMessageElements(this.limits),
      maxMapLength: this.limits.maxMapEntries,
      maxExtLength: 0,
    });
  }

  /**
   * Encodes a message to its frame body. The returned bytes are a view of a shared buffer that
   * the next `encode` overwrites: copy them (the connection does, into its output buffer) first.
   */
  encode(message: Message): Uint8Array {
    return this.encodeWithId(message, message.id);
  }

  /**
   * Encodes a request under `id` (the connection's own) without building a copy of the message:
   * the same bytes as `encode({ ...message, id })`, and the same shared-buffer contract.
   */
  encodeRequest(message: WithoutId<Request>, id: number): Uint8Array {
    return this.encodeWithId(message, id);
  }

  private encodeWithId(message: Message | WithoutId<Request>, id: number): Uint8Array {
    const size = hotSize(message, id);
    if (size < 0) {
      const whole = (message as Message).id === id ? (message as Message) : ({ ...message, id } as Message);
      return this.encoder.encodeSharedRef(toWireArray(whole));
    }
    if (size > this.scratch.length) this.scratch = new Uint8Array(Math.max(size, this.scratch.length * 2));
    return this.scratch.subarray(0, writeHot(this.scratch, 0, message, id));
  }

  /** Decodes one frame body. Throws {@link ProtocolError} for anything that is not a valid message. */
  decode(body: Uint8Array): Message {
    const hot = readHot(body, this.limits);
    if (hot !== undefined) return hot;
    checkBodyShape(body, this.limits);
    let fields: Field[];
    try {
      fields = this.decoder.decode(body) as Field[];
    } catch (error) {
      throw new ProtocolError(ErrorCode.MALFORMED_FRAME, `undecodable body: ${(error as Error).message}`);
    }
    return fromWireArray(fields, this.limits);
  }
}

// ---------------------------------------------------------------------------------------------
// The hand-written writer and reader of the hot frames. MessagePack encodings used (the ones
// @msgpack/msgpack's Encoder picks, so the bytes are identical): fixarray 0x90|n; positive fixint
// 0x00-0x7f, uint8 0xcc, uint16 0xcd, uint32 0xce; bin8 0xc4, bin16 0xc5, bin32 0xc6; nil 0xc0.

/** Bytes of the MessagePack encoding of an unsigned integer below 2^32. */
function uintSize(value: number): number {
  return value < 0x80 ? 1 : value < 0x100 ? 2 : value < 0x10000 ? 3 : 5;
}

/** Bytes of the MessagePack encoding of a bin of `length` bytes. */
function binSize(length: number): number {
  return (length < 0x100 ? 2 : length < 0x10000 ? 3 : 5) + length;
}

/** An integer the hand writer encodes like the Encoder does (0..2^32-1). */
function isUint32(value: number | undefined): value is number {
  return value !== undefined && Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff;
}

/** A non-negative integer below 2^53 (versions, expiry times, epochs): uint64 above 2^32-1. */
function isUint53(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/** Bytes of the MessagePack encoding of a non-negative integer below 2^53 (see {@link isUint53}). */
function uint53Size(value: number): number {
  return value <= 0xffff_ffff ? uintSize(value) : 9;
}

/** Bytes of the MessagePack header of an array of `fields` elements (fixarray, array16, array32). */
function arrayHeaderSize(fields: number): number {
  return fields < 16 ? 1 : fields < 0x10000 ? 3 : 5;
}

/**
 * REPLICATE's body size without its array header, op and id, or -1 when a field is not one the
 * hand writer encodes (the generic encoder then writes it, or refuses it).
 */
function replicateSize(message: WithoutId<ReplicateRequest>): number {
  const { epoch, batch, entries } = message;
  if (!isUint53(epoch) || !isUint53(batch)) return -1;
  let size = uint53Size(epoch) + uint53Size(batch) + uintSize(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    const { key, value, writeEpoch, version, expireAt } = entry;
    if (!(key instanceof Uint8Array) || (value !== null && !(value instanceof Uint8Array))) return -1;
    if (!isUint32(writeEpoch) || !isUint53(version) || !isUint53(expireAt)) return -1;
    size +=
      binSize(key.length) +
      (value === null ? 1 : binSize(value.length)) +
      uintSize(writeEpoch) +
      uint53Size(version) +
      uint53Size(expireAt);
  }
  return size;
}

/**
 * The body size of a message the hand writer encodes, or -1 for one it leaves to the generic
 * encoder (every other op, and values the Encoder would write in another form, such as an id
 * or epoch that is not a uint32). Internal: the connection uses it to write frames straight into
 * its output buffer.
 */
export function hotSize(message: Message | WithoutId<Request>, id: number): number {
  if (!isUint32(id)) return -1;
  const base = 2 + uintSize(id); // array header + op + id
  switch (message.op) {
    case Op.GET:
    case Op.DEL: {
      const epoch = message.epoch;
      if (epoch !== undefined && !isUint32(epoch)) return -1;
      if (!(message.key instanceof Uint8Array)) return -1;
      const size = base + binSize(message.key.length);
      if (epoch !== undefined) return size + 1 + uintSize(epoch);
      return message.fallback ? size + 1 : size;
    }
    case Op.SET: {
      const epoch = message.epoch;
      if (epoch !== undefined && !isUint32(epoch)) return -1;
      if (!(message.key instanceof Uint8Array) || !(message.value instanceof Uint8Array)) return -1;
      const size = base + binSize(message.key.length) + binSize(message.value.length);
      return epoch === undefined ? size : size + uintSize(epoch);
    }
    case Op.OK:
      // An OK with a lease (a heartbeat's answer) takes the generic path.
      return message.lease === undefined ? base : -1;
    case Op.VALUE: {
      const value = message.value;
      if (value !== null && !(value instanceof Uint8Array)) return -1;
      const size = base + (value === null ? 1 : binSize(value.length));
      return message.deleted ? size + 1 : size;
    }
    case Op.COUNT:
      // MIGRATE's answer with its bytes goes through the generic encoder.
      return isUint32(message.count) && message.bytes === undefined ? base + uintSize(message.count) : -1;
    case Op.INTEGER:
      // The data model's answers (GETBIT, STRLEN, INCR, ...): a uint32 as COUNT's; others generic.
      return message.value >= 0n && message.value <= 0xffff_ffffn
        ? base + uintSize(Number(message.value))
        : -1;
    case Op.REPLICATE: {
      if (message.entries.length > 0xffff_ffff) return -1;
      const size = replicateSize(message);
      // `base` counted a one-byte array header: a batch of 3 entries or more has 20 fields or more.
      return size < 0 ? -1 : base - 1 + arrayHeaderSize(5 + 5 * message.entries.length) + size;
    }
    case Op.REPLICATED:
      if (!isUint53(message.batch)) return -1;
      return base + uint53Size(message.batch) + (message.full === true ? 1 : 0);
    default:
      return -1;
  }
}

/**
 * Writes a MessagePack tag and the size that follows it, big-endian, as the Encoder does: `tag8`
 * and one byte below 2^8, `tag8 + 1` and two below 2^16, `tag8 + 2` and four above; returns the
 * end. The uints (0xcc-0xce) and bins (0xc4-0xc6) take this form.
 */
function writeSized(out: Uint8Array, at: number, tag8: number, value: number): number {
  if (value < 0x100) {
    out[at] = tag8;
    out[at + 1] = value;
    return at + 2;
  }
  return writeSized16or32(out, at, tag8 + 1, value);
}

/** `tag16` and 2 big-endian bytes below 2^16, else `tag16 + 1` and 4; returns the end. */
function writeSized16or32(out: Uint8Array, at: number, tag16: number, value: number): number {
  if (value < 0x10000) {
    out[at] = tag16;
    out[at + 1] = value >>> 8;
    out[at + 2] = value & 0xff;
    return at + 3;
  }
  out[at] = tag16 + 1;
  writeU32(out, at + 1, value);
  return at + 5;
}

/** Writes `value` (below 2^32) as 4 big-endian bytes. */
function writeU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 24;
  out[at + 1] = (value >>> 16) & 0xff;
  out[at + 2] = (value >>> 8) & 0xff;
  out[at + 3] = value & 0xff;
}

function writeUint(out: Uint8Array, at: number, value: number): number {
  if (value < 0x80) {
    out[at] = value;
    return at + 1;
  }
  return writeSized(out, at, 0xcc, value);
}

/** Writes a non-negative integer below 2^53 as the Encoder does (uint64 above 2^32-1). */
function writeUint53(out: Uint8Array, at: number, value: number): number {
  if (value <= 0xffff_ffff) return writeUint(out, at, value);
  out[at] = 0xcf;
  writeU32(out, at + 1, Math.floor(value / 0x1_0000_0000));
  writeU32(out, at + 5, value >>> 0);
  return at + 9;
}

/** Writes an array header of `fields` elements as the Encoder does (fixarray, array16, array32). */
function writeArrayHeader(out: Uint8Array, at: number, fields: number): number {
  if (fields < 16) {
    out[at] = 0x90 | fields;
    return at + 1;
  }
  return writeSized16or32(out, at, 0xdc, fields);
}

function writeBin(out: Uint8Array, at: number, bytes: Uint8Array): number {
  const length = bytes.length;
  const pos = writeSized(out, at, 0xc4, length);
  // Small values are copied byte by byte: cheaper than TypedArray#set's call for a few bytes.
  if (length <= 32) for (let i = 0; i < length; i++) out[pos + i] = bytes[i]!;
  else out.set(bytes, pos);
  return pos + length;
}

/**
 * Writes a message {@link hotSize} accepted under `id` into `out` from `at` (room for its
 * `hotSize` bytes); returns the end. One case per op, the same layouts as {@link toWireArray}.
 * Internal, like {@link hotSize}.
 */
export function writeHot(
  out: Uint8Array,
  at: number,
  message: Message | WithoutId<Request>,
  id: number,
): number {
  let pos: number;
  switch (message.op) {
    case Op.GET:
    case Op.DEL: {
      const epoch = message.epoch;
      const fields = epoch !== undefined ? 5 : message.fallback ? 4 : 3;
      out[at] = 0x90 | fields;
      out[at + 1] = message.op;
      pos = writeBin(out, writeUint(out, at + 2, id), message.key);
      if (epoch !== undefined) {
        out[pos++] = message.fallback ? 1 : 0;
        pos = writeUint(out, pos, epoch);
      } else if (message.fallback) out[pos++] = 1;
      return pos;
    }
    case Op.SET: {
      const epoch = message.epoch;
      out[at] = epoch === undefined ? 0x94 : 0x95;
      out[at + 1] = Op.SET;
      pos = writeBin(out, writeUint(out, at + 2, id), message.key);
      pos = writeBin(out, pos, message.value);
      return epoch === undefined ? pos : writeUint(out, pos, epoch);
    }
    case Op.OK:
      out[at] = 0x92;
      out[at + 1] = Op.OK;
      return writeUint(out, at + 2, id);
    case Op.VALUE: {
      out[at] = message.deleted ? 0x94 : 0x93;
      out[at + 1] = Op.VALUE;
      pos = writeUint(out, at + 2, id);
      if (message.value === null) out[pos++] = 0xc0;
      else pos = writeBin(out, pos, message.value);
      if (message.deleted) out[pos++] = 1;
      return pos;
    }
    case Op.COUNT:
      out[at] = 0x93;
      out[at + 1] = Op.COUNT;
      return writeUint(out, writeUint(out, at + 2, id), message.count);
    case Op.INTEGER:
      out[at] = 0x93;
      out[at + 1] = Op.INTEGER;
      return writeUint(out, writeUint(out, at + 2, id), Number(message.value));
    case Op.REPLICATE: {
      const entries = message.entries;
      pos = writeArrayHeader(out, at, 5 + 5 * entries.length);
      out[pos++] = Op.REPLICATE;
      pos = writeUint(out, pos, id);
      pos = writeUint53(out, pos, message.epoch);
      pos = writeUint53(out, pos, message.batch);
      pos = writeUint(out, pos, entries.length);
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]!;
        pos = writeBin(out, pos, entry.key);
        if (entry.value === null) out[pos++] = 0xc0;
        else pos = writeBin(out, pos, entry.value);
        pos = writeUint(out, pos, entry.writeEpoch);
        pos = writeUint53(out, pos, entry.version);
        pos = writeUint53(out, pos, entry.expireAt);
      }
      return pos;
    }
    case Op.REPLICATED: {
      out[at] = message.full === true ? 0x94 : 0x93;
      out[at + 1] = Op.REPLICATED;
      pos = writeUint53(out, writeUint(out, at + 2, id), message.batch);
      if (message.full === true) out[pos++] = 1;
      return pos;
    }
    default:
      throw new RangeError(`op ${message.op} has no hand-written encoding`);
  }
}

/** The 4 big-endian bytes at `at` as an unsigned integer (the caller checks they are present). */
function readU32(body: Uint8Array, at: number): number {
  return body[at]! * 0x1000000 + ((body[at + 1]! << 16) | (body[at + 2]! << 8) | body[at + 3]!);
}

/**
 * Reads a positive integer below 2^32 at `at` (fixint, uint8/16/32), or -1 when the byte there
 * starts anything else. The caller checks that the bytes are present (`uintEnd`).
 */
function readUint(body: Uint8Array, at: number): number {
  const tag = body[at]!;
  if (tag < 0x80) return tag;
  if (tag === 0xcc) return body[at + 1]!;
  if (tag === 0xcd) return (body[at + 1]! << 8) | body[at + 2]!;
  if (tag === 0xce) return readU32(body, at + 1);
  return -1;
}

/** The end of the uint at `at` (see {@link readUint}), or -1 when it is not one or is cut short. */
function uintEnd(body: Uint8Array, at: number): number {
  if (at >= body.length) return -1;
  const tag = body[at]!;
  const end =
    tag < 0x80 ? at + 1 : tag === 0xcc ? at + 2 : tag === 0xcd ? at + 3 : tag === 0xce ? at + 5 : -1;
  return end > body.length ? -1 : end;
}

/**
 * The end of the non-negative integer below 2^53 at `at` (a uint, or a uint64 within 2^53-1), or
 * -1 when it is not one or is cut short.
 */
function uint53End(body: Uint8Array, at: number): number {
  if (at >= body.length || body[at] !== 0xcf) return uintEnd(body, at);
  // A uint64 above 2^53-1 is left to the generic path (which refuses it for every such field).
  if (at + 9 > body.length || body[at + 1] !== 0 || body[at + 2]! > 0x1f) return -1;
  return at + 9;
}

/** Reads the integer {@link uint53End} accepted at `at`. */
function readUint53(body: Uint8Array, at: number): number {
  if (body[at] !== 0xcf) return readUint(body, at);
  // The high word is below 2^21 (checked by uint53End), so the sum is exact.
  return readU32(body, at + 1) * 0x1_0000_0000 + readU32(body, at + 5);
}

/** The end of the bin at `at` (its bytes are `body[end - length, end)`), or -1. */
function binEnd(body: Uint8Array, at: number): number {
  if (at >= body.length) return -1;
  const tag = body[at]!;
  let start: number;
  let length: number;
  if (tag === 0xc4) {
    if (at + 2 > body.length) return -1;
    start = at + 2;
    length = body[at + 1]!;
  } else if (tag === 0xc5) {
    if (at + 3 > body.length) return -1;
    start = at + 3;
    length = (body[at + 1]! << 8) | body[at + 2]!;
  } else if (tag === 0xc6) {
    if (at + 5 > body.length) return -1;
    start = at + 5;
    length = readU32(body, at + 1);
  } else return -1;
  const end = start + length;
  return end > body.length ? -1 : end;
}

/** Where the bin ending at `end` (found by {@link binEnd} from `at`) starts. */
function binStart(body: Uint8Array, at: number): number {
  const tag = body[at]!;
  return at + (tag === 0xc4 ? 2 : tag === 0xc5 ? 3 : 5);
}

/**
 * Decodes a canonical hot frame (GET, SET, DEL, OK, VALUE, COUNT, INTEGER: bin keys and values, the flags
 * 0/1, uint32 ids, epochs and counts, nothing after the last field) whose keys and values are
 * within the limits, into exactly the message the generic path would return. Anything else,
 * valid or not, is undefined: the generic path decides (and produces the error).
 */
function readHot(body: Uint8Array, limits: ProtocolLimits): Message | undefined {
  const length = body.length;
  if (length < 3) return undefined;
  const header = body[0]!;
  // Only REPLICATE has more than 5 fields (10 or more, an array16 past 15).
  if (header < 0x92 || header > 0x95) return readReplicate(body, limits);
  const fields = header & 0x0f;
  const op = body[1]!;
  const idEnd = uintEnd(body, 2);
  if (idEnd < 0) return undefined;
  const id = readUint(body, 2);
  switch (op) {
    case Op.GET:
    case Op.DEL: {
      if (fields < 3) return undefined;
      const keyEnd = binEnd(body, idEnd);
      if (keyEnd < 0) return undefined;
      const keyStart = binStart(body, idEnd);
      const keyLength = keyEnd - keyStart;
      if (keyLength === 0 || keyLength > limits.maxKeyBytes) return undefined;
      const key = body.subarray(keyStart, keyEnd);
      if (fields === 3) return keyEnd === length ? { op, id, key } : undefined;
      if (keyEnd >= length) return undefined;
      const flag = body[keyEnd]!;
      if (flag > 1) return undefined;
      if (fields === 4) {
        if (keyEnd + 1 !== length) return undefined;
        return flag === 1 ? { op, id, key, fallback: true } : { op, id, key };
      }
      const epochEnd = uintEnd(body, keyEnd + 1);
      if (epochEnd !== length) return undefined;
      const epoch = readUint(body, keyEnd + 1);
      return flag === 1 ? { op, id, key, fallback: true, epoch } : { op, id, key, epoch };
    }
    case Op.SET: {
      if (fields < 4) return undefined;
      const keyEnd = binEnd(body, idEnd);
      if (keyEnd < 0) return undefined;
      const keyStart = binStart(body, idEnd);
      const keyLength = keyEnd - keyStart;
      if (keyLength === 0 || keyLength > limits.maxKeyBytes) return undefined;
      const valueEnd = binEnd(body, keyEnd);
      if (valueEnd < 0) return undefined;
      const valueStart = binStart(body, keyEnd);
      if (valueEnd - valueStart > limits.maxValueBytes) return undefined;
      const key = body.subarray(keyStart, keyEnd);
      const value = body.subarray(valueStart, valueEnd);
      if (fields === 4) return valueEnd === length ? { op, id, key, value } : undefined;
      const epochEnd = uintEnd(body, valueEnd);
      if (epochEnd !== length) return undefined;
      return { op, id, key, value, epoch: readUint(body, valueEnd) };
    }
    case Op.OK:
      return fields === 2 && idEnd === length ? { op, id } : undefined;
    case Op.VALUE: {
      if (fields !== 3 && fields !== 4) return undefined;
      if (idEnd >= length) return undefined;
      let value: Uint8Array | null;
      let end: number;
      if (body[idEnd] === 0xc0) {
        value = null;
        end = idEnd + 1;
      } else {
        end = binEnd(body, idEnd);
        if (end < 0) return undefined;
        const start = binStart(body, idEnd);
        if (end - start > limits.maxValueBytes) return undefined;
        value = body.subarray(start, end);
      }
      if (fields === 3) return end === length ? { op, id, value } : undefined;
      if (end + 1 !== length) return undefined;
      const flag = body[end]!;
      if (flag > 1) return undefined;
      return flag === 1 ? { op, id, value, deleted: true } : { op, id, value };
    }
    case Op.COUNT:
    case Op.INTEGER: {
      if (fields !== 3) return undefined;
      const countEnd = uintEnd(body, idEnd);
      if (countEnd !== length) return undefined;
      const count = readUint(body, idEnd);
      return op === Op.COUNT ? { op, id, count } : { op, id, value: BigInt(count) };
    }
    case Op.REPLICATED: {
      if (fields !== 3 && fields !== 4) return undefined;
      const batchEnd = uint53End(body, idEnd);
      if (batchEnd < 0) return undefined;
      const batch = readUint53(body, idEnd);
      if (fields === 3) return batchEnd === length ? { op, id, batch } : undefined;
      if (batchEnd + 1 !== length) return undefined;
      const flag = body[batchEnd]!;
      if (flag > 1) return undefined;
      return flag === 1 ? { op, id, batch, full: true } : { op, id, batch };
    }
    case Op.REPLICATE:
      return readReplicate(body, limits);
    default:
      return undefined;
  }
}

/**
 * {@link readHot} for REPLICATE (any array header: fixarray, array16 or array32): the message the
 * generic path would return for a body whose fields all have the expected types and are within
 * the limits, with exactly `5 + 5 * count` fields; anything else is undefined (the generic path
 * decides). Keys and values are views of `body`, as the generic decoder's are.
 */
function readReplicate(body: Uint8Array, limits: ProtocolLimits): ReplicateRequest | undefined {
  const length = body.length;
  const header = body[0]!;
  let fields: number;
  let pos: number;
  if (header >= 0x90 && header <= 0x9f) {
    fields = header & 0x0f;
    pos = 1;
  } else if (header === 0xdc) {
    if (length < 3) return undefined;
    fields = (body[1]! << 8) | body[2]!;
    pos = 3;
  } else if (header === 0xdd) {
    if (length < 5) return undefined;
    fields = readU32(body, 1);
    pos = 5;
  } else return undefined;
  if (pos >= length || body[pos] !== Op.REPLICATE) return undefined;
  const idAt = pos + 1;
  const idEnd = uintEnd(body, idAt);
  if (idEnd < 0) return undefined;
  const epochEnd = uint53End(body, idEnd);
  if (epochEnd < 0) return undefined;
  const batchEnd = uint53End(body, epochEnd);
  if (batchEnd < 0) return undefined;
  const countEnd = uintEnd(body, batchEnd);
  if (countEnd < 0) return undefined;
  const count = readUint(body, batchEnd);
  if (count > limits.maxBatchKeys || fields !== 5 + 5 * count) return undefined;
  const entries = new Array<ReplicatedEntry>(count);
  pos = countEnd;
  for (let i = 0; i < count; i++) {
    const keyEnd = binEnd(body, pos);
    if (keyEnd < 0) return undefined;
    const keyStart = binStart(body, pos);
    if (keyEnd === keyStart || keyEnd - keyStart > limits.maxKeyBytes) return undefined;
    let value: Uint8Array | null = null;
    let valueEnd = keyEnd + 1;
    if (keyEnd >= length) return undefined;
    if (body[keyEnd] !== 0xc0) {
      valueEnd = binEnd(body, keyEnd);
      if (valueEnd < 0) return undefined;
      const valueStart = binStart(body, keyEnd);
      if (valueEnd - valueStart > limits.maxValueBytes) return undefined;
      value = body.subarray(valueStart, valueEnd);
    }
    const writeEpochEnd = uintEnd(body, valueEnd);
    if (writeEpochEnd < 0) return undefined;
    const versionEnd = uint53End(body, writeEpochEnd);
    if (versionEnd < 0) return undefined;
    const expireAtEnd = uint53End(body, versionEnd);
    if (expireAtEnd < 0) return undefined;
    const expireAt = readUint53(body, versionEnd);
    // The generic path refuses a delete with an expiry time.
    if (value === null && expireAt !== 0) return undefined;
    entries[i] = {
      key: body.subarray(keyStart, keyEnd),
      value,
      writeEpoch: readUint(body, valueEnd),
      version: readUint53(body, writeEpochEnd),
      expireAt,
    };
    pos = expireAtEnd;
  }
  if (pos !== length) return undefined;
  return {
    op: Op.REPLICATE,
    id: readUint(body, idAt),
    epoch: readUint53(body, idEnd),
    batch: readUint53(body, epochEnd),
    entries,
  };
}

/** Appends the optional trailing fence epoch of a data request. */
/** The ops a TRANSACT step may have: the single-key data-model requests. */
const TRANSACT_STEP_OPS: ReadonlySet<number> = new Set<number>([
  Op.SET_WITH,
  Op.EXPIRE,
  Op.TTL,
  Op.PEXPIRETIME,
  Op.GETDEL,
  Op.INCRBY,
  Op.SETRANGE,
  Op.INCRBYFLOAT,
  Op.SETBIT,
  Op.READ_PART,
  Op.GET_VERSIONED,
  Op.DEL_VERSIONED,
]);

/** READ_PART's parts by their wire number. */
const VALUE_PARTS: readonly ValuePart[] = ['strlen', 'getrange', 'getbit', 'bitcount', 'bitpos'];

/**
 * READ_PART `[38, id, key, part, start|nil, end|nil, unit, bit|nil, epoch?]`: each part with the
 * fields it needs and no others (GETBIT's offset a uint32, as SETBIT's; the indexes safe integers).
 */
/** TRANSACT's trailing watches at `index` (after the fence): undefined when absent or nil. */
function readWatches(r: FieldReader, index: number): TransactWatch[] | undefined {
  const count = r.optionalUint(index, 'watches');
  if (count === undefined) return undefined;
  if (count === 0) throw r.fail(ErrorCode.MALFORMED_FRAME, 'an empty watch list is written as none');
  r.batchCount(index, 2);
  const watches = new Array<TransactWatch>(count);
  for (let i = 0; i < count; i++) {
    const at = index + 1 + 2 * i;
    watches[i] = { key: r.key(at), version: r.uint(at + 1, 'version', Number.MAX_SAFE_INTEGER) };
  }
  return watches;
}

function readReadPart(r: FieldReader): ReadPartRequest {
  const id = r.id;
  const key = r.key(2);
  const part = VALUE_PARTS[r.uint(3, 'part', VALUE_PARTS.length - 1)]!;
  const start = r.optionalSafeInt(4, 'start');
  const end = r.optionalSafeInt(5, 'end');
  const unit = r.uint(6, 'unit', 1) === 1 ? 'bit' : 'byte';
  const bit = r.optionalUint(7, 'bit', 1) as 0 | 1 | undefined;
  const epoch = r.optionalUint(8, 'epoch');
  const wrong = (what: string) => r.fail(ErrorCode.MALFORMED_FRAME, `READ_PART ${part}: ${what}`);
  const indexes = start === undefined ? (end === undefined ? 0 : -1) : end === undefined ? 1 : 2;
  switch (part) {
    case 'strlen':
      if (indexes !== 0 || bit !== undefined || unit === 'bit') throw wrong('takes no index, bit or unit');
      break;
    case 'getrange':
      if (indexes !== 2 || bit !== undefined || unit === 'bit') throw wrong('takes start and end only');
      break;
    case 'getbit':
      if (indexes !== 1 || bit !== undefined || unit === 'bit') throw wrong('takes the offset (start) only');
      if (start! < 0 || start! > 0xffff_ffff) throw wrong('the offset must be 0 to 2^32 - 1');
      break;
    case 'bitcount':
      if ((indexes !== 0 && indexes !== 2) || bit !== undefined)
        throw wrong('takes start and end, or neither');
      if (indexes === 0 && unit === 'bit') throw wrong('a unit needs start and end');
      break;
    case 'bitpos':
      if (indexes === -1 || bit === undefined) throw wrong('takes the bit, then start, then end');
      if (indexes === 0 && unit === 'bit') throw wrong('a unit needs start and end');
      break;
  }
  return {
    op: Op.READ_PART,
    id,
    key,
    part,
    ...(start === undefined ? {} : { start }),
    ...(end === undefined ? {} : { end }),
    ...(unit === 'bit' ? { unit } : {}),
    ...(bit === undefined ? {} : { bit }),
    ...(epoch === undefined ? {} : { epoch }),
  };
}

/** The answers a TRANSACT step may have. */
const STEP_RESULT_OPS: ReadonlySet<number> = new Set<number>([
  Op.VALUE,
  Op.COUNT,
  Op.INTEGER,
  Op.VERSIONED,
  Op.VERSION,
  Op.ERROR,
]);

const nestedEncoder = new Encoder({ ignoreUndefined: true });
const nestedDecoders = new WeakMap<ProtocolLimits, Decoder>();

/** The body of a message nested in another (a TRANSACT step, a RESULTS answer): a copy. */
function nestedBody(message: Message): Uint8Array {
  return nestedEncoder.encode(toWireArray(message));
}

/** A decoder for nested bodies under `limits` (the same bounds as {@link MessageCodec}'s). */
function nestedDecoder(limits: ProtocolLimits): Decoder {
  let decoder = nestedDecoders.get(limits);
  if (decoder === undefined) {
    decoder = new Decoder({
      maxStrLength: limits.maxFrameBytes,
      maxBinLength: limits.maxFrameBytes,
      maxArrayLength: maxMessageElements(limits),
      maxMapLength: limits.maxMapEntries,
      maxExtLength: 0,
    });
    nestedDecoders.set(limits, decoder);
  }
  return decoder;
}

function withEpoch(fields: Field[], epoch: number | undefined): Field[] {
  if (epoch !== undefined) fields.push(epoch);
  return fields;
}

/** SET_WITH's flag bits (see the protocol README, "SET_WITH"). */
const SetFlag = { NX: 1, XX: 2, GET: 4, KEEPTTL: 8, IN: 16, AT: 32, VERSION: 64, IF_VERSION: 128 } as const;
const SET_FLAGS_KNOWN = 255;
/** EXPIRE's modes and conditions, by their wire numbers. */
const EXPIRE_MODES = ['in', 'at', 'persist'] as const;
const EXPIRE_CONDITIONS = [undefined, 'nx', 'xx', 'gt', 'lt', 'xx-lt'] as const;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** A signed 64-bit integer in its decimal form: optional minus, no leading zero, at most 19 digits. */
const DECIMAL_INT64 = /^(0|-?[1-9][0-9]{0,18})$/;

function setFlags(message: SetWithRequest): number {
  let flags = 0;
  if (message.condition === 'nx') flags |= SetFlag.NX;
  if (message.condition === 'xx') flags |= SetFlag.XX;
  if (message.get === true) flags |= SetFlag.GET;
  const expiry = message.expiry;
  if (expiry?.kind === 'keep') flags |= SetFlag.KEEPTTL;
  if (expiry?.kind === 'in') flags |= SetFlag.IN;
  if (expiry?.kind === 'at') flags |= SetFlag.AT;
  if (message.withVersion === true) flags |= SetFlag.VERSION;
  if (message.ifVersion !== undefined) flags |= SetFlag.IF_VERSION;
  return flags;
}

/** A 64-bit integer as it travels: a MessagePack integer when exact as a number, else its decimal text. */
function int64Field(value: bigint): number | string {
  return value >= -BigInt(Number.MAX_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(value)
    : value.toString();
}

/** The flat array a message travels as; see the protocol README for every layout. */
export function toWireArray(message: Message): Field[] {
  switch (message.op) {
    case Op.SET_WITH: {
      const expiry = message.expiry;
      const ms = expiry === undefined || expiry.kind === 'keep' ? 0 : expiry.ms;
      const fields: Field[] = [message.op, message.id, message.key, message.value, setFlags(message), ms];
      // The compare-and-set version follows the (then possibly nil) fence epoch.
      if (message.ifVersion !== undefined) fields.push(message.epoch ?? null, message.ifVersion);
      else if (message.epoch !== undefined) fields.push(message.epoch);
      return fields;
    }
    case Op.GET_VERSIONED:
      return withEpoch([message.op, message.id, message.key], message.epoch);
    case Op.DEL_VERSIONED:
      return withEpoch([message.op, message.id, message.key, message.ifVersion ?? null], message.epoch);
    case Op.FLUSH:
      return [message.op, message.id];
    case Op.VERSIONED:
      return [message.op, message.id, message.value, message.version];
    case Op.VERSION:
      return [message.op, message.id, message.written ? 1 : 0, message.version];
    case Op.EXPIRE: {
      const fields: Field[] = [
        message.op,
        message.id,
        message.key,
        EXPIRE_MODES.indexOf(message.mode),
        message.ms,
        EXPIRE_CONDITIONS.indexOf(message.condition),
      ];
      // The optional trailing get flag follows the optional epoch, nil when there is none.
      if (message.get === true) fields.push(message.epoch ?? null, 1);
      else if (message.epoch !== undefined) fields.push(message.epoch);
      return fields;
    }
    case Op.TTL:
    case Op.PEXPIRETIME:
    case Op.GETDEL:
      return withEpoch([message.op, message.id, message.key], message.epoch);
    case Op.EXISTS:
      return withEpoch([message.op, message.id, message.keys.length, ...message.keys], message.epoch);
    case Op.INCRBY:
      return withEpoch([message.op, message.id, message.key, message.delta.toString()], message.epoch);
    case Op.SETRANGE:
      return withEpoch(
        [message.op, message.id, message.key, message.value, message.offset ?? null],
        message.epoch,
      );
    case Op.INCRBYFLOAT:
      return withEpoch([message.op, message.id, message.key, message.increment], message.epoch);
    case Op.SETBIT:
      return withEpoch([message.op, message.id, message.key, message.offset, message.bit], message.epoch);
    case Op.READ_PART:
      return withEpoch(
        [
          message.op,
          message.id,
          message.key,
          VALUE_PARTS.indexOf(message.part),
          message.start ?? null,
          message.end ?? null,
          message.unit === 'bit' ? 1 : 0,
          message.bit ?? null,
        ],
        message.epoch,
      );
    case Op.TRANSACT: {
      // Each step travels as the body of its own request (id 0, no fence): one reader for both.
      const fields: Field[] = [
        message.op,
        message.id,
        message.key,
        message.ifVersion ?? null,
        message.steps.length,
        ...message.steps.map((step) => nestedBody({ ...step, id: 0 } as Message)),
      ];
      const watches = message.watches;
      if (watches === undefined || watches.length === 0) return withEpoch(fields, message.epoch);
      // The watches trail the fence, which is then written even when absent (nil).
      fields.push(message.epoch ?? null, watches.length);
      for (const watch of watches) fields.push(watch.key, watch.version);
      return fields;
    }
    case Op.RESULTS:
      return message.results === null
        ? [message.op, message.id, null]
        : [message.op, message.id, message.results.length, ...message.results.map(nestedBody)];
    case Op.PULL:
      return [message.op, message.id, message.key];
    case Op.INTEGER:
      return [message.op, message.id, int64Field(message.value)];
    case Op.ENTRY: {
      const entry = message.entry;
      return entry === null
        ? [message.op, message.id, null]
        : [message.op, message.id, entry.value, entry.writeEpoch, entry.version, entry.expireAt ?? 0];
    }
    case Op.HELLO:
      if (message.node !== undefined) {
        return [
          message.op,
          message.id,
          message.version,
          message.role,
          message.user ?? null,
          message.nonce ?? null,
          message.node,
        ];
      }
      return message.nonce === undefined
        ? [message.op, message.id, message.version, message.role, message.user ?? null]
        : [message.op, message.id, message.version, message.role, message.user ?? null, message.nonce];
    case Op.AUTH:
      return [message.op, message.id, message.proof];
    case Op.AUTH_OK:
      return [message.op, message.id, message.signature];
    case Op.GET:
    case Op.DEL:
      if (message.epoch !== undefined) {
        return [message.op, message.id, message.key, message.fallback ? 1 : 0, message.epoch];
      }
      return message.fallback
        ? [message.op, message.id, message.key, 1]
        : [message.op, message.id, message.key];
    case Op.SET:
      return withEpoch([message.op, message.id, message.key, message.value], message.epoch);
    case Op.MGET:
      return withEpoch([message.op, message.id, message.keys.length, ...message.keys], message.epoch);
    case Op.MSET:
      return withEpoch(
        [message.op, message.id, message.entries.length, ...flattenEntries(message.entries)],
        message.epoch,
      );
    case Op.PING:
    case Op.STATS:
      return [message.op, message.id];
    case Op.OK:
      return message.lease === undefined ? [message.op, message.id] : [message.op, message.id, message.lease];
    case Op.JOIN: {
      const fields: Field[] = [
        message.op,
        message.id,
        message.nodeId,
        message.host,
        message.port,
        message.weight,
      ];
      // Optional trailing fields: an absent one before a present one travels as nil.
      const trailing = [message.identity, message.generation, message.availableBytes];
      let last = trailing.length;
      while (last > 0 && trailing[last - 1] === undefined) last--;
      for (let index = 0; index < last; index++) fields.push(trailing[index] ?? null);
      return fields;
    }
    case Op.LEAVE:
      return message.identity === undefined
        ? [message.op, message.id, message.nodeId]
        : [message.op, message.id, message.nodeId, message.identity];
    case Op.HEARTBEAT:
      return message.degraded === undefined
        ? [message.op, message.id, message.nodeId, message.keyCount]
        : [
            message.op,
            message.id,
            message.nodeId,
            message.keyCount,
            message.degraded,
            message.usedBytes ?? 0,
            message.availableBytes ?? 0,
          ];
    case Op.MIGRATE:
      return [
        message.op,
        message.id,
        message.epoch,
        message.target,
        message.host,
        message.port,
        message.ranges.length,
        ...flattenRanges(message.ranges),
      ];
    case Op.MIGRATE_PUT:
      return [
        message.op,
        message.id,
        message.epoch,
        message.entries.length,
        ...flattenMigrated(message.entries),
        // The expiry times, trailing and optional (all entries or none): their count, then each.
        ...(message.entries.some((entry) => (entry.expireAt ?? 0) > 0)
          ? [message.entries.length, ...message.entries.map((entry) => entry.expireAt ?? 0)]
          : []),
      ];
    case Op.PURGE:
      return [
        message.op,
        message.id,
        message.epoch,
        message.ranges.length,
        ...flattenRanges(message.ranges),
        ...(message.staleUpTo === undefined ? [] : [message.staleUpTo]),
      ];
    case Op.DIGEST:
      return [message.op, message.id, message.below, message.ranges.length, ...flattenRanges(message.ranges)];
    case Op.REPLICATE:
      return [
        message.op,
        message.id,
        message.epoch,
        message.batch,
        message.entries.length,
        ...flattenReplicated(message.entries),
      ];
    case Op.REPLICATED:
      return message.full === true
        ? [message.op, message.id, message.batch, 1]
        : [message.op, message.id, message.batch];
    case Op.VALUE:
      return message.deleted
        ? [message.op, message.id, message.value, 1]
        : [message.op, message.id, message.value];
    case Op.VALUES:
      return [message.op, message.id, message.values.length, ...message.values];
    case Op.COUNT:
      return message.bytes === undefined
        ? [message.op, message.id, message.count]
        : [message.op, message.id, message.count, message.bytes];
    case Op.STATS_RESULT:
      return [message.op, message.id, message.stats];
    case Op.HELLO_OK:
      return message.challenge === undefined
        ? [message.op, message.id, message.version, message.role, message.serverId]
        : [
            message.op,
            message.id,
            message.version,
            message.role,
            message.serverId,
            message.challenge.nonce,
            message.challenge.salt,
            message.challenge.kdf,
          ];
    case Op.ERROR:
      return [message.op, message.id, message.code, message.message];
    case Op.CLUSTER_MAP:
      return [message.op, message.id, message.subscribe ? 1 : 0];
    case Op.SCAN: {
      const fields: Field[] = [
        message.op,
        message.id,
        message.cursor,
        message.count ?? null,
        message.match ?? null,
      ];
      if (message.epoch !== undefined) fields.push(message.epoch, message.moving ? 1 : 0);
      return fields;
    }
    case Op.DBSIZE:
      return [message.op, message.id];
    case Op.KEYS:
      return [message.op, message.id, message.cursor, message.keys.length, ...message.keys];
    case Op.RING:
    case Op.MAP_PUSH:
    case Op.MAP:
      return [
        message.op,
        message.id,
        message.epoch,
        message.generation,
        message.algorithm,
        message.vnodes,
        message.nodes.length,
        ...message.nodes.flatMap((node) => [node.id, node.weight]),
        ...mapTrailer(message),
      ];
    case Op.MOVED:
      return [message.op, message.id, message.epoch, message.nodeId, message.host, message.port];
    case Op.ASK:
      return message.count === undefined
        ? [message.op, message.id, message.epoch, message.nodeId, message.host, message.port]
        : [message.op, message.id, message.epoch, message.nodeId, message.host, message.port, message.count];
  }
}

function flattenEntries(entries: readonly KeyValue[]): Uint8Array[] {
  const flat = new Array<Uint8Array>(entries.length * 2);
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    flat[i * 2] = entry.key;
    flat[i * 2 + 1] = entry.value;
  }
  return flat;
}

function flattenMigrated(entries: readonly MigratedEntry[]): (Uint8Array | number)[] {
  const flat = new Array<Uint8Array | number>(entries.length * 4);
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    flat[i * 4] = entry.key;
    flat[i * 4 + 1] = entry.value;
    flat[i * 4 + 2] = entry.writeEpoch;
    flat[i * 4 + 3] = entry.version;
  }
  return flat;
}

function flattenReplicated(entries: readonly ReplicatedEntry[]): (Uint8Array | number | null)[] {
  const flat = new Array<Uint8Array | number | null>(entries.length * 5);
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    flat[i * 5] = entry.key;
    flat[i * 5 + 1] = entry.value;
    flat[i * 5 + 2] = entry.writeEpoch;
    flat[i * 5 + 3] = entry.version;
    flat[i * 5 + 4] = entry.expireAt;
  }
  return flat;
}

function flattenRanges(ranges: readonly HashRange[]): number[] {
  const flat = new Array<number>(ranges.length * 2);
  for (let i = 0; i < ranges.length; i++) {
    const range = ranges[i]!;
    flat[i * 2] = range.start;
    flat[i * 2 + 1] = range.end;
  }
  return flat;
}

/** Reads typed fields out of a decoded array, naming the field in every error. */
class FieldReader {
  constructor(
    private readonly fields: Field[],
    readonly limits: ProtocolLimits,
    readonly id: number,
  ) {}

  fail(code: ErrorCode, message: string): ProtocolError {
    return new ProtocolError(code, message, { requestId: this.id });
  }

  /** Number of fields the message carries. */
  get fieldCount(): number {
    return this.fields.length;
  }

  at(index: number, name: string): Field {
    if (index >= this.fields.length) throw this.fail(ErrorCode.MALFORMED_FRAME, `missing field ${name}`);
    return this.fields[index];
  }

  uint(index: number, name: string, max = 0xffff_ffff): number {
    const value = this.at(index, name);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, `field ${name} must be an integer in 0..${max}`);
    }
    return value;
  }

  finite(index: number, name: string): number {
    const value = this.at(index, name);
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, `field ${name} must be a finite number`);
    }
    return value;
  }

  string(index: number, name: string): string {
    const value = this.at(index, name);
    if (typeof value !== 'string')
      throw this.fail(ErrorCode.MALFORMED_FRAME, `field ${name} must be a string`);
    // UTF-16 length * 3 bounds the UTF-8 length, so the byte count is only computed when it matters.
    if (value.length * 3 > this.limits.maxStringBytes && utf8ByteLength(value) > this.limits.maxStringBytes) {
      throw this.fail(
        ErrorCode.MALFORMED_FRAME,
        `field ${name} is longer than ${this.limits.maxStringBytes}`,
      );
    }
    return value;
  }

  optionalString(index: number, name: string): string | undefined {
    const value = this.fields[index];
    return value === undefined || value === null ? undefined : this.string(index, name);
  }

  /** A trailing optional bin/str: undefined when absent or nil. */
  optionalBytes(index: number, name: string): Uint8Array | undefined {
    const value = this.fields[index];
    return value === undefined || value === null ? undefined : this.bytes(index, name);
  }

  bytes(index: number, name: string): Uint8Array {
    const value = this.at(index, name);
    if (value instanceof Uint8Array) return value;
    if (typeof value === 'string') return utf8.encode(value);
    throw this.fail(ErrorCode.MALFORMED_FRAME, `field ${name} must be bin or str`);
  }

  key(index: number): Uint8Array {
    const key = this.bytes(index, 'key');
    if (key.length === 0) throw this.fail(ErrorCode.INVALID_ARGUMENT, 'key must not be empty');
    if (key.length > this.limits.maxKeyBytes) {
      throw this.fail(
        ErrorCode.KEY_TOO_LARGE,
        `key is ${key.length} bytes, limit ${this.limits.maxKeyBytes}`,
      );
    }
    return key;
  }

  value(index: number): Uint8Array {
    const value = this.bytes(index, 'value');
    if (value.length > this.limits.maxValueBytes) {
      throw this.fail(
        ErrorCode.VALUE_TOO_LARGE,
        `value is ${value.length} bytes, limit ${this.limits.maxValueBytes}`,
      );
    }
    return value;
  }

  nullableValue(index: number): Uint8Array | null {
    return this.at(index, 'value') === null ? null : this.value(index);
  }

  /** Reads a batch count at `index` and checks that the items it announces are present. */
  batchCount(index: number, itemsPerEntry: number): number {
    const count = this.uint(index, 'count');
    if (count > this.limits.maxBatchKeys) {
      throw this.fail(ErrorCode.BATCH_TOO_LARGE, `batch of ${count}, limit ${this.limits.maxBatchKeys}`);
    }
    if (this.fields.length < index + 1 + count * itemsPerEntry) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, `batch announces ${count} entries but carries fewer`);
    }
    return count;
  }

  /**
   * A TRANSACT step at `index`: the body of a single-key data-model request, without fence. Its
   * key may differ from the transaction's: the node checks that it shares its position.
   */
  step(index: number): TransactStep {
    const step = this.nested(index, 'step', TRANSACT_STEP_OPS) as TransactStep & {
      readonly id: number;
      readonly epoch?: number;
    };
    if (step.id !== 0 || step.epoch !== undefined) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, `step ${index}: a TRANSACT step carries id 0 and no epoch`);
    }
    const { id: _, ...withoutId } = step;
    return withoutId as TransactStep;
  }

  /** A RESULTS answer at `index`: the body of one step's answer (id 0). */
  stepResult(index: number): Response {
    const result = this.nested(index, 'result', STEP_RESULT_OPS);
    if (result.id !== 0) throw this.fail(ErrorCode.MALFORMED_FRAME, `result ${index}: carries id 0`);
    return result as Response;
  }

  /**
   * The message whose body is the bin at `index`, decoded under the same limits and shape rules
   * as a frame's body; its op must be one of `ops`, checked before it is read further (a step is
   * never itself a TRANSACT, so nesting stops at one level).
   */
  private nested(index: number, name: string, ops: ReadonlySet<number>): Message {
    const body = this.bytes(index, name);
    let fields: Field[];
    try {
      checkBodyShape(body, this.limits);
      fields = nestedDecoder(this.limits).decode(body) as Field[];
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw this.fail(ErrorCode.MALFORMED_FRAME, `${name} at field ${index}: ${reason}`);
    }
    if (typeof fields[0] !== 'number' || !ops.has(fields[0])) {
      throw this.fail(
        ErrorCode.MALFORMED_FRAME,
        `${name} at field ${index}: op ${String(fields[0])} not allowed`,
      );
    }
    try {
      return fromWireArray(fields, this.limits);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      throw this.fail(error.code as ErrorCode, `${name} at field ${index}: ${error.message}`);
    }
  }

  /** A trailing optional uint (uint32 unless `max` says otherwise): undefined when absent or nil. */
  optionalUint(index: number, name: string, max?: number): number | undefined {
    const value = this.fields[index];
    return value === undefined || value === null ? undefined : this.uint(index, name, max);
  }

  /** A trailing optional {@link safeInt}: undefined when absent or nil. */
  optionalSafeInt(index: number, name: string): number | undefined {
    const value = this.fields[index];
    return value === undefined || value === null ? undefined : this.safeInt(index, name);
  }

  /** An integer in the safe range (-(2^53-1)..2^53-1). */
  safeInt(index: number, name: string): number {
    const value = this.at(index, name);
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, `field ${name} must be a safe integer`);
    }
    return value;
  }

  /** A 64-bit signed integer: a safe MessagePack integer or its decimal text (see `int64Field`). */
  int64(index: number, name: string): bigint {
    const value = this.at(index, name);
    if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
    if (typeof value === 'string' && DECIMAL_INT64.test(value)) {
      const parsed = BigInt(value);
      if (parsed >= INT64_MIN && parsed <= INT64_MAX) return parsed;
    }
    throw this.fail(ErrorCode.MALFORMED_FRAME, `field ${name} must be a 64-bit signed integer`);
  }

  /** SCAN's optional MATCH pattern: bytes no longer than a key may be (nor empty). */
  optionalPattern(index: number): Uint8Array | undefined {
    const pattern = this.optionalBytes(index, 'match');
    if (pattern === undefined) return undefined;
    if (pattern.length === 0 || pattern.length > this.limits.maxKeyBytes) {
      throw this.fail(
        ErrorCode.INVALID_ARGUMENT,
        `match pattern must be 1..${this.limits.maxKeyBytes} bytes`,
      );
    }
    return pattern;
  }

  /** A trailing optional flag: true only when present and truthy (1 or true). */
  flag(index: number): boolean | undefined {
    const value = this.fields[index];
    return value === 1 || value === true ? true : undefined;
  }

  /** Reads `count` (start, end) pairs of 32-bit positions from `index`. */
  ranges(index: number): HashRange[] {
    const count = this.batchCount(index, 2);
    const ranges = new Array<HashRange>(count);
    for (let i = 0; i < count; i++) {
      ranges[i] = {
        start: this.uint(index + 1 + i * 2, 'start'),
        end: this.uint(index + 2 + i * 2, 'end'),
      };
    }
    return ranges;
  }

  /**
   * Reads `count` (id, weight) ring members from `index`, then, when `withAddresses` and present,
   * the trailing list of their (host, port) in the same order.
   */
  members(index: number, withAddresses = false): RingMember[] {
    const count = this.batchCount(index, 2);
    const members = new Array<RingMember>(count);
    // The optional trailing address list: its count (nil or absent = none), then (host, port) pairs.
    const addressCount = withAddresses ? this.optionalUint(index + 1 + count * 2, 'addresses') : undefined;
    if (addressCount !== undefined && addressCount !== count) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, `ring lists ${addressCount} addresses for ${count} members`);
    }
    if (addressCount !== undefined && this.fields.length < index + 2 + count * 4) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, 'ring announces member addresses but carries fewer');
    }
    const addresses = index + 2 + count * 2;
    const addressed = addressCount !== undefined && count > 0;
    for (let i = 0; i < count; i++) {
      const id = nonEmpty(this, this.string(index + 1 + i * 2, 'nodeId'), 'nodeId');
      const weight = positive(this, this.finite(index + 2 + i * 2, 'weight'));
      members[i] = addressed
        ? {
            id,
            weight,
            host: nonEmpty(this, this.string(addresses + i * 2, 'host'), 'host'),
            port: this.uint(addresses + 1 + i * 2, 'port', 65535),
          }
        : { id, weight };
    }
    return members;
  }

  role(index: number): PeerRole {
    const role = this.string(index, 'role');
    if (!PEER_ROLES.has(role)) throw this.fail(ErrorCode.MALFORMED_FRAME, `unknown role ${role}`);
    return role as PeerRole;
  }

  stats(index: number): StatsMap {
    const value = this.at(index, 'stats');
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array) {
      throw this.fail(ErrorCode.MALFORMED_FRAME, 'field stats must be a map');
    }
    const stats: Record<string, number | string> = Object.create(null);
    for (const [name, entry] of Object.entries(value)) {
      if (typeof entry !== 'number' && typeof entry !== 'string') {
        throw this.fail(ErrorCode.MALFORMED_FRAME, `stats.${name} must be a number or string`);
      }
      stats[name] = entry;
    }
    return stats;
  }
}

/**
 * Turns a decoded array into a typed message. Fields past the ones this version knows are
 * ignored, so a later version can append optional fields without breaking older readers.
 */
export function fromWireArray(fields: Field[], limits: ProtocolLimits): Message {
  const op = fields[0];
  const rawId = fields[1];
  const id =
    typeof rawId === 'number' && Number.isInteger(rawId) && rawId >= 0 && rawId <= 0xffff_ffff ? rawId : -1;
  if (typeof op !== 'number' || !Number.isInteger(op)) {
    // Keep the id when it is readable, so the sender can match the error to its request.
    throw new ProtocolError(ErrorCode.MALFORMED_FRAME, 'op must be an integer', {
      requestId: Math.max(id, 0),
    });
  }
  if (id < 0)
    throw new ProtocolError(ErrorCode.MALFORMED_FRAME, 'request id must be an integer in 0..2^32-1');
  const reader = new FieldReader(fields, limits, id);
  return op <= 63 ? readRequest(op, reader) : readResponse(op, reader);
}

function readRequest(op: number, r: FieldReader): Request {
  const id = r.id;
  switch (op) {
    case Op.HELLO:
      return {
        op,
        id,
        version: r.uint(2, 'version'),
        role: r.role(3),
        user: r.optionalString(4, 'user'),
        nonce: r.optionalBytes(5, 'nonce'),
        node: r.optionalString(6, 'node'),
      };
    case Op.AUTH:
      return { op, id, proof: r.bytes(2, 'proof') };
    case Op.GET:
    case Op.DEL: {
      // Object literals of one shape each, never a spread of a decoded object: the hot path.
      const key = r.key(2);
      const fallback = r.flag(3);
      const epoch = r.optionalUint(4, 'epoch');
      if (epoch === undefined) return fallback ? { op, id, key, fallback } : { op, id, key };
      return fallback ? { op, id, key, fallback, epoch } : { op, id, key, epoch };
    }
    case Op.SET: {
      const key = r.key(2);
      const value = r.value(3);
      const epoch = r.optionalUint(4, 'epoch');
      return epoch === undefined ? { op, id, key, value } : { op, id, key, value, epoch };
    }
    case Op.MGET: {
      const count = r.batchCount(2, 1);
      const keys = new Array<Uint8Array>(count);
      for (let i = 0; i < count; i++) keys[i] = r.key(3 + i);
      const epoch = r.optionalUint(3 + count, 'epoch');
      return epoch === undefined ? { op, id, keys } : { op, id, keys, epoch };
    }
    case Op.MSET: {
      const count = r.batchCount(2, 2);
      const entries = new Array<KeyValue>(count);
      for (let i = 0; i < count; i++) entries[i] = { key: r.key(3 + i * 2), value: r.value(4 + i * 2) };
      const epoch = r.optionalUint(3 + count * 2, 'epoch');
      return epoch === undefined ? { op, id, entries } : { op, id, entries, epoch };
    }
    case Op.PING:
      return { op, id };
    case Op.STATS:
      return { op, id };
    case Op.JOIN:
      return {
        op,
        id,
        nodeId: nonEmpty(r, r.string(2, 'nodeId'), 'nodeId'),
        host: nonEmpty(r, r.string(3, 'host'), 'host'),
        port: r.uint(4, 'port', 65535),
        weight: positive(r, r.finite(5, 'weight')),
        identity: r.optionalString(6, 'identity'),
        generation: r.optionalUint(7, 'generation', Number.MAX_SAFE_INTEGER),
        availableBytes: r.optionalUint(8, 'availableBytes', Number.MAX_SAFE_INTEGER),
      };
    case Op.LEAVE:
      return {
        op,
        id,
        nodeId: nonEmpty(r, r.string(2, 'nodeId'), 'nodeId'),
        identity: r.optionalString(3, 'identity'),
      };
    case Op.HEARTBEAT:
      return {
        op,
        id,
        nodeId: nonEmpty(r, r.string(2, 'nodeId'), 'nodeId'),
        keyCount: r.uint(3, 'keyCount', Number.MAX_SAFE_INTEGER),
        ...heartbeatStorage(r),
      };
    case Op.RING:
      return { op, id, ...mapSnapshot(r) };
    case Op.MIGRATE:
      return {
        op,
        id,
        epoch: r.uint(2, 'epoch', Number.MAX_SAFE_INTEGER),
        target: nonEmpty(r, r.string(3, 'target'), 'target'),
        host: nonEmpty(r, r.string(4, 'host'), 'host'),
        port: r.uint(5, 'port', 65535),
        ranges: r.ranges(6),
      };
    case Op.MIGRATE_PUT: {
      const count = r.batchCount(3, 4);
      const entries = new Array<MigratedEntry>(count);
      // The optional trailing expiry times: their count (all entries), then one per entry.
      const expiries = 4 + count * 4;
      const expiryCount = r.optionalUint(expiries, 'expiries');
      if (expiryCount !== undefined && (expiryCount !== count || r.fieldCount < expiries + 1 + count)) {
        throw r.fail(
          ErrorCode.MALFORMED_FRAME,
          `MIGRATE_PUT lists ${expiryCount} expiry times for ${count} entries`,
        );
      }
      for (let i = 0; i < count; i++) {
        const at = 4 + i * 4;
        const expireAt =
          expiryCount === undefined ? 0 : r.uint(expiries + 1 + i, 'expireAt', Number.MAX_SAFE_INTEGER);
        entries[i] = {
          key: r.key(at),
          value: r.value(at + 1),
          writeEpoch: r.uint(at + 2, 'writeEpoch'),
          version: r.uint(at + 3, 'version', Number.MAX_SAFE_INTEGER),
          ...(expireAt > 0 ? { expireAt } : {}),
        };
      }
      return { op, id, epoch: r.uint(2, 'epoch', Number.MAX_SAFE_INTEGER), entries };
    }
    case Op.PURGE: {
      const ranges = r.ranges(3);
      const staleUpTo = r.optionalUint(4 + ranges.length * 2, 'staleUpTo', Number.MAX_SAFE_INTEGER);
      const epoch = r.uint(2, 'epoch', Number.MAX_SAFE_INTEGER);
      return staleUpTo === undefined ? { op, id, epoch, ranges } : { op, id, epoch, ranges, staleUpTo };
    }
    case Op.DIGEST:
      return { op, id, below: r.uint(2, 'below', Number.MAX_SAFE_INTEGER), ranges: r.ranges(3) };
    case Op.REPLICATE: {
      const count = r.batchCount(4, 5);
      const entries = new Array<ReplicatedEntry>(count);
      for (let i = 0; i < count; i++) {
        const at = 5 + i * 5;
        const value = r.nullableValue(at + 1);
        const expireAt = r.uint(at + 4, 'expireAt', Number.MAX_SAFE_INTEGER);
        if (value === null && expireAt !== 0) {
          throw r.fail(ErrorCode.MALFORMED_FRAME, 'REPLICATE: a delete has no expiry time');
        }
        entries[i] = {
          key: r.key(at),
          value,
          writeEpoch: r.uint(at + 2, 'writeEpoch'),
          version: r.uint(at + 3, 'version', Number.MAX_SAFE_INTEGER),
          expireAt,
        };
      }
      return {
        op,
        id,
        epoch: r.uint(2, 'epoch', Number.MAX_SAFE_INTEGER),
        batch: r.uint(3, 'batch', Number.MAX_SAFE_INTEGER),
        entries,
      };
    }
    case Op.CLUSTER_MAP:
      return { op, id, subscribe: r.flag(2) === true };
    case Op.MAP_PUSH:
      return { op, id, ...mapSnapshot(r) };
    case Op.SET_WITH:
      return readSetWith(r);
    case Op.EXPIRE:
      return readExpire(r);
    case Op.TTL:
    case Op.PEXPIRETIME:
    case Op.GETDEL: {
      const key = r.key(2);
      const epoch = r.optionalUint(3, 'epoch');
      return epoch === undefined ? { op, id, key } : { op, id, key, epoch };
    }
    case Op.EXISTS: {
      const count = r.batchCount(2, 1);
      const keys = new Array<Uint8Array>(count);
      for (let i = 0; i < count; i++) keys[i] = r.key(3 + i);
      const epoch = r.optionalUint(3 + count, 'epoch');
      return epoch === undefined ? { op, id, keys } : { op, id, keys, epoch };
    }
    case Op.INCRBY: {
      const key = r.key(2);
      const delta = r.int64(3, 'delta');
      const epoch = r.optionalUint(4, 'epoch');
      return epoch === undefined ? { op, id, key, delta } : { op, id, key, delta, epoch };
    }
    case Op.SETRANGE: {
      const key = r.key(2);
      const value = r.value(3);
      // nil: append. An offset the value limit cannot hold is the owner's VALUE_TOO_LARGE, as Redis.
      const offset = r.optionalUint(4, 'offset');
      const epoch = r.optionalUint(5, 'epoch');
      return {
        op,
        id,
        key,
        value,
        ...(offset === undefined ? {} : { offset }),
        ...(epoch === undefined ? {} : { epoch }),
      };
    }
    case Op.INCRBYFLOAT: {
      const key = r.key(2);
      // Any bytes: the owner answers NOT_A_FLOAT for a text that is not a number, as Redis.
      const increment = r.bytes(3, 'increment');
      const epoch = r.optionalUint(4, 'epoch');
      return epoch === undefined ? { op, id, key, increment } : { op, id, key, increment, epoch };
    }
    case Op.SETBIT: {
      const key = r.key(2);
      // An offset past the value limit is the owner's VALUE_TOO_LARGE, as for SETRANGE.
      const offset = r.uint(3, 'offset');
      const bit = r.uint(4, 'bit');
      if (bit > 1) throw r.fail(ErrorCode.MALFORMED_FRAME, `field bit must be 0 or 1, got ${bit}`);
      const epoch = r.optionalUint(5, 'epoch');
      return epoch === undefined
        ? { op, id, key, offset, bit: bit as 0 | 1 }
        : { op, id, key, offset, bit: bit as 0 | 1, epoch };
    }
    case Op.READ_PART:
      return readReadPart(r);
    case Op.TRANSACT: {
      const key = r.key(2);
      const ifVersion = r.optionalUint(3, 'ifVersion', Number.MAX_SAFE_INTEGER);
      const count = r.batchCount(4, 1);
      const steps = new Array<TransactStep>(count);
      for (let i = 0; i < count; i++) steps[i] = r.step(5 + i);
      const epoch = r.optionalUint(5 + count, 'epoch');
      const watches = readWatches(r, 6 + count);
      return {
        op,
        id,
        key,
        steps,
        ...(ifVersion === undefined ? {} : { ifVersion }),
        ...(epoch === undefined ? {} : { epoch }),
        ...(watches === undefined ? {} : { watches }),
      };
    }
    case Op.PULL:
      return { op, id, key: r.key(2) };
    case Op.SCAN:
      return {
        op,
        id,
        cursor: r.uint(2, 'cursor', Number.MAX_SAFE_INTEGER),
        count: r.optionalUint(3, 'count', r.limits.maxBatchKeys),
        match: r.optionalPattern(4),
        epoch: r.optionalUint(5, 'epoch', Number.MAX_SAFE_INTEGER),
        moving: r.flag(6),
      };
    case Op.DBSIZE:
    case Op.FLUSH:
      return { op, id };
    case Op.GET_VERSIONED: {
      const key = r.key(2);
      const epoch = r.optionalUint(3, 'epoch');
      return epoch === undefined ? { op, id, key } : { op, id, key, epoch };
    }
    case Op.DEL_VERSIONED: {
      const key = r.key(2);
      const ifVersion = r.optionalUint(3, 'ifVersion', Number.MAX_SAFE_INTEGER);
      const epoch = r.optionalUint(4, 'epoch');
      return {
        op,
        id,
        key,
        ...(ifVersion === undefined ? {} : { ifVersion }),
        ...(epoch === undefined ? {} : { epoch }),
      };
    }
    default:
      throw r.fail(ErrorCode.UNKNOWN_OP, `unknown op ${op}`);
  }
}

function readSetWith(r: FieldReader): SetWithRequest {
  const key = r.key(2);
  const value = r.value(3);
  const flags = r.uint(4, 'flags', SET_FLAGS_KNOWN);
  const ms = r.safeInt(5, 'ms');
  const epoch = r.optionalUint(6, 'epoch');
  if ((flags & SetFlag.NX) !== 0 && (flags & SetFlag.XX) !== 0) {
    throw r.fail(ErrorCode.INVALID_ARGUMENT, 'NX and XX are exclusive');
  }
  const expiryBits = flags & (SetFlag.KEEPTTL | SetFlag.IN | SetFlag.AT);
  if (expiryBits !== 0 && (expiryBits & (expiryBits - 1)) !== 0) {
    throw r.fail(ErrorCode.INVALID_ARGUMENT, 'KEEPTTL, a relative and an absolute expiry are exclusive');
  }
  let expiry: SetExpiry | undefined;
  if (expiryBits === SetFlag.KEEPTTL) expiry = { kind: 'keep' };
  else if (expiryBits !== 0) {
    if (ms <= 0) throw r.fail(ErrorCode.INVALID_ARGUMENT, "invalid expire time in 'set' command");
    expiry = { kind: expiryBits === SetFlag.IN ? 'in' : 'at', ms };
  }
  const condition = (flags & SetFlag.NX) !== 0 ? 'nx' : (flags & SetFlag.XX) !== 0 ? 'xx' : undefined;
  const ifVersion =
    (flags & SetFlag.IF_VERSION) !== 0 ? r.uint(7, 'ifVersion', Number.MAX_SAFE_INTEGER) : undefined;
  const withVersion = (flags & SetFlag.VERSION) !== 0 ? true : undefined;
  if ((ifVersion !== undefined || withVersion) && ((flags & SetFlag.GET) !== 0 || condition !== undefined)) {
    throw r.fail(ErrorCode.INVALID_ARGUMENT, 'a version condition or answer excludes NX, XX and GET');
  }
  return {
    op: Op.SET_WITH,
    id: r.id,
    key,
    value,
    condition,
    get: (flags & SetFlag.GET) !== 0 ? true : undefined,
    expiry,
    epoch,
    ...(ifVersion === undefined ? {} : { ifVersion }),
    ...(withVersion === undefined ? {} : { withVersion }),
  };
}

function readExpire(r: FieldReader): ExpireRequest {
  const key = r.key(2);
  const mode = EXPIRE_MODES[r.uint(3, 'mode', EXPIRE_MODES.length - 1)]!;
  const ms = r.safeInt(4, 'ms');
  const condition = EXPIRE_CONDITIONS[r.uint(5, 'condition', EXPIRE_CONDITIONS.length - 1)];
  const epoch = r.optionalUint(6, 'epoch');
  const get = r.flag(7);
  return get === true
    ? { op: Op.EXPIRE, id: r.id, key, mode, ms, condition, epoch, get }
    : { op: Op.EXPIRE, id: r.id, key, mode, ms, condition, epoch };
}

function readResponse(op: number, r: FieldReader): Response {
  const id = r.id;
  switch (op) {
    case Op.OK: {
      // A heartbeat's answer may carry a lease (optional trailing field).
      const lease = r.optionalUint(2, 'lease', Number.MAX_SAFE_INTEGER);
      return lease === undefined ? { op, id } : { op, id, lease };
    }
    case Op.VALUE: {
      const value = r.nullableValue(2);
      return r.flag(3) ? { op, id, value, deleted: true } : { op, id, value };
    }
    case Op.VALUES: {
      const count = r.batchCount(2, 1);
      const values = new Array<Uint8Array | null>(count);
      for (let i = 0; i < count; i++) values[i] = r.nullableValue(3 + i);
      return { op, id, values };
    }
    case Op.COUNT: {
      const count = r.uint(2, 'count', Number.MAX_SAFE_INTEGER);
      const bytes = r.optionalUint(3, 'bytes', Number.MAX_SAFE_INTEGER);
      return bytes === undefined ? { op, id, count } : { op, id, count, bytes };
    }
    case Op.INTEGER:
      return { op, id, value: r.int64(2, 'value') };
    case Op.VERSIONED:
      return { op, id, value: r.nullableValue(2), version: r.uint(3, 'version', Number.MAX_SAFE_INTEGER) };
    case Op.VERSION:
      return {
        op,
        id,
        written: r.uint(2, 'written', 1) === 1,
        version: r.uint(3, 'version', Number.MAX_SAFE_INTEGER),
      };
    case Op.REPLICATED: {
      const batch = r.uint(2, 'batch', Number.MAX_SAFE_INTEGER);
      return r.flag(3) ? { op, id, batch, full: true } : { op, id, batch };
    }
    case Op.ENTRY: {
      if (r.at(2, 'value') === null) return { op, id, entry: null };
      const expireAt = r.uint(5, 'expireAt', Number.MAX_SAFE_INTEGER);
      return {
        op,
        id,
        entry: {
          value: r.value(2),
          writeEpoch: r.uint(3, 'writeEpoch'),
          version: r.uint(4, 'version', Number.MAX_SAFE_INTEGER),
          ...(expireAt > 0 ? { expireAt } : {}),
        },
      };
    }
    case Op.STATS_RESULT:
      return { op, id, stats: r.stats(2) };
    case Op.HELLO_OK:
      return {
        op,
        id,
        version: r.uint(2, 'version'),
        role: r.role(3),
        serverId: r.string(4, 'serverId'),
        challenge:
          r.optionalBytes(5, 'nonce') === undefined
            ? undefined
            : { nonce: r.bytes(5, 'nonce'), salt: r.bytes(6, 'salt'), kdf: r.string(7, 'kdf') },
      };
    case Op.AUTH_OK:
      return { op, id, signature: r.bytes(2, 'signature') };
    case Op.ERROR:
      return { op, id, code: r.string(2, 'code'), message: r.string(3, 'message') };
    case Op.MAP:
      return { op, id, ...mapSnapshot(r) };
    case Op.KEYS: {
      const count = r.batchCount(3, 1);
      const keys = new Array<Uint8Array>(count);
      for (let i = 0; i < count; i++) keys[i] = r.key(4 + i);
      return { op, id, cursor: r.uint(2, 'cursor', Number.MAX_SAFE_INTEGER), keys };
    }
    case Op.RESULTS: {
      if (r.at(2, 'count') === null) return { op, id, results: null };
      const count = r.batchCount(2, 1);
      const results = new Array<Response>(count);
      for (let i = 0; i < count; i++) results[i] = r.stepResult(3 + i);
      return { op, id, results };
    }
    case Op.MOVED:
      return { op, id, ...redirectTarget(r) };
    case Op.ASK: {
      const count = r.optionalUint(6, 'count', 1);
      const ask = { op, id, ...redirectTarget(r) };
      return count === undefined ? ask : { ...ask, count };
    }
    default:
      throw r.fail(ErrorCode.UNKNOWN_OP, `unknown op ${op}`);
  }
}

function utf8ByteLength(value: string): number {
  return Buffer.byteLength(value, 'utf8');
}

function nonEmpty(r: FieldReader, value: string, name: string): string {
  if (value.length === 0) throw r.fail(ErrorCode.INVALID_ARGUMENT, `${name} must not be empty`);
  return value;
}

function positive(r: FieldReader, value: number): number {
  if (value <= 0) throw r.fail(ErrorCode.INVALID_ARGUMENT, 'weight must be positive');
  return value;
}

/** The fields of MAP and MAP_PUSH (RING's layout after the id). */
/** Where a MOVED or ASK sends the request: the node's epoch, the owner's id and address. */
function redirectTarget(r: FieldReader): { epoch: number; nodeId: string; host: string; port: number } {
  return {
    epoch: r.uint(2, 'epoch', Number.MAX_SAFE_INTEGER),
    nodeId: nonEmpty(r, r.string(3, 'nodeId'), 'nodeId'),
    host: r.string(4, 'host'),
    port: r.uint(5, 'port', 65535),
  };
}

/**
 * The optional trailing lists of RING, MAP and MAP_PUSH after the members: their addresses (count,
 * then pairs; nil when not every member has one), then the replication factor and each member's
 * replication state (count, then names), present when the message carries a factor (nil or
 * absent factor: 1, every member up), then `1` when a ring change switches (`switching`) or `2`
 * when its next ring holds the changed chains frozen (`holding`) (nil: neither), then, when a
 * member's weight changes, each member's previous weight (count, then weights; absent or nil:
 * no weight change).
 */
function mapTrailer(message: RingLayout): Field[] {
  const { nodes } = message;
  const addressed = nodes.every((node) => node.host !== undefined && node.port !== undefined);
  const addresses: Field[] = addressed
    ? [nodes.length, ...nodes.flatMap((node) => [node.host!, node.port!])]
    : [];
  const hashTag = message.hashTag === undefined || message.hashTag === '' ? undefined : message.hashTag;
  if (message.replicationFactor === undefined && hashTag === undefined) return addresses;
  const flag = message.switching === true ? RING_SWITCHING : message.holding === true ? RING_HOLDING : null;
  // A weight change: every member's previous weight (its weight when it does not change).
  const weights = nodes.some((node) => node.previousWeight !== undefined);
  return [
    ...(addressed ? addresses : [null]),
    // Absent means factor 1 with every member up: written out when the hash tag follows.
    message.replicationFactor ?? 1,
    nodes.length,
    ...nodes.map((node) => node.replicaState ?? 'up'),
    // Replication step 5: a ring change switching (optional trailing `1`), or its next ring
    // holding the changed chains frozen (`2`); nil when none and previous weights follow.
    ...(flag !== null || weights || hashTag !== undefined ? [flag] : []),
    ...(weights
      ? [nodes.length, ...nodes.map((node) => node.previousWeight ?? node.weight)]
      : hashTag !== undefined
        ? [null]
        : []),
    ...(hashTag !== undefined ? [hashTag] : []),
  ];
}

/** RING's optional trailing ring-change flag: the change switches. */
const RING_SWITCHING = 1;
/** RING's optional trailing ring-change flag: the next ring, the changed chains still frozen. */
const RING_HOLDING = 2;

/** What RING, MAP_PUSH and MAP share after the id (only RING sets `switching` or `holding`). */
type RingLayout = ClusterMapSnapshot & {
  readonly switching?: boolean | undefined;
  readonly holding?: boolean | undefined;
};

/** The ring layout RING, MAP_PUSH and MAP share after the id. */
function mapSnapshot(r: FieldReader): RingLayout {
  const members = r.members(6, true);
  const snapshot = {
    epoch: r.uint(2, 'epoch', Number.MAX_SAFE_INTEGER),
    generation: r.uint(3, 'generation', Number.MAX_SAFE_INTEGER),
    algorithm: nonEmpty(r, r.string(4, 'algorithm'), 'algorithm'),
    vnodes: r.uint(5, 'vnodes'),
    nodes: members,
  };
  // Past the members and their optional address list (nil or a count and pairs).
  const addressAt = 7 + members.length * 2;
  const replicationAt =
    addressAt + 1 + (r.optionalUint(addressAt, 'addresses') === undefined ? 0 : members.length * 2);
  const replicationFactor = r.optionalUint(replicationAt, 'replicationFactor', 255);
  if (replicationFactor === undefined) return snapshot;
  if (replicationFactor === 0)
    throw r.fail(ErrorCode.MALFORMED_FRAME, 'replicationFactor must be at least 1');
  const count = r.batchCount(replicationAt + 1, 1);
  if (count !== members.length) {
    throw r.fail(
      ErrorCode.MALFORMED_FRAME,
      `ring lists ${count} replica states for ${members.length} members`,
    );
  }
  const nodes = members.map((member, i) => {
    const state = r.string(replicationAt + 2 + i, 'replicaState');
    if (!REPLICA_STATE_NAMES.has(state))
      throw r.fail(ErrorCode.MALFORMED_FRAME, `unknown replica state ${state}`);
    return { ...member, replicaState: state as ReplicaStateName };
  });
  const changeAt = replicationAt + 2 + count;
  const change = r.optionalUint(changeAt, 'switching', RING_HOLDING);
  const weightsAt = changeAt + 1;
  const hashTagAt = weightsAt + 1 + (r.optionalUint(weightsAt, 'previousWeights') ?? 0);
  const hashTag = r.optionalString(hashTagAt, 'hashTag');
  if (hashTag !== undefined && hashTag.length !== 2)
    throw r.fail(ErrorCode.MALFORMED_FRAME, 'hashTag must be two characters');
  return {
    ...snapshot,
    nodes: previousWeights(r, weightsAt, nodes),
    replicationFactor,
    ...(change === RING_SWITCHING ? { switching: true } : change === RING_HOLDING ? { holding: true } : {}),
    ...(hashTag === undefined ? {} : { hashTag }),
  };
}

/**
 * The optional trailing previous weights of RING, MAP and MAP_PUSH at `index` (a count, then one
 * weight per member): each member whose previous weight differs gets it as `previousWeight`.
 */
function previousWeights<T extends RingMember>(r: FieldReader, index: number, members: T[]): T[] {
  const count = r.optionalUint(index, 'previousWeights');
  if (count === undefined) return members;
  if (count !== members.length)
    throw r.fail(
      ErrorCode.MALFORMED_FRAME,
      `ring lists ${count} previous weights for ${members.length} members`,
    );
  r.batchCount(index, 1);
  return members.map((member, i) => {
    const weight = positive(r, r.finite(index + 1 + i, 'previousWeight'));
    return weight === member.weight ? member : { ...member, previousWeight: weight };
  });
}

/** The optional storage condition a HEARTBEAT carries after its key count (absent from older nodes). */
function heartbeatStorage(
  r: FieldReader,
): Pick<HeartbeatRequest, 'degraded' | 'usedBytes' | 'availableBytes'> {
  const degraded = r.optionalString(4, 'degraded');
  if (degraded === undefined) return {};
  return {
    degraded,
    usedBytes: r.optionalUint(5, 'usedBytes', Number.MAX_SAFE_INTEGER) ?? 0,
    availableBytes: r.optionalUint(6, 'availableBytes', Number.MAX_SAFE_INTEGER) ?? 0,
  };
}
