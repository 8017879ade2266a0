import { DstoreError, ErrorCode, Op } from '@dstore/protocol';
import { type MoveOptions, moveKey, resultsOf, setAllIfAbsent } from '@dstore/protocol/internal';
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
 * version (optimistic, as a WATCH): a source changed in between is read again, at most 16 times
 * (`moveKey`, shared with the client). They are not queued inside MULTI (their write depends on a
 * read).
 */

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
  const entries: { key: Uint8Array; value: Uint8Array }[] = [];
  for (let index = 1; index < args.length; index += 2)
    entries.push({ key: args[index]!, value: args[index + 1]! });
  const keys = entries.map((entry) => entry.key);
  if (!sameSlot(connection, seq, services, keys)) return;
  resultsOf(forwarded(services, connection, { ...setAllIfAbsent(entries), id: seq })).then(
    (results) => {
      connection.beginReply(seq).integer(results === null ? 0 : 1);
      connection.endReply(seq);
    },
    (error: unknown) => connection.replyError(seq, errorLine(error)),
  );
}

/** What RENAME, RENAMENX and COPY do with the destination. */
interface MoveMode extends MoveOptions {
  readonly name: 'rename' | 'renamenx' | 'copy';
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
  moveKey(
    (request) => forwarded(services, connection, { ...request, id: seq }),
    source,
    destination,
    mode,
  ).then(
    (outcome) => {
      if (outcome === 'no-source' && mode.name !== 'copy') {
        // As Redis: RENAME and RENAMENX of a missing key are an error, COPY answers 0.
        connection.replyError(seq, 'ERR no such key');
      } else {
        const writer = connection.beginReply(seq);
        if (mode.name === 'rename') writer.ok();
        else writer.integer(outcome === 'moved' ? 1 : 0);
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
  forwarded(services, connection, { op: Op.TTL, id: seq, key }).then(
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
