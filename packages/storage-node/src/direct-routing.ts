import {
  type AskResponse,
  type Connection,
  type GetRequest,
  type MovedResponse,
  Op,
  type Request,
} from '@dstore/protocol';
import type { StorageEngine } from './engines/index.js';
import type { Ownership } from './ownership.js';

/** Counters of the redirects answered to direct clients, read by STATS. */
export interface DirectRoutingCounters {
  /** MOVED answers: requests routed on another epoch or to a node that does not own the key. */
  moved: number;
  /** ASK answers: one-shot redirects to the old owner of a key whose range moves here. */
  asked: number;
}

/**
 * What {@link DirectRouting.refuse} did with a client's request: `'answered'` (a redirect was
 * sent, the request must not run), `'verified'` (routed on this node's epoch to the node that
 * serves every key it names: the fence and the ownership check are done), `'unchecked'` (not a
 * direct request: the handler applies its own checks).
 */
export type DirectVerdict = 'answered' | 'verified' | 'unchecked';

/**
 * The storage node's side of direct routing: a client (not a balancer) that sends a data request
 * with an epoch routed it itself, on a cluster map. Such a request is answered with a redirect
 * instead of STALE_EPOCH / NOT_OWNER, so the client learns where the key is and at which epoch:
 *
 * - MOVED (not executed) when the request's epoch is not this node's, or a key is not this
 *   node's at that epoch. The fence is the same as for a balancer: nothing runs on another epoch.
 * - ASK (one-shot, the client keeps its map) while a key's range moves here and the migration
 *   is not purged: a GET that finds nothing (and no tombstone) names the old owner, which keeps
 *   its copy until PURGE; a DEL is executed here and names the old owner, whose copy goes too;
 *   an MGET with such keys is refused whole (the client reads them one by one). These are the
 *   answers the balancer gives for the same keys, decided from this node's own migration state.
 *
 * Requests without an epoch (clients of a standalone node) and requests of peers are not touched.
 */
export class DirectRouting {
  /** Redirect counters. */
  readonly counters: DirectRoutingCounters = { moved: 0, asked: 0 };

  constructor(
    private readonly ownership: Ownership,
    private readonly engine: StorageEngine,
    private readonly nodeId: () => string,
  ) {}

  /**
   * Before a client's request runs: answers MOVED (or ASK for an MGET of moving keys) and returns
   * `'answered'` when it must not run here. Only data requests carrying an epoch, on a node with a
   * ring, are checked; `'verified'` says this one was, at this node's epoch, and every key it names
   * is served here: the handler's own fence and ownership checks would repeat the same hashing and
   * ring lookups, so it skips them. Anything else is `'unchecked'` (the handler checks as for a peer).
   */
  refuse(request: Request, connection: Connection): DirectVerdict {
    switch (request.op) {
      case Op.GET:
      case Op.DEL:
        if (request.epoch === undefined || this.ownership.ring === undefined) return 'unchecked';
        return this.misrouted(
          request.id,
          request.epoch,
          request.key,
          request.fallback === true,
          connection,
          request.op === Op.DEL,
        );
      case Op.SET:
      case Op.SET_WITH:
      case Op.EXPIRE:
      case Op.GETDEL:
      case Op.INCRBY:
      case Op.SETRANGE:
      case Op.INCRBYFLOAT:
      case Op.SETBIT:
      case Op.DEL_VERSIONED:
      case Op.TRANSACT:
        // The data-model requests are never ASKed: the owner brings a moving key in itself.
        if (request.epoch === undefined || this.ownership.ring === undefined) return 'unchecked';
        return this.misrouted(request.id, request.epoch, request.key, false, connection, true);
      case Op.TTL:
      case Op.PEXPIRETIME:
      case Op.READ_PART:
      case Op.GET_VERSIONED:
        if (request.epoch === undefined || this.ownership.ring === undefined) return 'unchecked';
        return this.misrouted(request.id, request.epoch, request.key, false, connection, false);
      case Op.EXISTS:
        if (request.epoch === undefined || this.ownership.ring === undefined) return 'unchecked';
        for (const key of request.keys) {
          if (this.misrouted(request.id, request.epoch, key, false, connection, false) === 'answered')
            return 'answered';
        }
        return 'verified';
      case Op.MGET: {
        if (request.epoch === undefined || this.ownership.ring === undefined) return 'unchecked';
        for (const key of request.keys) {
          if (this.misrouted(request.id, request.epoch, key, false, connection, false) === 'answered')
            return 'answered';
        }
        if (!this.ownership.migratingIn) return 'verified';
        for (const key of request.keys) {
          const source = this.ownership.sourceOf(key);
          if (source !== undefined) {
            connection.reply(this.ask(request.id, source));
            return 'answered';
          }
        }
        return 'verified';
      }
      case Op.MSET:
        if (request.epoch === undefined || this.ownership.ring === undefined) return 'unchecked';
        for (const entry of request.entries) {
          if (this.misrouted(request.id, request.epoch, entry.key, false, connection, true) === 'answered')
            return 'answered';
        }
        return 'verified';
      default:
        return 'unchecked';
    }
  }

  /**
   * A direct GET found nothing while the key's range moves here: the old owner may still hold its
   * value, so the client is sent there once (ASK); unless the key was deleted here (a tombstone,
   * newer than the old owner's copy): then it is not found. Returns true when it answered.
   */
  answerMiss(request: GetRequest, connection: Connection): boolean {
    if (request.epoch === undefined || request.fallback === true || connection.principal?.kind === 'peer')
      return false;
    const source = this.ownership.sourceOf(request.key);
    if (source === undefined) return false;
    if (this.deletedHere(request.key)) connection.reply({ op: Op.VALUE, id: request.id, value: null });
    else connection.reply(this.ask(request.id, source));
    return true;
  }

  /**
   * Answers MOVED and returns `'answered'` when `key` must not be served here at `epoch` (`write`:
   * by a write); else `'verified'`: `epoch` is this node's and the key is served here.
   */
  private misrouted(
    id: number,
    epoch: number,
    key: Uint8Array,
    fallback: boolean,
    connection: Connection,
    write: boolean,
  ): DirectVerdict {
    const ownership = this.ownership;
    // With replication, a write belongs to the head of the key's chain and a read to its tail.
    const owner =
      epoch === ownership.epoch
        ? ownership.routeRefusal(key, fallback, write)
        : (ownership.routeOf(key, write) ?? this.nodeId());
    if (owner === undefined) return 'verified';
    this.counters.moved++;
    const address = ownership.addressOf(owner);
    const moved: MovedResponse = {
      op: Op.MOVED,
      id,
      epoch: ownership.epoch,
      nodeId: owner,
      host: address?.host ?? '',
      port: address?.port ?? 0,
    };
    connection.reply(moved);
    return 'answered';
  }

  private ask(id: number, source: string): AskResponse {
    this.counters.asked++;
    const address = this.ownership.addressOf(source);
    const host = address?.host ?? '';
    const port = address?.port ?? 0;
    const epoch = this.ownership.epoch;
    return { op: Op.ASK, id, epoch, nodeId: source, host, port };
  }

  /** Whether `key` holds a tombstone (a delete newer than the old owner's copy). */
  private deletedHere(key: Uint8Array): boolean {
    try {
      return this.engine.header(key)?.tombstone === true;
    } catch {
      // An unreadable header is no proof of a delete: ask the old owner, as a balancer would.
      return false;
    }
  }
}
