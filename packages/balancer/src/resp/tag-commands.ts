import {
  DstoreError,
  ErrorCode,
  Op,
  type Response,
  type SetExpiry,
  type TransactRequest,
  type TransactStep,
  type WithoutId,
} from '@dstore/protocol';
import { wrongArity } from './arguments.js';
import { type RespCommand, withCall } from './command-table.js';
import type { RespConnection } from './connection.js';
import { batchAllowed, keysAllowed, onePosition, PAIRS } from './data-commands.js';
import { respErrorLine } from './errors.js';
import type { RespServices } from './services.js';
import { crossSlot, forwarded } from './transaction.js';

/**
 * Commands over several keys that must change together: MSETNX, RENAME, RENAMENX and COPY. Redis
 * Cluster serves them when their keys share a slot; here when they share a ring position (one hash
 * tag, `{user:7}:a` and `{user:7}:b`), so one owner and one chain run them as one native TRANSACT:
 * atomic, stored with one version and replicated as one unit. Keys of different positions answer
 * CROSSSLOT, as Redis Cluster. RENAME, RENAMENX and COPY read the source first (its value, version
 * and expiry, in one read-only TRANSACT) and then write only if the source is still at that
 * version (optimistic, as a WATCH): a source changed in between is read again, at most
 * {@link MOVE_ATTEMPTS} times. They are not queued inside MULTI (their write depends on a read).
 */

/** Reads and writes of a RENAME or COPY whose source changed in between, before giving up (TRYAGAIN). */
const MOVE_ATTEMPTS = 16;

/** Whether `keys` (at least one) share the first one's ring position; answers CROSSSLOT when not. */
function sameSlot(
  connection: RespConnection,
  seq: number,
  services: RespServices,
  keys: Uint8Array[],
): boolean {
  if (onePosition(services, keys)) return true;
  connection.replyError(seq, crossSlot(services.ring().hashTag));
  return false;
}

/** A failure of a forwarded request as its RESP error line. */
function errorLine(error: unknown): string {
  return error instanceof DstoreError
    ? respErrorLine(error.code, error.message)
    : respErrorLine(ErrorCode.INTERNAL, error instanceof Error ? error.message : String(error));
}

/** RESULTS of a TRANSACT, or null when a watched version did not hold; anything else fails. */
async function transact(
  services: RespServices,
  request: WithoutId<TransactRequest>,
  id: number,
): Promise<readonly Response[] | null> {
  const answer = await forwarded(services, { ...request, id });
  if (answer.op !== Op.RESULTS)
    throw new DstoreError(ErrorCode.INTERNAL, `TRANSACT answered with op ${answer.op}`);
  const results = answer.results;
  if (results === null) return null;
  for (const result of results) {
    // A step refused on its own (a value past the limit): the command failed, nothing of it written.
    if (result.op === Op.ERROR) throw new DstoreError(result.code as ErrorCode, result.message);
  }
  return results;
}

/**
 * MSETNX key value [key value ...]: sets every key only if none exists, in one atomic step (a
 * TRANSACT watching each key at version 0, i.e. absent): 1 when set, 0 when any existed.
 */
function msetnx(connection: RespConnection, args: Uint8Array[], seq: number, services: RespServices): void {
  if (args.length % 2 === 0) {
    connection.replyError(seq, wrongArity('msetnx'));
    return;
  }
  if (!keysAllowed(connection, args, seq, services, PAIRS, true)) return;
  if (!batchAllowed(connection, seq, services, (args.length - 1) / 2)) return;
  const keys: Uint8Array[] = [];
  const steps: TransactStep[] = [];
  for (let index = 1; index < args.length; index += 2) {
    keys.push(args[index]!);
    // A plain SET: the value with no expiry, as Redis's MSETNX.
    steps.push({ op: Op.SET_WITH, key: args[index]!, value: args[index + 1]! });
  }
  if (!sameSlot(connection, seq, services, keys)) return;
  const watches = keys.slice(1).map((key) => ({ key, version: 0 }));
  const request: WithoutId<TransactRequest> =
    watches.length === 0
      ? { op: Op.TRANSACT, key: keys[0]!, ifVersion: 0, steps }
      : { op: Op.TRANSACT, key: keys[0]!, ifVersion: 0, steps, watches };
  transact(services, request, seq).then(
    (results) => {
      connection.beginReply(seq).integer(results === null ? 0 : 1);
      connection.endReply(seq);
    },
    (error: unknown) => connection.replyError(seq, errorLine(error)),
  );
}

