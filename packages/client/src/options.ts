import { backoffDelay } from '@dstore/protocol';
import { invalidArgument } from './errors.js';

/**
 * Options of a {@link DstoreClient}. Names follow ioredis wherever the meaning is the same, so
 * `host`, `port`, `connectTimeout`, `commandTimeout`, `retryStrategy`, `maxRetriesPerRequest`,
 * `enableOfflineQueue`, `lazyConnect` and `keyPrefix` behave as ioredis users expect (the
 * differences are documented on each field).
 */
export interface ClientOptions {
  /** Balancer host. Default `127.0.0.1`. */
  readonly host?: string;
  /** Balancer client port. Default `7379`. */
  readonly port?: number;
  /** Give up a connection attempt (TCP connect + HELLO) after this many ms. Default `10000`. */
  readonly connectTimeout?: number;
  /**
   * Deadline of every command in ms, counted from the call: time waiting in the offline queue
   * counts too, so a command never hangs. Default `5000` (ioredis has no default).
   */
  readonly commandTimeout?: number;
  /**
   * Delay in ms before reconnect attempt `times` (1-based), or `null` to stop reconnecting (the
   * client then emits `end` and fails every queued command). Default {@link defaultRetryStrategy}.
   */
  readonly retryStrategy?: (times: number) => number | null;
  /**
   * How many times a command that certainly was not executed (UNAVAILABLE, BUSY, SHUTTING_DOWN,
   * or never written) is sent again. Indeterminate failures (TIMEOUT, CONNECTION_CLOSED after the
   * command was written) are never retried. Default `1` (ioredis: 20).
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
  /** Token sent in HELLO when the balancer requires one. Default: none. */
  readonly token?: string;
  /** A label for this client, used in error messages. Not sent on the wire. Default `''`. */
  readonly name?: string;
}

/** Every option with its value decided. */
export type ResolvedClientOptions = Required<Omit<ClientOptions, 'token'>> & { readonly token?: string };

/**
 * The default reconnect delay: the protocol's one backoff policy (50 ms doubling up to 2000 ms,
 * plus up to 20% jitter so many clients do not reconnect in lockstep), forever.
 */
export function defaultRetryStrategy(times: number): number {
  return backoffDelay(times, { initialDelayMs: 50, maxDelayMs: 2000 });
}

/** The defaults of every option. */
export const DEFAULT_CLIENT_OPTIONS: ResolvedClientOptions = Object.freeze({
  host: '127.0.0.1',
  port: 7379,
  connectTimeout: 10_000,
  commandTimeout: 5000,
  retryStrategy: defaultRetryStrategy,
  maxRetriesPerRequest: 1,
  enableOfflineQueue: true,
  maxQueueLength: 1000,
  lazyConnect: false,
  keyPrefix: '',
  name: '',
});

/** The URL scheme of dstore addresses. */
export const DSTORE_URL_SCHEME = 'dstore:';

const NUMBER_PARAMS = ['connectTimeout', 'commandTimeout', 'maxRetriesPerRequest', 'maxQueueLength'] as const;
const BOOLEAN_PARAMS = ['enableOfflineQueue', 'lazyConnect'] as const;
const STRING_PARAMS = ['keyPrefix', 'name', 'token'] as const;

/**
 * Parses `dstore://[:token@]host[:port][?option=value&...]`. The password part of the URL is the
 * HELLO token (as in `redis://:password@host`); query parameters set the numeric, boolean and
 * string options by their option names. IPv6 hosts go in brackets: `dstore://[::1]:7379`.
 */
export function parseDstoreUrl(url: string): ClientOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalidArgument(`not a valid URL: ${url}`);
  }
  if (parsed.protocol !== DSTORE_URL_SCHEME) {
    throw invalidArgument(`expected a dstore:// URL, got ${parsed.protocol}//`);
  }
  const options: Record<string, unknown> = {};
  if (parsed.hostname !== '') options.host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (parsed.port !== '') options.port = Number(parsed.port);
  const token = decodeURIComponent(parsed.password || parsed.username);
  if (token !== '') options.token = token;
  for (const [name, value] of parsed.searchParams) options[name] = parseParam(name, value);
  return options as ClientOptions;
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
  const base = typeof input === 'string' ? parseDstoreUrl(input) : input;
  const merged = { ...DEFAULT_CLIENT_OPTIONS, ...withoutUndefined(base), ...withoutUndefined(overrides) };
  checkInteger('port', merged.port, 0, 65_535);
  checkInteger('connectTimeout', merged.connectTimeout, 1);
  checkInteger('commandTimeout', merged.commandTimeout, 1);
  checkInteger('maxRetriesPerRequest', merged.maxRetriesPerRequest, 0);
  checkInteger('maxQueueLength', merged.maxQueueLength, 0);
  if (typeof merged.retryStrategy !== 'function') throw invalidArgument('retryStrategy must be a function');
  return Object.freeze(merged);
}

function withoutUndefined(options: ClientOptions): ClientOptions {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

function checkInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}
