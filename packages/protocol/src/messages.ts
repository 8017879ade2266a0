import type { AuthChallenge } from './auth.js';
import type { ErrorCode } from './errors.js';

/**
 * The protocol version this package speaks. Peers exchange it in HELLO; a peer refuses a
 * different major version with VERSION_MISMATCH. Versions are plain integers: a new version adds
 * ops or appends optional trailing fields, never changes an existing field.
 */
export const PROTOCOL_VERSION = 2;

/** Op codes. Requests are 1..63, responses 64..127; the split lets a reader route a frame by op alone. */
export const Op = {
  HELLO: 1,
  GET: 2,
  SET: 3,
  DEL: 4,
  MGET: 5,
  MSET: 6,
  PING: 7,
  STATS: 8,
  JOIN: 9,
  LEAVE: 10,
  HEARTBEAT: 11,
  RING: 12,
  MIGRATE: 13,
  MIGRATE_PUT: 14,
  PURGE: 15,
  AUTH: 16,
  CLUSTER_MAP: 17,
  MAP_PUSH: 18,
  SET_WITH: 19,
  EXPIRE: 20,
  TTL: 21,
  EXISTS: 22,
  GETDEL: 23,
  INCRBY: 24,
  PULL: 25,
  GET_VERSIONED: 26,
  DEL_VERSIONED: 27,
  FLUSH: 28,
  REPLICATE: 29,
  SCAN: 30,
  DBSIZE: 31,
  DIGEST: 32,
  SETRANGE: 33,
  INCRBYFLOAT: 34,
  SETBIT: 35,
  PEXPIRETIME: 36,
  TRANSACT: 37,
  READ_PART: 38,
  OK: 64,
  VALUE: 65,
  VALUES: 66,
  COUNT: 67,
  STATS_RESULT: 68,
  HELLO_OK: 69,
  AUTH_OK: 70,
  MAP: 71,
  MOVED: 72,
  ASK: 73,
  INTEGER: 74,
  ENTRY: 75,
  VERSIONED: 76,
  VERSION: 77,
  REPLICATED: 78,
  KEYS: 80,
  RESULTS: 81,
  ERROR: 127,
} as const;

/** A numeric op code. */
export type Op = (typeof Op)[keyof typeof Op];

/** Highest op code that is a request; everything above is a response. */
export const MAX_REQUEST_OP = 63;

/** What a peer says it is in HELLO. */
export type PeerRole = 'client' | 'balancer' | 'node';

/**
 * Version handshake and the start of authentication (see the protocol README, "Authentication").
 * Answered by HELLO_OK (with a challenge when the server authenticates this role) or ERROR.
 */
export interface HelloRequest {
  readonly op: typeof Op.HELLO;
  readonly id: number;
  readonly version: number;
  readonly role: PeerRole;
  /** The user a client authenticates as; absent for peers and anonymous clients. */
  readonly user?: string | undefined;
  /** The initiator's random nonce; present when it has credentials to prove. */
  readonly nonce?: Uint8Array | undefined;
  /**
   * The initiating storage node's id (role `node` only): the node that accepts the connection may
   * send its own requests to that node on it, once the initiator is authenticated (one connection
   * per pair of nodes, used in both directions; see the protocol README, "Peer links").
   */
  readonly node?: string | undefined;
}
/**
 * Second step of authentication: the proof computed from the HELLO_OK challenge. Answered by
 * AUTH_OK (with the server's own proof) or ERROR UNAUTHORIZED (the connection then closes).
 */
export interface AuthRequest {
  readonly op: typeof Op.AUTH;
  readonly id: number;
  readonly proof: Uint8Array;
}
/** Read one key. Answered by VALUE (value or null for not found). */
export interface GetRequest {
  readonly op: typeof Op.GET;
  readonly id: number;
  readonly key: Uint8Array;
  /**
   * Migration fall-back (balancer only): the key's range is moving away from this node, which
   * may answer from the copy it keeps until PURGE instead of refusing with NOT_OWNER.
   * Travels as an optional trailing field `1`.
   */
  readonly fallback?: boolean | undefined;
  /**
   * Fence (router to node): the ring epoch the request was routed with. A node that has a ring
   * refuses a request routed on another epoch with STALE_EPOCH naming its own, so a router with
   * an old map never acts on it and a node that missed a ring never serves on its old one.
   * Travels as an optional trailing field; absent from clients and routers that predate it.
   */
  readonly epoch?: number | undefined;
}
/** Write one key. Answered by OK once the write is acknowledged by the owning engine. */
export interface SetRequest {
  readonly op: typeof Op.SET;
  readonly id: number;
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /**
   * Fence (router to node): the ring epoch the request was routed with. A node that has a ring
   * refuses a request routed on another epoch with STALE_EPOCH naming its own, so a router with
   * an old map never acts on it and a node that missed a ring never serves on its old one.
   * Travels as an optional trailing field; absent from clients and routers that predate it.
   */
  readonly epoch?: number | undefined;
}
/** Delete one key. Answered by COUNT: 1 if the key existed, 0 if not. */
export interface DelRequest {
  readonly op: typeof Op.DEL;
  readonly id: number;
  readonly key: Uint8Array;
  /**
   * Migration fall-back (balancer only): delete the copy this node keeps of a key whose range is
   * moving away, so a fall-back read can never resurrect it. Optional trailing field `1`.
   */
  readonly fallback?: boolean | undefined;
  /**
   * Fence (router to node): the ring epoch the request was routed with. A node that has a ring
   * refuses a request routed on another epoch with STALE_EPOCH naming its own, so a router with
   * an old map never acts on it and a node that missed a ring never serves on its old one.
   * Travels as an optional trailing field; absent from clients and routers that predate it.
   */
  readonly epoch?: number | undefined;
}
/** Read several keys. Answered by VALUES in the same order. */
export interface MGetRequest {
  readonly op: typeof Op.MGET;
  readonly id: number;
  readonly keys: readonly Uint8Array[];
  /**
   * Fence (router to node): the ring epoch the request was routed with. A node that has a ring
   * refuses a request routed on another epoch with STALE_EPOCH naming its own, so a router with
   * an old map never acts on it and a node that missed a ring never serves on its old one.
   * Travels as an optional trailing field; absent from clients and routers that predate it.
   */
  readonly epoch?: number | undefined;
}
/** One key/value pair of an MSET. */
export interface KeyValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}
/**
 * One copy of a MIGRATE_PUT: a key, its value and the version the entry had on the old owner,
 * which the new owner compares with its own entry to keep whichever is newer.
 */
