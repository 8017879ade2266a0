import { readTlsFiles, type TlsClientOptions } from '@dstore/protocol';
import { InvalidArgumentError } from 'commander';
import { createClient, type DstoreClient } from '../client.js';
import { DstoreError, ErrorCode } from '../errors.js';

/** Exit codes of the `dstore` CLI. */
export const ExitCode = {
  OK: 0,
  /** `get` found no value (like grep: a miss is not an error, but scripts can test it). */
  NOT_FOUND: 1,
  /** Any failure: bad arguments, unreachable server, an ERROR answer. */
  ERROR: 2,
} as const;

/** Default `--server`: the balancer's client port. */
export const DEFAULT_SERVER = '127.0.0.1:7379';
/** Default `--admin`: the balancer's admin HTTP port. */
export const DEFAULT_ADMIN = '127.0.0.1:7380';
/** Default `--timeout` in ms (connect and each command). */
export const DEFAULT_TIMEOUT_MS = 5000;

/** Options every command that talks to the balancer accepts. */
export interface ServerOptions {
  /** One balancer address or a comma-separated list of them (see {@link parseHostPortList}). */
  readonly server: string;
  readonly timeout: number;
  readonly json?: boolean;
  /** The password of the user `default` (else env DSTORE_TOKEN). */
  readonly token?: string;
  /** A user, with `password` (else env DSTORE_PASSWORD); a `dstore://user:password@` server too. */
  readonly user?: string;
  readonly password?: string;
  /** PEM CA bundle the balancer is verified against; implies TLS. */
  readonly tlsCa?: string;
  /** PEM client certificate (with `tlsKey`), for balancers that check one; implies TLS. */
  readonly tlsCert?: string;
  readonly tlsKey?: string;
}

/** The credentials of a command: flags, then the `user:password@` of a URL, then the env. */
function credentialOptions(options: ServerOptions): { token?: string; user?: string; password?: string } {
  const userInfo = /^[a-z]+:\/\/([^@/]*)@/i.exec(options.server)?.[1];
  let user = options.user;
  let password = options.password;
  let token = options.token;
  if (userInfo !== undefined && user === undefined && token === undefined) {
    const colon = userInfo.indexOf(':');
    const name = decodeURIComponent(colon < 0 ? userInfo : userInfo.slice(0, colon));
    const secret = colon < 0 ? '' : decodeURIComponent(userInfo.slice(colon + 1));
    if (name !== '' && secret !== '') [user, password] = [name, secret];
    else token = name || secret;
  }
  if (user !== undefined) return { user, password: password ?? process.env.DSTORE_PASSWORD ?? '' };
  token ??= process.env.DSTORE_TOKEN;
  return token === undefined || token === '' ? {} : { token };
}

/**
 * The TLS of a CLI connection: from `--tls-ca`/`--tls-cert`/`--tls-key` (files), or `{}` (Node's
 * bundled CAs) for a `dstores://` server without them; undefined for plaintext.
 */
export async function cliTls(options: ServerOptions): Promise<TlsClientOptions | undefined> {
  const material = await readTlsFiles({ ca: options.tlsCa, cert: options.tlsCert, key: options.tlsKey });
  if (material !== undefined) return material;
  return /^dstores:\/\//i.test(options.server.trim()) ? {} : undefined;
}

/** A host and port read from the command line. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses one address: `host:port`, `[::1]:port`, `host`, `:port` or a `dstore://host:port` URL.
 * A missing host is 127.0.0.1, a missing port `defaultPort`.
 */
export function parseHostPort(text: string, defaultPort: number): HostPort {
  const addresses = parseHostPortList(text, defaultPort);
  if (addresses.length !== 1) {
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `expected one host:port address, got ${text}`);
  }
  return addresses[0] as HostPort;
}

/**
 * Parses a comma-separated list of addresses, each as {@link parseHostPort} reads one, with at
 * most one `dstore://` (or `dstores://`) prefix for the whole list: `a:7379,b:7379` or `dstore://a:7379,[::1]:7379`.
 */
