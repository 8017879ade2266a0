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
import type { ClientShare } from '../link-share.js';
import type { KeyedClientRequest, Replier, SingleKeyRequest } from '../router.js';
import { textOf } from './arguments.js';
import { type DataCommand, lastKeyIndex, type RespCommand, withCall } from './command-table.js';
import { type RespConnection, type RespReplyTarget, writeResponse } from './connection.js';
import { KEYLESS_IN_TRANSACTION } from './connection-commands.js';
import { DATA_COMMANDS } from './data-commands.js';
import { RespWriter } from './encoder.js';
import { respErrorLine } from './errors.js';
import type { RespRouting, RespServices } from './services.js';
import type { TakenTransaction } from './transaction-state.js';

/**
 * MULTI / EXEC / DISCARD / WATCH / UNWATCH on the RESP port: a transaction on the keys of **one
 * ring position**, in practice keys of one hash tag (`{user:7}:a`, `{user:7}:b`), as Redis Cluster
 * allows the keys of one slot. Such keys have one owner and one replica chain, so the commands
 * queued between MULTI and EXEC run as one native TRANSACT: in order, in one atomic step on the
 * owner, stored as one write that no replica applies in part. WATCH remembers each key's version;
 * EXEC then runs only if none changed (else a null array, as Redis). The first key named (watched
 * or queued) fixes the position: a key of another one (in a command or a WATCH) is refused with
 * Redis Cluster's CROSSSLOT error and the transaction is discarded at EXEC (EXECABORT), as Redis
 * does for any command refused while queueing. A multi-key command (MGET, MSET, DEL, EXISTS, ...)
 * of keys of the position becomes one step per key, its answer gathered as the command's own.
 */

/**
 * Redis Cluster's error for keys of different slots. Here a "slot" is a ring position: the keys'
 * hash tag when they have one (the map's tag, `{}` unless configured otherwise), else the whole key.
 */
export function crossSlot(hashTag: string | undefined): string {
  const rule =
    hashTag === undefined
      ? 'keys of one ring position: this cluster has no hash tag, so one key'
      : `keys of one hash tag, e.g. ${hashTag[0]}user:7${hashTag[1]}:a and ${hashTag[0]}user:7${hashTag[1]}:b`;
  return `CROSSSLOT Keys in request don't hash to the same slot (a dstore transaction uses ${rule})`;
}

/** The commands a transaction may hold: the key-value commands that name keys, and PING and ECHO. */
const TRANSACTIONAL: ReadonlyMap<string, DataCommand> = new Map(
  [...DATA_COMMANDS.filter((command) => command.keys[0] > 0), ...KEYLESS_IN_TRANSACTION].map((command) => [
    command.name,
    command,
  ]),
);

/** The commands that act on the transaction itself, run at once even between MULTI and EXEC. */
const CONTROL: ReadonlySet<string> = new Set(['multi', 'exec', 'discard', 'watch', 'quit', 'reset']);

/** What a command adds to the transaction: its first key, the keys' position, its TRANSACT steps. */
interface TransactionKeys {
  /** The first key named; undefined for PING and ECHO. */
  readonly key: Uint8Array | undefined;
  /** The ring position every key named has; undefined without keys. */
  readonly position: number | undefined;
  /** How many keys it names (the steps it makes: one per key, a key named twice twice). */
  readonly count: number;
}

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
  const checked = TRANSACTIONAL.has(command.name)
    ? transactionKeys(connection, command, args, services)
    : `ERR '${command.name}' cannot be queued: a dstore transaction holds key-value commands on keys of one hash tag, PING and ECHO`;
  if (typeof checked === 'string') {
    transaction.spoil();
    connection.replyError(seq, checked);
    return true;
  }
  const maxSteps = services.limits.maxBatchKeys;
  const { key, position, count } = checked;
  if (!transaction.enqueue(args, key, position, count, maxSteps, services.limits.maxFrameBytes)) {
    transaction.spoil();
    connection.replyError(
      seq,
      respErrorLine(
        ErrorCode.BATCH_TOO_LARGE,
        `a transaction holds at most ${maxSteps} keys named by its commands and one frame (${services.limits.maxFrameBytes} bytes) of arguments`,
      ),
    );
    return true;
  }
  const writer = connection.beginReply(seq);
  writer.simple('QUEUED');
  connection.endReply(seq);
  return true;
}

/**
 * The keys of `args` (named at `command`'s key positions) as the transaction takes them, or why
 * they may not join it (an error line): a key over the size limit, one the user may not touch
 * (`write`: for writing), or one of another ring position than the transaction's (CROSSSLOT). A
 * transaction without a key yet takes the position of the command's first key.
 */
