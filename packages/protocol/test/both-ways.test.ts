/**
 * A connection on which both ends send requests (the one link between two storage nodes, see
 * `Connection.useBothWays`): it never stops reading (reading brings the answers its own requests
 * wait for), and what it buffers during a tick, answers and the requests a replication stream
 * writes at the tick's end, leaves in one write.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type Connection, Op, type Request } from '../src/index.js';
import { type EndOfTickWriter, flushAtEndOfTick } from '../src/internal.js';
import { failOnUncaught, Resources, waitFor } from './helpers.js';

failOnUncaught();
const resources = new Resources();
afterEach(() => resources.closeAll());

describe('a connection used both ways', () => {
  it("answers of a tick and a stream's request written at its end leave in one write", async () => {
    let served: Connection | undefined;
    let streamRequest: Promise<unknown> | undefined;
    const { address } = await resources.server({
      onRequest: (request, connection) => {
        served = connection;
        if (request.op !== Op.PING) {
          connection.reply({ op: Op.OK, id: request.id });
          return;
        }
        // As a node answers a peer (synchronously here), and a replication stream towards the
        // same peer queues itself later in the tick and writes its REPLICATE at the tick's end.
        connection.reply({ op: Op.OK, id: request.id });
        const stream: EndOfTickWriter = {
          flushBuffered: () => {
            streamRequest = connection.request({ op: Op.STATS });
          },
        };
        queueMicrotask(() => flushAtEndOfTick(stream, true));
      },
    });
    const client = await resources.connection(address.port, {
      bothWays: true,
      onRequest: (request: Request, connection) => {
        if (request.op === Op.STATS) connection.reply({ op: Op.STATS_RESULT, id: request.id, stats: {} });
      },
    });
    // The first request only finds the server's side of the connection.
    await client.request({ op: Op.STATS });
    served!.useBothWays();
    const write = vi.spyOn(served!.socket, 'write');
    expect(await client.request({ op: Op.PING })).toMatchObject({ op: Op.OK });
    await waitFor(() => streamRequest !== undefined, 5000, "the stream's request");
    expect(await streamRequest).toMatchObject({ op: Op.STATS_RESULT });
    // The answer did not leave as the chunk ended, nor before the stream wrote its request.
    expect(write).toHaveBeenCalledTimes(1);
  });

  it('never stops reading, even past maxServing (the answers to its own requests arrive there)', async () => {
    const held: { request: Request; connection: Connection }[] = [];
    const { server, address } = await resources.server({
      connection: { maxServing: 2 },
      onRequest: (request, connection) => {
        if (request.op === Op.STATS) {
          connection.useBothWays();
          connection.reply({ op: Op.OK, id: request.id });
        } else {
          held.push({ request, connection });
        }
      },
    });
    const client = await resources.connection(address.port, { bothWays: true });
    await client.request({ op: Op.STATS });
    const answers = Array.from({ length: 10 }, () => client.request({ op: Op.PING }));
    // Served ten at once on a connection bounded to two: a connection used one way would stop
    // reading at two and wait for their answers.
    await waitFor(() => held.length === 10, 5000, 'ten requests served at once');
    for (const { request, connection } of held) connection.reply({ op: Op.OK, id: request.id });
    for (const answer of await Promise.all(answers)) expect(answer).toMatchObject({ op: Op.OK });
    expect(server.connectionCount).toBe(1);
  });
  it('keeps the link when its own requests fill the output and it answers the peer in the same tick', async () => {
    // A storage node whose replication streams towards one peer filled their shared link, then
    // answering that peer's REPLICATE: counted with its own requests, the answer looked like a peer
    // not reading its answers, and the node dropped the link (failing every stream on it).
    const sent: Promise<unknown>[] = [];
    let refusal: { code: string } | undefined;
    const { server, address } = await resources.server({
      connection: { maxOutputBytes: 64 * 1024 },
      onRequest: (request, connection) => {
        if (request.op === Op.STATS) connection.useBothWays();
        if (request.op === Op.PING) {
          for (let i = 0; i < 100 && refusal === undefined; i++) {
            sent.push(
              new Promise((resolve) => {
                refusal = connection.requestWith(
                  { op: Op.SET, key: new Uint8Array([i]), value: new Uint8Array(16 * 1024) },
                  (error, response) => resolve(error ?? response),
                  10_000,
                );
                if (refusal !== undefined) resolve(refusal);
              }),
            );
          }
        }
        connection.reply({ op: Op.OK, id: request.id });
      },
    });
    const client = await resources.connection(address.port, {
      bothWays: true,
      onRequest: (request: Request, connection) => connection.reply({ op: Op.OK, id: request.id }),
    });
    await client.request({ op: Op.STATS });
    expect(await client.request({ op: Op.PING })).toMatchObject({ op: Op.OK });
    // Its requests past the output bound were refused (BUSY, not sent); the others are answered.
    expect(refusal).toMatchObject({ code: 'BUSY' });
    const outcomes = await Promise.all(sent);
    expect(outcomes.slice(0, -1).every((outcome) => (outcome as { op?: number }).op === Op.OK)).toBe(true);
    expect(server.connectionCount).toBe(1);
  });
});
