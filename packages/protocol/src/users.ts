import { readFile } from 'node:fs/promises';
import { credentialOfPassword, DEFAULT_USER, parsePasswordHash, type StoredCredential } from './auth.js';
import { DstoreError, ErrorCode } from './errors.js';
import { Op, type Request, type TransactRequest } from './messages.js';
import { isSingleKeyRead } from './routing.js';

/** What a user may do. */
export type UserAccess = 'read' | 'readwrite';

/**
 * One user's credential and permissions, as a server holds them. Immutable except `revoked`,
 * which a reload sets on the grants it replaced: connections holding one look the user up again.
 */
export interface UserGrant {
  readonly name: string;
  readonly access: UserAccess;
  /** Key prefixes the user is limited to (bytes); undefined = every key. */
  readonly prefixes: readonly Uint8Array[] | undefined;
  readonly credential: StoredCredential;
  /** True when some check applies to this user's requests: the hot path skips the others. */
  readonly limited: boolean;
  revoked: boolean;
}

/** One entry of a users file. */
export interface UserEntry {
  readonly name: string;
  /** A hash printed by `dstore hash-password` (never the password itself). */
  readonly password: string;
  /** Default `readwrite`. */
  readonly access?: UserAccess;
  /** Key prefixes (UTF-8) the user may touch; absent = every key. */
  readonly prefixes?: readonly string[];
}

const NAME_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;

function invalidFile(source: string, message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, `users file ${source}: ${message}`);
}

function grantOf(entry: UserEntry, credential: StoredCredential): UserGrant {
  const access = entry.access ?? 'readwrite';
  const prefixes = entry.prefixes?.map((prefix) => Buffer.from(prefix, 'utf8'));
  return {
    name: entry.name,
    access,
    prefixes,
    credential,
    limited: access !== 'readwrite' || prefixes !== undefined,
    revoked: false,
  };
}

/** Checks the shape of one users-file entry, naming the entry in every error. */
function checkEntry(value: unknown, index: number, source: string): UserEntry {
  const where = `users[${index}]`;
  if (typeof value !== 'object' || value === null) throw invalidFile(source, `${where} must be an object`);
  const entry = value as Record<string, unknown>;
  for (const field of Object.keys(entry)) {
    if (!['name', 'password', 'access', 'prefixes'].includes(field)) {
      throw invalidFile(source, `${where} has an unknown field '${field}'`);
    }
  }
  if (typeof entry.name !== 'string' || !NAME_PATTERN.test(entry.name)) {
    throw invalidFile(source, `${where}.name must be 1-64 characters of A-Z a-z 0-9 _ . @ -`);
  }
  if (typeof entry.password !== 'string')
    throw invalidFile(source, `${where}.password must be a hash string`);
  if (entry.access !== undefined && entry.access !== 'read' && entry.access !== 'readwrite') {
    throw invalidFile(source, `${where}.access must be 'read' or 'readwrite'`);
  }
  const prefixes = entry.prefixes;
  if (
    prefixes !== undefined &&
    (!Array.isArray(prefixes) ||
      prefixes.length === 0 ||
      prefixes.some((prefix) => typeof prefix !== 'string' || prefix === ''))
  ) {
    throw invalidFile(source, `${where}.prefixes must be a non-empty list of non-empty strings`);
  }
  return entry as unknown as UserEntry;
}

/**
 * Parses a users file: `{ "users": [ { "name", "password": <hash>, "access"?, "prefixes"? } ] }`.
 * INVALID_ARGUMENT naming the entry on anything unexpected (unknown fields included).
 */
export function parseUsersFile(text: string, source = 'users file'): UserGrant[] {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw invalidFile(source, `not JSON: ${(error as Error).message}`);
  }
  const users = (document as { users?: unknown } | null)?.users;
  if (!Array.isArray(users)) throw invalidFile(source, 'expected { "users": [ ... ] }');
  const seen = new Set<string>();
  return users.map((value, index) => {
    const entry = checkEntry(value, index, source);
    if (seen.has(entry.name)) throw invalidFile(source, `user '${entry.name}' appears twice`);
    seen.add(entry.name);
    let credential: StoredCredential;
    try {
      credential = parsePasswordHash(entry.password);
    } catch (error) {
      throw invalidFile(source, `users[${index}].password: ${(error as Error).message}`);
    }
    return grantOf(entry, credential);
  });
}