export function parseHostPortList(text: string, defaultPort: number): HostPort[] {
  const entries = text
    .replace(/^[a-z]+:\/\/(?:[^@/]*@)?/i, '')
    .replace(/\/.*$/, '')
    .split(',')
    .map((entry) => entry.trim());
  // In a list an empty entry is a typo ("a,,b"), not a request for the default address.
  if (entries.length > 1 && entries.includes('')) {
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `empty address in the list ${text}`);
  }
  return entries.map((entry) => parseAddress(entry, text, defaultPort));
}

function parseAddress(entry: string, text: string, defaultPort: number): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(entry);
  if (!match)
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `not a host:port address: ${entry} in ${text}`);
  const host = match[1] ?? match[2] ?? '';
  const port = match[3] === undefined ? defaultPort : Number(match[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `port out of range in ${text}`);
  }
  return { host: host === '' ? '127.0.0.1' : host, port };
}

/** Commander parser for a positive integer option. */
export function positiveInteger(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new InvalidArgumentError('expected a positive integer');
  return number;
}

/** Commander parser for a non-negative integer option. */
export function nonNegativeInteger(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0) throw new InvalidArgumentError('expected an integer >= 0');
  return number;
}

/** Commander parser for a fraction in [0, 1]. */
export function fraction(value: string): number {
  const number = Number(value);
  if (value.trim() === '' || !(number >= 0 && number <= 1))
    throw new InvalidArgumentError('expected a number in [0, 1]');
  return number;
}

/** Commander parser for a positive number (seconds may be fractional). */
export function positiveNumber(value: string): number {
  const number = Number(value);
  if (!(number > 0) || !Number.isFinite(number)) throw new InvalidArgumentError('expected a positive number');
  return number;
}

/**
 * Opens a client for one CLI invocation: fail fast (no reconnect loop: each listed server is tried
 * once, in order, and when none answers that is an error at once) and with the `--timeout`
 * deadline on the connect and on every command.
 */
export async function openClient(options: ServerOptions): Promise<DstoreClient> {
  const tls = await cliTls(options);
  const client = createClient({
    servers: parseHostPortList(options.server, 7379),
    ...credentialOptions(options),
    ...(tls === undefined ? {} : { tls }),
    lazyConnect: true,
    retryStrategy: () => null,
    connectTimeout: options.timeout,
    commandTimeout: options.timeout,
    name: 'dstore',
  });
  try {
    await client.connect();
  } catch (error) {
    await client.disconnect();
    // The underlying connect failure (for example "ECONNREFUSED") says more than "gave up".
    const cause = (error as Error).cause;
    throw cause instanceof DstoreError ? cause : error;
  }
  return client;
}

/** Runs `body` with a connected client and always closes it. */
export async function withClient<T>(
  options: ServerOptions,
  body: (client: DstoreClient) => Promise<T>,
): Promise<T> {
  const client = await openClient(options);
  try {
    return await body(client);
  } finally {
    await client.close();
  }
}

/** The `--admin-token` flag of the admin commands (else env DSTORE_ADMIN_TOKEN). */
export const ADMIN_TOKEN_FLAG = '--admin-token <token>';
export const ADMIN_TOKEN_HELP = 'Bearer token of the balancer admin API (env DSTORE_ADMIN_TOKEN)';

/** HTTP headers carrying the admin token, when there is one. */
export function adminHeaders(token: string | undefined): Record<string, string> {
  const value = token ?? process.env.DSTORE_ADMIN_TOKEN;
  return value === undefined || value === '' ? {} : { authorization: `Bearer ${value}` };
}

/** Writes one line to stdout. */
export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Writes `value` as one JSON line to stdout. */
export function printJson(value: unknown): void {
  printLine(JSON.stringify(value));
}

/** Prints `error <CODE>: message` to stderr and sets the error exit code. */
export function reportError(error: unknown): void {
  const code = error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`error ${code}: ${message}\n`);
  process.exitCode = ExitCode.ERROR;
}
