#!/usr/bin/env node
import { EnvVar } from '@dstore/protocol/internal';
import { Command, CommanderError } from 'commander';
import { version } from '../package.json';
import { registerBenchCommand } from './cli/bench.js';
import { registerDataModelCommands } from './cli/data-model.js';
import { registerKeyValueCommands } from './cli/kv.js';
import { registerNodeCommands } from './cli/node.js';
import {
  DEFAULT_SERVER,
  DEFAULT_TIMEOUT_MS,
  duration,
  ExitCode,
  reportError,
  scryptCost,
} from './cli/shared.js';
import { registerStatusCommand } from './cli/status.js';
import { registerHashPasswordCommand } from './cli/users.js';

/**
 * Adds `--server`, `--timeout`, `--json` and the TLS flags, which every command that talks to the
 * balancer takes.
 */
function addServerOptions(command: Command): Command {
  return command
    .option(
      '--server <host:port[,host:port...]>',
      'balancer client address, or several comma-separated (tried in order, failing over); dstore:// URL too, dstores:// for TLS',
      DEFAULT_SERVER,
    )
    .option('--tls-ca <file>', 'connect with TLS, verifying the balancer against this PEM CA bundle')
    .option('--tls-cert <file>', 'connect with TLS, presenting this PEM client certificate')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option(
      '--timeout <ms>',
      "connect and command deadline (ms, or 2s); several --server share the connect's",
      duration,
      DEFAULT_TIMEOUT_MS,
    )
    .option('--json', 'machine-readable output (one JSON object)')
    .option('--token <token>', `password of the user default (env ${EnvVar.TOKEN})`)
    .option('--user <name>', 'user to authenticate as, with --password (or dstore://user:password@host)')
    .option('--password <password>', `password of --user (env ${EnvVar.PASSWORD})`)
    .option(
      '--min-scrypt-cost <N,r,p>',
      'cheapest password hash cost accepted from a server (default 16384,8,1, that of hash-password): lower only for hashes made cheaper on purpose',
      scryptCost,
    );
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
  registerDataModelCommands(program, addServerOptions);
  registerStatusCommand(program);
  registerHashPasswordCommand(program);
  registerNodeCommands(program);
  registerBenchCommand(program, addServerOptions);
  for (const command of program.commands) command.exitOverride();
  return program;
}

async function main(argv: string[]): Promise<void> {
  // A reader that stopped early (`dstore scan | head`) is not an error: stop quietly, as cat does.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(ExitCode.OK);
  });
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