/** Options of {@link UserDirectory.open}. */
export interface UserDirectoryOptions {
  /** A users file (see {@link parseUsersFile}); reread by {@link UserDirectory.reload}. */
  readonly file?: string | undefined;
  /** Shorthand for one read-write user {@link DEFAULT_USER} with this password. */
  readonly token?: string | undefined;
}

/**
 * The users a server accepts: from a users file (reloadable: SIGHUP) and/or a token. The one
 * writer is {@link reload}; readers get grants, and a grant a reload replaced is marked revoked.
 */
export class UserDirectory {
  private grants = new Map<string, UserGrant>();

  private constructor(
    private readonly file: string | undefined,
    private readonly tokenGrant: UserGrant | undefined,
  ) {}

  /** Loads the file and hashes the token (once). Rejects with INVALID_ARGUMENT on a bad file. */
  static async open(options: UserDirectoryOptions): Promise<UserDirectory> {
    const token = options.token === '' ? undefined : options.token;
    const tokenGrant =
      token === undefined
        ? undefined
        : grantOf({ name: DEFAULT_USER, password: '' }, await credentialOfPassword(token));
    const directory = new UserDirectory(options.file, tokenGrant);
    await directory.reload();
    return directory;
  }

  /** Whether any user is configured (else clients are not authenticated). */
  get enabled(): boolean {
    return this.grants.size > 0;
  }

  /** Number of users. */
  get size(): number {
    return this.grants.size;
  }

  /** The current grant of `name`, or undefined. */
  get(name: string): UserGrant | undefined {
    return this.grants.get(name);
  }

  /**
   * Rereads the users file. On error the current users stay and the error is thrown; on success
   * every replaced grant is marked revoked (its connections re-resolve the user on their next
   * request, and lose access if it is gone).
   */
  async reload(): Promise<void> {
    const next = new Map<string, UserGrant>();
    if (this.tokenGrant !== undefined) next.set(DEFAULT_USER, this.tokenGrant);
    if (this.file !== undefined) {
      let text: string;
      try {
        text = await readFile(this.file, 'utf8');
      } catch (error) {
        throw invalidFile(this.file, `cannot be read: ${(error as Error).message}`);
      }
      for (const grant of parseUsersFile(text, this.file)) {
        if (grant.name === DEFAULT_USER && this.tokenGrant !== undefined) {
          throw invalidFile(this.file, `user '${DEFAULT_USER}' is the --token user; name it otherwise`);
        }
        next.set(grant.name, grant);
      }
    }
    const previous = this.grants;
    this.grants = next;
    for (const grant of previous.values()) if (next.get(grant.name) !== grant) grant.revoked = true;
  }
}

/**
 * Why `grant` may not touch `key` (read or write), or undefined when it may. The reason names
 * the user and the rule: it is the message of the NO_PERMISSION answer.
 */
export function keyDenied(grant: UserGrant, key: Uint8Array, write: boolean): string | undefined {
  if (write && grant.access === 'read') return `user '${grant.name}' is read-only`;
  const prefixes = grant.prefixes;
  if (prefixes === undefined) return undefined;
  for (const prefix of prefixes) {
    if (key.length < prefix.length) continue;
    let match = true;
    for (let i = 0; i < prefix.length; i++) {
      if (key[i] !== prefix[i]) {
        match = false;
        break;
      }
    }
    if (match) return undefined;
  }
  return `user '${grant.name}' may only use keys starting with ${prefixes
    .map((prefix) => JSON.stringify(Buffer.from(prefix).toString('utf8')))
    .join(', ')}`;
}

/**
 * Why a limited `grant` may not send the transaction `request`: its key and every key a step or
 * watch names are checked; a transaction that only reads needs read access, one step that may
 * write needs read-write (for every key, as the whole transaction is one write).
 */
