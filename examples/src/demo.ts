/**
 * demo: the README's "run" command. Starts a local cluster (3 nodes + balancer on free ports),
 * exercises it through @dstore/client (writes and reads, a transaction) and the `dstore` CLI
 * (set/get/del, status, a latency report), then stops exactly the processes it started, even when
 * a step fails.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@dstore/client';
import { cliPath, startCluster, stopCluster } from './cluster.js';

const root = mkdtempSync(join(tmpdir(), 'dstore-demo-'));
const ops = process.env.DSTORE_DEMO_OPS ?? '50000';

function dstore(...args: string[]): void {
  console.log(`\n$ dstore ${args.join(' ')}`);
  const result = spawnSync(process.execPath, [cliPath('@dstore/client'), ...args], { stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`dstore ${args[0]} exited with ${result.status}`);
}

let failed = false;
try {
  console.log(
    'starting 3 storage nodes (LMDB) and a balancer (replication factor 3, the default: every key on all 3 nodes)...',
  );
  const state = await startCluster({ root, engine: 'lmdb' });
  const server = `${state.balancer.host}:${state.balancer.port}`;
  const admin = `${state.balancer.host}:${state.balancer.adminPort}`;
  console.log(`balancer at dstore://${server}, admin API and dashboard http://${admin}/`);

  const client = createClient({ host: state.balancer.host, port: state.balancer.port });
  try {
    for (let i = 0; i < 1000; i++) await client.set(`demo:${i}`, `value-${i}`);
    let checked = 0;
    for (let i = 0; i < 1000; i++) {
      if ((await client.getString(`demo:${i}`)) !== `value-${i}`)
        throw new Error(`demo:${i} read back wrong`);
      checked++;
    }
    console.log(`wrote and read back ${checked} keys through the client library`);
    // A rate limiter: five concurrent transactions (INCR, EXPIRE NX, PTTL) on one key, each one
    // atomic step on the key's owner: they count 1 to 5, and the window starts once.
    const windows = await Promise.all(
      Array.from({ length: 5 }, () =>
        client.transaction('demo:rate:alice').incr().expire(60, { condition: 'nx' }).pttl().exec(),
      ),
    );
    const counts = windows.map((results) => results?.[0]).sort();
    if (counts.join() !== '1,2,3,4,5') throw new Error(`rate-limit transactions counted ${counts.join()}`);
    const started = windows.filter((results) => results?.[1] === true).length;
    console.log(
      `5 concurrent rate-limit transactions (INCR, EXPIRE NX, PTTL) counted ${counts.join(', ')}; the 60 s window was started by ${started} of them`,
    );
    if (started !== 1) throw new Error(`the window was started ${started} times`);
    // Keys of one hash tag ({acct:7}) share one owner and chain: 20 concurrent transfers between
    // them, each one transaction over two keys, keep the total exact.
    await client.mset([
      ['{acct:7}:checking', '500'],
      ['{acct:7}:savings', '500'],
    ]);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 2 === 0
          ? client.transaction('{acct:7}:checking').decrby(i).on('{acct:7}:savings').incrby(i).exec()
          : client.transaction('{acct:7}:savings').decrby(i).on('{acct:7}:checking').incrby(i).exec(),
      ),
    );
    const balances = (await client.mget(['{acct:7}:checking', '{acct:7}:savings'])).map((value) =>
      Number(value === null ? Number.NaN : Buffer.from(value).toString()),
    );
    if (balances[0]! + balances[1]! !== 1000)
      throw new Error(`transfers changed the total: ${balances.join(' + ')}`);
    console.log(
      `20 concurrent transfers between {acct:7}:checking and {acct:7}:savings (one transaction over both keys each): ${balances.join(' + ')} = 1000`,
    );
  } finally {
    await client.close();
  }

  dstore('set', 'hello', 'world', '--server', server);
  dstore('get', 'hello', '--server', server);
  dstore('del', 'hello', '--server', server);
  dstore('ping', '--server', server);
  dstore('status', '--admin', admin);
  dstore(
    'bench',
    '--server',
    server,
    '--ops',
    ops,
    '--concurrency',
    '50',
    '--value-size',
    '100',
    '--read-ratio',
    '0.5',
  );
} catch (error) {
  failed = true;
  console.error(`demo failed: ${(error as Error).message}`);
} finally {
  const stopped = await stopCluster(root);
  console.log(
    `\nstopped ${stopped.length} processes: ${stopped.map((proc) => `${proc.id} (pid ${proc.pid})`).join(', ')}`,
  );
  rmSync(root, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
