// The module's `performance`: the global one is an accessor in Node 20.
import { performance } from 'node:perf_hooks';
import {
  DstoreError,
  ErrorCode,
  type ExistsRequest,
  keyDenied,
  type MGetRequest,
  type MSetRequest,
  Op,
  type Response,
  type TransactStep,
} from '@dstore/protocol';
import { OutputBuffer } from '@dstore/protocol/internal';
import type { KeyedClientRequest, Replier, SingleKeyRequest } from '../router.js';
import { textOf } from './arguments.js';
import { type DataCommand, lastKeyIndex, type RespCommand, withCall } from './command-table.js';
import { type RespConnection, type RespReplyTarget, writeResponse } from './connection.js';
import { KEYLESS_IN_TRANSACTION } from './connection-commands.js';
import { DATA_COMMANDS } from './data-commands.js';
import { RespWriter } from './encoder.js';
import { respErrorLine } from './errors.js';
import type { RespRouting, RespServices } from './services.js';

/**
 * MULTI / EXEC / DISCARD / WATCH / UNWATCH on the RESP port: a transaction on **one key**. The
 * commands queued between MULTI and EXEC (the key-value commands, each naming only that key) run
 * as one native TRANSACT: in order, in one atomic step on the key's owner, stored as one write.
 * WATCH remembers the key's version; EXEC then runs only if it is unchanged (else a null array, as
 * Redis). Keys live on different nodes, so a second key (in a command or a WATCH) is refused with
 * Redis Cluster's CROSSSLOT error and the transaction is discarded at EXEC (EXECABORT), as Redis
 * does for any command refused while queueing.
 */

/** Redis Cluster's error for keys of different slots; here every key is its own "slot". */
const CROSSSLOT =
  "CROSSSLOT Keys in request don't hash to the same slot (a dstore transaction, WATCH included, uses one key)";
/** The commands a transaction may hold: the key-value commands that name keys, and PING and ECHO. */
const TRANSACTIONAL: ReadonlyMap<string, DataCommand> = new Map(
  [...DATA_COMMANDS.filter((command) => command.keys[0] > 0), ...KEYLESS_IN_TRANSACTION].map((command) => [
    command.name,
    command,
  ]),
);

/** The commands that act on the transaction itself, run at once even between MULTI and EXEC. */
const CONTROL: ReadonlySet<string> = new Set(['multi', 'exec', 'discard', 'watch', 'quit', 'reset']);

/**
 * Between MULTI and EXEC: queues the command (`+QUEUED`) or refuses it, spoiling the transaction.
 * Returns false for the commands that run at once even then (MULTI, EXEC, DISCARD, WATCH, QUIT).
 */
export function queueInTransaction(
  connection: RespConnection,
  command: RespCommand,
  args: Uint8Array[],
  seq: number,
  services: RespServices,
): boolean {
  if (CONTROL.has(command.name)) return false;
  const transaction = connection.transaction;
  const refusal = queueRefusal(connection, command, args, services);
  if (refusal !== undefined) {
    transaction.spoil();
    connection.replyError(seq, refusal);
    return true;
  }
  const maxSteps = services.limits.maxBatchKeys;
  const key = command.keys[0] > 0 ? args[command.keys[0]] : undefined;
  if (!transaction.enqueue(args, key, maxSteps, services.limits.maxFrameBytes)) {
    transaction.spoil();
    connection.replyError(
      seq,
      respErrorLine(
        ErrorCode.BATCH_TOO_LARGE,
        `a transaction holds at most ${maxSteps} commands and one frame (${services.limits.maxFrameBytes} bytes) of arguments`,
      ),
    );
    return true;
  }
  const writer = connection.beginReply(seq);
  writer.simple('QUEUED');
  connection.endReply(seq);
  return true;
}

/** Why `args` may not be queued (an error line), or undefined: a key-value command on the transaction's key. */
function queueRefusal(
  connection: RespConnection,
  command: RespCommand,
  args: Uint8Array[],
  services: RespServices,
): string | undefined {
  if (!TRANSACTIONAL.has(command.name)) {
    return `ERR '${command.name}' cannot be queued: a dstore transaction holds key-value commands of one key, PING and ECHO`;
  }
  if (command.keys[0] === 0) return undefined;
  const identity = connection.identity;
  const grant = identity?.kind === 'user' && identity.grant.limited ? identity.grant : undefined;
  const write = command.flags.includes('write');
  const last = lastKeyIndex(command.keys, args.length);
  for (let index = command.keys[0]; index <= last; index += command.keys[2]) {
    const key = args[index]!;
    if (key.length > services.limits.maxKeyBytes) {
      return respErrorLine(
        ErrorCode.KEY_TOO_LARGE,
        `key of ${key.length} bytes, limit ${services.limits.maxKeyBytes}`,
      );
    }
    const denial = grant === undefined ? undefined : keyDenied(grant, key, write);
    if (denial !== undefined) return `NOPERM ${denial}`;
    if (!connection.transaction.admits(key)) return CROSSSLOT;
  }
  return undefined;
}

