import { readFile } from 'node:fs/promises';
import { bytesToString, DstoreError, ErrorCode } from '@dstore/protocol';
import { parseInteger } from '@dstore/protocol/internal';
import type { Command } from 'commander';
import {
  commanderParser,
  ExitCode,
  nonNegativeInteger,
  positiveInteger,
  printJson,
  printLine,
  type ServerOptions,
  usage,
  withClient,
} from './shared.js';

interface ScanCliOptions extends ServerOptions {
  readonly match?: string;
  readonly count?: number;
}

interface SetOptions extends ServerOptions {
  /** Read the value from this file instead of the argument. */
  readonly file?: string;
  /** Expire after this many seconds. */
  readonly ex?: number;
  /** Expire after this many milliseconds. */
  readonly px?: number;
  /** Only if the key does not exist. */
  readonly nx?: boolean;
  /** Only if the key exists. */
  readonly xx?: boolean;
  /** Compare-and-set: only if the key is at this version (0: does not exist). */
  readonly ifVersion?: number;
}

interface GetCliOptions extends ServerOptions {
  /** Print the value's version too. */
  readonly withVersion?: boolean;
  /** Write the value's bytes as they are (no decoding, no newline). */
  readonly raw?: boolean;
}

interface DelCliOptions extends ServerOptions {
  /** Only if the key is at this version. */
  readonly ifVersion?: number;
}

/**
 * The value of `set`: the argument, all of stdin for `-`, or a file's bytes with `--file`. Large
 * values go through stdin or a file: an argument is bounded by the OS (about 128 KiB per argument
 * on Linux, "Argument list too long").
 */
async function setValue(value: string | undefined, options: SetOptions): Promise<string | Uint8Array> {
  if (options.file !== undefined) {
    if (value !== undefined) throw usage('give the value as an argument, - (stdin) or --file, not both');
    try {
      return new Uint8Array(await readFile(options.file));
    } catch (error) {
      throw new DstoreError(
        ErrorCode.INVALID_ARGUMENT,
        `cannot read --file ${options.file}: ${(error as Error).message}`,
      );
    }
  }
  if (value === undefined)
    throw usage('missing value: give it as an argument, - for stdin, or --file <path>');
  if (value !== '-') return value;
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return new Uint8Array(Buffer.concat(chunks));
}

