import {
  type Credentials,
  checkScryptCost,
  DEFAULT_LIMITS,
  DEFAULT_USER,
  parseScryptCost,
  type ScryptParams,
  type TlsClientOptions,
} from '@dstore/protocol';
import { backoffDelay } from '@dstore/protocol/internal';
import { invalidArgument } from './errors.js';

/** One balancer in {@link ClientOptions.servers}: ioredis's `{ host, port }` shape. */
export interface ServerAddress {
  /** Balancer host. */
  readonly host: string;
  /** Balancer client port. Default `7379`. */
  readonly port?: number;
}

/** A balancer address with its port decided. */
export interface ResolvedServerAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * Options of a {@link DstoreClient}. Names follow ioredis wherever the meaning is the same, so
 * `host`, `port`, `connectTimeout`, `commandTimeout`, `retryStrategy`, `maxRetriesPerRequest`,
 * `enableOfflineQueue`, `lazyConnect` and `keyPrefix` behave as ioredis users expect (the
 * differences are documented on each field).
 */
export interface ClientOptions {
  /** Balancer host: the single-server shorthand of {@link servers}. Default `127.0.0.1`. */
  readonly host?: string;
  /** Balancer client port: the single-server shorthand of {@link servers}. Default `7379`. */
  readonly port?: number;
  /**
   * Several balancers of one cluster, in failover order (like ioredis `sentinels` / cluster
   * `startupNodes`). The client keeps one connection at a time and, when it cannot connect to
   * or loses the current balancer, tries the next one at once; `retryStrategy` spaces the full
   * rounds. Give either `servers` or `host`/`port`, not both. Default: `[{ host, port }]`.
   */
  readonly servers?: readonly ServerAddress[];
  /**
   * Give up a connection attempt (TCP connect + HELLO) after this many ms. `connect()` waits one
   * round: this much per listed server. Default `10000`.
   */
  readonly connectTimeout?: number;
  /**
   * Deadline of every command in ms, counted from the call: time waiting in the offline queue
   * counts too, so a command never hangs. Default `5000` (ioredis has no default).
   */
  readonly commandTimeout?: number;
  /**
   * Delay in ms before reconnect attempt `times` (1-based), or `null` to stop reconnecting (the
   * client then emits `end` and fails every queued command). With several `servers`, `times`
   * counts full rounds: the servers of one round are tried back to back, and this delay comes
   * after a round in which none answered. Default {@link defaultRetryStrategy}.
   */
  readonly retryStrategy?: (times: number) => number | null;
  /**
   * How many times a command that certainly was not executed (UNAVAILABLE, BUSY, SHUTTING_DOWN,
   * or never written) is sent again, within its deadline. A command refused by a server (a
   * failover, a migration's freeze) waits 10 ms doubling to 500 ms between attempts, so with a
   * `commandTimeout` longer than the cluster's failure timeout a failover is invisible to commands
   * sent after it began (those in flight on the failed node fail indeterminate); one not yet
   * written waits for the reconnect. When the next attempt cannot start before the deadline, the
   * command fails at once with the server's answer. Indeterminate failures (TIMEOUT,
   * CONNECTION_CLOSED after the command was written) are never retried. Default `20` (as ioredis).
   */
  readonly maxRetriesPerRequest?: number;
  /** Queue commands while not connected (true) or fail them at once with UNAVAILABLE. Default `true`. */
  readonly enableOfflineQueue?: boolean;
  /** Most commands waiting in the offline queue; past it a command fails at once with BUSY. Default `1000`. */
  readonly maxQueueLength?: number;
  /** Do not connect until {@link DstoreClient.connect} or the first command. Default `false`. */
  readonly lazyConnect?: boolean;
  /** Prepended to every key sent (not to values). Default `''`. */
  readonly keyPrefix?: string;
  /**
   * The password of the user `default` (the servers' `--token`). Proved by challenge-response:
   * it never crosses the wire. Default: none.
   */
  readonly token?: string;
  /**
   * The user to authenticate as, with `password` (ioredis's `username`). Default: none.
   */
  readonly user?: string;
  /**
   * With `user`, that user's password; alone, the password of the user `default`, that is an
   * alias of {@link token} (as ioredis's and node-redis's `password`; giving both, different, is
   * refused). Never crosses the wire. Default: none.
   */
  readonly password?: string;
  /**
   * The cheapest scrypt cost (`{ N, r, p }`) this client accepts when a server's challenge names
   * the password's cost; a cheaper one is refused with UNAUTHORIZED before any proof is sent, so a
   * rogue server or someone on a plaintext path cannot make the proof cheap to brute-force
   * offline. Lower it only for hashes made cheaper on purpose (`hashPassword(password, params)`).
   * In a URL: `?minScryptCost=N,r,p`. Default: `DEFAULT_SCRYPT` (`{ N: 16384, r: 8, p: 1 }`,
   * the cost of `dstore hash-password`).
   */
  readonly minScryptCost?: ScryptParams;
  /**
   * Connect with TLS, as ioredis's `tls`: `{ ca, cert, key, servername, rejectUnauthorized }`
   * (the fields of Node's `tls.connect`). `{}` verifies the balancer against Node's bundled CAs;
   * a private cluster CA goes in `ca`. A `dstores://` URL sets `{}` when no `tls` is given.
   * Default: none (plaintext; a TLS-only balancer answers TLS_REQUIRED).
   */
  readonly tls?: TlsClientOptions;
  /**
   * A `dstore://` URL (node-redis's `{ url }`), read as {@link createClient} reads a URL string;
   * the other options of the same object apply over it.
   */
  readonly url?: string;
  /** A label for this client, used in error messages. Not sent on the wire. Default `''`. */
  readonly name?: string;
  /**
   * Where data commands (GET, SET, DEL, MGET, MSET) go. `'balancer'`: every command through the
   * balancer. `'direct'`: the client fetches the cluster map from the balancer (and is pushed its
   * changes), keeps one connection per storage node and sends each command straight to the key's
   * owner; a node it cannot reach, or a map it cannot resolve, sends that command through the
   * balancer instead (see the README, "Direct routing"). Default `'balancer'`.
   */
  readonly routing?: RoutingMode;
  /**
   * Direct routing: most MOVED/ASK redirects one command follows before it fails with
   * TOO_MANY_REDIRECTS (naming the last one). Default `5`.
   */
  readonly maxRedirections?: number;
  /**
   * Direct routing: ms between backstop refreshes of the cluster map (changes are pushed; this
   * only bounds how long a missed push can go unnoticed). Default `30000`.
   */
  readonly mapRefreshInterval?: number;
}