/** What RENAME, RENAMENX and COPY do with the destination. */
interface MoveMode {
  readonly name: 'rename' | 'renamenx' | 'copy';
  /** The source is deleted (RENAME, RENAMENX). */
  readonly deletesSource: boolean;
  /** Only when the destination does not exist (RENAMENX, COPY without REPLACE). */
  readonly onlyIfAbsent: boolean;
}

/** The answer of a move: RENAME's OK, or 1 / 0. */
type MoveAnswer = 'OK' | 0 | 1;

/**
 * RENAME, RENAMENX, COPY of `source` to `destination` (one ring position, checked): reads the
 * source's value, version and expiry time and whether the destination exists (one read-only
 * TRANSACT), then writes the destination (with the source's expiry time) and, for a rename,
 * deletes the source, in one TRANSACT that runs only if the source is still at the version read
 * (and, when the destination must be absent, it still is); read again when not.
 */
async function move(
  services: RespServices,
  seq: number,
  source: Uint8Array,
  destination: Uint8Array,
  mode: MoveMode,
): Promise<MoveAnswer> {
  for (let attempt = 0; attempt < MOVE_ATTEMPTS; attempt++) {
    const read = await transact(
      services,
      {
        op: Op.TRANSACT,
        key: source,
        steps: [
          { op: Op.GET_VERSIONED, key: source },
          { op: Op.PEXPIRETIME, key: source },
          { op: Op.PEXPIRETIME, key: destination },
        ],
      },
      seq,
    );
    const [value, expiry, destinationExpiry] = read ?? [];
    if (value?.op !== Op.VERSIONED || expiry?.op !== Op.INTEGER || destinationExpiry?.op !== Op.INTEGER) {
      throw new DstoreError(ErrorCode.INTERNAL, "unexpected answers to the source's read");
    }
    if (value.value === null) {
      if (mode.name === 'copy') return 0;
      throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'no such key');
    }
    // -2: the destination does not exist.
    const destinationExists = destinationExpiry.value !== -2n;
    if (mode.onlyIfAbsent && destinationExists) return 0;
    const expireAt = Number(expiry.value);
    const set: TransactStep =
      expireAt >= 0
        ? {
            op: Op.SET_WITH,
            key: destination,
            value: value.value,
            expiry: { kind: 'at', ms: expireAt } as SetExpiry,
          }
        : { op: Op.SET_WITH, key: destination, value: value.value };
    const steps: TransactStep[] = mode.deletesSource ? [{ op: Op.DEL_VERSIONED, key: source }, set] : [set];
    const written = await transact(
      services,
      {
        op: Op.TRANSACT,
        key: source,
        ifVersion: value.version,
        steps,
        ...(mode.onlyIfAbsent ? { watches: [{ key: destination, version: 0 }] } : {}),
      },
      seq,
    );
    if (written !== null) return mode.name === 'rename' ? 'OK' : 1;
  }
  throw new DstoreError(
    ErrorCode.BUSY,
    `the source key changed between its read and the ${mode.name.toUpperCase()} ${MOVE_ATTEMPTS} times in a row: nothing was done; retry`,
  );
}

/**
 * Runs a RENAME, RENAMENX or COPY: checks the keys, then holds the connection's later commands
 * until it is answered (it takes two round trips, and a command pipelined after it must see it).
 */