export interface MigratedEntry extends KeyValue {
  /**
   * Ring epoch at which the entry's owner accepted the client write (uint32; 0 = before any
   * RING). A copy keeps the writeEpoch it had on the old owner.
   */
  readonly writeEpoch: number;
  /**
   * The entry's version (an integer below 2^53, see the protocol README, "Versions"), carried
   * along unchanged; the receiver's version clock is raised to at least it, stored or not.
   */
  readonly version: number;
  /**
   * When the value expires (ms since the Unix epoch; absent or 0 = never), carried along
   * unchanged: a key expires at the same instant wherever it moved.
   */
  readonly expireAt?: number | undefined;
}
/** Write several keys. Answered by OK once every write is acknowledged. Not atomic across nodes. */
export interface MSetRequest {
  readonly op: typeof Op.MSET;
  readonly id: number;
  readonly entries: readonly KeyValue[];
  /**
   * Fence (router to node): the ring epoch the request was routed with. A node that has a ring
   * refuses a request routed on another epoch with STALE_EPOCH naming its own, so a router with
   * an old map never acts on it and a node that missed a ring never serves on its old one.
   * Travels as an optional trailing field; absent from clients and routers that predate it.
   */
  readonly epoch?: number | undefined;
}
/** The fence of a data request (see {@link GetRequest.epoch}). */
interface Fenced {
  /**
   * Fence (router to node): the ring epoch the request was routed with; absent from clients of a
   * standalone node. As for GET/SET/DEL.
   */
  readonly epoch?: number | undefined;
}

/**
 * When a value written by {@link SetWithRequest} expires. Relative times are counted on the
 * owning node's clock when it executes the write (as Redis counts EX/PX on the server), absolute
 * times are ms since the Unix epoch (EXAT/PXAT). `keep` keeps the key's current expiry (KEEPTTL).
 */
export type SetExpiry =
  | { readonly kind: 'in'; readonly ms: number }
  | { readonly kind: 'at'; readonly ms: number }
  | { readonly kind: 'keep' };

/**
 * SET with Redis's options, executed in one atomic step on the key's owner. Answered, with `get`,
 * by VALUE (the value before the write, null when there was none, whether or not it wrote);
 * otherwise by COUNT: 1 written, 0 not written (the NX/XX condition did not hold).
 */
export interface SetWithRequest extends Fenced {
  readonly op: typeof Op.SET_WITH;
  readonly id: number;
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** Write only when the key does not exist (`nx`) or only when it exists (`xx`). */
  readonly condition?: 'nx' | 'xx' | undefined;
  /** Answer the previous value (SET ... GET). */
  readonly get?: boolean | undefined;
  /** The new value's expiry; absent: none (a plain SET clears any expiry). */
  readonly expiry?: SetExpiry | undefined;
  /**
   * Compare-and-set: write only when the key's version is this one (0: only when the key does
   * not exist). Answered by VERSION: written, or not with the key's current version (0: none).
   * Not with `condition` nor `get`.
   */
  readonly ifVersion?: number | undefined;
  /** Answer VERSION (written or not, and the key's version after the request) instead of COUNT. Not with `get`. */
  readonly withVersion?: boolean | undefined;
}

/**
 * Reads one key with its version (see the protocol README, "Versions"), on the key's owner.
 * Answered by VERSIONED (value and version; null and 0 when the key does not exist).
 */
export interface GetVersionedRequest extends Fenced {
  readonly op: typeof Op.GET_VERSIONED;
  readonly id: number;
  readonly key: Uint8Array;
}

/**
 * Deletes one key, with `ifVersion` only when its version is that one (0 never matches a value),
 * in one atomic step on its owner. Answered by VERSION: `written` when a value was deleted, with
 * the version of the delete; otherwise the key's current version (0: none). So a compare-and-set
 * failed exactly when `written` is false and `version` differs from `ifVersion`.
 */
export interface DelVersionedRequest extends Fenced {
  readonly op: typeof Op.DEL_VERSIONED;
  readonly id: number;
  readonly key: Uint8Array;
  /** The version the key must have for the delete to happen (an integer below 2^53). */
  readonly ifVersion?: number | undefined;
}

/**
 * FLUSHALL: deletes every key, for a user with read-write access to every key (no prefixes).
 * On a node, every entry of its engine; on a balancer, every node's, refused (BUSY, retryable,
 * not executed) while a migration is in progress. Answered by COUNT (the keys deleted).
 */
