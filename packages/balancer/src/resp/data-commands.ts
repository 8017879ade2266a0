// The module's `performance`: the global one is an accessor in Node 20, ~25 ns per request more.
import { performance } from 'node:perf_hooks';
import {
  DstoreError,
  ErrorCode,
  type ExpireCondition,
  keyDenied,
  keyspaceDenied,
  Op,
  type ReadPartRequest,
  type Response,
  type SetExpiry,
  type UserGrant,
} from '@dstore/protocol';
import { type BitUnit, readInParts, stacklessError, sumInChunks } from '@dstore/protocol/internal';
import type { ClientShare } from '../link-share.js';
import type { Replier } from '../router.js';
import { integerOf, isWord, textOf, wrongArity } from './arguments.js';
import {
  type DataCommand,
  type DataCommandHandler,
  lastKeyIndex,
  type RespCommand,
} from './command-table.js';
import type { RespReplyTarget } from './connection.js';
import type { RespWriter } from './encoder.js';
import { respErrorLine } from './errors.js';
import type { RespServices } from './services.js';

/**
 * Refuses the command (answering it) when a key is over the size limit or the user may not touch
 * it: `-ERR KEY_TOO_LARGE: ...`, or `-NOPERM ...` as Redis 6 ACLs answer. False when refused.
 */
export function keysAllowed(
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
  keys: RespCommand['keys'],
  write: boolean,
): boolean {
  const step = keys[2];
  const last = lastKeyIndex(keys, args.length);
  const identity = connection.identity;
  const grant = identity?.kind === 'user' && identity.grant.limited ? identity.grant : undefined;
  const maxKeyBytes = services.limits.maxKeyBytes;
  for (let index = keys[0]; index <= last; index += step) {
    const key = args[index]!;
    if (key.length > maxKeyBytes) {
      connection.replyError(
        seq,
        respErrorLine(ErrorCode.KEY_TOO_LARGE, `key of ${key.length} bytes, limit ${maxKeyBytes}`),
      );
      return false;
    }
    const denial = grant === undefined ? undefined : keyDenied(grant, key, write);
    if (denial !== undefined) {
      connection.replyError(seq, `NOPERM ${denial}`);
      return false;
    }
  }
  return true;
}

/** Key positions (Redis's first, last, step): one key; every argument; key-value pairs. */
const SINGLE_KEY = [1, 1, 1] as const;
const EVERY_ARGUMENT = [1, -1, 1] as const;
export const PAIRS = [1, -1, 2] as const;

/** Refuses (answering) a command with more keys than one batch may hold. False when refused. */
export function batchAllowed(
  connection: RespReplyTarget,
  seq: number,
  services: RespServices,
  keys: number,
): boolean {
  const max = services.limits.maxBatchKeys;
  if (keys <= max) return true;
  connection.replyError(seq, respErrorLine(ErrorCode.BATCH_TOO_LARGE, `${keys} keys, limit ${max}`));
  return false;
}

function get(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, false)) return;
  services.router.forwardToOwner(
    { op: Op.GET, id: seq, key: args[1]! },
    connection.routerTarget,
    performance.now(),
  );
}

/** A safe-integer decimal argument (times in EX/PX/EXPIRE), or undefined. */
function safeIntegerOf(bytes: Uint8Array): number | undefined {
  const value = int64Of(bytes);
  return value === undefined ||
    value > BigInt(Number.MAX_SAFE_INTEGER) ||
    value < -BigInt(Number.MAX_SAFE_INTEGER)
    ? undefined
    : Number(value);
}

/** SET's options, as the native SET_WITH takes them; a string is the error line. */
interface SetOptions {
  readonly condition: 'nx' | 'xx' | undefined;
  readonly get: boolean;
  readonly expiry: SetExpiry | undefined;
}

/**
 * Parses SET's option words (EX, PX, EXAT, PXAT, KEEPTTL, NX, XX, GET) as Redis does: two
 * different expiry options are a syntax error, the same one repeated takes the last time, and
 * every word is checked before the time is read.
 */
function setOptionsOf(args: readonly Uint8Array[]): SetOptions | string {
  let condition: 'nx' | 'xx' | undefined;
  let get = false;
  let chosen: ChosenExpiry | undefined;
  for (let index = 3; index < args.length; index++) {
    const word = args[index]!;
    if (isWord(word, 'nx') || isWord(word, 'xx')) {
      const next = isWord(word, 'nx') ? 'nx' : 'xx';
      if (condition !== undefined && condition !== next) return 'ERR syntax error';
      condition = next;
    } else if (isWord(word, 'get')) {
      get = true;
    } else {
      const next = chooseExpiry(args, index, 'keepttl', chosen);
      if (next === undefined) return 'ERR syntax error';
      chosen = next;
      if (next.time !== undefined) index++;
    }
  }
  if (chosen === undefined) return { condition, get, expiry: undefined };
  if (chosen.option.mode === 'persist') return { condition, get, expiry: { kind: 'keep' } };
  const ms = expiryMsOf(chosen, 'set');
  return typeof ms === 'string' ? ms : { condition, get, expiry: { kind: chosen.option.mode, ms } };
}

/**
 * The answer of a SET with options: the native COUNT (1 written, 0 not) becomes `+OK` or null,
 * and with GET the previous value is the answer, as Redis's SET.
 */
class SetAnswer implements Replier {
  readonly linkShare: ClientShare;

  constructor(
    private readonly connection: RespReplyTarget,
    private readonly seq: number,
  ) {
    this.linkShare = connection.routerTarget.linkShare;
  }

  reply(response: Response): void {
    const writer = this.connection.beginReply(this.seq);
    if (response.op === Op.VALUE) writer.bulk(response.value);
    else if (response.op === Op.COUNT && response.count === 1) writer.ok();
    else writer.nil();
    this.connection.endReply(this.seq);
  }