function multi(connection: RespConnection, seq: number): void {
  const transaction = connection.transaction;
  if (transaction.queueing) {
    connection.replyError(seq, 'ERR MULTI calls can not be nested');
    return;
  }
  transaction.begin();
  connection.replyOk(seq);
}

function discard(connection: RespConnection, seq: number): void {
  const transaction = connection.transaction;
  if (!transaction.queueing) {
    connection.replyError(seq, 'ERR DISCARD without MULTI');
    return;
  }
  transaction.reset();
  connection.replyOk(seq);
}

function unwatch(connection: RespConnection, seq: number): void {
  connection.transaction.unwatch();
  connection.replyOk(seq);
}

/**
 * WATCH key [key ...]: reads the key's version on its owner (the commands after it wait, as after
 * an AUTH: an EXEC must not run before the version is known). One key only, named any number of
 * times; a WATCH of another key than the transaction's is CROSSSLOT.
 */
function watch(connection: RespConnection, args: Uint8Array[], seq: number, services: RespServices): void {
  const transaction = connection.transaction;
  if (transaction.queueing) {
    connection.replyError(seq, 'ERR WATCH inside MULTI is not allowed');
    return;
  }
  const key = args[1]!;
  for (let index = 1; index < args.length; index++) {
    if (Buffer.compare(args[index]!, key) !== 0 || !transaction.admits(key)) {
      connection.replyError(seq, CROSSSLOT);
      return;
    }
  }
  const refusal = queueRefusal(connection, WATCH_AS_READ, args.slice(0, 2), services);
  if (refusal !== undefined) {
    connection.replyError(seq, refusal);
    return;
  }
  const watched = Uint8Array.from(key);
  connection.hold();
  services.router.forwardKeyed(
    { op: Op.GET_VERSIONED, id: seq, key: watched },
    {
      reply: (response) => {
        transaction.watch(watched, response.op === Op.VERSIONED ? response.version : 0);
        connection.replyOk(seq);
        connection.release();
      },
      replyError: (_id, code, message) => {
        connection.replyError(seq, respErrorLine(code, message));
        connection.release();
      },
    },
    performance.now(),
  );
}

/** WATCH's key checks, as a read command naming one key (the command table's `get`). */
const WATCH_AS_READ: RespCommand = TRANSACTIONAL.get('get')!;

/**
 * EXEC: runs the queued commands as one TRANSACT and answers their answers as one array; a null
 * array when the WATCHed key changed; EXECABORT when a command was refused while queueing.
 */
function exec(connection: RespConnection, seq: number, services: RespServices): void {
  const transaction = connection.transaction;
  if (!transaction.queueing) {
    connection.replyError(seq, 'ERR EXEC without MULTI');
    return;
  }
  const taken = transaction.take();
  if (taken === undefined) {
    connection.replyError(seq, 'EXECABORT Transaction discarded because of previous errors.');
    return;
  }
  new TransactionRun(connection, seq, services, taken.commands.length).run(
    taken.commands,
    taken.key,
    taken.ifVersion,
  );
}

/** One step of the TRANSACT and how its answer reaches the command that asked for it. */
interface RecordedStep {
  readonly step: TransactStep;
  /** The replier of the command's request, and the id it expects. */
  readonly client: Replier;
  readonly id: number;
  /** The answer as the command's own request would have been answered. */
  readonly convert: (response: Response, id: number) => Response;
}

const asIs = (response: Response, id: number): Response => ({ ...response, id });

/**
 * One EXEC: runs each queued command's own handler against this run (its answers become the
 * array's elements, its router requests become the TRANSACT's steps), sends the TRANSACT, and
 * once every element is answered writes the array in EXEC's turn.
 */
