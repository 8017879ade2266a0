import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { DstoreError, ErrorCode } from './errors.js';

/**
 * Authentication by challenge-response, after SCRAM (RFC 5802) with scrypt as the password hash:
 * the secret never crosses the wire, the server stores only what verifies a proof (not what makes
 * one), and the client checks the server's signature, so both ends are authenticated.
 *
 *   1. initiator -> HELLO { role, user?, nonce: client nonce }
 *   2. server    -> HELLO_OK { challenge: server nonce, salt, kdf }
 *   3. initiator -> AUTH { proof = ClientKey XOR HMAC(StoredKey, AuthMessage) }
 *   4. server    -> AUTH_OK { signature = HMAC(ServerKey, AuthMessage) }
 *
 * SaltedKey is scrypt(password, salt) for a user, HMAC(cluster secret, label) for a cluster peer;
 * ClientKey = HMAC(SaltedKey, "Client Key"), StoredKey = SHA-256(ClientKey), ServerKey =
 * HMAC(SaltedKey, "Server Key"). AuthMessage binds the role, the user, both nonces, the salt and
 * the kdf, so a proof made for one connection, role or user is worth nothing on another.
 */

/** What an initiator authenticates with. */
export type Credentials =
  /** A cluster peer (balancer or node): the cluster secret shared by every peer. */
  | { readonly kind: 'peer'; readonly secret: string }
  /** A client user; `--token` is the password of the user {@link DEFAULT_USER}. */
  | {
      readonly kind: 'user';
      readonly user: string;
      readonly password: string;
      /**
       * The cheapest scrypt cost this client accepts from a server's challenge; default
       * {@link DEFAULT_SCRYPT}. A cheaper kdf is refused (UNAUTHORIZED) before any proof is sent:
       * a rogue server (or anyone on a plaintext path) could otherwise ask for a cost that makes
       * the recorded proof cheap to brute-force offline. Lower it only for a users file whose
       * hashes were made cheaper on purpose (see {@link hashPassword}).
       */
      readonly minScryptCost?: ScryptParams | undefined;
    };

/** The user a bare token authenticates as (as Redis's `AUTH <password>` is the `default` user). */
export const DEFAULT_USER = 'default';

/** Shortest cluster secret accepted: it is a key, not a password, and is never stretched. */
export const MIN_CLUSTER_SECRET_LENGTH = 16;

/** Bytes of each nonce. */
const NONCE_BYTES = 18;
/** Bytes of a password salt. */
const SALT_BYTES = 16;
/** The kdf label of cluster peers (no salt, no stretching: the secret is a random key). */
export const PEER_KDF = 'hmac-sha256';

/** scrypt cost parameters of a stored password. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/**
 * Default scrypt cost for new password hashes: N=2^14, r=8, p=1 (16 MiB, ~40 ms on one core
 * here): paid once per connection by the client, never by the server.
 */
export const DEFAULT_SCRYPT: ScryptParams = { N: 16384, r: 8, p: 1 };

/** The keys a server keeps for one credential: enough to verify a proof, not to make one. */
export interface StoredCredential {
  readonly salt: Uint8Array;
  /** `scrypt:N,r,p` for a user, {@link PEER_KDF} for peers. */
  readonly kdf: string;
  readonly storedKey: Buffer;
  readonly serverKey: Buffer;
}

/** The challenge of HELLO_OK: what the initiator needs to compute its proof. */
export interface AuthChallenge {
  readonly nonce: Uint8Array;
  readonly salt: Uint8Array;
  readonly kdf: string;
}

const HASH_PREFIX = 'scram-scrypt';