  replyError(_id: number, code: string, message: string): void {
    this.connection.replyError(this.seq, respErrorLine(code, message));
  }
}

function set(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  const options = args.length > 3 ? setOptionsOf(args) : undefined;
  if (typeof options === 'string') {
    connection.replyError(seq, options);
    return;
  }
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  if (options === undefined) {
    services.router.forwardToOwner(
      { op: Op.SET, id: seq, key: args[1]!, value: args[2]! },
      connection.routerTarget,
      performance.now(),
    );
    return;
  }
  services.router.forwardKeyed(
    { op: Op.SET_WITH, id: seq, key: args[1]!, value: args[2]!, ...options },
    new SetAnswer(connection, seq),
    performance.now(),
  );
}

/** SETNX key value: SET NX answered 1 (written) or 0, the native COUNT as is. */
function setnx(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.SET_WITH, id: seq, key: args[1]!, value: args[2]!, condition: 'nx' },
    connection.routerTarget,
    performance.now(),
  );
}

/**
 * TTL and PTTL, EXPIRETIME and PEXPIRETIME: the milliseconds (or -1 / -2) of the native TTL or
 * PEXPIRETIME, in seconds for TTL and EXPIRETIME as Redis rounds them (to the nearest second).
 */
class TtlAnswer implements Replier {
  readonly linkShare: ClientShare;

  constructor(
    private readonly connection: RespReplyTarget,
    private readonly seq: number,
    private readonly inSeconds: boolean,
  ) {
    this.linkShare = connection.routerTarget.linkShare;
  }

  reply(response: Response): void {
    const ms = response.op === Op.INTEGER ? response.value : -2n;
    const writer = this.connection.beginReply(this.seq);
    writer.integer(this.inSeconds && ms >= 0n ? (ms + 500n) / 1000n : ms);
    this.connection.endReply(this.seq);
  }

  replyError(_id: number, code: string, message: string): void {
    this.connection.replyError(this.seq, respErrorLine(code, message));
  }
}

/**
 * TTL and PTTL (the time left, the native TTL), EXPIRETIME and PEXPIRETIME (`absolute`: the
 * expiry time itself, the native PEXPIRETIME).
 */
function ttl(inSeconds: boolean, absolute = false): DataCommandHandler {
  return (connection, args, seq, services) => {
    if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, false)) return;
    services.router.forwardKeyed(
      { op: absolute ? Op.PEXPIRETIME : Op.TTL, id: seq, key: args[1]! },
      new TtlAnswer(connection, seq, inSeconds),
      performance.now(),
    );
  };
}

/** EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT [NX|XX|GT|LT] and PERSIST: the native EXPIRE, answered 1 or 0. */
function expire(mode: 'in' | 'at' | 'persist', unit: number): DataCommandHandler {
  return (connection, args, seq, services) => {
    let ms = 0;
    let condition: ExpireCondition | undefined;
    if (mode !== 'persist') {
      // As Redis: the options are checked before the time.
      const parsed = expireCondition(args.slice(3));
      if (typeof parsed === 'object') {
        connection.replyError(seq, parsed.error);
        return;
      }
      condition = parsed;
      const amount = int64Of(args[2]!);
      if (amount === undefined) {
        connection.replyError(seq, 'ERR value is not an integer or out of range');
        return;
      }
      const time = expireTimeMs(amount, unit);
      if (time === undefined) {
        connection.replyError(seq, `ERR invalid expire time in '${textOf(args[0]!).toLowerCase()}' command`);
        return;
      }
      ms = time;
    }
    if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
    services.router.forwardKeyed(
      { op: Op.EXPIRE, id: seq, key: args[1]!, mode, ms, condition },
      connection.routerTarget,
      performance.now(),
    );
  };
}

/**
 * EXPIRE's time in ms from its 64-bit argument, or undefined for Redis's "invalid expire time":
 * seconds whose ms overflow 64 bits, and (dstore's limit) a time past 2^53 ms, ~285,000 years,
 * which a JavaScript number cannot hold exactly. Any earlier time is in the past: clamped.
 */
function expireTimeMs(amount: bigint, unit: number): number | undefined {
  if (unit === 1000 && (amount > INT64_MAX / 1000n || amount < INT64_MIN / 1000n)) return undefined;
  const ms = Number(amount) * unit;
  if (ms > Number.MAX_SAFE_INTEGER) return undefined;
  return Math.max(ms, -Number.MAX_SAFE_INTEGER);
}

/**
 * EXPIRE's NX / XX / GT / LT words (any order, repeats allowed) as the native condition, or
 * Redis's error: NX with any other, or GT with LT. XX GT is GT (a key without expiry is never
 * later than a time), XX LT the native `xx-lt`.
 */
function expireCondition(words: readonly Uint8Array[]): ExpireCondition | undefined | { error: string } {
  const seen = new Set<'nx' | 'xx' | 'gt' | 'lt'>();
  for (const word of words) {
    const option = (['nx', 'xx', 'gt', 'lt'] as const).find((name) => isWord(word, name));
    if (option === undefined) return { error: `ERR Unsupported option ${textOf(word).slice(0, 128)}` };
    seen.add(option);
  }
  if (seen.has('nx') && seen.size > 1) {
    return { error: 'ERR NX and XX, GT or LT options at the same time are not compatible' };
  }
  if (seen.has('gt') && seen.has('lt')) {
    return { error: 'ERR GT and LT options at the same time are not compatible' };
  }
  if (seen.has('nx')) return 'nx';
  if (seen.has('gt')) return 'gt';
  if (seen.has('lt')) return seen.has('xx') ? 'xx-lt' : 'lt';
  return seen.has('xx') ? 'xx' : undefined;
}

