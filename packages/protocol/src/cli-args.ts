/**
 * The one way the three CLIs (`dstore`, `dstore-node`, `dstore-balancer`) read addresses, integers,
 * durations and byte sizes, and the exit codes and environment variables they share. Parsers throw
 * a DstoreError INVALID_ARGUMENT with a message naming what was expected; each CLI turns it into a
 * usage error (exit {@link ExitCode.USAGE}) with {@link optionParser}.
 */
import { DstoreError, ErrorCode } from './errors.js';

/** Exit codes of every dstore CLI. */
export const ExitCode = {
  /** Done. */
  OK: 0,
  /** The command ran and failed: unreachable server, an error answer, an unhealthy cluster. */
  FAILURE: 1,
  /** The command line is wrong (unknown option, bad value): nothing was done. */
  USAGE: 2,
} as const;

/** Environment variables every dstore CLI reads (a flag given on the command line wins). */
export const EnvVar = {
  /** The password of the user `default` (`--token`). */
  TOKEN: 'DSTORE_TOKEN',
  /** The user password of the `dstore` CLI: `--password`. */
  PASSWORD: 'DSTORE_PASSWORD',
  /** The secret balancers and nodes prove to each other: `--cluster-secret`. */
  CLUSTER_SECRET: 'DSTORE_CLUSTER_SECRET',
  /** The Bearer token of the balancer's admin API: `--admin-token`. */
  ADMIN_TOKEN: 'DSTORE_ADMIN_TOKEN',
} as const;

/** The pino log levels the CLIs accept for `--log-level`. */
export const LOG_LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A host and port read from the command line. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Options of {@link parseAddress} and {@link parseAddressList}. */
export interface AddressOptions {
  /** Port when the text has none; without it a port is required. */
  readonly defaultPort?: number;
  /** Host when the text has none (`:7379`); without it a host is required. */
  readonly defaultHost?: string;
  /** What the value is, for error messages (`--join`). Default `address`. */
  readonly what?: string;
}

function invalid(message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, message);
}

/**
 * One address: `host:port`, `[v6]:port`, `host` or `:port` (when the defaults allow), or the same
 * behind a `scheme://` prefix (`dstore://host:port`). Ports are 1-65535.
 */
export function parseAddress(text: string, options: AddressOptions = {}): HostPort {
  const list = parseAddressList(text, options);
  if (list.length !== 1) throw invalid(`${options.what ?? 'address'}: expected one host:port, got '${text}'`);
  return list[0] as HostPort;
}

/**
 * A comma-separated list of addresses, each read as {@link parseAddress} reads one, with at most
 * one `scheme://` prefix for the whole list (`dstore://a:7379,b:7379`). An empty entry (`a,,b`) is
 * a typo and refused.
 */
export function parseAddressList(text: string, options: AddressOptions = {}): HostPort[] {
  const what = options.what ?? 'address';
  const entries = text
    .trim()
    .replace(/^[a-z][a-z\d+.-]*:\/\/(?:[^@/]*@)?/i, '')
    .replace(/\/.*$/, '')
    .split(',')
    .map((entry) => entry.trim());
  if (entries.includes('') && (entries.length > 1 || options.defaultHost === undefined)) {
    throw invalid(`${what}: empty address in '${text}'`);
  }
  return entries.map((entry) => {
    const match = /^(?:\[([^\]]+)\]|([^:[\]]*))(?::([^:]*))?$/.exec(entry);
    if (!match) throw invalid(`${what}: expected host:port, got '${entry}'`);
    const host = match[1] ?? match[2] ?? '';
    if (host === '' && options.defaultHost === undefined) throw invalid(`${what}: no host in '${entry}'`);
    const portText = match[3];
    if (portText === undefined && options.defaultPort === undefined) {
      throw invalid(`${what}: expected host:port, got '${entry}' (no port)`);
    }
    const port =
      portText === undefined
        ? (options.defaultPort as number)
        : parseInteger(portText, { min: 1, max: 65_535, what: `${what} port` });
    return { host: host === '' ? (options.defaultHost as string) : host, port };
  });
}

/** Options of {@link parseInteger}. */
export interface IntegerOptions {
  readonly min?: number;
  readonly max?: number;
  /** What the value is, for error messages. Default `value`. */
  readonly what?: string;
}

/**
 * A decimal integer, digits only: `1e3`, `1.0`, `0x10`, `+1`, `12abc` and the empty string are
 * refused (JavaScript's Number() would take most of them), as is anything out of [min, max].
 */
export function parseInteger(text: string, options: IntegerOptions = {}): number {
  const { min = 0, max = Number.MAX_SAFE_INTEGER, what = 'value' } = options;
  const trimmed = text.trim();
  const value = Number(trimmed);
  if (!/^-?\d+$/.test(trimmed) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(`${what}: expected an integer from ${min} to ${max}, got '${text}'`);
  }
  return value;
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration in ms: a bare integer is milliseconds (as every `--*-timeout <ms>` flag always read
 * it), or a number with a unit `ms`, `s`, `m`, `h` (`250ms`, `1.5s`, `2m`). Rounded to whole ms.
 */
export function parseDuration(text: string, options: IntegerOptions = {}): number {
  const { min = 0, max = 2 ** 31 - 1, what = 'duration' } = options;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const value = match
    ? Math.round(Number(match[1]) * (DURATION_UNITS[match[2] ?? 'ms'] as number))
    : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw invalid(
      `${what}: expected a duration from ${min} to ${max} ms (500, 500ms, 2s, 1m), got '${text}'`,
    );
  }
  return value;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/**
 * A size in bytes: a bare integer, or a number with a binary unit, case-insensitive: `k`/`KB`/
 * `KiB` = 1024, `m`/`MB`/`MiB` = 1024², `g`/`GB`/`GiB` = 1024³ (`64k`, `1.5MiB`). Rounded down.
 */
export function parseByteSize(text: string, options: IntegerOptions = {}): number {
  const { min = 0, max = Number.MAX_SAFE_INTEGER, what = 'size' } = options;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = SIZE_UNITS[(match?.[2] ?? '').toLowerCase()];
  const value = match && unit !== undefined ? Math.floor(Number(match[1]) * unit) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw invalid(`${what}: expected a size from ${min} to ${max} bytes (100, 64k, 1MiB), got '${text}'`);
  }
  return value;
}

/**
 * Adapts a parser of this module to a CLI library's option parser: its INVALID_ARGUMENT becomes
 * the library's usage error (commander: `(message) => new InvalidArgumentError(message)`).
 */
export function optionParser<T>(
  parse: (text: string) => T,
  usageError: (message: string) => Error,
): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (error) {
      if (error instanceof DstoreError && error.code === ErrorCode.INVALID_ARGUMENT) {
        throw usageError(error.message);
      }
      throw error;
    }
  };
}

/** Bytes as a short human figure (binary units, the inverse of {@link parseByteSize}): `512 B`, `3.2 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