export interface FlushRequest {
  readonly op: typeof Op.FLUSH;
  readonly id: number;
}

/** The conditions of an {@link ExpireRequest}. */
export type ExpireCondition = 'nx' | 'xx' | 'gt' | 'lt' | 'xx-lt';

/**
 * EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT and PERSIST: sets (or with `persist` removes) a live key's
 * expiry, atomically on its owner. A time already past deletes the key (as Redis). Answered by
 * COUNT: 1 changed, 0 not (no such key, the condition did not hold, PERSIST of a key without one);
 * with `get` (Redis's GETEX) by VALUE: the key's value in the same atomic step (nil when absent).
 */
export interface ExpireRequest extends Fenced {
  readonly op: typeof Op.EXPIRE;
  readonly id: number;
  readonly key: Uint8Array;
  /** `in`: `ms` from now on the owner's clock; `at`: at `ms` since the Unix epoch; `persist`: none. */
  readonly mode: 'in' | 'at' | 'persist';
  /** A safe integer (may be negative for `in`: already past). Ignored for `persist`. */
  readonly ms: number;
  /**
   * Redis 7's NX (no expiry yet), XX (has one), GT / LT (later / earlier than the current one;
   * none counts as infinite), and `xx-lt`: Redis's XX LT (has one, and the new one is earlier).
   * (XX GT is GT: no expiry is never earlier than a time.)
   */
  readonly condition?: ExpireCondition | undefined;
  /** GETEX: answer the key's value (VALUE) instead of whether the expiry changed (COUNT). */
  readonly get?: true | undefined;
}

/** PTTL: answered by INTEGER: ms left, -1 when the key has no expiry, -2 when it does not exist. */
export interface TtlRequest extends Fenced {
  readonly op: typeof Op.TTL;
  readonly id: number;
  readonly key: Uint8Array;
}

/**
 * PEXPIRETIME (EXPIRETIME is it in seconds): the expiry time stored with the key, in ms since the
 * Unix epoch. Answered by INTEGER: the time, -1 no expiry, -2 no such key (as Redis).
 */
export interface ExpireTimeRequest extends Fenced {
  readonly op: typeof Op.PEXPIRETIME;
  readonly id: number;
  readonly key: Uint8Array;
}

/** What a {@link ReadPartRequest} computes on a value (Redis's command of the same name). */
export type ValuePart = 'strlen' | 'getrange' | 'getbit' | 'bitcount' | 'bitpos';

/**
 * A read of part of a key's value computed at its owner, so that only the answer travels (a GETBIT
 * of a 1 MiB bitmap answers one integer, not the bitmap): STRLEN, GETRANGE `start` `end`, GETBIT at
 * `start` (the bit offset), BITCOUNT [`start` `end` [`unit`]] and BITPOS `bit` [`start` [`end`
 * [`unit`]]], with Redis's rules for negative and out-of-range indexes (a missing key reads as an
 * empty value; BITPOS of a missing key is -1 for 1, 0 for 0). Answered by VALUE (GETRANGE: the
 * bytes, empty when none) or INTEGER (the others). A read: routed, fenced, permitted and pulled
 * during a migration like TTL.
 */
export interface ReadPartRequest extends Fenced {
  readonly op: typeof Op.READ_PART;
  readonly id: number;
  readonly key: Uint8Array;
  readonly part: ValuePart;
  /** GETRANGE, BITCOUNT, BITPOS: the first index; GETBIT: the bit offset (0 to 2^32 - 1). */
  readonly start?: number | undefined;
  /** GETRANGE, BITCOUNT, BITPOS: the last index, included. */
  readonly end?: number | undefined;
  /** BITCOUNT, BITPOS: whether `start` and `end` count bytes (default) or bits. */
  readonly unit?: 'byte' | 'bit' | undefined;
  /** BITPOS: the bit looked for. */
  readonly bit?: 0 | 1 | undefined;
}

/** How many of `keys` exist (a key named twice counts twice, as Redis). Answered by COUNT. */
export interface ExistsRequest extends Fenced {
  readonly op: typeof Op.EXISTS;
  readonly id: number;
  readonly keys: readonly Uint8Array[];
}

/** Reads and deletes one key in one atomic step on its owner. Answered by VALUE (null: none). */
export interface GetDelRequest extends Fenced {
  readonly op: typeof Op.GETDEL;
  readonly id: number;
  readonly key: Uint8Array;
}

/**
 * INCRBY (INCR, DECR, DECRBY are `delta` 1, -1, -n): adds `delta` to the key's value read as a
 * 64-bit signed decimal integer (absent: 0), keeping its expiry, atomically on its owner.
 * Answered by INTEGER (the new value); ERROR NOT_AN_INTEGER or OVERFLOW as Redis.
 * `delta` travels as a decimal string (MessagePack numbers past 2^53 do not survive every reader).
 */
export interface IncrByRequest extends Fenced {
  readonly op: typeof Op.INCRBY;
  readonly id: number;
  readonly key: Uint8Array;
  /** In the 64-bit signed range. */
  readonly delta: bigint;
}

/**
 * SETRANGE (APPEND is SETRANGE without `offset`): writes `value` into the key's value at byte
 * `offset` (absent: at its end), padding with zero bytes up to `offset` when the value is shorter,
 * keeping the key's expiry, atomically on its owner; a missing key is taken as empty. As Redis: an
 * APPEND creates a missing key even with an empty `value`, a SETRANGE with an empty `value` writes
 * nothing. Answered by INTEGER (the value's length after it); ERROR VALUE_TOO_LARGE, nothing
 * written, when the result would pass the value limit.
 */