/**
 * SET's and GETEX's expiry options: the native EXPIRE mode and the unit of its time argument.
 * The last takes none: SET's KEEPTTL, GETEX's PERSIST (`persist` for both: keep it, remove it).
 */
const EXPIRY_OPTIONS = [
  { word: 'ex', mode: 'in', unit: 1000 },
  { word: 'px', mode: 'in', unit: 1 },
  { word: 'exat', mode: 'at', unit: 1000 },
  { word: 'pxat', mode: 'at', unit: 1 },
  { word: 'persist', mode: 'persist', unit: 0 },
] as const;

/** One of {@link EXPIRY_OPTIONS}. */
type ExpiryOption = (typeof EXPIRY_OPTIONS)[number];

/** An expiry option of SET or GETEX and the bytes of its time (none for KEEPTTL / PERSIST). */
interface ChosenExpiry {
  readonly option: ExpiryOption;
  readonly time: Uint8Array | undefined;
}

/**
 * The expiry option at `args[index]` (its time at `index + 1`) as Redis takes it after `chosen`:
 * the same option again replaces the time; undefined (a syntax error) for another option, an
 * unknown word or a missing time.
 */
function chooseExpiry(
  args: readonly Uint8Array[],
  index: number,
  keepWord: 'keepttl' | 'persist',
  chosen: ChosenExpiry | undefined,
): ChosenExpiry | undefined {
  const option = expiryOptionOf(args[index]!, keepWord);
  if (option === undefined || (chosen !== undefined && chosen.option !== option)) return undefined;
  if (option.mode === 'persist') return { option, time: undefined };
  const time = args[index + 1];
  return time === undefined ? undefined : { option, time };
}

/**
 * The milliseconds of a timed expiry option (relative or absolute), or Redis's error line: a
 * 64-bit time past what a JavaScript number holds exactly (~285,000 years) is an invalid time.
 */
function expiryMsOf(chosen: ChosenExpiry, command: 'set' | 'getex'): number | string {
  const amount = int64Of(chosen.time!);
  if (amount === undefined) return 'ERR value is not an integer or out of range';
  const ms = Number(amount) * chosen.option.unit;
  if (amount <= 0n || !Number.isSafeInteger(ms)) return `ERR invalid expire time in '${command}' command`;
  return ms;
}

/** The expiry option `word` names (any case), `keepWord` naming the one without a time; or undefined. */
function expiryOptionOf(word: Uint8Array, keepWord: 'keepttl' | 'persist'): ExpiryOption | undefined {
  for (const option of EXPIRY_OPTIONS) {
    if (isWord(word, option.mode === 'persist' ? keepWord : option.word)) return option;
  }
  return undefined;
}

/**
 * GETEX key [EX seconds | PX ms | EXAT unix-seconds | PXAT unix-ms | PERSIST]: the value, and the
 * expiry changed in the same atomic step on the owner (the native EXPIRE with `get`). Without an
 * option it is a GET. A time already past deletes the key and answers its value, as Redis.
 */
function getex(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (args.length === 2) {
    get(connection, args, seq, services);
    return;
  }
  let chosen: ChosenExpiry | undefined;
  for (let index = 2; index < args.length; index++) {
    chosen = chooseExpiry(args, index, 'persist', chosen);
    if (chosen === undefined) {
      connection.replyError(seq, 'ERR syntax error');
      return;
    }
    if (chosen.time !== undefined) index++;
  }
  const { mode } = chosen!.option;
  const ms = mode === 'persist' ? 0 : expiryMsOf(chosen!, 'getex');
  if (typeof ms === 'string') {
    connection.replyError(seq, ms);
    return;
  }
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.EXPIRE, id: seq, key: args[1]!, mode, ms, get: true },
    connection.routerTarget,
    performance.now(),
  );
}

/**
 * One DEL per key of `keys`, each to its owner, in parallel, within `connection`'s share of the
 * node links: resolves once all are in with how many were deleted, or rejects with the first
 * error to arrive (after all are in).
 */
function deleteEach(
  connection: RespReplyTarget,
  keys: readonly Uint8Array[],
  services: RespServices,
  startMs: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let remaining = keys.length;
    let count = 0;
    let failure: DstoreError | undefined;
    const settle = (): void => {
      if (--remaining > 0) return;
      if (failure !== undefined) reject(failure);
      else resolve(count);
    };
    const replier: Replier = {
      reply: (response) => {
        count += countIn(response);
        settle();
      },
      replyError: (_id, code, message) => {
        failure ??= new DstoreError(code as ErrorCode, message);
        settle();
      },
      linkShare: connection.routerTarget.linkShare,
    };
    for (let index = 0; index < keys.length; index++) {
      services.router.forwardToOwner({ op: Op.DEL, id: index, key: keys[index]! }, replier, startMs);
    }
  });
}

/**
 * DEL / UNLINK: one key to its owner; keys of one hash tag in one atomic step (at most
 * `maxBatchKeys`: one frame); keys of several positions one DEL per key, any number of them, at
 * most `maxBatchKeys` in flight at a time (`redis-cli --scan | xargs redis-cli del` sends thousands).
 */
function del(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, EVERY_ARGUMENT, true)) return;
  const startMs = performance.now();
  if (args.length === 2) {
    services.router.forwardToOwner({ op: Op.DEL, id: seq, key: args[1]! }, connection.routerTarget, startMs);
    return;
  }
  const keys = args.slice(1);
  if (onePosition(services, keys)) {
    if (!batchAllowed(connection, seq, services, keys.length)) return;
    // Keys of one hash tag: one atomic step on their owner, replicated as one unit, as Redis
    // Cluster's DEL within a slot (a reader never sees some of them deleted and not the others).
    services.router.forwardKeyed(
      { op: Op.TRANSACT, id: seq, key: keys[0]!, steps: keys.map((key) => ({ op: Op.DEL_VERSIONED, key })) },
      new DeletedInResults(connection, seq),
      startMs,
    );
    return;
  }
  answerCount(
    connection,
    seq,
    sumInChunks(keys, services.limits.maxBatchKeys, (chunk) =>
      deleteEach(connection, chunk, services, startMs),
    ),
  );
}