function runMove(
  connection: RespConnection,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
  mode: MoveMode,
): void {
  if (!keysAllowed(connection, args, seq, services, [1, 2, 1], true)) return;
  const source = Uint8Array.from(args[1]!);
  const destination = Uint8Array.from(args[2]!);
  if (!sameSlot(connection, seq, services, [source, destination])) return;
  if (Buffer.compare(source, destination) === 0) {
    sameKey(connection, seq, services, source, mode);
    return;
  }
  connection.hold();
  move(services, seq, source, destination, mode).then(
    (answer) => {
      const writer = connection.beginReply(seq);
      if (answer === 'OK') writer.ok();
      else writer.integer(answer);
      connection.endReply(seq);
      connection.release();
    },
    (error: unknown) => {
      connection.replyError(seq, moveErrorLine(error));
      connection.release();
    },
  );
}

/** A move's failure as Redis words it where Redis has an answer (a missing source). */
function moveErrorLine(error: unknown): string {
  if (
    error instanceof DstoreError &&
    error.code === ErrorCode.INVALID_ARGUMENT &&
    error.message === 'no such key'
  )
    return 'ERR no such key';
  return errorLine(error);
}

/**
 * A key moved onto itself, as Redis answers: COPY refuses it, RENAMENX answers 0 and RENAME OK
 * when the key exists (both `ERR no such key` when it does not).
 */
function sameKey(
  connection: RespConnection,
  seq: number,
  services: RespServices,
  key: Uint8Array,
  mode: MoveMode,
): void {
  if (mode.name === 'copy') {
    connection.replyError(seq, 'ERR source and destination objects are the same');
    return;
  }
  connection.hold();
  forwarded(services, { op: Op.TTL, id: seq, key }).then(
    (answer) => {
      if (answer.op === Op.INTEGER && answer.value === -2n) connection.replyError(seq, 'ERR no such key');
      else {
        const writer = connection.beginReply(seq);
        if (mode.name === 'rename') writer.ok();
        else writer.integer(0);
        connection.endReply(seq);
      }
      connection.release();
    },
    (error: unknown) => {
      connection.replyError(seq, errorLine(error));
      connection.release();
    },
  );
}

/** COPY source destination [DB 0] [REPLACE]. */
function copy(connection: RespConnection, args: Uint8Array[], seq: number, services: RespServices): void {
  let replace = false;
  for (let index = 3; index < args.length; index++) {
    const option = Buffer.from(args[index]!).toString('latin1').toLowerCase();
    if (option === 'replace') replace = true;
    else if (option === 'db' && index + 1 < args.length) {
      // One database (SELECT 0 only): DB 0 is the only destination.
      const db = Buffer.from(args[++index]!).toString('latin1');
      if (!/^-?\d+$/.test(db)) {
        connection.replyError(seq, 'ERR value is not an integer or out of range');
        return;
      }
      if (Number(db) !== 0) {
        connection.replyError(seq, 'ERR DB index is out of range');
        return;
      }
    } else {
      connection.replyError(seq, 'ERR syntax error');
      return;
    }
  }
  runMove(connection, args, seq, services, { name: 'copy', deletesSource: false, onlyIfAbsent: !replace });
}

/** MSETNX, RENAME, RENAMENX, COPY (not queued inside MULTI: see the module's comment). */
export const TAG_COMMANDS: readonly RespCommand[] = [
  {
    name: 'msetnx',
    arity: -3,
    flags: ['write', 'denyoom'],
    keys: PAIRS,
    run: withCall(({ connection, args, seq, services }) => msetnx(connection, args, seq, services)),
  },
  {
    name: 'rename',
    arity: 3,
    flags: ['write'],
    keys: [1, 2, 1],
    run: withCall(({ connection, args, seq, services }) =>
      runMove(connection, args, seq, services, { name: 'rename', deletesSource: true, onlyIfAbsent: false }),
    ),
  },
  {
    name: 'renamenx',
    arity: 3,
    flags: ['write', 'fast'],
    keys: [1, 2, 1],
    run: withCall(({ connection, args, seq, services }) =>
      runMove(connection, args, seq, services, { name: 'renamenx', deletesSource: true, onlyIfAbsent: true }),
    ),
  },
  {
    name: 'copy',
    arity: -3,
    flags: ['write', 'denyoom'],
    keys: [1, 2, 1],
    run: withCall(({ connection, args, seq, services }) => copy(connection, args, seq, services)),
  },
];
