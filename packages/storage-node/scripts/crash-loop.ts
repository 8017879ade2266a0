/**
 * Many crash rounds against the built CLI: `pnpm --filter @dstore/storage-node crash:loop [rounds] [seed]`.
 * Each round SIGKILLs a dstore-node (lmdb, durability flush) under concurrent writes and checks,
 * after a restart on the same data directory, that every acknowledged write is there.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CrashTarget, runCrashRounds } from '../test/crash-harness.js';

const cli = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');
const rounds = Number(process.argv[2] ?? 50);
const seed = process.argv[3] === undefined ? undefined : Number(process.argv[3]);
const dataDir = mkdtempSync(join(tmpdir(), 'dstore-crash-loop-'));
let current: ChildProcess | undefined;

function startNode(): Promise<CrashTarget> {
  const child = spawn(
    process.execPath,
    [
      cli,
      '--port',
      '0',
      '--id',
      'crash-loop',
      '--engine',
      'lmdb',
      '--data-dir',
      dataDir,
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  current = child;
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  return new Promise((resolveStart, reject) => {
    let stdout = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline < 0 || stdout.length - chunk.length > newline) return;
      const ready = JSON.parse(stdout.slice(0, newline)) as { port: number };
      resolveStart({
        port: ready.port,
        kill: async () => {
          child.kill('SIGKILL');
          await exited;
        },
      });
    });
    child.once('exit', (code) => reject(new Error(`dstore-node exited with ${code} before ready`)));
  });
}

try {
  const reports = await runCrashRounds({
    rounds,
    seed,
    start: startNode,
    log: (line) => console.log(line),
  });
  const acknowledged = reports.reduce((sum, report) => sum + report.acknowledged, 0);
  console.log(`OK: ${reports.length} rounds, ${acknowledged} acknowledged writes, none lost`);
} catch (error) {
  console.error(`FAILED: ${(error as Error).message}`);
  process.exitCode = 1;
} finally {
  current?.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
