import {
  Authenticator,
  type Connection,
  FrameServer,
  type HeartbeatRequest,
  type JoinRequest,
  type LeaveRequest,
  Op,
  type Request,
} from '@dstore/protocol';
import type { Resources } from './helpers.js';

/** A membership request a node sends its balancer. */
export type MembershipRequest = JoinRequest | LeaveRequest | HeartbeatRequest;

/** How the fake balancer answers the next JOINs instead of OK. */
interface JoinRefusal {
  remaining: number;
  readonly code: string;
  readonly message: string;
}

/**
 * A balancer stand-in: answers HELLO, records every JOIN / HEARTBEAT / LEAVE and answers OK,
 * or refuses JOINs with an ERROR when told to. Closed at the owner's cleanup.
 */
export class FakeBalancer {
  /** Every membership request received, refused JOINs included, in order. */
  readonly received: MembershipRequest[] = [];
  /** Role announced by each HELLO: one per connection a node opened. */
  readonly roles: string[] = [];
  private readonly authenticator = new Authenticator({ role: 'balancer', serverId: () => 'fake-balancer' });
  /** JOINs answered with an ERROR. */
  refusedJoins = 0;
  /** The lease (ms) HEARTBEAT answers grant (replication), or none. */
  lease: number | undefined;
  private server: FrameServer | undefined;
  private joinRefusal: JoinRefusal | undefined;

  constructor(private readonly resources: Resources) {}

  async start(port = 0): Promise<number> {
    const server = new FrameServer({
      port,
      onRequest: (request, connection) => this.serve(request, connection),
    });
    this.server = server;
    const address = await server.listen();
    this.resources.defer(() => server.close(100));
    return address.port;
  }

  async stop(): Promise<void> {
    // Drop links at once, like a crashed balancer would.
    for (const connection of this.server?.openConnections ?? []) connection.destroy();
    await this.server?.close(100);
  }

  /** Answers the next `count` JOINs with ERROR `code` instead of OK. */
  refuseJoins(count: number, code: string, message = 'refused by the fake balancer'): void {
    this.joinRefusal = { remaining: count, code, message };
  }

  count(op: MembershipRequest['op']): number {
    return this.received.filter((request) => request.op === op).length;
  }

  /** The JOINs received, refused ones included. */
  joins(): JoinRequest[] {
    return this.received.filter((request): request is JoinRequest => request.op === Op.JOIN);
  }

  private serve(request: Request, connection: Connection): void {
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      if (request.op === Op.HELLO) this.roles.push(request.role);
      this.authenticator.respond(connection, request);
      return;
    }
    if (request.op === Op.JOIN || request.op === Op.LEAVE || request.op === Op.HEARTBEAT) {
      this.received.push(request);
      if (request.op === Op.JOIN && this.refuseThisJoin(connection, request.id)) return;
      const lease = request.op === Op.HEARTBEAT ? this.lease : undefined;
      connection.reply(
        lease === undefined ? { op: Op.OK, id: request.id } : { op: Op.OK, id: request.id, lease },
      );
      return;
    }
    connection.replyError(request.id, 'UNKNOWN_OP', 'fake balancer');
  }

  private refuseThisJoin(connection: Connection, id: number): boolean {
    const refusal = this.joinRefusal;
    if (refusal === undefined || refusal.remaining === 0) return false;
    refusal.remaining--;
    this.refusedJoins++;
    connection.replyError(id, refusal.code, refusal.message);
    return true;
  }
}
