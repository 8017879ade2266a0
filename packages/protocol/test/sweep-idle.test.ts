import { afterEach, describe, expect, it } from 'vitest';
import { type Connection, DstoreError, ErrorCode, Op } from '../src/index.js';
import { DeadlineSweeper } from '../src/internal.js';
import { header } from '../src/testing.js';
import { failOnUncaught, Resources, sleep, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

/**
 * A connection is swept only while it has a deadline to watch: an idle one leaves the sweeper
 * (whose timer then stops, so an idle process is not woken every 10 ms), and it comes back as
 * soon as a request awaits an answer or a frame starts arriving, so no deadline is ever missed.
 */
describe('sweeping only what has deadlines', () => {
  it('an idle connection leaves the sweeper; a request brings it back and still times out', async () => {
    const sweeper = new DeadlineSweeper(10);
    let served: Connection | undefined;
    const { address } = await resources.server({
      onRequest: (request, connection) => {
        served = connection;
        // PING is answered; anything else never is (its deadline must fire).
        if (request.op === Op.PING) connection.reply({ op: Op.OK, id: request.id });
      },
    });
    const client = await resources.connection(address.port, { sweeper, requestTimeoutMs: 200 });
    expect(sweeper.size).toBe(1);
    await waitFor(() => sweeper.size === 0, 5000, 'the idle connection to leave the sweeper');
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
    expect(served).toBeDefined();
    await waitFor(() => sweeper.size === 0, 5000, 'the connection to leave the sweeper again');
    // Idle and unregistered: the next request's deadline is still enforced.
    const timedOut = await client.request({ op: Op.GET, key: new Uint8Array([1]) }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(timedOut).toBeInstanceOf(DstoreError);
    expect((timedOut as DstoreError).code).toBe(ErrorCode.TIMEOUT);
    // The forwarding path (a callback, no promise) too.
    const outcome = await new Promise<DstoreError | undefined>((resolve) => {
      const refusal = client.requestWith(
        { op: Op.GET, key: new Uint8Array([2]) },
        (error) => resolve(error),
        200,
      );
      if (refusal !== undefined) resolve(refusal);
    });
    expect(outcome?.code).toBe(ErrorCode.TIMEOUT);
    await waitFor(
      () => sweeper.size === 0,
      5000,
      'the connection to leave the sweeper once nothing is pending',
    );
  });

  it('a server connection gone idle still closes a sender whose frame never completes', async () => {
    const { address } = await resources.server({
      connection: { frameTimeoutMs: 200 },
      onRequest: (request, connection) => connection.reply({ op: Op.OK, id: request.id }),
    });
    const socket = await resources.socket(address.port);
    let closed = false;
    socket.on('close', () => {
      closed = true;
    });
    // Read (the ERROR frame) and answer the server's FIN, as a real client would.
    socket.on('data', () => undefined);
    socket.on('end', () => socket.end());
    // Long enough for the server side to have been swept idle (every 10 ms) and left the sweeper.
    await sleep(200);
    socket.write(header(100, new Uint8Array(10)));
    await waitFor(() => closed, 10_000, 'the server to close the slow sender');
  });
});
