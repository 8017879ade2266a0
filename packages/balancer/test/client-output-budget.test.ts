/**
 * The process-wide bound on answers waiting for clients (`maxClientOutputBytes`, as Redis's
 * `maxmemory-clients`): clients that pipeline reads of large values and never read the answers,
 * on the RESP and the native port, each within its own connection's bound, are dropped, largest
 * first, once together they pass the process's; a client that reads is served throughout.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { Op, toBytes } from '@dstore/protocol';
import { encodeFrame } from '@dstore/protocol/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { Resources, waitFor } from './helpers.js';
import { exchange, startRespCluster } from './resp-helpers.js';

const resources = new Resources();
afterAll(() => resources.releaseAll());

/** The process's bound under test: a few of the answers below. */
const BUDGET_BYTES = 4 * 1024 * 1024;
const VALUE_BYTES = 512 * 1024;

/** A socket to `port` that sends `bytes` and never reads (its answers pile up at the balancer). */
async function nonReader(
  port: number,
  bytes: Uint8Array | string,
): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = netConnect({ host: '127.0.0.1', port });
  resources.add(() => {
    socket.destroy();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.pause();
  socket.write(bytes);
  return { socket, closed };
}

describe('answers waiting for clients, all connections together', () => {
  it('drops the clients holding the most once the sum passes maxClientOutputBytes, and serves a client that reads', async () => {
    const { balancer, respPort } = await startRespCluster(resources, 1, {
      maxClientOutputBytes: BUDGET_BYTES,
    });
    const metric = async (name: string): Promise<number> => {
      const text = await balancer.metrics.registry.metrics();
      const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
      return line === undefined ? 0 : Number(line.split(' ')[1]);
    };
    const value = 'v'.repeat(VALUE_BYTES);
    expect(
      await exchange(respPort, `*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$${VALUE_BYTES}\r\n${value}\r\nQUIT\r\n`),
    ).toBe('+OK\r\n+OK\r\n');
    // Two RESP clients and one native client, each asking for 40 answers of 512 KiB (20 MiB: within
    // its own connection's bound, 32 MiB RESP and 16 MiB native, far past the process's 4 MiB
    // together) and reading none.
    const hogs = await Promise.all([
      nonReader(respPort, 'GET big\r\n'.repeat(40)),
      nonReader(respPort, 'GET big\r\n'.repeat(40)),
      nonReader(
        balancer.address.port,
        Buffer.concat(
          Array.from({ length: 40 }, (_, index) =>
            encodeFrame({ op: Op.GET, id: index + 1, key: toBytes('big') }),
          ),
        ),
      ),
    ]);
    // At least two of them must go (any two hold more than 4 MiB past what the kernel buffers).
    await waitFor(
      async () => (await metric('dstore_balancer_client_output_evictions_total')) >= 2,
      'the clients holding the most to be dropped',
    );
    // The dropped ones see their connection closed once they read what reached them.
    let closed = 0;
    for (const hog of hogs) {
      void hog.closed.then(() => closed++);
      hog.socket.resume();
    }
    await waitFor(() => closed >= 2, 'the dropped clients to see their connection closed');
    await waitFor(
      async () => (await metric('dstore_balancer_client_output_bytes')) <= BUDGET_BYTES,
      'the answers waiting to be within the bound',
    );
    // A client that reads gets its large answer, on either port.
    const reply = await exchange(respPort, 'GET big\r\nQUIT\r\n');
    expect(reply).toBe(`$${VALUE_BYTES}\r\n${value}\r\n+OK\r\n`);
  });
});