function hmac(key: Uint8Array, data: Uint8Array | string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function xor(a: Uint8Array, b: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** Constant-time equality of two byte strings (false, not an exception, when lengths differ). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A fresh random nonce. */
export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

function keysOf(saltedKey: Uint8Array): { clientKey: Buffer; storedKey: Buffer; serverKey: Buffer } {
  const clientKey = hmac(saltedKey, 'Client Key');
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmac(saltedKey, 'Server Key') };
}

function scryptKdf(params: ScryptParams): string {
  return `scrypt:${params.N},${params.r},${params.p}`;
}

/** Parses `scrypt:N,r,p`; undefined when it is not one (or the cost is out of bounds). */
function parseScryptKdf(kdf: string): ScryptParams | undefined {
  const match = /^scrypt:(\d+),(\d+),(\d+)$/.exec(kdf);
  if (!match) return undefined;
  const [N, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  // Bounds so that a hostile server cannot make a client burn gigabytes: 2^10..2^20, r<=16, p<=4.
  const powerOfTwo = N >= 1024 && N <= 1 << 20 && (N & (N - 1)) === 0;
  if (!powerOfTwo || r < 1 || r > 16 || p < 1 || p > 4) return undefined;
  return { N, r, p };
}

/**
 * Why a server's scrypt cost `params` is below the client's `floor`, or undefined when it is not.
 * Compared as N itself, the memory (N·r) and the work (N·r·p): a server may trade one parameter
 * for another, but none of them may make a guess cheaper than the floor's.
 */
function scryptBelowFloor(params: ScryptParams, floor: ScryptParams = DEFAULT_SCRYPT): string | undefined {
  const below =
    params.N < floor.N ||
    params.N * params.r < floor.N * floor.r ||
    params.N * params.r * params.p < floor.N * floor.r * floor.p;
  if (!below) return undefined;
  return (
    `the server asked for ${scryptKdf(params)}, cheaper than this client's floor ${scryptKdf(floor)}: ` +
    'a proof at that cost would be cheap to brute-force offline, so none was sent (a rogue server or ' +
    'someone on the path; if the users file really holds cheaper hashes, rehash them with ' +
    '`dstore hash-password`, or lower minScryptCost)'
  );
}

/**
 * Reads a scrypt cost written `N,r,p` (a CLI flag, a URL parameter); INVALID_ARGUMENT unless N is
 * a power of two in 2^10..2^20, r in 1..16 and p in 1..4 (the costs a server may name).
 */
export function parseScryptCost(text: string): ScryptParams {
  const params = parseScryptKdf(`scrypt:${text.trim()}`);
  if (params === undefined) {
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `not a scrypt cost: ${JSON.stringify(text)} (expected N,r,p: N a power of two in 1024..1048576, r 1..16, p 1..4; the default is ${DEFAULT_SCRYPT.N},${DEFAULT_SCRYPT.r},${DEFAULT_SCRYPT.p})`,
    );
  }
  return params;
}

/** Checks a scrypt cost given as an object (`minScryptCost`): INVALID_ARGUMENT as {@link parseScryptCost}. */
export function checkScryptCost(params: unknown, name = 'minScryptCost'): ScryptParams {
  const { N, r, p } = (typeof params === 'object' && params !== null ? params : {}) as Record<
    string,
    unknown
  >;
  const valid =
    typeof N === 'number' && typeof r === 'number' && typeof p === 'number'
      ? parseScryptKdf(`scrypt:${N},${r},${p}`)
      : undefined;
  if (valid === undefined) {
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `${name} must be { N, r, p }: N a power of two in 1024..1048576, r 1..16, p 1..4`,
    );
  }
  return valid;
}

