/**
 * A chain member stand-in for replication tests: a peer server that answers HELLO as node `id`
 * and answers REPLICATE only once released, so a forward to it stays in flight (unanswered, as
 * from a paused node) for as long as a test wants.
 */
import {
  Authenticator,
  type Connection,
  FrameServer,
  Op,
  type ReplicateRequest,
  type Request,
} from '@dstore/protocol';
import type { Resources } from './helpers.js';

export class HeldPeer {
  /** Every REPLICATE received, answered or not. */
  readonly received: ReplicateRequest[] = [];
  private held: { request: ReplicateRequest; connection: Connection }[] = [];
  private released = false;
  private readonly authenticator: Authenticator;

  constructor(
    private readonly resources: Resources,
    id: string,
  ) {
    this.authenticator = new Authenticator({ role: 'node', serverId: () => id });
  }

  /** Listens on 127.0.0.1 port 0 (closed with the test's resources); returns the port. */
  async start(): Promise<number> {
    const server = new FrameServer({
      port: 0,
      onRequest: (request, connection) => this.serve(request, connection),
    });
    const address = await server.listen();
    this.resources.defer(() => server.close(100));
    return address.port;
  }

  /** Answers every REPLICATE held with an error `code` (a failed forward); later ones are held. */
  failHeld(code: string): void {
    for (const { request, connection } of this.held.splice(0)) {
      connection.replyError(request.id, code, 'chain member stand-in: refused');
    }
  }

  /** Answers every REPLICATE held, and every later one at once. */
  release(): void {
    this.released = true;
    for (const { request, connection } of this.held.splice(0)) this.answer(request, connection);
  }

  private serve(request: Request, connection: Connection): void {
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      this.authenticator.respond(connection, request);
      return;
    }
    if (request.op !== Op.REPLICATE) {
      connection.replyError(request.id, 'UNKNOWN_OP', 'chain member stand-in');
      return;
    }
    this.received.push(request);
    if (this.released) this.answer(request, connection);
    else this.held.push({ request, connection });
  }

  private answer(request: ReplicateRequest, connection: Connection): void {
    connection.reply({ op: Op.REPLICATED, id: request.id, batch: request.batch });
  }
}