/** Where a client sends data commands: through the balancer, or straight to the key's node. */
export type RoutingMode = 'balancer' | 'direct';

/**
 * Every option with its value decided. `servers` always lists at least one balancer; `host` and
 * `port` are those of the first.
 */
export type ResolvedClientOptions = Required<
  Omit<ClientOptions, 'token' | 'user' | 'password' | 'minScryptCost' | 'servers' | 'tls' | 'url'>
> & {
  readonly minScryptCost?: ScryptParams;
  readonly token?: string;
  readonly user?: string;
  readonly password?: string;
  readonly tls?: TlsClientOptions;
  readonly servers: readonly ResolvedServerAddress[];
};

/**
 * The default reconnect delay: the protocol's one backoff policy (50 ms doubling up to 2000 ms,
 * plus up to 20% jitter so many clients do not reconnect in lockstep), forever.
 */
export function defaultRetryStrategy(times: number): number {
  return backoffDelay(times, { initialDelayMs: 50, maxDelayMs: 2000 });
}

/**
 * The wait before resend `times` (1-based) of a command a server refused: the protocol's one
 * backoff policy, from 10 ms doubling to 500 ms (+0-20% jitter), so a client rides through a
 * failover (the failure timeout) while polling the cluster about twice a second at most.
 */
export function resendDelay(times: number): number {
  return backoffDelay(times, { initialDelayMs: 10, maxDelayMs: 500 });
}

/** The defaults of every option. */
export const DEFAULT_CLIENT_OPTIONS: ResolvedClientOptions = Object.freeze({
  host: '127.0.0.1',
  port: 7379,
  servers: Object.freeze([Object.freeze({ host: '127.0.0.1', port: 7379 })]),
  connectTimeout: 10_000,
  commandTimeout: 5000,
  retryStrategy: defaultRetryStrategy,
  maxRetriesPerRequest: 20,
  enableOfflineQueue: true,
  maxQueueLength: 1000,
  lazyConnect: false,
  keyPrefix: '',
  name: '',
  routing: 'balancer',
  maxRedirections: 5,
  mapRefreshInterval: 30_000,
});

