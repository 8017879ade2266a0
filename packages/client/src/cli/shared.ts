import { parseScryptCost, readTlsFiles, type ScryptParams, type TlsClientOptions } from '@dstore/protocol';
import {
  ExitCode as CommonExitCode,
  EnvVar,
  optionParser,
  parseAddressList,
  parseByteSize,
  parseDuration,
  parseInteger,
} from '@dstore/protocol/internal';
import { InvalidArgumentError } from 'commander';
import { createClient, type DstoreClient } from '../client.js';
import { DstoreError, ErrorCode } from '../errors.js';
import type { ClientOptions } from '../options.js';

/**
 * Exit codes of the `dstore` CLI: those of every dstore CLI (0 done, 1 failure, 2 usage), plus 3
 * for a `get` of a key that does not exist (a miss is not a failure, but scripts can test it).
 */
export const ExitCode = { ...CommonExitCode, NOT_FOUND: 3 } as const;

/** Default `--server`: the balancer's client port. */
export const DEFAULT_SERVER = '127.0.0.1:7379';
/** Default `--admin`: the balancer's admin HTTP port. */
export const DEFAULT_ADMIN = '127.0.0.1:7380';
/** Default `--timeout` in ms (connect and each command). */
export const DEFAULT_TIMEOUT_MS = 5000;

/** Options every command that talks to the balancer accepts. */
export interface ServerOptions {
  /** One balancer address or a comma-separated list of them (see `parseAddressList`). */
  readonly server: string;
  readonly timeout: number;
  readonly json?: boolean;
  /** The password of the user `default` (else env DSTORE_TOKEN). */
  readonly token?: string;
  /** A user, with `password` (else env DSTORE_PASSWORD); a `dstore://user:password@` server too. */
  readonly user?: string;
  readonly password?: string;
  /** The cheapest scrypt cost accepted from a server (`--min-scrypt-cost N,r,p`); see `minScryptCost`. */
  readonly minScryptCost?: ScryptParams;
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
  if (user !== undefined) return { user, password: password ?? process.env[EnvVar.PASSWORD] ?? '' };
  token ??= process.env[EnvVar.TOKEN];
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

/** Commander parser of the shared {@link parseInteger}: a positive decimal integer. */
export const positiveInteger = commanderParser((text) => parseInteger(text, { min: 1 }));

/** Commander parser of the shared {@link parseInteger}: a decimal integer >= 0. */
export const nonNegativeInteger = commanderParser((text) => parseInteger(text, { min: 0 }));

/** Commander parser of the shared {@link parseInteger}: any safe decimal integer, negative too. */
export const signedInteger = commanderParser((text) => parseInteger(text, { min: -Number.MAX_SAFE_INTEGER }));

/** Commander parser of the shared {@link parseDuration}: `500`, `500ms`, `2s`, at least 1 ms. */
export const duration = commanderParser((text) => parseDuration(text, { min: 1 }));

/** Commander parser of `--min-scrypt-cost`: `N,r,p` (the protocol's {@link parseScryptCost}). */
export const scryptCost = commanderParser((text) => parseScryptCost(text));

/** Commander parser of the shared {@link parseByteSize}: `100`, `64k`, `1MiB`. */
export const byteSize = commanderParser((text) => parseByteSize(text));

/** A usage error found after parsing (exit 2), such as two options that exclude each other. */
export function usage(message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, message);
}

/** Adapts a shared parser to commander: a bad value is a usage error (exit 2). */
export function commanderParser<T>(parse: (text: string) => T): (text: string) => T {
  return optionParser(parse, (message) => new InvalidArgumentError(message));
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
 * deadline on the connect and on every command. The connect's deadline is shared among the listed
 * servers, so one that accepts and never answers (a hung balancer) leaves the next its turn.
 */
export async function openClient(options: ServerOptions, extra: ClientOptions = {}): Promise<DstoreClient> {
  const tls = await cliTls(options);
  const servers = parseAddressList(options.server, {
    defaultPort: 7379,
    defaultHost: '127.0.0.1',
    what: '--server',
  });
  const client = createClient({
    ...extra,
    servers,
    ...credentialOptions(options),
    ...(options.minScryptCost === undefined ? {} : { minScryptCost: options.minScryptCost }),
    ...(tls === undefined ? {} : { tls }),
    lazyConnect: true,
    retryStrategy: () => null,
    connectTimeout: Math.max(1, Math.floor(options.timeout / servers.length)),
    commandTimeout: options.timeout,
    name: 'dstore',
  });
  try {
    await client.connect();
  } catch (error) {
    await client.disconnect();
    // The underlying connect failure (for example "ECONNREFUSED") says more than "gave up".
    const cause = (error as Error).cause;
    if (!(error instanceof DstoreError) || !(cause instanceof Error)) throw error;
    throw new DstoreError(error.code, `cannot connect to ${options.server}: ${cause.message}`, { cause });
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

/** Writes one line to stdout. */
export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Writes `value` as one JSON line to stdout. */
export function printJson(value: unknown): void {
  printLine(JSON.stringify(value));
}

/**
 * Prints `error <CODE>: message` to stderr and sets the exit code: 2 for an invalid argument (the
 * command line, or a key or value refused before sending), 1 for any other failure.
 */
export function reportError(error: unknown): void {
  const code = error instanceof DstoreError ? error.code : ErrorCode.INTERNAL;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`error ${code}: ${message}\n`);
  const usage = code === ErrorCode.INVALID_ARGUMENT && !(error instanceof ServerRefusal);
  process.exitCode = usage ? ExitCode.USAGE : ExitCode.FAILURE;
}

/**
 * A request the server refused for the cluster's state (removing a node that is alive, or the
 * last copy of a range): a failure (exit 1), not a usage error, although its code is
 * INVALID_ARGUMENT. The command line was right; the cluster was not in a state to do it.
 */
export class ServerRefusal extends DstoreError {}
