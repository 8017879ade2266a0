import { bytesToString } from '@dstore/protocol';
import type { Command } from 'commander';
import { ExitCode, printJson, printLine, type ServerOptions, withClient } from './shared.js';

/** Registers `set`, `get`, `del` and `ping`. */
export function registerKeyValueCommands(
  program: Command,
  addServerOptions: (command: Command) => Command,
): void {
  addServerOptions(
    program
      .command('set')
      .description('store a value (UTF-8) under a key')
      .argument('<key>')
      .argument('<value>'),
  ).action(async (key: string, value: string, options: ServerOptions) => {
    await withClient(options, (client) => client.set(key, value));
    if (options.json) printJson({ ok: true });
    else printLine('OK');
  });

  addServerOptions(
    program
      .command('get')
      .description('print the value of a key, or (nil) with exit code 1 when it does not exist')
      .argument('<key>'),
  ).action(async (key: string, options: ServerOptions) => {
    const value = await withClient(options, (client) => client.get(key));
    const text = value === null ? null : bytesToString(value);
    if (options.json) printJson({ key, value: text });
    else printLine(text ?? '(nil)');
    if (value === null) process.exitCode = ExitCode.NOT_FOUND;
  });

  addServerOptions(
    program.command('del').description('delete a key; prints 1 if it existed, 0 if not').argument('<key>'),
  ).action(async (key: string, options: ServerOptions) => {
    const removed = await withClient(options, (client) => client.del(key));
    if (options.json) printJson({ key, deleted: removed ? 1 : 0 });
    else printLine(removed ? '1' : '0');
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