function scryptKey(password: string, salt: Uint8Array, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem: 128 * N * r bytes is what scrypt needs; the default cap (32 MiB) refuses some valid costs.
    const options = {
      N: params.N,
      r: params.r,
      p: params.p,
      maxmem: 256 * params.N * params.r + 1024 * 1024,
    };
    scrypt(password.normalize('NFKC'), salt, 32, options, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

/** The SaltedKey of the cluster secret (a key already: only domain-separated, not stretched). */
function peerSaltedKey(secret: string): Buffer {
  return hmac(Buffer.from(secret, 'utf8'), 'dstore cluster peer v1');
}

/** What a server keeps to verify cluster peers. */
export function peerCredential(secret: string): StoredCredential {
  assertClusterSecret(secret);
  const { storedKey, serverKey } = keysOf(peerSaltedKey(secret));
  return { salt: new Uint8Array(0), kdf: PEER_KDF, storedKey, serverKey };
}

/** A cluster secret option checked: undefined when unset or empty, INVALID_ARGUMENT when too short. */
export function clusterSecretOption(secret: string | undefined): string | undefined {
  if (secret === undefined || secret === '') return undefined;
  assertClusterSecret(secret);
  return secret;
}

/** Refuses a cluster secret too short to be a key. */
export function assertClusterSecret(secret: string): void {
  if (secret.length < MIN_CLUSTER_SECRET_LENGTH) {
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `the cluster secret must be at least ${MIN_CLUSTER_SECRET_LENGTH} characters (use a random one, ` +
        'for example `openssl rand -base64 32`)',
    );
  }
}

/**
 * Hashes a password for a users file: `scram-scrypt$N$r$p$salt$storedKey$serverKey` (base64
 * fields). The password cannot be recovered from it, and it does not let anyone authenticate.
 * `params` below {@link DEFAULT_SCRYPT} make a hash that clients refuse by default (a server
 * naming a cost below their floor may be a rogue one): each of them must then lower its floor
 * (`minScryptCost`).
 */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  if (password === '') throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'the password must not be empty');
  const salt = randomBytes(SALT_BYTES);
  const { storedKey, serverKey } = keysOf(await scryptKey(password, salt, params));
  const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
  return [HASH_PREFIX, params.N, params.r, params.p, b64(salt), b64(storedKey), b64(serverKey)].join('$');
}

/** Reads a hash made by {@link hashPassword}; INVALID_ARGUMENT when it is not one. */
export function parsePasswordHash(hash: string): StoredCredential {
  const parts = hash.split('$');
  const invalid = (): DstoreError =>
    new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `not a password hash (expected ${HASH_PREFIX}$N$r$p$salt$storedKey$serverKey, as printed by ` +
        '`dstore hash-password`)',
    );
  if (parts.length !== 7 || parts[0] !== HASH_PREFIX) throw invalid();
  const kdf = `scrypt:${parts[1]},${parts[2]},${parts[3]}`;
  if (parseScryptKdf(kdf) === undefined) throw invalid();
  const [salt, storedKey, serverKey] = parts.slice(4).map((part) => Buffer.from(part, 'base64'));
  if (salt!.length < 8 || storedKey!.length !== 32 || serverKey!.length !== 32) throw invalid();
  return { salt: salt!, kdf, storedKey: storedKey!, serverKey: serverKey! };
}

/** The stored credential of a password given in clear (a `--token`): hashed once at start. */
export async function credentialOfPassword(password: string): Promise<StoredCredential> {
  return parsePasswordHash(await hashPassword(password));
}

/** AuthMessage: every field length-prefixed, so no two different tuples encode alike. */
export function authMessage(
  role: string,
  user: string,
  clientNonce: Uint8Array,
  challenge: AuthChallenge,
): Buffer {
  const parts: Uint8Array[] = [
    Buffer.from('dstore-auth-v1', 'latin1'),
    Buffer.from(role, 'utf8'),
    Buffer.from(user, 'utf8'),
    clientNonce,
    challenge.nonce,
    challenge.salt,
    Buffer.from(challenge.kdf, 'utf8'),
  ];
  const out: Buffer[] = [];
  for (const part of parts) {
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(part.length, 0);
    out.push(length, Buffer.from(part.buffer, part.byteOffset, part.byteLength));
  }
  return Buffer.concat(out);
}

/** Server side: whether `proof` was made with the credential's secret for `message`. Constant time. */
export function verifyProof(credential: StoredCredential, message: Uint8Array, proof: Uint8Array): boolean {
  if (proof.length !== credential.storedKey.length) return false;
  const clientKey = xor(proof, hmac(credential.storedKey, message));
  return sameBytes(sha256(clientKey), credential.storedKey);
}

/**
 * Server side, for protocols that send the password itself (RESP's `AUTH user pass`, over TLS or
 * loopback): derives the keys from `password` with the credential's salt and cost, and compares
 * them with the stored ones in constant time. Costs one scrypt (~40 ms, in libuv's thread pool).
 */