/**
 * Every option name, so that an unknown one is refused rather than silently ignored (a typo, or
 * an option of another client, would otherwise leave the client on its defaults).
 */
const OPTION_NAMES: ReadonlySet<string> = new Set<keyof ClientOptions>([
  'host',
  'port',
  'servers',
  'connectTimeout',
  'commandTimeout',
  'retryStrategy',
  'maxRetriesPerRequest',
  'enableOfflineQueue',
  'maxQueueLength',
  'lazyConnect',
  'keyPrefix',
  'token',
  'user',
  'password',
  'minScryptCost',
  'tls',
  'url',
  'name',
  'routing',
  'maxRedirections',
  'mapRefreshInterval',
]);

/** Options of other clients (ioredis, node-redis, memcached) and what to use here instead. */
const FOREIGN_OPTIONS: ReadonlyMap<string, string> = new Map([
  ['socket', 'host, port and connectTimeout (node-redis socket.host, socket.port, socket.connectTimeout)'],
  ['username', 'user'],
  ['auth_pass', 'password (or token)'],
  ['authPass', 'password (or token)'],
  ['prefix', 'keyPrefix'],
  ['db', 'keyPrefix (dstore has no numbered databases)'],
  ['database', 'keyPrefix (dstore has no numbered databases)'],
  ['timeout', 'commandTimeout (and connectTimeout)'],
  ['connect_timeout', 'connectTimeout'],
  ['retry_strategy', 'retryStrategy'],
  ['reconnectStrategy', 'retryStrategy'],
  ['maxRetries', 'maxRetriesPerRequest'],
  ['disableOfflineQueue', 'enableOfflineQueue: false'],
  ['commandsQueueMaxLength', 'maxQueueLength'],
  ['sentinels', 'servers'],
  ['startupNodes', 'servers'],
  ['rootNodes', 'servers'],
  ['enableAutoPipelining', 'nothing: commands issued in one tick always leave in one write'],
  ['clientName', 'name'],
  ['connectionName', 'name'],
  ['scaleReads', "nothing: reads go to the key's owner (routing: 'direct') or the balancer"],
]);

/** Refuses options this client does not know, naming the right one when it is a known mix-up. */
function checkClientOptionNames(options: object, where: string): void {
  checkOptionNames(options, OPTION_NAMES, where, FOREIGN_OPTIONS);
}

/**
 * Refuses an option name not in `known` (a typo, another client's spelling, or Redis's upper case
 * would otherwise be ignored silently: `{ NX: true }` an overwrite instead of a lock), naming the
 * right one when it is a known mix-up (`foreign`) or differs in case only.
 */
export function checkOptionNames(
  options: object,
  known: ReadonlySet<string>,
  where: string,
  foreign?: ReadonlyMap<string, string>,
): void {
  // for...in allocates nothing, unlike Object.keys: commands check their options every call.
  for (const name in options) {
    if (known.has(name) || !Object.hasOwn(options, name)) continue;
    const instead = foreign?.get(name) ?? sameButForCase(name, known);
    throw invalidArgument(
      instead === undefined
        ? `unknown option ${name} in ${where}; the options are ${[...known].join(', ')}`
        : `unknown option ${name} in ${where}: use ${instead}`,
    );
  }
}

function sameButForCase(name: string, known: ReadonlySet<string>): string | undefined {
  const lower = name.toLowerCase();
  for (const candidate of known) if (candidate.toLowerCase() === lower) return candidate;
  return undefined;
}

/**
 * The forms {@link createClient} accepts, as (options or URL, overrides): `(options)`, `(url)`,
 * `(url, overrides)`, and ioredis's `(port)`, `(port, host)`, `(port, host, options)` and
 * `(port, options)`, where the explicit port and host win over the options.
 */
export type ClientArguments =
  | [options?: ClientOptions | string, overrides?: ClientOptions]
  | [port: number, host?: string, options?: ClientOptions]
  | [port: number, options: ClientOptions];

