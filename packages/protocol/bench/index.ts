/**
 * Codec + framing cost versus bare MessagePack: `pnpm --filter @dstore/protocol bench`.
 *
 * Each task does BATCH encode+decode round trips per iteration (a single one is below timer
 * resolution), so figures are per frame = per iteration / BATCH. The dstore path is the real hot
 * path: MessageCodec.encode -> OutputBuffer.appendFrame/take -> FrameDecoder.push ->
 * MessageCodec.decode (shape check, msgpack decode, field validation; for SET and GET the
 * hand-written hot path, which writes and reads the same bytes). The bare path is
 * @msgpack/msgpack Encoder.encode + Decoder.decode of the same wire array, no framing or checks.
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { Bench } from 'tinybench';
import { type Message, MessageCodec, Op, toWireArray } from '../src/index.js';
import { FrameDecoder, OutputBuffer } from '../src/internal.js';

const BATCH = 100;
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 2000);

function bytes(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

const scenarios: { name: string; message: Message }[] = [
  {
    name: 'SET 16 B key, 100 B value',
    message: { op: Op.SET, id: 123456, key: bytes(16, 1), value: bytes(100, 2) },
  },
  { name: 'GET 16 B key', message: { op: Op.GET, id: 123456, key: bytes(16, 3) } },
  {
    name: 'MGET 100 x 16 B keys',
    message: { op: Op.MGET, id: 123456, keys: Array.from({ length: 100 }, (_, i) => bytes(16, i)) },
  },
];

interface Row {
  scenario: string;
  path: 'dstore' | 'bare msgpack';
  framesPerSecond: number;
  p50Ns: number;
  p99Ns: number;
}

function dstoreRoundTrip(message: Message): () => void {
  const codec = new MessageCodec();
  const output = new OutputBuffer();
  let decoded = 0;
  const decoder = new FrameDecoder(codec.limits.maxFrameBytes, (body) => {
    if (codec.decode(body).id === message.id) decoded++;
  });
  return () => {
    for (let i = 0; i < BATCH; i++) {
      output.appendFrame(codec.encode(message));
      decoder.push(output.take());
    }
    if (decoded === 0) throw new Error('nothing decoded');
  };
}

function bareRoundTrip(message: Message): () => void {
  const encoder = new Encoder();
  const decoder = new Decoder();
  const wire = toWireArray(message);
  let decoded = 0;
  return () => {
    for (let i = 0; i < BATCH; i++) {
      if ((decoder.decode(encoder.encode(wire)) as unknown[])[1] === message.id) decoded++;
    }
    if (decoded === 0) throw new Error('nothing decoded');
  };
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const { name, message } of scenarios) {
    const bench = new Bench({ time: TIME_MS, warmupTime: 300 });
    bench.add('dstore', dstoreRoundTrip(message));
    bench.add('bare msgpack', bareRoundTrip(message));
    await bench.run();
    for (const task of bench.tasks) {
      const result = task.result;
      if (result.state !== 'completed') throw new Error(`${name}/${task.name}: ${result.state}`);
      rows.push({
        scenario: name,
        path: task.name as Row['path'],
        framesPerSecond: result.throughput.mean * BATCH,
        p50Ns: (result.latency.p50 * 1e6) / BATCH,
        p99Ns: (result.latency.p99 * 1e6) / BATCH,
      });
    }
  }
  console.log(`node ${process.version}, ${TIME_MS} ms per task, ${BATCH} frames per iteration\n`);
  console.log('| scenario | path | frames/s | p50 ns/frame | p99 ns/frame | ratio dstore/bare |');
  console.log('|---|---|---:|---:|---:|---:|');
  for (const { name } of scenarios) {
    const dstore = rows.find((row) => row.scenario === name && row.path === 'dstore')!;
    const bare = rows.find((row) => row.scenario === name && row.path === 'bare msgpack')!;
    const ratio = dstore.framesPerSecond / bare.framesPerSecond;
    for (const row of [dstore, bare]) {
      console.log(
        `| ${row.scenario} | ${row.path} | ${Math.round(row.framesPerSecond).toLocaleString('en-US')} | ` +
          `${Math.round(row.p50Ns)} | ${Math.round(row.p99Ns)} | ${row === dstore ? ratio.toFixed(2) : ''} |`,
      );
    }
  }
}

await main();
