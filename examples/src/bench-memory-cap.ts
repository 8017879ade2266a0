/**
 * `bench:memory-cap`: what `--max-memory` really bounds (issue #12). Starts one `dstore-node`
 * (memory engine, `--max-memory CAP`, default eviction `noeviction`), fills it through a direct
 * client with VALUE_SIZE-byte values until writes get OUT_OF_MEMORY, and prints the process's RSS
 * (from /proc): just started, warm (after the same traffic with nothing left stored: 20 rounds of
 * BATCH SETs then DELs) and full. The growth from warm to full against the cap is the honesty of
 * the accounting; the RSS warm is the fixed overhead (ENGINES.md, "Memory cap").
 *
 *   pnpm build && pnpm --filter @dstore/examples bench:memory-cap   # BENCH_CAPS=64m,256m BENCH_VALUE_SIZES=16,100,4000
 *
 * Linux only (/proc). Bounded: it stops at the first OUT_OF_MEMORY.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createClient } from '@dstore/client';
import { parseByteSize } from '@dstore/protocol/internal';
import { cliPath } from './cluster.js';

const CAPS = (process.env.BENCH_CAPS ?? '64m,256m').split(',');
const VALUE_SIZES = (process.env.BENCH_VALUE_SIZES ?? '16,100,4000').split(',').map(Number);
const BATCH = 500;

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? 0) * 1024;
}

async function startNode(cap: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [
      cliPath('@dstore/storage-node'),
      '--port',
      '0',
      '--engine',
      'memory',
      '--max-memory',
      cap,
      '--log-level',
      'error',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const line = await new Promise<string>((resolve) =>
    child.stdout!.once('data', (data: Buffer) => resolve(String(data))),
  );
  return { child, port: (JSON.parse(line.split('\n')[0]!) as { port: number }).port };
}

async function fill(cap: string, valueSize: number): Promise<string> {
  const { child, port } = await startNode(cap);
  try {
    const before = rssBytes(child.pid!);
    const client = createClient({ port, commandTimeout: 30_000 });
    const value = 'x'.repeat(valueSize);
    for (let round = 0; round < 20; round++) {
      await Promise.all(Array.from({ length: BATCH }, (_, i) => client.set(`w-${i}`, value)));
      await Promise.all(Array.from({ length: BATCH }, (_, i) => client.del(`w-${i}`)));
    }
    const warm = rssBytes(child.pid!);
    let stored = 0;
    let full = false;
    for (let start = 0; !full; start += BATCH) {
      await Promise.all(
        Array.from({ length: BATCH }, (_, i) =>
          client.set(`k-${start + i}`, value).then(
            () => {
              stored++;
            },
            (error: { code?: string }) => {
              if (error.code !== 'OUT_OF_MEMORY') throw error;
              full = true;
            },
          ),
        ),
      );
    }
    await client.close();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const after = rssBytes(child.pid!);
    const capBytes = parseByteSize(cap);
    const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
    return `| ${cap} | ${valueSize} | ${stored.toLocaleString('en-US')} | ${mib(before)} | ${mib(warm)} | ${mib(after)} | ${((after - warm) / capBytes).toFixed(2)}x | ${((after - before) / capBytes).toFixed(2)}x |`;
  } finally {
    child.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  console.log(
    '| cap | value bytes | keys stored | RSS started MiB | RSS warm MiB | RSS full MiB | (full - warm) / cap | (full - started) / cap |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const cap of CAPS) for (const size of VALUE_SIZES) console.log(await fill(cap, size));
}

void main();