/**
 * One request of `connection` through the router (within its share of the node links) as a
 * promise: its answer, or its error as a DstoreError.
 */
function routed(connection: RespReplyTarget, send: (replier: Replier) => void): Promise<Response> {
  return new Promise((resolve, reject) =>
    send({
      reply: resolve,
      // Stackless: under overload every refused part of an MGET comes through here.
      replyError: (_id, code, message) => reject(stacklessError(code, message)),
      linkShare: connection.routerTarget.linkShare,
    }),
  );
}

/** A COUNT answer's count (0 for any other answer). */
function countIn(response: Response): number {
  return response.op === Op.COUNT ? response.count : 0;
}

/** Answers `seq` with the integer `total` resolves to, or with its error. */
function answerCount(connection: RespReplyTarget, seq: number, total: Promise<number>): void {
  total.then(
    (count) => connection.routerTarget.reply({ op: Op.COUNT, id: seq, count }),
    (error: unknown) => answerFailure(connection, seq, error),
  );
}

/** Answers `seq` with a failure: a DstoreError's code and message, anything else as INTERNAL. */
function answerFailure(connection: RespReplyTarget, seq: number, error: unknown): void {
  if (error instanceof DstoreError) connection.routerTarget.replyError(seq, error.code, error.message);
  else connection.replyError(seq, `ERR INTERNAL: ${String(error)}`);
}

/** Whether every key of `keys` has the first one's ring position (one hash tag). */
export function onePosition(services: RespServices, keys: readonly Uint8Array[]): boolean {
  const ring = services.ring();
  const position = ring.position(keys[0]!);
  for (let i = 1; i < keys.length; i++) if (ring.position(keys[i]!) !== position) return false;
  return true;
}

/** A DEL of keys of one hash tag answered from its TRANSACT's RESULTS: how many were deleted. */
class DeletedInResults implements Replier {
  readonly linkShare: ClientShare;

  constructor(
    private readonly connection: RespReplyTarget,
    private readonly seq: number,
  ) {
    this.linkShare = connection.routerTarget.linkShare;
  }

  reply(response: Response): void {
    if (response.op !== Op.RESULTS || response.results === null) {
      this.connection.replyError(
        this.seq,
        respErrorLine(ErrorCode.INTERNAL, `DEL answered with op ${response.op}`),
      );
      return;
    }
    let count = 0;
    for (const result of response.results) if (result.op === Op.VERSION && result.written) count++;
    this.connection.beginReply(this.seq).integer(count);
    this.connection.endReply(this.seq);
  }

  replyError(_id: number, code: string, message: string): void {
    this.connection.replyError(this.seq, respErrorLine(code, message));
  }
}

/**
 * MGET key [key ...]: the values in order, however large together: a part of the keys whose
 * values pass one frame (1 MiB from one node) is read again in halves (`readInParts`), up to the
 * connection's output bound (`maxAnswerBytes`, past it `FRAME_TOO_LARGE`). A read: halves may be
 * read one after the other, as Redis Cluster clients split an MGET per slot.
 */
function mget(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, EVERY_ARGUMENT, false)) return;
  const startMs = performance.now();
  // Every read after the first (the halves of an answer past one frame, the batches of many keys)
  // waits for the connection's turn to assemble a large answer (see LargeAnswerTurns).
  const turns = connection.largeAnswers;
  let reads = 0;
  let turnHeld = false;
  const read = async (keys: readonly Uint8Array[]): Promise<readonly (Uint8Array | null)[]> => {
    if (turns !== undefined && reads++ > 0) {
      if (!turnHeld) {
        await turns.take(seq);
        turnHeld = true;
      } else if (turns.closed) {
        // The client left: the parts not fetched yet are not fetched.
        throw stacklessError(ErrorCode.CONNECTION_CLOSED, 'the client connection closed');
      }
    }
    const response = await routed(connection, (replier) =>
      services.router.forwardMGet({ op: Op.MGET, id: seq, keys: keys as Uint8Array[] }, replier, startMs),
    );
    if (response.op !== Op.VALUES) {
      throw new DstoreError(ErrorCode.INTERNAL, `MGET answered with op ${response.op}`);
    }
    if (turnHeld) {
      let bytes = 0;
      for (const value of response.values) bytes += value?.length ?? 0;
      turns!.add(bytes);
    }
    return response.values;
  };
  readInParts(args.slice(1), read, {
    sizeOf: (value) => value?.length ?? 0,
    maxBytes: services.maxAnswerBytes,
    maxItems: services.limits.maxBatchKeys,
  }).then(
    (values) => {
      connection.routerTarget.reply({ op: Op.VALUES, id: seq, values });
      // After the answer is written: the next turn counts it as output.
      if (turnHeld) turns!.release();
    },
    (error: unknown) => {
      answerFailure(connection, seq, error);
      if (turnHeld) turns!.release();
    },
  );
}

function mset(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (args.length % 2 === 0) {
    connection.replyError(seq, wrongArity('mset'));
    return;
  }
  if (!keysAllowed(connection, args, seq, services, PAIRS, true)) return;
  if (!batchAllowed(connection, seq, services, (args.length - 1) / 2)) return;
  const entries = new Array<{ key: Uint8Array; value: Uint8Array }>((args.length - 1) / 2);
  for (let index = 1; index < args.length; index += 2) {
    entries[(index - 1) / 2] = { key: args[index]!, value: args[index + 1]! };
  }
  services.router.forwardMSet({ op: Op.MSET, id: seq, entries }, connection.routerTarget, performance.now());
}