class TransactionRun implements RespReplyTarget, RespRouting {
  private readonly output = new OutputBuffer();
  private readonly writer: RespWriter;
  private readonly elements: (Uint8Array | undefined)[];
  private unanswered: number;
  private readonly steps: RecordedStep[] = [];
  private ifVersionHeld = true;
  /** EXEC's answer waits while the commands are read and while the TRANSACT is out. */
  private waiting = true;
  /** The commands are being read: their requests become steps (none after, see {@link record}). */
  private recording = true;
  private answeredExec = false;

  constructor(
    private readonly connection: RespConnection,
    private readonly seq: number,
    private readonly services: RespServices,
    count: number,
  ) {
    this.writer = new RespWriter(this.output);
    this.writer.version = connection.version;
    this.elements = new Array<Uint8Array | undefined>(count);
    this.unanswered = count;
  }

  get identity(): RespConnection['identity'] {
    return this.connection.identity;
  }

  /** Answers for the router's `reply` / `replyError`: the request id is the element's index. */
  readonly routerTarget: Replier = {
    reply: (response) => {
      writeResponse(this.beginReply(response.id), response);
      this.endReply(response.id);
    },
    replyError: (id, code, message) => this.replyError(id, respErrorLine(code, message)),
  };

  run(commands: Uint8Array[][], key: Uint8Array | undefined, ifVersion: number | undefined): void {
    const services = { ...this.services, router: this as RespRouting };
    for (let index = 0; index < commands.length; index++) {
      const args = commands[index]!;
      TRANSACTIONAL.get(textOf(args[0]!).toLowerCase())!.run(this, args, index, services);
    }
    this.recording = false;
    if (key === undefined || (this.steps.length === 0 && ifVersion === undefined)) {
      this.waiting = false;
      this.answerIfComplete();
      return;
    }
    // Still waiting: a router that fails fast answers within this call.
    this.services.router.forwardKeyed(
      {
        op: Op.TRANSACT,
        id: this.seq,
        key,
        steps: this.steps.map((recorded) => recorded.step),
        ...(ifVersion === undefined ? {} : { ifVersion }),
      },
      {
        reply: (response) => this.answered(response),
        replyError: (_id, code, message) => this.failed(code, message),
      },
      performance.now(),
    );
  }

  // RespReplyTarget: `seq` is the element's index.
  beginReply(_index: number): RespWriter {
    return this.writer;
  }

  endReply(index: number): void {
    this.elements[index] = Uint8Array.from(this.output.takeView());
    this.unanswered--;
    this.answerIfComplete();
  }

  replyError(index: number, line: string): void {
    this.writer.error(line);
    this.endReply(index);
  }

  // RespRouting: each request of a command becomes a step on the transaction's key.
  forwardToOwner(request: SingleKeyRequest, client: Replier): void {
    switch (request.op) {
      case Op.GET:
        this.record({ op: Op.GET_VERSIONED, key: request.key }, client, request.id, getAnswer);
        return;
      case Op.SET:
        this.record(
          { op: Op.SET_WITH, key: request.key, value: request.value },
          client,
          request.id,
          (_, id) => ({
            op: Op.OK,
            id,
          }),
        );
        return;
      case Op.DEL:
        this.record({ op: Op.DEL_VERSIONED, key: request.key }, client, request.id, deletedCount);
    }
  }

  forwardKeyed(request: KeyedClientRequest, client: Replier): void {
    if (request.op === Op.TRANSACT)
      throw new DstoreError(ErrorCode.INTERNAL, 'a transaction inside a transaction');
    const { id, epoch: _, ...step } = request;
    this.record(step, client, id, asIs);
  }

  forwardExists(request: ExistsRequest, client: Replier): void {
    // Every key is the transaction's (checked while queueing): it exists once per time named.
    const named = request.keys.length;
    this.record({ op: Op.GET_VERSIONED, key: request.keys[0]! }, client, request.id, (response, id) => ({
      op: Op.COUNT,
      id,
      count: response.op === Op.VERSIONED && response.value !== null ? named : 0,
    }));
  }

  forwardMGet(request: MGetRequest, client: Replier): void {
    const named = request.keys.length;
    this.record({ op: Op.GET_VERSIONED, key: request.keys[0]! }, client, request.id, (response, id) => ({
      op: Op.VALUES,
      id,
      values: new Array<Uint8Array | null>(named).fill(response.op === Op.VERSIONED ? response.value : null),
    }));
  }