function transactionDenied(grant: UserGrant, request: TransactRequest): string | undefined {
  const write = request.steps.some((step) => !isSingleKeyRead(step.op));
  const denied = keyDenied(grant, request.key, write);
  if (denied !== undefined) return denied;
  for (const step of request.steps) {
    const stepDenied = keyDenied(grant, step.key, write);
    if (stepDenied !== undefined) return stepDenied;
  }
  for (const watch of request.watches ?? []) {
    const watchDenied = keyDenied(grant, watch.key, false);
    if (watchDenied !== undefined) return watchDenied;
  }
  return undefined;
}

/**
 * Why `grant` may not send `request`, or undefined when it may: data operations are checked key
 * by key (reads need read access, writes read-write), PING and the handshake are open to every
 * user, STATS to a user not limited to prefixes ({@link keyspaceDenied}), and cluster operations
 * (JOIN, RING, MIGRATE, ...) are never a user's.
 */
export function requestDenied(grant: UserGrant, request: Request): string | undefined {
  switch (request.op) {
    case Op.GET:
    case Op.TTL:
    case Op.PEXPIRETIME:
    case Op.GET_VERSIONED:
    case Op.READ_PART:
      return grant.limited ? keyDenied(grant, request.key, false) : undefined;
    case Op.SET:
    case Op.DEL:
    case Op.SET_WITH:
    case Op.EXPIRE:
    case Op.GETDEL:
    case Op.INCRBY:
    case Op.SETRANGE:
    case Op.INCRBYFLOAT:
    case Op.SETBIT:
    case Op.DEL_VERSIONED:
      // Every one of these may write (GETDEL and SET ... GET read too: a writer may read).
      return grant.limited ? keyDenied(grant, request.key, true) : undefined;
    case Op.TRANSACT:
      return grant.limited ? transactionDenied(grant, request) : undefined;
    case Op.MGET:
    case Op.EXISTS:
      if (!grant.limited) return undefined;
      for (const key of request.keys) {
        const denial = keyDenied(grant, key, false);
        if (denial !== undefined) return denial;
      }
      return undefined;
    case Op.MSET:
      if (!grant.limited) return undefined;
      for (const entry of request.entries) {
        const denial = keyDenied(grant, entry.key, true);
        if (denial !== undefined) return denial;
      }
      return undefined;
    // STATS counts every key and every operation of the server (and, at a balancer, of every
    // node): like DBSIZE it tells a user limited to prefixes about keys it may not see.
    case Op.STATS:
      return keyspaceDenied(grant);
    case Op.PING:
    case Op.HELLO:
    case Op.AUTH:
    case Op.CLUSTER_MAP:
    // Whole-keyspace reads: a user limited to prefixes is answered only its keys (SCAN) or refused
    // (DBSIZE, which would count others' keys) by the server, not here.
    case Op.SCAN:
    case Op.DBSIZE:
      return undefined;
    // Deletes every key: only for a user who may write every key.
    case Op.FLUSH:
      return grant.limited
        ? `user '${grant.name}' may not flush: FLUSHALL needs read-write access to every key`
        : undefined;
    default:
      return clusterOnly(request.op);
  }
}

/**
 * The refusal of a request about the whole keyspace (DBSIZE, STATS, RESP `INFO keyspace`) for a
 * user limited to key prefixes: its answer would tell about keys the user may
 * not see (how many, and how often others write them). Undefined when allowed.
 */
export function keyspaceDenied(grant: UserGrant): string | undefined {
  return grant.prefixes === undefined
    ? undefined
    : `user '${grant.name}' is limited to key prefixes: whole-keyspace commands are refused`;
}

/**
 * Whether a user may see `key` at all (SCAN answers only those keys to a user limited to prefixes).
 */
export function keyVisible(grant: UserGrant, key: Uint8Array): boolean {
  return grant.prefixes === undefined || keyDenied(grant, key, false) === undefined;
}

/** The refusal of a cluster (peer) operation sent by anything but an authenticated peer. */
export function clusterOnly(op: number): string {
  const name = Object.entries(Op).find(([, code]) => code === op)?.[0] ?? `op ${op}`;
  return `${name} is a cluster operation: only an authenticated balancer or node may send it`;
}