/** Normalises the {@link ClientArguments} forms to (options or URL, overrides). */
export function clientArguments(args: ClientArguments): [ClientOptions | string, ClientOptions] {
  const [first, second, third] = args;
  if (typeof first === 'number') {
    const host = typeof second === 'string' ? second : undefined;
    const options = (typeof second === 'object' ? second : third) ?? {};
    return [options, host === undefined ? { port: first } : { port: first, host }];
  }
  if (first !== undefined && typeof first !== 'string' && (typeof first !== 'object' || first === null)) {
    throw invalidArgument(`expected options, a dstore:// URL or a port, got ${String(first)}`);
  }
  if (second !== undefined && (typeof second !== 'object' || second === null)) {
    throw invalidArgument(`expected override options as the second argument, got ${String(second)}`);
  }
  return [first ?? {}, (second as ClientOptions | undefined) ?? {}];
}

/** The URL scheme of dstore addresses. */
export const DSTORE_URL_SCHEME = 'dstore:';
/** The URL scheme of dstore addresses reached over TLS (as `rediss:` is to `redis:`). */
export const DSTORE_TLS_URL_SCHEME = 'dstores:';

const NUMBER_PARAMS = [
  'connectTimeout',
  'commandTimeout',
  'maxRetriesPerRequest',
  'maxQueueLength',
  'maxRedirections',
  'mapRefreshInterval',
] as const;
const BOOLEAN_PARAMS = ['enableOfflineQueue', 'lazyConnect'] as const;
const STRING_PARAMS = ['keyPrefix', 'name', 'token', 'user', 'password', 'routing'] as const;