/**
 * EXISTS / TOUCH key [key ...]: how many of the keys hold a value (a key named twice counts twice,
 * as Redis); any number of keys, `maxBatchKeys` at a time.
 */
function exists(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, EVERY_ARGUMENT, false)) return;
  const startMs = performance.now();
  const keys = args.slice(1);
  if (keys.length <= services.limits.maxBatchKeys) {
    services.router.forwardExists({ op: Op.EXISTS, id: seq, keys }, connection.routerTarget, startMs);
    return;
  }
  answerCount(
    connection,
    seq,
    sumInChunks(keys, services.limits.maxBatchKeys, async (chunk) =>
      countIn(
        await routed(connection, (replier) =>
          services.router.forwardExists(
            { op: Op.EXISTS, id: seq, keys: chunk as Uint8Array[] },
            replier,
            startMs,
          ),
        ),
      ),
    ),
  );
}

/** GETDEL key: the value, deleted in the same step on its owner. */
function getdel(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.GETDEL, id: seq, key: args[1]! },
    connection.routerTarget,
    performance.now(),
  );
}

/**
 * SETEX key seconds value / PSETEX key milliseconds value: SET with EX / PX, as Redis answers them
 * (a time that is not a positive integer: `invalid expire time in 'setex' command`).
 */
function setWithTtl(name: 'setex' | 'psetex', unit: number): DataCommandHandler {
  return (connection, args, seq, services) => {
    const amount = safeIntegerOf(args[2]!);
    if (amount === undefined) {
      connection.replyError(seq, 'ERR value is not an integer or out of range');
      return;
    }
    if (amount <= 0 || !Number.isSafeInteger(amount * unit)) {
      connection.replyError(seq, `ERR invalid expire time in '${name}' command`);
      return;
    }
    if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
    services.router.forwardKeyed(
      {
        op: Op.SET_WITH,
        id: seq,
        key: args[1]!,
        value: args[3]!,
        expiry: { kind: 'in', ms: amount * unit },
      },
      new SetAnswer(connection, seq),
      performance.now(),
    );
  };
}

/**
 * A command answered from the node's answer by `write` (a native answer turned into Redis's
 * shape), and from its error as a Redis error line.
 */
class MappedAnswer implements Replier {
  readonly linkShare: ClientShare;

  constructor(
    private readonly connection: RespReplyTarget,
    private readonly seq: number,
    private readonly write: (writer: RespWriter, response: Response) => void,
  ) {
    this.linkShare = connection.routerTarget.linkShare;
  }

  reply(response: Response): void {
    this.write(this.connection.beginReply(this.seq), response);
    this.connection.endReply(this.seq);
  }

  replyError(_id: number, code: string, message: string): void {
    this.connection.replyError(this.seq, respErrorLine(code, message));
  }
}

/** TYPE key: `string` when the key holds a value (every value is a string), else `none`. */
function type(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, false)) return;
  services.router.forwardExists(
    { op: Op.EXISTS, id: seq, keys: [args[1]!] },
    new MappedAnswer(connection, seq, (writer, response) =>
      writer.simple(response.op === Op.COUNT && response.count > 0 ? 'string' : 'none'),
    ),
    performance.now(),
  );
}

/** STRLEN key: the value's length in bytes (0 when absent), computed on its owner (READ_PART). */
function strlen(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  readPart(connection, args, seq, services, { part: 'strlen' });
}

/**
 * GETRANGE key start end (and its old name SUBSTR): the bytes from `start` to `end`, both
 * included, negative ones from the end, cut on the key's owner (READ_PART; Redis's arithmetic:
 * `byteRange`), so only they travel.
 */
function getrange(
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
): void {
  // Any signed 64-bit index, as Redis: past ±2^53 they all cut a value the same way.
  const start = rangeIndexOf(args[2]!);
  const end = rangeIndexOf(args[3]!);
  if (start === undefined || end === undefined) {
    connection.replyError(seq, 'ERR value is not an integer or out of range');
    return;
  }
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, false)) return;
  services.router.forwardKeyed(
    { op: Op.READ_PART, id: seq, key: args[1]!, part: 'getrange', start, end },
    new MappedAnswer(connection, seq, (writer, response) =>
      writer.bulk(response.op === Op.VALUE ? (response.value ?? EMPTY) : EMPTY),
    ),
    performance.now(),
  );
}

const EMPTY = new Uint8Array(0);
/** The largest offset the native SETRANGE carries (uint32): any larger one is past every value limit. */
const MAX_NATIVE_OFFSET = 0xffff_ffff;

/** APPEND key value: one atomic SETRANGE at the value's end on the key's owner; the new length. */
function append(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.SETRANGE, id: seq, key: args[1]!, value: args[2]! },
    connection.routerTarget,
    performance.now(),
  );
}

/** SETRANGE key offset value: one atomic SETRANGE on the key's owner; the new length. */
function setrange(
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
): void {
  const offset = rangeIndexOf(args[2]!);
  if (offset === undefined) {
    connection.replyError(seq, 'ERR value is not an integer or out of range');
    return;
  }
  if (offset < 0) {
    connection.replyError(seq, 'ERR offset is out of range');
    return;
  }
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    // Past uint32 the owner refuses a value as it refuses any past its limit (an empty one writes
    // nothing and answers the length, as Redis), so the offset is capped rather than refused here.
    { op: Op.SETRANGE, id: seq, key: args[1]!, value: args[3]!, offset: Math.min(offset, MAX_NATIVE_OFFSET) },
    connection.routerTarget,
    performance.now(),
  );
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A signed 64-bit decimal argument, as Redis reads INCRBY's; undefined when it is not one. */
function int64Of(bytes: Uint8Array): bigint | undefined {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  if (!/^(0|-?[1-9][0-9]{0,18})$/.test(text)) return undefined;
  const value = BigInt(text);
  return value < INT64_MIN || value > INT64_MAX ? undefined : value;
}