/** Registers `set`, `mset`, `mget`, `get`, `del`, `scan`, `dbsize`, `flushall` and `ping`. */
export function registerKeyValueCommands(
  program: Command,
  addServerOptions: (command: Command) => Command,
): void {
  addServerOptions(
    program
      .command('set')
      .description(
        'store a value under a key: the argument (UTF-8), - to read stdin, or --file <path> (bytes as they are)',
      )
      .argument('<key>')
      .argument('[value]')
      .option('--file <path>', 'read the value from a file')
      .option('--ex <seconds>', 'expire after this many seconds', positiveInteger)
      .option('--px <ms>', 'expire after this many milliseconds', positiveInteger)
      .option(
        '--nx',
        `only if the key does not exist (prints (nil) and exits ${ExitCode.NOT_FOUND} otherwise)`,
      )
      .option('--xx', `only if the key exists (prints (nil) and exits ${ExitCode.NOT_FOUND} otherwise)`)
      .option(
        '--if-version <n>',
        'compare-and-set: only if the key is at this version, 0 = does not exist (VERSION_CONFLICT, exit 1, otherwise); prints the new version',
        nonNegativeInteger,
      ),
  ).action(async (key: string, value: string | undefined, options: SetOptions) => {
    const bytes = await setValue(value, options);
    const { ex, px, nx, xx, ifVersion } = options;
    if (ifVersion !== undefined) {
      const version = await withClient(options, (client) =>
        client.setWithVersion(key, bytes, { ex, px, nx, xx, ifVersion }),
      );
      if (options.json) printJson({ ok: true, version });
      else printLine(`OK ${version}`);
      return;
    }
    const reply = await withClient(options, (client) => client.set(key, bytes, { ex, px, nx, xx }));
    if (options.json) printJson({ ok: reply === 'OK' });
    else printLine(reply === 'OK' ? 'OK' : '(nil)');
    if (reply === null) process.exitCode = ExitCode.NOT_FOUND;
  });

  addServerOptions(
    program
      .command('mset')
      .description(
        'store several keys in one request: mset KEY VALUE [KEY VALUE ...] (not atomic across nodes)',
      )
      .argument('<pairs...>'),
  ).action(async (pairs: string[], options: ServerOptions) => {
    if (pairs.length % 2 !== 0) throw usage(`mset takes KEY VALUE pairs, got ${pairs.length} arguments`);
    const entries: [string, string][] = [];
    for (let i = 0; i < pairs.length; i += 2) entries.push([pairs[i] as string, pairs[i + 1] as string]);
    await withClient(options, (client) => client.mset(entries));
    if (options.json) printJson({ ok: true, keys: entries.length });
    else printLine('OK');
  });

  addServerOptions(
    program
      .command('mget')
      .description(
        'print the values of several keys, one line each, (nil) for a missing one; exit 0 either way',
      )
      .argument('<keys...>'),
  ).action(async (keys: string[], options: ServerOptions) => {
    const values = await withClient(options, (client) => client.mget(keys));
    const texts = values.map((value) => (value === null ? null : bytesToString(value)));
    if (options.json)
      printJson({ values: Object.fromEntries(keys.map((key, i) => [key, texts[i] ?? null])) });
    else for (const text of texts) printLine(text ?? '(nil)');
  });

  addServerOptions(
    program
      .command('get')
      .description(
        `print the value of a key, or (nil) with exit code ${ExitCode.NOT_FOUND} when it does not exist`,
      )
      .argument('<key>')
      .option('--with-version', "print the value's version (for set/del --if-version) on a second line")
      .option(
        '--raw',
        "write the value's bytes as they are, with no newline (binary values: what set --file or set - stored); nothing for a missing key",
      ),
  ).action(async (key: string, options: GetCliOptions) => {
    if (options.raw && (options.withVersion || options.json)) {
      throw usage('--raw writes the bytes alone: not with --with-version or --json');
    }
    if (options.raw) {
      const value = await withClient(options, (client) => client.get(key));
      if (value === null) process.exitCode = ExitCode.NOT_FOUND;
      else process.stdout.write(value);
      return;
    }
    if (options.withVersion) {
      const entry = await withClient(options, (client) => client.getWithVersion(key));
      const text = entry === null ? null : bytesToString(entry.value);
      if (options.json) printJson({ key, value: text, version: entry?.version ?? 0 });
      else {
        printLine(text ?? '(nil)');
        printLine(String(entry?.version ?? 0));
      }
      if (entry === null) process.exitCode = ExitCode.NOT_FOUND;
      return;
    }
    const value = await withClient(options, (client) => client.get(key));
    const text = value === null ? null : bytesToString(value);
    if (options.json) printJson({ key, value: text });
    else printLine(text ?? '(nil)');
    if (value === null) process.exitCode = ExitCode.NOT_FOUND;
  });

  addServerOptions(
    program
      .command('del')
      .description('delete a key; prints 1 if it existed, 0 if not')
      .argument('<key>')
      .option(
        '--if-version <n>',
        'only if the key is at this version (VERSION_CONFLICT, exit 1, otherwise)',
        nonNegativeInteger,
      ),
  ).action(async (key: string, options: DelCliOptions) => {
    const removed = await withClient(options, (client) => client.del(key, { ifVersion: options.ifVersion }));
    if (options.json) printJson({ key, deleted: removed ? 1 : 0 });
    else printLine(removed ? '1' : '0');
  });

  addServerOptions(
    program
      .command('scan')
      .description(
        'print every key of the cluster, one per line, once each (SCAN until the end; --match a Redis glob pattern)',
      )
      .option('--match <pattern>', 'only keys matching this glob pattern (*, ?, [...], \\ escapes)')
      .option(
        '--count <n>',
        'keys examined per page (Redis COUNT), 1..1000',
        commanderParser((text) => parseInteger(text, { min: 1, max: 1000, what: '--count' })),
      ),
  ).action(async (options: ScanCliOptions) => {
    const keys = await withClient(options, async (client) => {
      // Keys may come more than once during a ring change (as Redis's SCAN): print each once.
      const unique = new Set<string>();
      for await (const key of client.scanIterator({ match: options.match, count: options.count }))
        unique.add(key);
      return [...unique];
    });
    if (options.json) printJson({ keys });
    else for (const key of keys) printLine(key);
  });

  addServerOptions(
    program
      .command('dbsize')
      .description('print the number of keys in the cluster (approximate while keys move)'),
  ).action(async (options: ServerOptions) => {
    const size = await withClient(options, (client) => client.dbsize());
    if (options.json) printJson({ keys: size });
    else printLine(String(size));
  });

  addServerOptions(
    program
      .command('flushall')
      .description(
        'delete every key of the cluster (admin users only; refused while keys migrate); needs --yes',
      )
      .option('--yes', 'really delete every key'),
  ).action(async (options: ServerOptions & { readonly yes?: boolean }) => {
    if (options.yes !== true) throw usage('flushall deletes every key of the cluster: confirm with --yes');
    const deleted = await withClient(options, (client) => client.flushAll());
    if (options.json) printJson({ ok: true, deleted });
    else printLine(`OK ${deleted}`);
  });

  addServerOptions(
    program.command('ping').description('round trip to the balancer; prints PONG and the time'),
  ).action(async (options: ServerOptions) => {
    const ms = await withClient(options, async (client) => {
      const started = performance.now();
      await client.ping();
      return performance.now() - started;
    });
    if (options.json) printJson({ reply: 'PONG', ms: Number(ms.toFixed(3)) });
    else printLine(`PONG ${ms.toFixed(3)} ms`);
  });
}
