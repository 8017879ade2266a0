/**
 * A peer stand-in: a server that answers HELLO as node `id` and answers REPLICATE (a chain
 * member's forward) and PULL (an old owner's copy of a key) only once released, so a request to
 * it stays in flight (unanswered, as from a paused node) for as long as a test wants.
 */
import {
  Authenticator,
  bytesToString,
  type Connection,
  FrameServer,
  type MigratedEntry,
  Op,
  type PullRequest,
  type ReplicateRequest,
  type Request,
} from '@dstore/protocol';
import type { Resources } from './helpers.js';

export class HeldPeer {
  /** Every REPLICATE received, answered or not. */
  readonly received: ReplicateRequest[] = [];
  /** Every PULL received, answered or not. */
  readonly pulls: PullRequest[] = [];
  /** The copies PULL answers with, by key (as text); a key not here answers no entry. */
  readonly copies = new Map<string, Omit<MigratedEntry, 'key'>>();
  private held: { request: ReplicateRequest | PullRequest; connection: Connection }[] = [];
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

  /** Answers every request held with an error `code` (a failed forward); later ones are held. */
  failHeld(code: string): void {
    for (const { request, connection } of this.held.splice(0)) {
      connection.replyError(request.id, code, 'peer stand-in: refused');
    }
  }

  /** Answers every REPLICATE and PULL held, and every later one at once. */
  release(): void {
    this.released = true;
    for (const { request, connection } of this.held.splice(0)) this.answer(request, connection);
  }

  private serve(request: Request, connection: Connection): void {
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      this.authenticator.respond(connection, request);
      return;
    }
    if (request.op !== Op.REPLICATE && request.op !== Op.PULL) {
      connection.replyError(request.id, 'UNKNOWN_OP', 'peer stand-in');
      return;
    }
    if (request.op === Op.PULL) this.pulls.push(request);
    else this.received.push(request);
    if (this.released) this.answer(request, connection);
    else this.held.push({ request, connection });
  }

  private answer(request: ReplicateRequest | PullRequest, connection: Connection): void {
    if (request.op === Op.PULL) {
      const entry = this.copies.get(bytesToString(request.key)) ?? null;
      connection.reply({ op: Op.ENTRY, id: request.id, entry });
      return;
    }
    connection.reply({ op: Op.REPLICATED, id: request.id, batch: request.batch });
  }
}