/** INCR, DECR, INCRBY, DECRBY: one atomic INCRBY on the key's owner, with Redis's integer semantics. */
function incrBy(sign: 1n | -1n, fixed: bigint | undefined): DataCommandHandler {
  return (connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void => {
    const step = fixed ?? int64Of(args[2]!);
    if (step === undefined || (sign === -1n && step === INT64_MIN)) {
      connection.replyError(seq, 'ERR value is not an integer or out of range');
      return;
    }
    if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
    services.router.forwardKeyed(
      { op: Op.INCRBY, id: seq, key: args[1]!, delta: sign * step },
      connection.routerTarget,
      performance.now(),
    );
  };
}

/**
 * INCRBYFLOAT key increment: one atomic INCRBYFLOAT on the key's owner, which reads the value and
 * the increment as Redis does (long doubles) and answers the new value's text; a text that is not
 * a number is the owner's `ERR NOT_A_FLOAT: value is not a valid float`.
 */
function incrbyfloat(
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.INCRBYFLOAT, id: seq, key: args[1]!, increment: args[2]! },
    connection.routerTarget,
    performance.now(),
  );
}

/** Redis's error for a SETBIT or GETBIT offset that is not an integer in 0..2^32-1. */
const BIT_OFFSET_ERROR = 'ERR bit offset is not an integer or out of range';
/** The largest bit offset Redis takes (its 512 MB bulk limit in bits, less one). */
const MAX_BIT_OFFSET = 2 ** 32 - 1;
const NOT_AN_INTEGER = 'ERR value is not an integer or out of range';

function bitOffsetOf(bytes: Uint8Array): number | undefined {
  const offset = safeIntegerOf(bytes);
  return offset === undefined || offset < 0 || offset > MAX_BIT_OFFSET ? undefined : offset;
}

/**
 * A range index or offset as Redis reads them (a signed 64-bit integer: GETRANGE's, SETRANGE's,
 * BITCOUNT's and BITPOS's), held as a number clamped to ±(2^53 - 1): past that every index cuts a
 * value (at most 2^32 bytes here) the same way, and every offset is past the value limit.
 */
function rangeIndexOf(bytes: Uint8Array): number | undefined {
  const value = int64Of(bytes);
  if (value === undefined) return undefined;
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  return Number(value > limit ? limit : value < -limit ? -limit : value);
}

/** BYTE or BIT (any case), or undefined for another word. */
function bitUnitOf(bytes: Uint8Array): BitUnit | undefined {
  if (isWord(bytes, 'byte')) return 'byte';
  return isWord(bytes, 'bit') ? 'bit' : undefined;
}

/** SETBIT key offset value: one atomic SETBIT on the key's owner; the bit's previous value. */
function setbit(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  const offset = bitOffsetOf(args[2]!);
  if (offset === undefined) {
    connection.replyError(seq, BIT_OFFSET_ERROR);
    return;
  }
  const bit = integerOf(args[3]!);
  if (bit !== 0 && bit !== 1) {
    connection.replyError(seq, 'ERR bit is not an integer or out of range');
    return;
  }
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.SETBIT, id: seq, key: args[1]!, offset, bit },
    connection.routerTarget,
    performance.now(),
  );
}

/** GETBIT key offset: the bit, read on the key's owner (0 past the value's end). */
function getbit(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  const offset = bitOffsetOf(args[2]!);
  if (offset === undefined) {
    connection.replyError(seq, BIT_OFFSET_ERROR);
    return;
  }
  readPart(connection, args, seq, services, { part: 'getbit', start: offset });
}

/**
 * BITCOUNT key [start end [BYTE|BIT]]: the set bits, counted on the key's owner (Redis's range
 * arithmetic: `bitCount`). Arguments are checked before the key is read, as Redis 7.2 does.
 */
function bitcount(
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
): void {
  if (args.length !== 2 && args.length !== 4 && args.length !== 5) {
    connection.replyError(seq, 'ERR syntax error');
    return;
  }
  if (args.length === 2) {
    readPart(connection, args, seq, services, { part: 'bitcount' });
    return;
  }
  const start = rangeIndexOf(args[2]!);
  const end = rangeIndexOf(args[3]!);
  if (start === undefined || end === undefined) {
    connection.replyError(seq, NOT_AN_INTEGER);
    return;
  }
  const unit = args.length === 5 ? bitUnitOf(args[4]!) : 'byte';
  if (unit === undefined) {
    connection.replyError(seq, 'ERR syntax error');
    return;
  }
  readPart(connection, args, seq, services, { part: 'bitcount', start, end, unit });
}

/**
 * BITPOS key bit [start [end [BYTE|BIT]]]: the first bit set to `bit`, found on the key's owner
 * (Redis's rules: `bitPos`). Arguments are checked before the key is read, as Redis 7.2 does.
 */
function bitpos(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (args.length > 6) {
    connection.replyError(seq, 'ERR syntax error');
    return;
  }
  const bit = rangeIndexOf(args[2]!);
  if (bit === undefined) {
    connection.replyError(seq, NOT_AN_INTEGER);
    return;
  }
  if (bit !== 0 && bit !== 1) {
    connection.replyError(seq, 'ERR The bit argument must be 1 or 0.');
    return;
  }
  if (args.length === 3) {
    readPart(connection, args, seq, services, { part: 'bitpos', bit });
    return;
  }
  const start = rangeIndexOf(args[3]!);
  const end = args.length >= 5 ? rangeIndexOf(args[4]!) : undefined;
  if (start === undefined || (args.length >= 5 && end === undefined)) {
    connection.replyError(seq, NOT_AN_INTEGER);
    return;
  }
  const unit = args.length === 6 ? bitUnitOf(args[5]!) : 'byte';
  if (unit === undefined) {
    connection.replyError(seq, 'ERR syntax error');
    return;
  }
  readPart(connection, args, seq, services, { part: 'bitpos', bit, start, end, unit });
}