/** A URL cut around its host list: `scheme://[userinfo@]`, the hosts, then path, query and fragment. */
const URL_PARTS = /^([a-z][a-z\d+.-]*:\/\/(?:[^/?#@]*@)?)([^/?#]*)(.*)$/is;

/** A host and port as a URL names them; absent parts stay absent so defaults and overrides apply. */
interface UrlAddress {
  host?: string;
  port?: number;
}

/**
 * Parses `dstore://[:token@]host[:port][,host[:port]...][?option=value&...]`, or the same with
 * `dstores://`, which connects with TLS (`tls: {}`: the balancer verified against Node's bundled
 * CAs; pass `tls` in the overrides for a private CA). The password part
 * of the URL is the HELLO token (as in `redis://:password@host`); query parameters set the
 * numeric, boolean and string options by their option names. IPv6 hosts go in brackets:
 * `dstore://[::1]:7379`. One host gives `host` and `port`; several comma-separated hosts give
 * `servers`, each host parsed exactly as the host of a one-host URL.
 */
export function parseDstoreUrl(url: string): ClientOptions {
  const parts = URL_PARTS.exec(url.trim());
  const hosts = parts?.[2]?.split(',') ?? [];
  if (!parts || hosts.length < 2) {
    const parsed = parseUrl(url);
    return { ...addressOf(parsed), ...optionsOf(parsed) };
  }
  // `new URL` refuses a host list, so the token and parameters are read from the URL rewritten
  // with its first host only, and every host is parsed on its own.
  const options = optionsOf(parseUrl(`${parts[1]}${hosts[0]}${parts[3]}`));
  return { ...options, servers: hosts.map((host) => listedServer(host, url)) };
}

function parseUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalidArgument(`not a valid URL: ${url}`);
  }
  if (parsed.protocol !== DSTORE_URL_SCHEME && parsed.protocol !== DSTORE_TLS_URL_SCHEME) {
    throw invalidArgument(`expected a dstore:// or dstores:// URL, got ${parsed.protocol}//`);
  }
  return parsed;
}

function addressOf(parsed: URL): UrlAddress {
  const address: UrlAddress = {};
  if (parsed.hostname !== '') address.host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (parsed.port !== '') address.port = Number(parsed.port);
  return address;
}

function optionsOf(parsed: URL): ClientOptions {
  const options: Record<string, unknown> = {};
  if (parsed.protocol === DSTORE_TLS_URL_SCHEME) options.tls = {};
  // `user:password@` names a user; a lone `:token@` or `token@` is the token (as `redis://:pw@`).
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  if (user !== '' && password !== '') {
    options.user = user;
    options.password = password;
  } else if (user !== '' || password !== '') {
    options.token = user || password;
  }
  for (const [name, value] of parsed.searchParams) options[name] = parseParam(name, value);
  return options as ClientOptions;
}

/** One host of a URL's list; an empty entry (`a:1,,b:2`) is a typo, not the default host. */
function listedServer(text: string, url: string): ServerAddress {
  if (text === '') throw invalidArgument(`empty server address in the host list of ${url}`);
  const { host = DEFAULT_CLIENT_OPTIONS.host, port } = addressOf(parseUrl(`${DSTORE_URL_SCHEME}//${text}`));
  return port === undefined ? { host } : { host, port };
}

function parseParam(name: string, value: string): unknown {
  if ((NUMBER_PARAMS as readonly string[]).includes(name)) {
    const number = Number(value);
    if (value === '' || !Number.isFinite(number))
      throw invalidArgument(`URL parameter ${name} must be a number`);
    return number;
  }
  if ((BOOLEAN_PARAMS as readonly string[]).includes(name)) {
    if (value !== 'true' && value !== 'false')
      throw invalidArgument(`URL parameter ${name} must be true or false`);
    return value === 'true';
  }
  if ((STRING_PARAMS as readonly string[]).includes(name)) return value;
  if (name === 'minScryptCost') return parseScryptCost(value);
  throw invalidArgument(`unknown URL parameter ${name}`);
}

/**
 * Merges a URL or options object (and optional overrides) into complete options, checking each
 * value so a bad option fails at construction rather than at the first command.
 */
export function resolveClientOptions(
  input: ClientOptions | string = {},
  overrides: ClientOptions = {},
): ResolvedClientOptions {
  const base = typeof input === 'string' ? parseDstoreUrl(input) : fromObject(input, 'the options');
  const explicit = fromObject(overrides, 'the overrides');
  checkOneAddressForm(base, typeof input === 'string' ? 'the URL' : 'the options');
  checkOneAddressForm(explicit, 'the overrides');
  const servers = resolveServers(base, explicit);
  const first = servers[0] as ResolvedServerAddress;
  const { url: _url, ...merged } = {
    ...DEFAULT_CLIENT_OPTIONS,
    ...base,
    ...explicit,
    host: first.host,
    port: first.port,
    servers,
  };
  checkInteger('connectTimeout', merged.connectTimeout, 1);
  checkInteger('commandTimeout', merged.commandTimeout, 1);
  checkInteger('maxRetriesPerRequest', merged.maxRetriesPerRequest, 0);
  checkInteger('maxQueueLength', merged.maxQueueLength, 0);
  checkInteger('maxRedirections', merged.maxRedirections, 0, 100);
  checkInteger('mapRefreshInterval', merged.mapRefreshInterval, 1000);
  if (merged.routing !== 'balancer' && merged.routing !== 'direct') {
    throw invalidArgument(`routing must be 'balancer' or 'direct', got ${String(merged.routing)}`);
  }
  if (typeof merged.retryStrategy !== 'function') throw invalidArgument('retryStrategy must be a function');
  for (const name of BOOLEAN_PARAMS) {
    if (typeof merged[name] !== 'boolean') {
      throw invalidArgument(
        `${name} must be true or false, got ${typeof merged[name]} ${String(merged[name])}`,
      );
    }
  }
  checkKeyPrefix(merged.keyPrefix);
  checkCredentials(merged);
  if (merged.minScryptCost !== undefined) checkScryptCost(merged.minScryptCost);
  return Object.freeze(merged);
}

/**
 * `keyPrefix` goes in front of every key, so it must be text and leave room for a key: a prefix
 * past the key limit would fail every keyed command with KEY_TOO_LARGE instead of the constructor.
 */
function checkKeyPrefix(prefix: unknown): void {
  if (typeof prefix !== 'string') throw invalidArgument(`keyPrefix must be a string, got ${typeof prefix}`);
  const bytes = Buffer.byteLength(prefix);
  if (bytes >= DEFAULT_LIMITS.maxKeyBytes) {
    throw invalidArgument(
      `keyPrefix is ${bytes} bytes: it must leave room for keys under the ${DEFAULT_LIMITS.maxKeyBytes}-byte key limit`,
    );
  }
}

/**
 * A command's own `timeout` (ms), checked like `commandTimeout`: a NaN, infinite, zero or
 * non-number deadline would never fire (or fire at once), and no command may wait forever.
 */
export function checkCommandTimeout(timeout: unknown): void {
  checkInteger('timeout', timeout as number, 1);
}

/** `user` goes with `password`, and a token is the password of `default`: one way at a time. */
function checkCredentials(options: ClientOptions): void {
  if (options.user !== undefined && options.password === undefined) {
    throw invalidArgument('user needs its password: give user and password (or token alone)');
  }
  if (options.user !== undefined && options.token !== undefined) {
    throw invalidArgument(
      'conflicting options: token is the password of the user default; give user/password or token',
    );
  }
}

/** What the client proves in HELLO/AUTH: `user`/`password`, or `token` as the user `default`. */
export function credentialsOf(options: ResolvedClientOptions): Credentials | undefined {
  const { minScryptCost } = options;
  if (options.user !== undefined && options.password !== undefined) {
    return { kind: 'user', user: options.user, password: options.password, minScryptCost };
  }
  if (options.token !== undefined && options.token !== '') {
    return { kind: 'user', user: DEFAULT_USER, password: options.token, minScryptCost };
  }
  return undefined;
}

/**
 * The balancers to use. `servers` and `host`/`port` say the same thing two ways, so one options
 * object giving both is refused. Overrides replace the URL's address; a lone `port` override
 * still applies to the URL's one host, as before `servers` existed.
 */
function resolveServers(base: ClientOptions, overrides: ClientOptions): readonly ResolvedServerAddress[] {
  if (overrides.servers !== undefined) return checkServers(overrides.servers);
  if (base.servers !== undefined) {
    if (hasHostOrPort(overrides)) {
      throw invalidArgument(
        'conflicting options: the overrides give host/port but the URL or options list several servers; override them with servers',
      );
    }
    return checkServers(base.servers);
  }
  const host = overrides.host ?? base.host ?? DEFAULT_CLIENT_OPTIONS.host;
  const port = overrides.port ?? base.port ?? DEFAULT_CLIENT_OPTIONS.port;
  return Object.freeze([checkServer({ host, port }, '')]);
}

function hasHostOrPort(options: ClientOptions): boolean {
  return options.host !== undefined || options.port !== undefined;
}

function checkOneAddressForm(options: ClientOptions, where: string): void {
  if (options.servers !== undefined && hasHostOrPort(options)) {
    throw invalidArgument(
      `conflicting options in ${where}: servers and host/port both given; use servers for several balancers, host/port for one`,
    );
  }
}

function checkServers(servers: readonly ServerAddress[]): readonly ResolvedServerAddress[] {
  if (!Array.isArray(servers) || servers.length === 0) {
    throw invalidArgument('servers must be a non-empty array of { host, port }');
  }
  return Object.freeze(servers.map((server, i) => checkServer(server, `servers[${i}].`)));
}

/** `prefix` names the field in errors: `servers[1].` for a list entry, '' for host/port. */
function checkServer(server: ServerAddress, prefix: string): ResolvedServerAddress {
  if (typeof server !== 'object' || server === null) {
    throw invalidArgument(`${prefix.slice(0, -1)} must be an object { host, port }`);
  }
  if (typeof server.host !== 'string' || server.host === '') {
    throw invalidArgument(`${prefix}host must be a non-empty string, got ${String(server.host)}`);
  }
  const port = server.port ?? DEFAULT_CLIENT_OPTIONS.port;
  checkInteger(`${prefix}port`, port, 1, 65_535);
  return Object.freeze({ host: server.host, port });
}

/**
 * An options object with its names checked, `url` expanded under the other options and `password`
 * turned into `token`.
 */
function fromObject(options: ClientOptions, where: string): ClientOptions {
  checkClientOptionNames(options, where);
  const { url, password, ...rest } = withoutUndefined(options);
  if (url !== undefined && typeof url !== 'string')
    throw invalidArgument(`url must be a string, got ${typeof url}`);
  // Without a user, `password` is the password of the user `default`: the token.
  const alias = rest.user === undefined ? password : undefined;
  if (alias !== undefined && rest.token !== undefined && alias !== rest.token) {
    throw invalidArgument(`conflicting options in ${where}: password is an alias of token, give one of them`);
  }
  const fromUrl = url === undefined ? {} : parseDstoreUrl(url);
  if (url !== undefined && fromUrl.servers !== undefined && hasHostOrPort(rest)) {
    throw invalidArgument(
      `conflicting options in ${where}: the url lists several servers and host/port is given`,
    );
  }
  const merged: ClientOptions = { ...fromUrl, ...rest };
  if (password === undefined) return merged;
  return alias === undefined ? { ...merged, password } : { ...merged, token: alias };
}

function withoutUndefined(options: ClientOptions): ClientOptions {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

function checkInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}