  forwardMSet(request: MSetRequest, client: Replier): void {
    // The same key named again overwrites: the last value is the one stored, as Redis's MSET.
    const last = request.entries[request.entries.length - 1]!;
    this.record({ op: Op.SET_WITH, key: last.key, value: last.value }, client, request.id, (_, id) => ({
      op: Op.OK,
      id,
    }));
  }

  private record(
    step: TransactStep,
    client: Replier,
    id: number,
    convert: (response: Response, id: number) => Response,
  ): void {
    if (!this.recording) {
      // A command asking again once the TRANSACT ran (an MGET reading its part again): its
      // answer is the transaction's, there is nothing more to ask.
      client.replyError(id, ErrorCode.INTERNAL, 'a command of a transaction asked again after it ran');
      return;
    }
    this.steps.push({ step, client, id, convert });
  }

  /** RESULTS: each step's answer to its command; null: the WATCHed key changed. */
  private answered(response: Response): void {
    if (
      response.op !== Op.RESULTS ||
      (response.results !== null && response.results.length !== this.steps.length)
    ) {
      this.failed(ErrorCode.INTERNAL, `unexpected answer (op ${response.op}) to a transaction`);
      return;
    }
    this.waiting = false;
    const results = response.results;
    if (results === null) {
      // Nothing ran: the array's elements are dropped, EXEC answers null (as Redis).
      this.ifVersionHeld = false;
      this.answerIfComplete();
      return;
    }
    for (let index = 0; index < this.steps.length; index++) {
      const { client, id, convert } = this.steps[index]!;
      const result = results[index]!;
      if (result.op === Op.ERROR) client.replyError(id, result.code, result.message);
      else client.reply(convert(result, id));
    }
    this.answerIfComplete();
  }

  /** The transaction failed as a whole: every step's command gets the error. */
  private failed(code: string, message: string): void {
    this.waiting = false;
    if (this.steps.length === 0 && !this.answeredExec) {
      // A WATCH-only EXEC: no element can carry the failure, so EXEC itself is the error.
      this.answeredExec = true;
      this.connection.replyError(this.seq, respErrorLine(code, message));
      return;
    }
    for (const { client, id } of this.steps) client.replyError(id, code, message);
    this.answerIfComplete();
  }

  /** Writes EXEC's answer, once: every element answered (or the WATCHed key changed). */
  private answerIfComplete(): void {
    if (this.waiting || this.answeredExec || (this.ifVersionHeld && this.unanswered > 0)) return;
    this.answeredExec = true;
    const writer = this.connection.beginReply(this.seq);
    if (!this.ifVersionHeld) writer.nullArray();
    else {
      writer.array(this.elements.length);
      for (const element of this.elements) writer.raw(element!);
    }
    this.connection.endReply(this.seq);
  }
}

/** A GET's answer from a GET_VERSIONED step's. */
function getAnswer(response: Response, id: number): Response {
  return { op: Op.VALUE, id, value: response.op === Op.VERSIONED ? response.value : null };
}

/** A DEL's answer (how many keys it removed) from a DEL_VERSIONED step's. */
function deletedCount(response: Response, id: number): Response {
  return { op: Op.COUNT, id, count: response.op === Op.VERSION && response.written ? 1 : 0 };
}

/** MULTI, EXEC, DISCARD, WATCH, UNWATCH. */
export const TRANSACTION_COMMANDS: readonly RespCommand[] = [
  {
    name: 'multi',
    arity: 1,
    flags: ['noscript', 'loading', 'stale', 'fast'],
    keys: [0, 0, 0],
    run: withCall(({ connection, seq }) => multi(connection, seq)),
  },
  {
    name: 'exec',
    arity: 1,
    flags: ['noscript', 'loading', 'stale', 'skip_slowlog'],
    keys: [0, 0, 0],
    run: withCall(({ connection, seq, services }) => exec(connection, seq, services)),
  },
  {
    name: 'discard',
    arity: 1,
    flags: ['noscript', 'loading', 'stale', 'fast'],
    keys: [0, 0, 0],
    run: withCall(({ connection, seq }) => discard(connection, seq)),
  },
  {
    name: 'watch',
    arity: -2,
    flags: ['noscript', 'loading', 'stale', 'fast'],
    keys: [1, -1, 1],
    run: withCall(({ connection, args, seq, services }) => watch(connection, args, seq, services)),
  },
  {
    name: 'unwatch',
    arity: 1,
    flags: ['noscript', 'loading', 'stale', 'fast'],
    keys: [0, 0, 0],
    run: withCall(({ connection, seq }) => unwatch(connection, seq)),
  },
];
