/**
 * The child processes of the balancer's benchmarks: the built CLIs, started with their ready
 * line parsed, and every child remembered so a benchmark can kill them all at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The built balancer CLI. */
export const BALANCER_CLI = resolve(here, '../dist/cli.js');
/** The built storage-node CLI. */
export const NODE_CLI = resolve(here, '../../storage-node/dist/cli.js');

/** The ready line of a dstore CLI (the fields the benchmarks use). */
export interface Ready {
  readonly port: number;
  readonly adminPort?: number;
}

/** Every child started by {@link startProcess}, for {@link killAll}. */
const children: ChildProcess[] = [];

/** Starts `node script ...args`; `ready` resolves with its first stdout line, parsed. */
export function startProcess(script: string, args: string[]): { child: ChildProcess; ready: Promise<Ready> } {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const ready = new Promise<Ready>((resolveReady, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) => resolveReady(JSON.parse(line) as Ready));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  return { child, ready };
}

/** SIGKILLs every child started by {@link startProcess}. */
export function killAll(): void {
  for (const child of children) child.kill('SIGKILL');
}