export interface SetRangeRequest extends Fenced {
  readonly op: typeof Op.SETRANGE;
  readonly id: number;
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** Byte offset to write at; absent: append. */
  readonly offset?: number | undefined;
}

/**
 * INCRBYFLOAT: adds `increment` to the key's value, both read as floating-point numbers the way
 * Redis reads them (C `long double`, 64-bit significand: decimal or `0x` hexadecimal text, `inf`),
 * a missing key counting as 0, keeping its expiry, atomically on its owner; the sum is stored as
 * Redis writes it (`"%.17Lf"` without trailing zeros: `0.1 + 0.2` is `0.3`). Answered by VALUE
 * (the new value's text); ERROR NOT_A_FLOAT (the value or the increment is not a number) or
 * OVERFLOW (an infinite result), not executed.
 */
export interface IncrByFloatRequest extends Fenced {
  readonly op: typeof Op.INCRBYFLOAT;
  readonly id: number;
  readonly key: Uint8Array;
  /** The increment's text, as the user wrote it (the owner reads it, so a double never rounds it). */
  readonly increment: Uint8Array;
}

/**
 * SETBIT: sets the bit at `offset` of the key's value (bit 0 is the high bit of byte 0) to `bit`,
 * padding a shorter value (or a missing key) with zero bytes, keeping its expiry, atomically on its
 * owner. Answered by INTEGER (the bit's previous value); ERROR VALUE_TOO_LARGE, nothing written,
 * when the value would pass the value limit.
 */
export interface SetBitRequest extends Fenced {
  readonly op: typeof Op.SETBIT;
  readonly id: number;
  readonly key: Uint8Array;
  /** Bit offset, 0 to 2^32 - 1 (Redis's range). */
  readonly offset: number;
  readonly bit: 0 | 1;
}

/**
 * One step of a {@link TransactRequest}: a single-key data-model request on the transaction's key,
 * without id and fence (the transaction carries them). GET is GET_VERSIONED, a plain SET is
 * SET_WITH without options, DEL is DEL_VERSIONED without `ifVersion`.
 */
export type TransactStep =
  | Omit<SetWithRequest, 'id' | 'epoch'>
  | Omit<ExpireRequest, 'id' | 'epoch'>
  | Omit<TtlRequest, 'id' | 'epoch'>
  | Omit<ExpireTimeRequest, 'id' | 'epoch'>
  | Omit<GetDelRequest, 'id' | 'epoch'>
  | Omit<IncrByRequest, 'id' | 'epoch'>
  | Omit<SetRangeRequest, 'id' | 'epoch'>
  | Omit<IncrByFloatRequest, 'id' | 'epoch'>
  | Omit<SetBitRequest, 'id' | 'epoch'>
  | Omit<ReadPartRequest, 'id' | 'epoch'>
  | Omit<GetVersionedRequest, 'id' | 'epoch'>
  | Omit<DelVersionedRequest, 'id' | 'epoch'>;

/** A key a transaction runs only if its version is still `version` (Redis's WATCH). */
export interface TransactWatch {
  readonly key: Uint8Array;
  /** The version read at WATCH; 0: the key did not exist. */
  readonly version: number;
}

/**
 * A transaction (Redis's MULTI/EXEC, WATCH) on `key` and any other keys placed at the same ring
 * position (in practice: keys sharing a hash tag, so one owner and one chain): `steps` run in
 * order, in one atomic step on the owner, each seeing its key as the steps before it left it; no
 * other request on those keys runs in between, and the chain stores the outcome as one write (one
 * version for every key it changes, one unit that no member applies in part). With `ifVersion`
 * and `watches` (WATCH) nothing runs unless each named key's version is the one given (0: the key
 * does not exist). Answered by RESULTS: one answer per step, as the step alone would be answered
 * (a step refused, like an INCRBY of a non-integer, answers its ERROR and the others still run, as
 * in Redis), or null when a version did not hold. A step or watch naming a key of another position
 * refuses the whole transaction before anything runs (INVALID_ARGUMENT, as Redis Cluster's CROSSSLOT).
 */
export interface TransactRequest extends Fenced {
  readonly op: typeof Op.TRANSACT;
  readonly id: number;
  /** The key the transaction is routed and permitted by; every other key must share its position. */
  readonly key: Uint8Array;
  /** At most the batch limit of them; each names `key` or another key of its position. */
  readonly steps: readonly TransactStep[];
  /** Run only when `key`'s version is this one (0: only when it does not exist). */
  readonly ifVersion?: number | undefined;
  /** Run only when each of these keys' version is the one given (at most the batch limit). */
  readonly watches?: readonly TransactWatch[] | undefined;
}

/**
 * Node -> node (cluster only): the new owner of a key whose range is moving in asks the old owner
 * for its copy before it executes a read-modify-write of the key (see the protocol README,
 * "Read-modify-write during a migration"). Answered by ENTRY.
 */
export interface PullRequest {
  readonly op: typeof Op.PULL;
  readonly id: number;
  readonly key: Uint8Array;
}

