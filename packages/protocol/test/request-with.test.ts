import { afterEach, describe, expect, it } from 'vitest';
import { type DstoreError, ErrorCode, Op, type Response } from '../src/index.js';
import { failOnUncaught, Resources } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

const enc = new TextEncoder();

/** A real server answering GET with the key as the value, never answering the key "never". */
async function echoServer() {
  const { address } = await resources.server({
    onRequest: (request, connection) => {
      if (request.op !== Op.GET)
        return connection.replyError(request.id, ErrorCode.INVALID_ARGUMENT, 'GET only');
      if (Buffer.from(request.key).toString() === 'never') return;
      connection.reply({ op: Op.VALUE, id: request.id, value: request.key.slice() });
    },
  });
  return address.port;
}

/** `requestWith` as a promise of [error, response], and whether it was refused at once. */
function call(
  send: (
    callback: (error: DstoreError | undefined, response: Response | undefined) => void,
  ) => DstoreError | undefined,
): { refusal: DstoreError | undefined; outcome: Promise<[DstoreError | undefined, Response | undefined]> } {
  let settle: (result: [DstoreError | undefined, Response | undefined]) => void = () => undefined;
  const outcome = new Promise<[DstoreError | undefined, Response | undefined]>((resolve) => {
    settle = resolve;
  });
  let calls = 0;
  const refusal = send((error, response) => {
    calls++;
    expect(calls).toBe(1);
    settle([error, response]);
  });
  return { refusal, outcome };
}

describe('Connection.requestWith (callback requests, no promise)', () => {
  it('answers pipelined requests by id, errors as DstoreError, deadlines as TIMEOUT', async () => {
    const port = await echoServer();
    const client = await resources.connection(port);
    const calls = Array.from({ length: 200 }, (_, i) =>
      call((callback) => client.requestWith({ op: Op.GET, key: enc.encode(`k${i}`) }, callback)),
    );
    for (const [i, { refusal, outcome }] of calls.entries()) {
      expect(refusal).toBeUndefined();
      const [error, response] = await outcome;
      expect(error).toBeUndefined();
      expect(response?.op === Op.VALUE && Buffer.from(response.value!).toString()).toBe(`k${i}`);
    }
    const refused = call((callback) => client.requestWith({ op: Op.PING }, callback));
    expect((await refused.outcome)[0]).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    const late = call((callback) =>
      client.requestWith({ op: Op.GET, key: enc.encode('never') }, callback, 50),
    );
    expect((await late.outcome)[0]).toMatchObject({ code: ErrorCode.TIMEOUT });
    expect(client.inFlight).toBe(0);
  });

  it('returns the refusal at once (callback never called) past maxInFlight and when closed', async () => {
    const port = await echoServer();
    const client = await resources.connection(port, { maxInFlight: 1 });
    const first = call((callback) => client.requestWith({ op: Op.GET, key: enc.encode('never') }, callback));
    expect(first.refusal).toBeUndefined();
    const busy = client.requestWith({ op: Op.GET, key: enc.encode('x') }, () => {
      throw new Error('a refused request must not call back');
    });
    expect(busy).toMatchObject({ code: ErrorCode.BUSY, notExecuted: true });
    client.destroy();
    expect((await first.outcome)[0]).toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
    const closed = client.requestWith({ op: Op.PING }, () => {
      throw new Error('a refused request must not call back');
    });
    expect(closed).toMatchObject({ code: ErrorCode.CONNECTION_CLOSED });
  });
});