/**
 * Answers `seq` with the integer a READ_PART computes on the key's value at its owner (STRLEN,
 * GETBIT, BITCOUNT, BITPOS): only the integer travels, whatever the value's size.
 */
function readPart(
  connection: RespReplyTarget,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
  query: Omit<ReadPartRequest, 'op' | 'id' | 'key' | 'epoch'>,
): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, false)) return;
  services.router.forwardKeyed(
    { op: Op.READ_PART, id: seq, key: args[1]!, ...query },
    new MappedAnswer(connection, seq, (writer, response) =>
      writer.integer(response.op === Op.INTEGER ? response.value : 0n),
    ),
    performance.now(),
  );
}

/** Answers `seq` with the error a keyspace operation failed with. */
function replyFailure(connection: RespReplyTarget, seq: number, error: unknown): void {
  const code = error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
  connection.replyError(seq, respErrorLine(code, error instanceof Error ? error.message : String(error)));
}

/** DBSIZE: the cluster's, as the native DBSIZE (exact on a settled ring). */
function dbsize(connection: RespReplyTarget, _args: Uint8Array[], seq: number, services: RespServices): void {
  // As on the native port: a user limited to prefixes may not learn the size of the whole keyspace.
  const identity = connection.identity;
  const denial = identity?.kind === 'user' ? keyspaceDenied(identity.grant) : undefined;
  if (denial !== undefined) {
    connection.replyError(seq, `NOPERM ${denial}`);
    return;
  }
  services.dbSize().then(
    (keys) => {
      connection.beginReply(seq).integer(keys);
      connection.endReply(seq);
    },
    (error: unknown) => replyFailure(connection, seq, error),
  );
}

/**
 * SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: one page of the native cluster-wide
 * SCAN (every key present for the whole iteration is returned at least once, also while nodes join
 * and leave). Every value is a string: TYPE string filters nothing, any other type returns no keys.
 */
function scan(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  const cursor = integerOf(args[1]!);
  if (cursor === undefined || cursor < 0) {
    connection.replyError(seq, 'ERR invalid cursor');
    return;
  }
  let match: Uint8Array | undefined;
  let count: number | undefined;
  let typeMatches = true;
  for (let index = 2; index < args.length; index += 2) {
    const value = args[index + 1];
    if (value === undefined) {
      connection.replyError(seq, 'ERR syntax error');
      return;
    }
    if (isWord(args[index]!, 'match')) match = Uint8Array.from(value);
    else if (isWord(args[index]!, 'type')) typeMatches = isWord(value, 'string');
    else if (isWord(args[index]!, 'count')) {
      count = integerOf(value);
      if (count === undefined || count < 1) {
        connection.replyError(
          seq,
          count === undefined ? 'ERR value is not an integer or out of range' : 'ERR syntax error',
        );
        return;
      }
      count = Math.min(count, services.limits.maxBatchKeys);
    } else {
      connection.replyError(seq, 'ERR syntax error');
      return;
    }
  }
  services.scan({ op: Op.SCAN, id: seq, cursor, count, match }, prefixGrant(connection)).then(
    (page) => {
      const keys = typeMatches ? page.keys : [];
      const writer = connection.beginReply(seq);
      writer.array(2);
      writer.bulkText(String(page.cursor));
      writer.array(keys.length);
      for (const key of keys) writer.bulk(key);
      connection.endReply(seq);
    },
    (error: unknown) => replyFailure(connection, seq, error),
  );
}

/** The grant of a user limited to key prefixes (SCAN and KEYS list only its keys), else undefined. */
function prefixGrant(connection: RespReplyTarget): UserGrant | undefined {
  const identity = connection.identity;
  return identity?.kind === 'user' && identity.grant.prefixes !== undefined ? identity.grant : undefined;
}

/**
 * Most keys KEYS answers. Redis answers KEYS from one process's memory; here the balancer drives a
 * cluster-wide SCAN to its end and holds every key found until it answers, so the answer is
 * bounded: past this many keys it is an error naming SCAN.
 */
const KEYS_REPLY_MAX = 100_000;

/**
 * KEYS pattern: the native cluster-wide SCAN with MATCH, driven to its end, each key once (a SCAN
 * may return a key twice while it moves). Every key present for the whole command is listed, also
 * while nodes join and leave, as SCAN guarantees.
 */
function keys(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  matchingKeys(services, seq, Uint8Array.from(args[1]!), prefixGrant(connection)).then(
    (found) => {
      if (found === undefined) {
        connection.replyError(seq, `ERR KEYS matched more than ${KEYS_REPLY_MAX} keys here: use SCAN`);
        return;
      }
      const writer = connection.beginReply(seq);
      writer.array(found.length);
      for (const key of found) writer.bulk(key);
      connection.endReply(seq);
    },
    (error: unknown) => replyFailure(connection, seq, error),
  );
}

/** Every key SCAN MATCH `match` finds, once each, in the order found; undefined past {@link KEYS_REPLY_MAX}. */
async function matchingKeys(
  services: RespServices,
  id: number,
  match: Uint8Array,
  grant: UserGrant | undefined,
): Promise<Uint8Array[] | undefined> {
  const seen = new Set<string>();
  const found: Uint8Array[] = [];
  const count = services.limits.maxBatchKeys;
  let cursor = 0;
  do {
    const page = await services.scan({ op: Op.SCAN, id, cursor, count, match }, grant);
    for (const key of page.keys) {
      const name = Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
      if (seen.has(name)) continue;
      seen.add(name);
      // Copied: the page's keys may be views of a frame that is not kept.
      found.push(Uint8Array.from(key));
      if (found.length > KEYS_REPLY_MAX) return undefined;
    }
    cursor = page.cursor;
  } while (cursor !== 0);
  return found;
}