/** Liveness check. Answered by OK. */
export interface PingRequest {
  readonly op: typeof Op.PING;
  readonly id: number;
}
/** Asks a node or balancer for counters. Answered by STATS_RESULT. */
export interface StatsRequest {
  readonly op: typeof Op.STATS;
  readonly id: number;
}
/** A storage node registers with a balancer. Answered by OK. */
export interface JoinRequest {
  readonly op: typeof Op.JOIN;
  readonly id: number;
  readonly nodeId: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  /**
   * The node's incarnation: kept in its data dir by a durable node, new at each start of a memory
   * node. The balancer refuses a JOIN under an id that another live identity holds, and any JOIN
   * of a removed identity. Travels as an optional trailing field (absent: a node that predates it).
   */
  readonly identity?: string | undefined;
  /**
   * The generation of the cluster map the node's data belongs to (RING's `generation`), sent while
   * the node holds any entry: the balancer refuses the JOIN with CLUSTER_MISMATCH when its map has
   * another generation. Absent: the node holds nothing, or predates the field.
   */
  readonly generation?: number | undefined;
  /**
   * Bytes the node's storage can still take (its `--max-memory` or `--map-size` / disk, less what
   * it uses): a balancer refuses with OUT_OF_SPACE the JOIN of a new member that could not hold
   * its share of the cluster's data. Absent: not checked (a node that predates the field).
   */
  readonly availableBytes?: number | undefined;
}
/**
 * A storage node leaves the cluster on purpose. Answered by OK; IDENTITY_CONFLICT when `identity`
 * is not the member's (another process under the same id, such as one whose JOIN was refused, must
 * not take the real node out of the ring).
 */
export interface LeaveRequest {
  readonly op: typeof Op.LEAVE;
  readonly id: number;
  readonly nodeId: string;
  /** The leaving node's incarnation (JOIN's `identity`). Optional trailing field (absent: a node that predates it). */
  readonly identity?: string | undefined;
}
/**
 * A storage node's periodic sign of life, with its key count and storage condition. Answered by
 * OK (with a `lease` from the map's writer when the map replicates and the node is `up`).
 */
export interface HeartbeatRequest {
  readonly op: typeof Op.HEARTBEAT;
  readonly id: number;
  readonly nodeId: string;
  readonly keyCount: number;
  /**
   * Storage condition: '' when healthy, else why the node is degraded (for example a full disk:
   * writes are refused while reads and deletes go on). Absent from nodes that predate it.
   */
  readonly degraded?: string;
  /** Bytes the node's storage uses (lmdb pages in use, memory engine footprint). */
  readonly usedBytes?: number;
  /** Bytes it can still store before writes are refused (its limit or free disk, less what is used). */
  readonly availableBytes?: number;
}

/** One ring member as RING carries it. */
export interface RingMember {
  readonly id: string;
  readonly weight: number;
  /**
   * The address the cluster map holds for the member: a node streams migrated keys only to a
   * member of its ring at this address. Optional trailing list on the wire (all members or none).
   */
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  /**
   * The member's replication state in the cluster map (chains are derived from it; see
   * `HashRing.chainOf` in `@dstore/hashring`). Optional trailing list on the wire, with the map's
   * replication factor; absent = `up`.
   */
  readonly replicaState?: ReplicaStateName | undefined;
  /**
   * On the union ring of a replicated ring change that changes this member's weight: its weight
   * on the previous ring (`weight` is the next ring's; see `RingNodeInput.previousWeight` in
   * `@dstore/hashring`). Optional trailing list on the wire, after the ring-change flag, present
   * only when a member's weight changes; absent = no weight change.
   */
  readonly previousWeight?: number | undefined;
}

/** A member's replication state as RING, MAP and MAP_PUSH carry it. */
export type ReplicaStateName =
  | 'up'
  | 'syncing'
  | 'promoting'
  | 'failed'
  | 'dead'
  | 'entering'
  | 'exiting'
  | 'dropped';

/** Every {@link ReplicaStateName}: what a reader accepts. */
export const REPLICA_STATE_NAMES: ReadonlySet<string> = new Set<ReplicaStateName>([
  'up',
  'syncing',
  'promoting',
  'failed',
  'dead',
  'entering',
  'exiting',
  'dropped',
]);
/** A hash range (start, end] of the 32-bit ring, wrapping when start >= end. */
export interface HashRange {
  readonly start: number;
  readonly end: number;
}
/**
 * Most ranges one MIGRATE or PURGE should carry: two array elements each, so 500 stay within the
 * element bound of a message under the default limits. Senders split longer range lists.
 */
export const MAX_RANGES_PER_MESSAGE = 500;

/** Splits `ranges` into chunks of at most {@link MAX_RANGES_PER_MESSAGE}. */
export function chunkRanges<T extends HashRange>(ranges: readonly T[]): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < ranges.length; i += MAX_RANGES_PER_MESSAGE) {
    chunks.push(ranges.slice(i, i + MAX_RANGES_PER_MESSAGE));
  }
  return chunks;
}

/**
 * Balancer -> node: the ring at `epoch`. Nodes rebuild the identical (deterministic) ring to know
 * which keys they own; older epochs are ignored. Answered by OK.
 */