export async function verifyPassword(credential: StoredCredential, password: string): Promise<boolean> {
  const params = parseScryptKdf(credential.kdf);
  if (params === undefined) return false;
  const { storedKey } = keysOf(await scryptKey(password, credential.salt, params));
  return sameBytes(storedKey, credential.storedKey);
}

/** Server side: the signature that proves to the initiator that this server holds its credential. */
export function serverSignature(credential: StoredCredential, message: Uint8Array): Buffer {
  return hmac(credential.serverKey, message);
}

/**
 * Initiator side: the proof for `challenge`, and the server signature to expect. Derives the
 * SaltedKey (scrypt for a user: the one costly step, in libuv's thread pool) through `cache`, so
 * reconnecting to the same server does not pay it again.
 */
export async function proveIdentity(
  credentials: Credentials,
  role: string,
  clientNonce: Uint8Array,
  challenge: AuthChallenge,
  cache?: SaltedKeyCache,
): Promise<{ proof: Buffer; expectedSignature: Buffer }> {
  const saltedKey = await saltedKeyFor(credentials, challenge, cache);
  const { clientKey, storedKey, serverKey } = keysOf(saltedKey);
  const message = authMessage(role, userOf(credentials), clientNonce, challenge);
  return { proof: xor(clientKey, hmac(storedKey, message)), expectedSignature: hmac(serverKey, message) };
}

/** The user name sent in HELLO for these credentials ('' for a peer). */
export function userOf(credentials: Credentials | undefined): string {
  return credentials?.kind === 'user' ? credentials.user : '';
}

/** Remembers the last SaltedKey per (salt, kdf): the scrypt result a reconnect would recompute. */
export class SaltedKeyCache {
  private entry: { readonly id: string; readonly key: Buffer } | undefined;

  get(id: string): Buffer | undefined {
    return this.entry?.id === id ? this.entry.key : undefined;
  }

  set(id: string, key: Buffer): void {
    this.entry = { id, key };
  }
}

async function saltedKeyFor(
  credentials: Credentials,
  challenge: AuthChallenge,
  cache: SaltedKeyCache | undefined,
): Promise<Buffer> {
  if (credentials.kind === 'peer') {
    if (challenge.kdf !== PEER_KDF) {
      throw new DstoreError(
        ErrorCode.UNAUTHORIZED,
        `the peer asked for ${challenge.kdf}, not the cluster secret`,
      );
    }
    return peerSaltedKey(credentials.secret);
  }
  const params = parseScryptKdf(challenge.kdf);
  if (params === undefined) {
    throw new DstoreError(ErrorCode.UNAUTHORIZED, `the server asked for an unsupported kdf ${challenge.kdf}`);
  }
  // Before any scrypt or proof: the challenge comes from a server not yet authenticated.
  const belowFloor = scryptBelowFloor(params, credentials.minScryptCost ?? DEFAULT_SCRYPT);
  if (belowFloor !== undefined) throw new DstoreError(ErrorCode.UNAUTHORIZED, belowFloor);
  const id = `${Buffer.from(challenge.salt).toString('base64')}/${challenge.kdf}`;
  const cached = cache?.get(id);
  if (cached !== undefined) return cached;
  const key = await scryptKey(credentials.password, challenge.salt, params);
  cache?.set(id, key);
  return key;
}

/** A fake credential for an unknown user: the challenge looks the same, so names cannot be probed. */
export function decoyCredential(user: string, pepper: Uint8Array): StoredCredential {
  const salt = hmac(pepper, `salt:${user}`).subarray(0, SALT_BYTES);
  const key = hmac(pepper, `key:${user}`);
  return { salt, kdf: scryptKdf(DEFAULT_SCRYPT), storedKey: key, serverKey: key };
}

/**
 * `address` (as `socket.remoteAddress` gives it) with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
 * as its IPv4 one, so that it compares with the addresses a ring or a flag holds.
 */
export function unmappedAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/** Whether `address` (as `socket.remoteAddress` gives it) is a loopback address. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === '::1') return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(unmappedAddress(address));
}