/** GETSET key value: SET with GET (the previous value, or nil; any expiry is dropped, as Redis). */
function getset(connection: RespReplyTarget, args: Uint8Array[], seq: number, services: RespServices): void {
  if (!keysAllowed(connection, args, seq, services, SINGLE_KEY, true)) return;
  services.router.forwardKeyed(
    { op: Op.SET_WITH, id: seq, key: args[1]!, value: args[2]!, get: true },
    new SetAnswer(connection, seq),
    performance.now(),
  );
}

/** The string commands the router serves today. */
export const DATA_COMMANDS: readonly DataCommand[] = [
  { name: 'get', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: get },
  { name: 'set', arity: -3, flags: ['write', 'denyoom'], keys: SINGLE_KEY, run: set },
  { name: 'del', arity: -2, flags: ['write'], keys: EVERY_ARGUMENT, run: del },
  { name: 'mget', arity: -2, flags: ['readonly', 'fast'], keys: EVERY_ARGUMENT, run: mget },
  { name: 'mset', arity: -3, flags: ['write', 'denyoom'], keys: PAIRS, run: mset },
  { name: 'setnx', arity: 3, flags: ['write', 'denyoom', 'fast'], keys: SINGLE_KEY, run: setnx },
  { name: 'ttl', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: ttl(true) },
  { name: 'pttl', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: ttl(false) },
  { name: 'expiretime', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: ttl(true, true) },
  { name: 'pexpiretime', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: ttl(false, true) },
  { name: 'expire', arity: -3, flags: ['write', 'fast'], keys: SINGLE_KEY, run: expire('in', 1000) },
  { name: 'pexpire', arity: -3, flags: ['write', 'fast'], keys: SINGLE_KEY, run: expire('in', 1) },
  { name: 'expireat', arity: -3, flags: ['write', 'fast'], keys: SINGLE_KEY, run: expire('at', 1000) },
  { name: 'pexpireat', arity: -3, flags: ['write', 'fast'], keys: SINGLE_KEY, run: expire('at', 1) },
  { name: 'persist', arity: 2, flags: ['write', 'fast'], keys: SINGLE_KEY, run: expire('persist', 1) },
  { name: 'exists', arity: -2, flags: ['readonly', 'fast'], keys: EVERY_ARGUMENT, run: exists },
  { name: 'getdel', arity: 2, flags: ['write', 'fast'], keys: SINGLE_KEY, run: getdel },
  { name: 'incr', arity: 2, flags: ['write', 'denyoom', 'fast'], keys: SINGLE_KEY, run: incrBy(1n, 1n) },
  { name: 'decr', arity: 2, flags: ['write', 'denyoom', 'fast'], keys: SINGLE_KEY, run: incrBy(-1n, 1n) },
  {
    name: 'incrby',
    arity: 3,
    flags: ['write', 'denyoom', 'fast'],
    keys: SINGLE_KEY,
    run: incrBy(1n, undefined),
  },
  {
    name: 'decrby',
    arity: 3,
    flags: ['write', 'denyoom', 'fast'],
    keys: SINGLE_KEY,
    run: incrBy(-1n, undefined),
  },
  { name: 'incrbyfloat', arity: 3, flags: ['write', 'denyoom', 'fast'], keys: SINGLE_KEY, run: incrbyfloat },
  { name: 'setex', arity: 4, flags: ['write', 'denyoom'], keys: SINGLE_KEY, run: setWithTtl('setex', 1000) },
  { name: 'psetex', arity: 4, flags: ['write', 'denyoom'], keys: SINGLE_KEY, run: setWithTtl('psetex', 1) },
  // UNLINK frees memory in the background in Redis; here a delete is as cheap, so it is DEL.
  { name: 'unlink', arity: -2, flags: ['write', 'fast'], keys: EVERY_ARGUMENT, run: del },
  // TOUCH answers how many keys exist, as Redis; it does not refresh their recency for eviction.
  { name: 'touch', arity: -2, flags: ['readonly', 'fast'], keys: EVERY_ARGUMENT, run: exists },
  { name: 'type', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: type },
  { name: 'strlen', arity: 2, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: strlen },
  { name: 'dbsize', arity: 1, flags: ['readonly', 'fast'], keys: [0, 0, 0], run: dbsize },
  { name: 'scan', arity: -2, flags: ['readonly'], keys: [0, 0, 0], run: scan },
  { name: 'keys', arity: 2, flags: ['readonly'], keys: [0, 0, 0], run: keys },
  { name: 'getex', arity: -2, flags: ['write', 'fast'], keys: SINGLE_KEY, run: getex },
  { name: 'getset', arity: 3, flags: ['write', 'denyoom', 'fast'], keys: SINGLE_KEY, run: getset },
  { name: 'append', arity: 3, flags: ['write', 'denyoom', 'fast'], keys: SINGLE_KEY, run: append },
  { name: 'setrange', arity: 4, flags: ['write', 'denyoom'], keys: SINGLE_KEY, run: setrange },
  { name: 'getrange', arity: 4, flags: ['readonly'], keys: SINGLE_KEY, run: getrange },
  { name: 'substr', arity: 4, flags: ['readonly'], keys: SINGLE_KEY, run: getrange },
  { name: 'setbit', arity: 4, flags: ['write', 'denyoom'], keys: SINGLE_KEY, run: setbit },
  { name: 'getbit', arity: 3, flags: ['readonly', 'fast'], keys: SINGLE_KEY, run: getbit },
  { name: 'bitcount', arity: -2, flags: ['readonly'], keys: SINGLE_KEY, run: bitcount },
  { name: 'bitpos', arity: -3, flags: ['readonly'], keys: SINGLE_KEY, run: bitpos },
];