export interface RingRequest {
  readonly op: typeof Op.RING;
  readonly id: number;
  readonly epoch: number;
  /**
   * Identifies the balancer incarnation (its start time in ms): epochs only compare within one
   * generation, so a restarted balancer, counting from 0 again, is still heard.
   */
  readonly generation: number;
  readonly algorithm: string;
  /** Virtual nodes per unit weight (0 = the algorithm's default). */
  readonly vnodes: number;
  readonly nodes: readonly RingMember[];
  /** The map's replication factor (optional trailing field; absent = 1). */
  readonly replicationFactor?: number | undefined;
  /** The map's hash tag, as in {@link ClusterMapSnapshot.hashTag}. */
  readonly hashTag?: string | undefined;
  /**
   * Replication step 5: the ring change these `entering` / `exiting` members describe switches
   * now. The heads of its changing chains refuse client writes (UNAVAILABLE, not executed) and
   * the node answers once drained. Optional trailing field after the replica states (`1`).
   */
  readonly switching?: boolean | undefined;
  /**
   * Replication step 5, after the switch: this is the next ring, and the chains that changed on
   * the node's switching ring stay frozen (their new heads refuse client writes, UNAVAILABLE, not
   * executed) until a ring without this flag arrives. The coordinator sends that one only once
   * every node has this ring, so no node still serves a changing range from its previous chain
   * (an old tail answering reads) when a write of it is acknowledged on the next chain. The same
   * trailing field as `switching` (`2`).
   */
  readonly holding?: boolean | undefined;
}
/**
 * Balancer -> old owner: stream the keys of `ranges` to node `target` at host:port with
 * MIGRATE_PUT. Answered by COUNT (keys sent) once every batch was acknowledged by the target.
 */
export interface MigrateRequest {
  readonly op: typeof Op.MIGRATE;
  readonly id: number;
  readonly epoch: number;
  readonly target: string;
  readonly host: string;
  readonly port: number;
  readonly ranges: readonly HashRange[];
}
/**
 * Old owner -> new owner: copies of keys with their versions. The receiver stores a copy only
 * when it has no entry for the key or the copy's `writeEpoch` is greater than its entry's (a
 * value or a tombstone), so a copy never overwrites a newer write nor resurrects a delete.
 * Answered by COUNT (keys stored) once they are acknowledged (durable on lmdb).
 */
export interface MigratePutRequest {
  readonly op: typeof Op.MIGRATE_PUT;
  readonly id: number;
  readonly epoch: number;
  readonly entries: readonly MigratedEntry[];
}
/**
 * One write of a REPLICATE: the key's entry exactly as the chain's head stored it (value or
 * delete, writeEpoch, version, expiry). The receiver stores it only when it is newer than its own
 * entry ((writeEpoch, version) greater), so a batch sent twice changes nothing the second time.
 */
export interface ReplicatedEntry {
  readonly key: Uint8Array;
  /** The value, or null for a delete. */
  readonly value: Uint8Array | null;
  /** Ring epoch at which the head accepted the client write (uint32). */
  readonly writeEpoch: number;
  /** The write's version (an integer below 2^53, see the protocol README, "Versions"). */
  readonly version: number;
  /** Expiry time (ms since the Unix epoch; 0 = never; always 0 for a delete). */
  readonly expireAt: number;
}
/**
 * Chain member -> its successor (replication): the writes of one tick for every
 * chain the two share, in the order the sender applied them. `batch` numbers the link's frames
 * (consecutive per connection). Answered by REPLICATED once the chain's tail has applied (lmdb:
 * flushed) this batch: each member answers after its own forward of the entries is answered.
 */
export interface ReplicateRequest {
  readonly op: typeof Op.REPLICATE;
  readonly id: number;
  /** The map epoch the sender forwards on; a receiver at another epoch refuses (STALE_EPOCH). */
  readonly epoch: number;
  readonly batch: number;
  readonly entries: readonly ReplicatedEntry[];
}
/**
 * Balancer -> node, after the migration of `ranges` at `epoch` is final: delete the keys of
 * those ranges the node does not own, and forget their migration state. Answered by COUNT (keys deleted).
 */
export interface PurgeRequest {
  readonly op: typeof Op.PURGE;
  readonly id: number;
  readonly epoch: number;
  readonly ranges: readonly HashRange[];
  /**
   * Replication: a returning member's catch-up. When set, the node deletes every entry (value or
   * tombstone) of `ranges` whose writeEpoch is at most this, whatever its ring says, and nothing
   * else (its migration state is untouched): its copies from before it failed, in ranges that
   * differ from their tail's, before the tail copies them (writes forwarded to it since it became
   * a learner carry a later writeEpoch and stay). Optional trailing field.
   */
  readonly staleUpTo?: number | undefined;
}

/**
 * Balancer -> node (replication: a returning member's catch-up): a digest of each range's values
 * whose writeEpoch is below `below`, so that the map's writer copies to a returning member only
 * the ranges that differ from their tail's. Answered by VALUES: one 12-byte value per range, in
 * order: the number of values, then two independent 32-bit sums of a hash of each value's key and
 * version (big-endian uint32 each). Equal digests mean, but for a 2^-64 chance, equal sets of
 * (key, version): the values and tombstones are the same writes.
 */
export interface DigestRequest {
  readonly op: typeof Op.DIGEST;
  readonly id: number;
  readonly below: number;
  readonly ranges: readonly HashRange[];
}

/**
 * Client -> balancer: the cluster map a direct-routing client routes on (answered by MAP). With
 * `subscribe`, the balancer also pushes every later map to this connection (MAP_PUSH) until it
 * closes. Any authenticated client may ask: the map holds node ids, addresses and epochs only.
 */
export interface ClusterMapRequest {
  readonly op: typeof Op.CLUSTER_MAP;
  readonly id: number;
  /** Push later maps to this connection too. Travels as `1` / `0`. */
  readonly subscribe: boolean;
}
/**
 * What a direct-routing client needs of the cluster map: the ring the balancer routes on (its
 * members, algorithm and vnodes, so the client builds the identical ring), the epoch every direct
 * request is fenced with, and where each member listens. The same layout as RING's fields.
 */