function transactionKeys(
  connection: RespConnection,
  command: Pick<RespCommand, 'keys' | 'flags'>,
  args: Uint8Array[],
  services: RespServices,
): TransactionKeys | string {
  const [first, , step] = command.keys;
  if (first === 0) return { key: undefined, position: undefined, count: 0 };
  const identity = connection.identity;
  const grant = identity?.kind === 'user' && identity.grant.limited ? identity.grant : undefined;
  const write = command.flags.includes('write');
  const ring = services.ring();
  const last = lastKeyIndex(command.keys, args.length);
  let position = connection.transaction.position;
  let count = 0;
  for (let index = first; index <= last; index += step) {
    const key = args[index]!;
    if (key.length > services.limits.maxKeyBytes) {
      return respErrorLine(
        ErrorCode.KEY_TOO_LARGE,
        `key of ${key.length} bytes, limit ${services.limits.maxKeyBytes}`,
      );
    }
    const denial = grant === undefined ? undefined : keyDenied(grant, key, write);
    if (denial !== undefined) return `NOPERM ${denial}`;
    // A pure function of the key and the map's hash tag, which is fixed for the map's life: the
    // position checked now is the one the TRANSACT is routed by at EXEC, whatever the ring then.
    const keyPosition = ring.position(key);
    position ??= keyPosition;
    if (keyPosition !== position) return crossSlot(ring.hashTag);
    count++;
  }
  return { key: args[first], position, count };
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

/** WATCH's keys: every argument, read (a user with read access to them may watch them). */
const WATCH_KEYS: Pick<RespCommand, 'keys' | 'flags'> = { keys: [1, -1, 1], flags: ['readonly'] };

/**
 * WATCH key [key ...]: reads the versions of the keys not watched yet on their owner, in one
 * read-only TRANSACT (one round trip, one snapshot), while the commands after it wait, as after an
 * AUTH: an EXEC must not run before the versions are known. The keys must share the
 * transaction's ring position (the first's when none is set yet): else CROSSSLOT, nothing watched.
 */
function watch(connection: RespConnection, args: Uint8Array[], seq: number, services: RespServices): void {
  const transaction = connection.transaction;
  if (transaction.queueing) {
    connection.replyError(seq, 'ERR WATCH inside MULTI is not allowed');
    return;
  }
  const checked = transactionKeys(connection, WATCH_KEYS, args, services);
  if (typeof checked === 'string') {
    connection.replyError(seq, checked);
    return;
  }
  // Copies: the versions arrive after this tick, and the arguments are views of the input.
  const fresh: Uint8Array[] = [];
  for (let index = 1; index < args.length; index++) {
    const key = args[index]!;
    if (transaction.watches(key) || fresh.some((other) => Buffer.compare(other, key) === 0)) continue;
    fresh.push(Uint8Array.from(key));
  }
  if (fresh.length === 0) {
    connection.replyOk(seq);
    return;
  }
  const { maxBatchKeys, maxFrameBytes } = services.limits;
  if (!transaction.roomToWatch(fresh, maxBatchKeys, maxFrameBytes)) {
    connection.replyError(
      seq,
      respErrorLine(
        ErrorCode.BATCH_TOO_LARGE,
        `a transaction watches at most ${maxBatchKeys} keys, of one frame (${maxFrameBytes} bytes) with its commands' arguments`,
      ),
    );
    return;
  }
  const position = checked.position!;
  connection.hold();
  watchedVersions(services, connection, fresh, seq).then(
    (versions) => {
      transaction.watch(
        fresh.map((key, index) => ({ key, version: versions[index]! })),
        position,
      );
      connection.replyOk(seq);
      connection.release();
    },
    (error: unknown) => {
      const code = error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
      connection.replyError(seq, respErrorLine(code, error instanceof Error ? error.message : String(error)));
      connection.release();
    },
  );
}

/**
 * `request`'s answer from the key's owner, through the router within `connection`'s share of the
 * node links (a DstoreError when refused).
 */
export function forwarded(
  services: RespServices,
  connection: RespReplyTarget,
  request: KeyedClientRequest,
): Promise<Response> {
  return new Promise((resolve, reject) =>
    services.router.forwardKeyed(
      request,
      {
        reply: resolve,
        replyError: (_id, code, message) => reject(new DstoreError(code as ErrorCode, message)),
        linkShare: connection.routerTarget.linkShare,
      },
      performance.now(),
    ),
  );
}

/**
 * The versions of `keys` (one ring position; 0: absent), read as one TRANSACT of GET_VERSIONED
 * steps on the keys' owner: one atomic read of them all.
 */
async function watchedVersions(
  services: RespServices,
  connection: RespReplyTarget,
  keys: readonly Uint8Array[],
  id: number,
): Promise<number[]> {
  const answer = await forwarded(services, connection, {
    op: Op.TRANSACT,
    id,
    key: keys[0]!,
    steps: keys.map((key) => ({ op: Op.GET_VERSIONED, key })),
  });
  if (answer.op !== Op.RESULTS || answer.results === null || answer.results.length !== keys.length) {
    throw new DstoreError(ErrorCode.INTERNAL, `unexpected answer (op ${answer.op}) to WATCH's read`);
  }
  return Promise.all(
    answer.results.map(async (result, index) => {
      if (result.op === Op.VERSIONED) return result.version;
      if (result.op === Op.ERROR && result.code === ErrorCode.FRAME_TOO_LARGE) {
        // The values read together passed one frame, so the node left this one out: its version
        // alone, read apart. Not the same snapshot, which WATCH does not need: EXEC runs only if
        // each key still has the version read before WATCH answered, and a key written since has
        // another one (at worst a version read behind the head makes EXEC answer null).
        result = await forwarded(services, connection, { op: Op.GET_VERSIONED, id, key: keys[index]! });
        if (result.op === Op.VERSIONED) return result.version;
      }
      if (result.op === Op.ERROR) throw new DstoreError(result.code as ErrorCode, result.message);
      throw new DstoreError(ErrorCode.INTERNAL, `unexpected answer (op ${result.op}) to WATCH's read`);
    }),
  );
}

/**
 * EXEC: runs the queued commands as one TRANSACT and answers their answers as one array; a null
 * array when a WATCHed key changed; EXECABORT when a command was refused while queueing.
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
  new TransactionRun(connection, seq, services, taken.commands.length).run(taken);
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
  private versionsHeld = true;
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
    this.routerTarget = {
      reply: (response) => {
        writeResponse(this.beginReply(response.id), response);
        this.endReply(response.id);
      },
      replyError: (id, code, message) => this.replyError(id, respErrorLine(code, message)),
      linkShare: connection.routerTarget.linkShare,
    };
    this.elements = new Array<Uint8Array | undefined>(count);
    this.unanswered = count;
  }

  get identity(): RespConnection['identity'] {
    return this.connection.identity;
  }

  /** An EXEC's commands are answered within one TRANSACT, not read in parts. */
  readonly largeAnswers = undefined;

  /**
   * Answers for the router's `reply` / `replyError`: the request id is the element's index; the
   * requests count in the connection's share of the node links.
   */
  readonly routerTarget: Replier;

  run({ commands, key, ifVersion, watches }: TakenTransaction): void {
    const services = { ...this.services, router: this as RespRouting };
    for (let index = 0; index < commands.length; index++) {
      const args = commands[index]!;
      TRANSACTIONAL.get(textOf(args[0]!).toLowerCase())!.run(this, args, index, services);
    }
    this.recording = false;
    if (key === undefined || (this.steps.length === 0 && ifVersion === undefined && watches.length === 0)) {
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
        ...(watches.length === 0 ? {} : { watches }),
      },
      {
        reply: (response) => this.answered(response),
        replyError: (_id, code, message) => this.failed(code, message),
        linkShare: this.connection.routerTarget.linkShare,
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

  // RespRouting: each request of a command becomes a step (or a step per key) on its own key.
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
    if (request.op === Op.TRANSACT) {
      // A command that is one TRANSACT itself (a DEL of keys of one hash tag): its steps join
      // this transaction's, their answers gathered as its RESULTS. Watches have no place here.
      if (request.ifVersion !== undefined || request.watches !== undefined)
        throw new DstoreError(ErrorCode.INTERNAL, 'a watching transaction inside a transaction');
      this.recordEach(
        request.steps,
        (step) => step,
        client,
        request.id,
        (answers, id) => ({
          op: Op.RESULTS,
          id,
          results: [...answers],
        }),
      );
      return;
    }
    const { id, epoch: _, ...step } = request;
    this.record(step, client, id, asIs);
  }

  forwardExists(request: ExistsRequest, client: Replier): void {
    // A step per key named: a key named twice counts twice, as Redis.
    this.recordReads(request.keys, client, request.id, (answers, id) => ({
      op: Op.COUNT,
      id,
      count: answers.filter((answer) => answer.op === Op.VERSIONED && answer.value !== null).length,
    }));
  }

  forwardMGet(request: MGetRequest, client: Replier): void {
    if (!this.recording) {
      // MGET reads its keys again in halves when their values together pass one frame: here they
      // were read in the TRANSACT, whose answer could not carry them all (see `answerWithinFrame`).
      client.replyError(
        request.id,
        ErrorCode.FRAME_TOO_LARGE,
        'the transaction ran, but the values its commands read pass one frame together: this MGET is not answered',
      );
      return;
    }
    this.recordReads(request.keys, client, request.id, (answers, id) => ({
      op: Op.VALUES,
      id,
      values: answers.map((answer) => (answer.op === Op.VERSIONED ? answer.value : null)),
    }));
  }

  forwardMSet(request: MSetRequest, client: Replier): void {
    // In order: a key named again is overwritten by its later value, as Redis's MSET.
    this.recordEach(
      request.entries,
      ({ key, value }) => ({ op: Op.SET_WITH, key, value }),
      client,
      request.id,
      (_, id) => ({ op: Op.OK, id }),
    );
  }

  /**
   * A step per item of a multi-key command, in order; the command is answered once, with
   * `combine` of the steps' answers, or the first step's error.
   */
  /** A GET_VERSIONED step per key of `keys` (EXISTS, MGET), their answers gathered by `combine`. */
  private recordReads(
    keys: readonly Uint8Array[],
    client: Replier,
    id: number,
    combine: (answers: readonly Response[], id: number) => Response,
  ): void {
    this.recordEach(keys, (key) => ({ op: Op.GET_VERSIONED, key }), client, id, combine);
  }

  private recordEach<T>(
    items: readonly T[],
    stepOf: (item: T) => TransactStep,
    client: Replier,
    id: number,
    combine: (answers: readonly Response[], id: number) => Response,
  ): void {
    const gathered = new GatheredAnswer(client, id, items.length, combine);
    for (let index = 0; index < items.length; index++)
      this.record(stepOf(items[index]!), gathered, index, asIs);
  }

  private record(
    step: TransactStep,
    client: Replier,
    id: number,
    convert: (response: Response, id: number) => Response,
  ): void {
    if (!this.recording) {
      // A command asking again once the TRANSACT ran (none does but MGET, answered in
      // `forwardMGet`): its answer is the transaction's, there is nothing more to ask.
      client.replyError(id, ErrorCode.INTERNAL, 'a command of a transaction asked again after it ran');
      return;
    }
    this.steps.push({ step, client, id, convert });
  }

  /** RESULTS: each step's answer to its command; null: a WATCHed key changed. */
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
      this.versionsHeld = false;
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

  /**
   * The transaction failed as a whole. Refused before anything ran (a node down, a ring change):
   * every step's command gets the error, true of each as an element error is in Redis ("this
   * command did nothing"). One that may have run (TIMEOUT, CONNECTION_CLOSED, INTERNAL) is EXEC's
   * own error instead, as a plain command's would be: elements that each say "did nothing" would
   * make a client resend a transaction that was applied.
   */
  private failed(code: string, message: string): void {
    this.waiting = false;
    const mayHaveRun = !new DstoreError(code as ErrorCode, message).notExecuted;
    if ((this.steps.length === 0 || mayHaveRun) && !this.answeredExec) {
      // (A WATCH-only EXEC has no element to carry the failure either.)
      this.answeredExec = true;
      this.connection.replyError(this.seq, respErrorLine(code, message));
      return;
    }
    for (const { client, id } of this.steps) client.replyError(id, code, message);
    this.answerIfComplete();
  }

  /** Writes EXEC's answer, once: every element answered (or a WATCHed key changed). */
  private answerIfComplete(): void {
    if (this.waiting || this.answeredExec || (this.versionsHeld && this.unanswered > 0)) return;
    this.answeredExec = true;
    const writer = this.connection.beginReply(this.seq);
    if (!this.versionsHeld) writer.nullArray();
    else {
      writer.array(this.elements.length);
      for (const element of this.elements) writer.raw(element!);
    }
    this.connection.endReply(this.seq);
  }
}

/**
 * The answer of a command made of several steps (a multi-key command in a transaction): each step
 * answers it with its index as the id; once all have, the command gets `combine` of their answers,
 * or the first error.
 */
class GatheredAnswer implements Replier {
  readonly linkShare: ClientShare;
  private readonly answers: Response[];
  private remaining: number;
  private failure: { readonly code: string; readonly message: string } | undefined;

  constructor(
    private readonly client: Replier,
    private readonly id: number,
    steps: number,
    private readonly combine: (answers: readonly Response[], id: number) => Response,
  ) {
    this.linkShare = client.linkShare;
    this.answers = new Array<Response>(steps);
    this.remaining = steps;
    if (steps === 0) client.reply(combine([], id));
  }

  reply(response: Response): void {
    this.answers[response.id] = response;
    this.settle();
  }

  replyError(_index: number, code: string, message: string): void {
    this.failure ??= { code, message };
    this.settle();
  }

  private settle(): void {
    if (--this.remaining > 0) return;
    if (this.failure === undefined) this.client.reply(this.combine(this.answers, this.id));
    else this.client.replyError(this.id, this.failure.code, this.failure.message);
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
