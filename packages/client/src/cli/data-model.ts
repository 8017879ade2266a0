import type { Command } from 'commander';
import {
  positiveInteger,
  printJson,
  printLine,
  type ServerOptions,
  signedInteger,
  usage,
  withClient,
} from './shared.js';

interface ExpireCliOptions extends ServerOptions {
  /** The time is in milliseconds (PEXPIRE). */
  readonly ms?: boolean;
  readonly nx?: boolean;
  readonly xx?: boolean;
  readonly gt?: boolean;
  readonly lt?: boolean;
}

interface IncrCliOptions extends ServerOptions {
  /** The increment (INCRBY); default 1. */
  readonly by?: number;
  /** A floating-point increment (INCRBYFLOAT), as typed. */
  readonly float?: string;
}

/**
 * The one condition the flags ask for. Redis refuses NX with another condition and GT with LT;
 * so does this, as a usage error (nothing sent), and `--xx` with `--gt` or `--lt`, which the
 * client API's single condition does not express (Redis's XX GT is GT; XX LT: see RESP EXPIRE).
 */
function conditionOf(options: ExpireCliOptions): 'nx' | 'xx' | 'gt' | 'lt' | undefined {
  const given = (['nx', 'xx', 'gt', 'lt'] as const).filter((name) => options[name] === true);
  if (given.length > 1) {
    throw usage(`--${given.join(' and --')} cannot be used together: give one condition`);
  }
  return given[0];
}

/** Registers `ttl`, `expire`, `persist`, `incr`, `append` and `exists` (the data model's commands). */
export function registerDataModelCommands(
  program: Command,
  addServerOptions: (command: Command) => Command,
): void {
  addServerOptions(
    program
      .command('ttl')
      .description('seconds until a key expires: -1 when it has no expiry, -2 when it does not exist')
      .argument('<key>')
      .option('--ms', 'in milliseconds (PTTL)'),
  ).action(async (key: string, options: ExpireCliOptions) => {
    const ttl = await withClient(options, (client) => (options.ms ? client.pttl(key) : client.ttl(key)));
    if (options.json) printJson({ key, [options.ms ? 'pttl' : 'ttl']: ttl });
    else printLine(String(ttl));
  });

  addServerOptions(
    program
      .command('expire')
      .description('make a key expire after <seconds> (--ms: milliseconds); prints 1 if set, 0 if not')
      .argument('<key>')
      .argument('<time>', 'seconds, or milliseconds with --ms', positiveInteger)
      .option('--ms', 'the time is in milliseconds (PEXPIRE)')
      .option('--nx', 'only if the key has no expiry')
      .option('--xx', 'only if the key has an expiry')
      .option('--gt', 'only if later than the current expiry')
      .option('--lt', 'only if earlier than the current expiry'),
  ).action(async (key: string, time: number, options: ExpireCliOptions) => {
    const condition = conditionOf(options);
    const set = await withClient(options, (client) =>
      options.ms ? client.pexpire(key, time, { condition }) : client.expire(key, time, { condition }),
    );
    if (options.json) printJson({ key, set: set ? 1 : 0 });
    else printLine(set ? '1' : '0');
  });

  addServerOptions(
    program
      .command('persist')
      .description("remove a key's expiry; prints 1 if it had one, 0 if not")
      .argument('<key>'),
  ).action(async (key: string, options: ServerOptions) => {
    const removed = await withClient(options, (client) => client.persist(key));
    if (options.json) printJson({ key, persisted: removed ? 1 : 0 });
    else printLine(removed ? '1' : '0');
  });

  addServerOptions(
    program
      .command('incr')
      .description(
        'add 1 (or --by <n>, negative to decrement, or --float <x>) to the value of a key; prints the new value',
      )
      .argument('<key>')
      .option('--by <n>', 'the increment (INCRBY)', signedInteger)
      .option('--float <x>', "a floating-point increment, read and added as Redis's INCRBYFLOAT does"),
  ).action(async (key: string, options: IncrCliOptions) => {
    if (options.by !== undefined && options.float !== undefined) {
      throw usage('give --by or --float, not both');
    }
    const value = await withClient(options, async (client) =>
      options.float === undefined
        ? (await client.incrbyBig(key, BigInt(options.by ?? 1))).toString()
        : client.incrbyfloat(key, options.float),
    );
    if (options.json) printJson({ key, value });
    else printLine(value);
  });

  addServerOptions(
    program
      .command('append')
      .description(
        "add <value> at the end of a key's value (a missing key is created); prints the new length",
      )
      .argument('<key>')
      .argument('<value>'),
  ).action(async (key: string, value: string, options: ServerOptions) => {
    const length = await withClient(options, (client) => client.append(key, value));
    if (options.json) printJson({ key, length });
    else printLine(String(length));
  });

  addServerOptions(
    program
      .command('exists')
      .description('how many of the keys exist (a key named twice counts twice)')
      .argument('<keys...>'),
  ).action(async (keys: string[], options: ServerOptions) => {
    const count = await withClient(options, (client) => client.exists(...keys));
    if (options.json) printJson({ keys, exists: count });
    else printLine(String(count));
  });
}