export interface ClusterMapSnapshot {
  /** Epoch of the routed ring: the fence of every direct request. */
  readonly epoch: number;
  /** The balancer incarnation the epoch belongs to (epochs compare only within one generation). */
  readonly generation: number;
  readonly algorithm: string;
  /** Virtual nodes per unit weight (0 = the algorithm's default). */
  readonly vnodes: number;
  /** The ring's members, each with the address it registered (JOIN) and its replication state. */
  readonly nodes: readonly RingMember[];
  /** The map's replication factor (optional trailing field; absent = 1). */
  readonly replicationFactor?: number | undefined;
  /**
   * The map's hash tag (`RingOptions.hashTag` of `@dstore/hashring`: two characters, e.g. `{}`;
   * optional trailing field, absent = keys placed whole).
   */
  readonly hashTag?: string | undefined;
}
/**
 * Balancer -> subscribed client: a newer cluster map (see {@link ClusterMapRequest}). Answered by
 * OK; the balancer does not wait for it (a client that does not answer is not retried).
 */
export interface MapPushRequest extends ClusterMapSnapshot {
  readonly op: typeof Op.MAP_PUSH;
  readonly id: number;
}

/** Success with no payload (SET, MSET, PING, JOIN, LEAVE, HEARTBEAT). */
export interface OkResponse {
  readonly op: typeof Op.OK;
  readonly id: number;
  /**
   * Only in the answer to a HEARTBEAT, from the cluster map's writer when the map's replication
   * factor is above 1 and the node is an `up` member: a lease of this many ms, counted by the node
   * from when it sent the heartbeat on its own monotonic clock (optional trailing field; absent:
   * no lease). See docs/design/replication.md, "Fencing and leases".
   */
  readonly lease?: number | undefined;
}
/** Answer to GET: the value, or null when the key does not exist (not-found is a result, not an error). */
export interface ValueResponse {
  readonly op: typeof Op.VALUE;
  readonly id: number;
  readonly value: Uint8Array | null;
  /**
   * Node to balancer, during a migration only: the key was deleted here after its range began
   * moving in (a tombstone), so the old owner's copy is older and a fall-back read must not ask
   * for it. Travels as an optional trailing field `1`; never sent to clients.
   */
  readonly deleted?: boolean | undefined;
}
/** Answer to MGET: one entry per requested key, in order. */
export interface ValuesResponse {
  readonly op: typeof Op.VALUES;
  readonly id: number;
  readonly values: readonly (Uint8Array | null)[];
}
/** Answer to REPLICATE: batch `batch` of the link is applied on every member down to the tail. */
export interface ReplicatedResponse {
  readonly op: typeof Op.REPLICATED;
  readonly id: number;
  readonly batch: number;
  /**
   * Set when a member from the receiver down to the tail is past the room its own client writes
   * are admitted against (memory cap, map size, disk): the head then refuses new values of the
   * stream's chains (OUT_OF_SPACE / OUT_OF_MEMORY, not executed) until an answer without it.
   */
  readonly full?: true | undefined;
}
/** A signed integer answer (PTTL, INCRBY): a 64-bit signed value. */
export interface IntegerResponse {
  readonly op: typeof Op.INTEGER;
  readonly id: number;
  readonly value: bigint;
}
/**
 * Answer to PULL: the old owner's copy of the key with its version and expiry, or null when it
 * has none (absent, deleted or expired).
 */
export interface EntryResponse {
  readonly op: typeof Op.ENTRY;
  readonly id: number;
  readonly entry: Omit<MigratedEntry, 'key'> | null;
}
/** Answer to GET_VERSIONED: the value (null when the key does not exist) and its version (0 then). */
export interface VersionedResponse {
  readonly op: typeof Op.VERSIONED;
  readonly id: number;
  readonly value: Uint8Array | null;
  readonly version: number;
}
/**
 * Answer to a write that reports versions (SET_WITH with `ifVersion` or `withVersion`,
 * DEL_VERSIONED): whether it wrote, and the key's version after the request: the new version
 * when it wrote, else the current one (0: the key does not exist).
 */
export interface VersionResponse {
  readonly op: typeof Op.VERSION;
  readonly id: number;
  readonly written: boolean;
  readonly version: number;
}
/** Answer to DEL: how many keys were removed. */
export interface CountResponse {
  readonly op: typeof Op.COUNT;
  readonly id: number;
  readonly count: number;
  /**
   * Optional trailing field, only in MIGRATE's answer: the bytes of the keys and values sent (so
   * a balancer reports a copy's progress in bytes as well as keys).
   */
  readonly bytes?: number | undefined;
}
/** A flat map of counters: names to numbers or short strings. */
export type StatsMap = Readonly<Record<string, number | string>>;
/** Answer to STATS. */
export interface StatsResponse {
  readonly op: typeof Op.STATS_RESULT;
  readonly id: number;
  readonly stats: StatsMap;
}
/** Answer to HELLO: the server's version, role and identity. */
export interface HelloOkResponse {
  readonly op: typeof Op.HELLO_OK;
  readonly id: number;
  readonly version: number;
  readonly role: PeerRole;
  readonly serverId: string;
  /** Present when the server authenticates the initiator: the input of its AUTH proof. */
  readonly challenge?: AuthChallenge | undefined;
}
/** Answer to a valid AUTH: the server's signature, proving it holds the initiator's credential too. */
export interface AuthOkResponse {
  readonly op: typeof Op.AUTH_OK;
  readonly id: number;
  readonly signature: Uint8Array;
}
/** Answer to CLUSTER_MAP: the map the balancer routes on now. */
export interface MapResponse extends ClusterMapSnapshot {
  readonly op: typeof Op.MAP;
  readonly id: number;
}
/**
 * Node -> direct client: not executed, the request was routed on another ring epoch than this
 * node's, or names a key this node does not own. Names the key's owner on this node's ring, where
 * it listens (host '' and port 0 when unknown) and this node's epoch. Never sent to a balancer
 * (it gets STALE_EPOCH / NOT_OWNER) nor to a request without an epoch.
 */
