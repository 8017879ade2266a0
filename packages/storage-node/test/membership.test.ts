import {
  answerHello,
  type Connection,
  FrameServer,
  type HeartbeatRequest,
  type JoinRequest,
  type LeaveRequest,
  Op,
  type Request,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, waitFor } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

type MembershipRequest = JoinRequest | LeaveRequest | HeartbeatRequest;

/** A balancer stand-in: answers HELLO and records every JOIN / HEARTBEAT / LEAVE. */
class FakeBalancer {
  readonly received: MembershipRequest[] = [];
  readonly roles: string[] = [];
  private server: FrameServer | undefined;

  async start(port = 0): Promise<number> {
    const server = new FrameServer({
      port,
      onRequest: (request, connection) => this.serve(request, connection),
    });
    this.server = server;
    const address = await server.listen();
    resources.defer(() => server.close(100));
    return address.port;
  }

  async stop(): Promise<void> {
    // Drop links at once, like a crashed balancer would.
    for (const connection of this.server?.openConnections ?? []) connection.destroy();
    await this.server?.close(100);
  }

  count(op: MembershipRequest['op']): number {
    return this.received.filter((request) => request.op === op).length;
  }

  private serve(request: Request, connection: Connection): void {
    if (request.op === Op.HELLO) {
      this.roles.push(request.role);
      connection.reply(answerHello(connection, request, { role: 'balancer', serverId: 'fake-balancer' }));
      return;
    }
    if (request.op === Op.JOIN || request.op === Op.LEAVE || request.op === Op.HEARTBEAT) {
      this.received.push(request);
      connection.reply({ op: Op.OK, id: request.id });
      return;
    }
    connection.replyError(request.id, 'UNKNOWN_OP', 'fake balancer');
  }
}

describe('membership', () => {
  it('JOINs, heartbeats with the key count, re-JOINs after a balancer restart, LEAVEs on stop', async () => {
    const balancer = new FakeBalancer();
    const balancerPort = await balancer.start();
    const node = await resources.node({
      id: 'member-1',
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 20,
      weight: 3,
      advertiseHost: 'localhost',
    });
    await waitFor(() => balancer.count(Op.JOIN) === 1, 5000, 'JOIN');
    expect(balancer.roles).toEqual(['node']);
    expect(balancer.received[0]).toMatchObject({
      op: Op.JOIN,
      nodeId: 'member-1',
      host: 'localhost',
      port: node.address.port,
      weight: 3,
    });
    await node.engine.set(new TextEncoder().encode('a'), new Uint8Array(1));
    await node.engine.set(new TextEncoder().encode('b'), new Uint8Array(1));
    await waitFor(
      () => balancer.received.some((request) => request.op === Op.HEARTBEAT && request.keyCount === 2),
      5000,
      'a HEARTBEAT with keyCount 2',
    );
    const heartbeat = balancer.received.find((request) => request.op === Op.HEARTBEAT);
    expect(heartbeat).toMatchObject({ nodeId: 'member-1' });

    // The balancer goes away and comes back on the same port: the node joins again.
    await balancer.stop();
    const restarted = new FakeBalancer();
    await restarted.start(balancerPort);
    await waitFor(() => restarted.count(Op.JOIN) === 1, 10_000, 'JOIN after the balancer restart');
    expect(restarted.received[0]).toMatchObject({ op: Op.JOIN, nodeId: 'member-1', port: node.address.port });
    await waitFor(() => restarted.count(Op.HEARTBEAT) > 0, 5000, 'heartbeats after the restart');

    await node.stop();
    expect(restarted.received.at(-1)).toMatchObject({ op: Op.LEAVE, nodeId: 'member-1' });
    const heartbeatsAfterStop = restarted.count(Op.HEARTBEAT);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(restarted.count(Op.HEARTBEAT)).toBe(heartbeatsAfterStop);
  });

  it('keeps serving and keeps retrying while the balancer is down', async () => {
    const balancer = new FakeBalancer();
    const balancerPort = await balancer.start();
    await balancer.stop();
    const node = await resources.node({ join: `127.0.0.1:${balancerPort}`, heartbeatIntervalMs: 20 });
    const client = await resources.client(node.address.port);
    expect((await client.request({ op: Op.PING })).op).toBe(Op.OK);
    const late = new FakeBalancer();
    await late.start(balancerPort);
    await waitFor(() => late.count(Op.JOIN) === 1, 10_000, 'JOIN once the balancer is up');
    await node.stop();
    expect(late.count(Op.LEAVE)).toBe(1);
  });
});
