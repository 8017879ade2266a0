import {
  Authenticator,
  type Connection,
  ErrorCode,
  FrameServer,
  Op,
  type Request,
  type Response,
  UserDirectory,
} from '@dstore/protocol';

/** How the fake server treats requests (HELLO is always answered). */
export type FakeMode = 'normal' | 'silent';

/**
 * An in-test stand-in for the balancer: a real protocol FrameServer with a Map store. It can stop
 * answering, delay answers, fail the next requests with a chosen code, drop connections and restart
 * on the same port.
 */
export class FakeServer {
  readonly store = new Map<string, Uint8Array>();
  /** Requests received per op (HELLO included). */
  readonly received = new Map<number, number>();
  mode: FakeMode = 'normal';
  delayMs = 0;
  /** Codes to answer the next data requests with, one per request, instead of executing them. */
  failNext: string[] = [];
  stats: Record<string, number | string> = {};
  port = 0;
  private server: FrameServer | undefined;
  private authenticator: Authenticator | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly token?: string) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `dstore://127.0.0.1:${this.port}`;
  }

  get connectionCount(): number {
    return this.server?.connectionCount ?? 0;
  }

  count(op: number): number {
    return this.received.get(op) ?? 0;
  }

  /** Listens on `this.port` (0 the first time: a free port, then the same one on restart). */
  async start(): Promise<void> {
    const users = this.token === undefined ? undefined : await UserDirectory.open({ token: this.token });
    this.authenticator ??= new Authenticator({ role: 'balancer', serverId: () => 'fake', users });
    const server = new FrameServer({
      port: this.port,
      onRequest: (request, connection) => this.onRequest(request, connection),
    });
    const address = await server.listen();
    this.port = address.port;
    this.server = server;
  }

  /** Stops listening and drops every connection at once (what a crash looks like to the client). */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const connection of server.openConnections) connection.destroy();
    await server.close(0);
  }

  /** Drops the open connections but keeps listening. */
  dropConnections(): void {
    for (const connection of this.server?.openConnections ?? []) connection.destroy();
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  private onRequest(request: Request, connection: Connection): void {
    this.received.set(request.op, this.count(request.op) + 1);
    const authenticator = this.authenticator!;
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      authenticator.respond(connection, request);
      return;
    }
    const refusal = authenticator.implicit(connection);
    if (refusal !== undefined) {
      connection.replyError(request.id, ErrorCode.UNAUTHORIZED, refusal);
      return;
    }
    if (this.mode === 'silent') return;
    const failure = this.failNext.shift();
    const answer = (): void => {
      if (!connection.isOpen) return;
      if (failure) connection.replyError(request.id, failure, `fake failure ${failure}`);
      else connection.reply(this.execute(request));
    };
    if (this.delayMs > 0) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        answer();
      }, this.delayMs);
      this.timers.add(timer);
    } else {
      answer();
    }
  }

  private execute(request: Request): Response {
    const id = request.id;
    switch (request.op) {
      case Op.GET:
        return { op: Op.VALUE, id, value: this.store.get(keyOf(request.key)) ?? null };
      case Op.SET:
        this.store.set(keyOf(request.key), request.value.slice());
        return { op: Op.OK, id };
      case Op.DEL:
        return { op: Op.COUNT, id, count: this.store.delete(keyOf(request.key)) ? 1 : 0 };
      case Op.MGET:
        return { op: Op.VALUES, id, values: request.keys.map((key) => this.store.get(keyOf(key)) ?? null) };
      case Op.MSET:
        for (const entry of request.entries) this.store.set(keyOf(entry.key), entry.value.slice());
        return { op: Op.OK, id };
      case Op.PING:
        return { op: Op.OK, id };
      case Op.STATS:
        return { op: Op.STATS_RESULT, id, stats: { role: 'balancer', keys: this.store.size, ...this.stats } };
      default:
        return { op: Op.ERROR, id, code: ErrorCode.UNKNOWN_OP, message: `op ${request.op}` };
    }
  }
}

/** Store keys as latin1 strings so binary keys round-trip exactly. */
export function keyOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
}