export interface MovedResponse {
  readonly op: typeof Op.MOVED;
  readonly id: number;
  /** This node's ring epoch. */
  readonly epoch: number;
  /** The owner of the (first refused) key on this node's ring. */
  readonly nodeId: string;
  readonly host: string;
  readonly port: number;
}
/**
 * Node -> direct client, while the key's range moves to this node (one-shot: the client keeps its
 * map). GET: not found here, read the old owner's copy with the fall-back flag. DEL: executed here
 * (`count`), also delete the old owner's copy with the fall-back flag; removed if either removed.
 * MGET: not executed, some keys move; read them one by one. Names the old owner.
 */
export interface AskResponse {
  readonly op: typeof Op.ASK;
  readonly id: number;
  /** This node's ring epoch (the fence of the follow-up request). */
  readonly epoch: number;
  /** The old owner of the key's range. */
  readonly nodeId: string;
  readonly host: string;
  readonly port: number;
  /** DEL only: what the delete removed here (0 or 1). */
  readonly count?: number | undefined;
}
/**
 * One page of an iteration over the keys (Redis's SCAN): from a client to a balancer, `cursor` is
 * a cluster cursor (0 to start; the balancer's answer gives the next, 0 when done) and every key
 * present for the whole iteration is returned at least once, even while nodes join and leave;
 * from a balancer to a node, a cursor of that node's engine. Answered by KEYS. `count` is a hint
 * of the keys examined per call (default 10, at most the batch limit); `match` a Redis glob
 * pattern (`*`, `?`, `[...]`, `\` escapes) applied to the keys, as bytes.
 */
export interface ScanRequest {
  readonly op: typeof Op.SCAN;
  readonly id: number;
  readonly cursor: number;
  readonly count?: number | undefined;
  readonly match?: Uint8Array | undefined;
  /** Fence (balancer to node): the ring epoch the cursor belongs to, as for GET. */
  readonly epoch?: number | undefined;
  /**
   * Balancer to node: the iteration began while keys streamed at `epoch`, so the node also returns
   * its copies of ranges moving away, and refuses (STALE_EPOCH) once it has purged that epoch's
   * ranges: the balancer then restarts the iteration instead of missing keys.
   */
  readonly moving?: boolean | undefined;
}
/** Number of keys holding a value (Redis's DBSIZE): on a node its engine's, on a balancer the sum over the nodes. Answered by COUNT. */
export interface DbSizeRequest {
  readonly op: typeof Op.DBSIZE;
  readonly id: number;
}
/** A page of SCAN: the next cursor (0 when the iteration is complete) and the keys. */
export interface KeysResponse {
  readonly op: typeof Op.KEYS;
  readonly id: number;
  readonly cursor: number;
  readonly keys: Uint8Array[];
}
/**
 * Answer to TRANSACT: each step's answer in order (its id is 0), or null when the transaction's
 * `ifVersion` did not hold (nothing ran).
 */
export interface ResultsResponse {
  readonly op: typeof Op.RESULTS;
  readonly id: number;
  readonly results: readonly Response[] | null;
}
/** A request failed. `code` is one of {@link ErrorCode} (or a newer code this version does not know). */
export interface ErrorResponse {
  readonly op: typeof Op.ERROR;
  readonly id: number;
  readonly code: ErrorCode | (string & {});
  readonly message: string;
}

/** Every request message. */
export type Request =
  | HelloRequest
  | GetRequest
  | SetRequest
  | DelRequest
  | MGetRequest
  | MSetRequest
  | PingRequest
  | StatsRequest
  | JoinRequest
  | LeaveRequest
  | HeartbeatRequest
  | RingRequest
  | MigrateRequest
  | MigratePutRequest
  | PurgeRequest
  | AuthRequest
  | ClusterMapRequest
  | MapPushRequest
  | SetWithRequest
  | ExpireRequest
  | TtlRequest
  | ExpireTimeRequest
  | ExistsRequest
  | GetDelRequest
  | IncrByRequest
  | SetRangeRequest
  | IncrByFloatRequest
  | SetBitRequest
  | ReadPartRequest
  | TransactRequest
  | PullRequest
  | ScanRequest
  | DbSizeRequest
  | DigestRequest
  | GetVersionedRequest
  | DelVersionedRequest
  | FlushRequest
  | ReplicateRequest;

/** Every response message. */
export type Response =
  | OkResponse
  | ValueResponse
  | ValuesResponse
  | CountResponse
  | StatsResponse
  | HelloOkResponse
  | AuthOkResponse
  | MapResponse
  | MovedResponse
  | AskResponse
  | IntegerResponse
  | EntryResponse
  | VersionedResponse
  | VersionResponse
  | KeysResponse
  | ResultsResponse
  | ReplicatedResponse
  | ErrorResponse;

/** Any message. */
export type Message = Request | Response;

/** A message before the connection layer assigns it a request id. */
export type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/** Whether a message is a request (as opposed to a response). */
export function isRequest(message: Message): message is Request {
  return message.op <= MAX_REQUEST_OP;
}
