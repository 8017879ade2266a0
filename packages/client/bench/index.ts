/**
 * Client-side overhead benchmark: the client and a minimal in-memory dstore server in ONE process
 * on loopback, so the figures are the cost of the client + protocol path (framing, multiplexing,
 * per-tick coalescing, the offline-queue/deadline bookkeeping), not of a cluster. For cluster
 * numbers run `pnpm cluster:bench`. Bounded: a fixed number of ops per configuration.
 *
 *   pnpm --filter @dstore/client bench
 */
import { Authenticator, type Connection, FrameServer, Op, type Request } from '@dstore/protocol';
import { runBench } from '../src/bench/runner.js';
import { createClient, type DstoreClient } from '../src/index.js';

const store = new Map<string, Uint8Array>();
const authenticator = new Authenticator({ role: 'balancer', serverId: () => 'bench' });
const decoder = new TextDecoder('latin1');

function serve(request: Request, connection: Connection): void {
  const id = request.id;
  switch (request.op) {
    case Op.HELLO:
    case Op.AUTH:
      authenticator.respond(connection, request);
      return;
    case Op.GET:
      connection.reply({ op: Op.VALUE, id, value: store.get(decoder.decode(request.key)) ?? null });
      return;
    case Op.SET:
      store.set(decoder.decode(request.key), request.value.slice());
      connection.reply({ op: Op.OK, id });
      return;
    case Op.MSET:
      for (const entry of request.entries) store.set(decoder.decode(entry.key), entry.value.slice());
      connection.reply({ op: Op.OK, id });
      return;
    case Op.STATS:
      connection.reply({ op: Op.STATS_RESULT, id, stats: {} });
      return;
    default:
      connection.reply({ op: Op.OK, id });
  }
}

const server = new FrameServer({ onRequest: serve });
const { port } = await server.listen();
const ops = Number(process.env.BENCH_OPS ?? 50_000);
const rows: string[] = [];
for (const concurrency of [1, 8, 64, 256]) {
  const client: DstoreClient = createClient({ port });
  await client.connect();
  const report = await runBench([client], {
    ops,
    durationS: 30,
    concurrency,
    valueSize: 100,
    readRatio: 0.5,
    keyspace: 10_000,
    distribution: 'uniform',
    preload: 10_000,
  });
  await client.close();
  const ms = (us: number): string => (us / 1000).toFixed(3);
  rows.push(
    `| ${concurrency} | ${Math.round(report.throughput)} | ${ms(report.latency.p50Us)} | ${ms(report.latency.p99Us)} | ${ms(report.latency.p999Us)} | ${Object.keys(report.errors).length === 0 ? 0 : JSON.stringify(report.errors)} |`,
  );
}
await server.close();
console.log(
  `${ops} ops per row, 50% GET / 50% SET, 100-byte values, uniform over 10000 keys, one connection\n`,
);
console.log('| concurrency | ops/s | p50 ms | p99 ms | p999 ms | errors |');
console.log('|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
