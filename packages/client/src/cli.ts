#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { version } from '../package.json';
import { registerBenchCommand } from './cli/bench.js';
import { registerKeyValueCommands } from './cli/kv.js';
import { registerNodeCommands } from './cli/node.js';
import { DEFAULT_SERVER, DEFAULT_TIMEOUT_MS, duration, ExitCode, reportError } from './cli/shared.js';
import { registerStatusCommand } from './cli/status.js';

/** Adds `--server`, `--timeout` and `--json`, which every command that talks to the balancer takes. */
function addServerOptions(command: Command): Command {
  return command
    .option(
      '--server <host:port[,host:port...]>',
      'balancer client address, or several comma-separated (tried in order, failing over); dstore:// URL too',
      DEFAULT_SERVER,
    )
    .option('--timeout <ms>', 'connect and command deadline (ms, or 2s)', duration, DEFAULT_TIMEOUT_MS)
    .option('--json', 'machine-readable output (one JSON object)');
}

/** Builds the `dstore` program (exported shape kept internal; the CLI is the interface). */
function buildProgram(): Command {
  const program = new Command('dstore')
    .description('dstore command line: read and write keys, check the cluster, run a benchmark')
    .version(version, '-V, --version', 'print the version of @dstore/client')
    .addHelpText('after', '\nExit codes: 0 done, 1 failure, 2 usage error, 3 get of a missing key.')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerKeyValueCommands(program, addServerOptions);
  registerStatusCommand(program);
  registerNodeCommands(program);
  registerBenchCommand(program, addServerOptions);
  for (const command of program.commands) command.exitOverride();
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has printed help or the usage error already.
      process.exitCode = error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
      return;
    }
    reportError(error);
  }
}

void main(process.argv);
