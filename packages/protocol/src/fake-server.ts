import { Authenticator } from './authenticator.js';
import type { Connection } from './connection.js';
import { ErrorCode } from './errors.js';
import { FrameServer } from './frame-server.js';
import { Op, type Request, type Response } from './messages.js';
import { PeerLink } from './peer-link.js';
import { UserDirectory } from './users.js';

/** What a {@link FakeServer} does with a data request (HELLO is always answered). */
export type FakeServerMode = 'normal' | 'silent';

/** Options of {@link FakeServer}. */
export interface FakeServerOptions {
  /** The role it answers HELLO with: a stand-in for a balancer (default) or for a storage node. */
  readonly role?: 'balancer' | 'node';
  /** Its server id in HELLO_OK and in STATS `id`; default `fake`. */
  readonly id?: string;
  /**
   * When set, clients must authenticate as the user `default` with it (HELLO then AUTH), and other
   * requests before that get UNAUTHORIZED.
   */
  readonly token?: string;
  /** Port to listen on (127.0.0.1); default 0, a free port, kept on {@link FakeServer.restart}. */
  readonly port?: number;
}

/**
 * A stand-in for a balancer or a storage node in tests: a real {@link FrameServer} on 127.0.0.1 that
 * keeps keys in a Map and answers GET, SET, DEL, MGET, MSET, PING and STATS, and accepts RING,
 * MIGRATE and PURGE (moving no keys). Tests steer it: stop
 * answering (`mode = 'silent'`), hold answers until {@link releaseHeld} (`stalled`), delay them
 * (`delayMs`), fail the next requests with chosen codes (`failNext`), drop connections, restart on
 * the same port, or register with a balancer like a node ({@link register}).
 */
export class FakeServer {
  /** The keys, by {@link keyOf}. */
  readonly store = new Map<string, Uint8Array>();
  /** Every request received, HELLO included, in arrival order. */
  readonly received: Request[] = [];
  /** `silent`: data requests are never answered. */
  mode: FakeServerMode = 'normal';
  /** When true, data requests are held (not answered) until {@link releaseHeld}, like a stalled node. */
  stalled = false;
  /** Delay before each answer, in ms. */
  delayMs = 0;
  /** Codes to answer the next data requests with, one per request, instead of executing them. */
  failNext: string[] = [];
  /** Extra STATS fields, merged over `role`, `id` and `keys`. */
  stats: Record<string, number | string> = {};
  /** The listening port (after {@link start}). */
  port: number;
  readonly role: 'balancer' | 'node';
  readonly id: string;
  private readonly token: string | undefined;
  private server: FrameServer | undefined;
  private readonly held: [Request, Connection][] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private link: PeerLink | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private authenticator: Authenticator | undefined;

  constructor(options: FakeServerOptions = {}) {
    this.role = options.role ?? 'balancer';
    this.id = options.id ?? 'fake';
    this.token = options.token;
    this.port = options.port ?? 0;
  }

  /** `127.0.0.1:<port>`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** `dstore://127.0.0.1:<port>`. */
  get url(): string {
    return `dstore://127.0.0.1:${this.port}`;
  }

  /** Open client connections. */
  get connectionCount(): number {
    return this.server?.connectionCount ?? 0;
  }

  /** Requests received with op `op` (HELLO included). */
  count(op: number): number {
    let n = 0;
    for (const request of this.received) if (request.op === op) n++;
    return n;
  }

  /** Listens on {@link port} (a free one the first time when 0, then the same one on restart). */
  async start(): Promise<this> {
    const users = this.token === undefined ? undefined : await UserDirectory.open({ token: this.token });
    this.authenticator ??= new Authenticator({ role: this.role, serverId: () => this.id, users });
    const server = new FrameServer({
      port: this.port,
      onRequest: (request, connection) => this.onRequest(request, connection),
    });
    this.port = (await server.listen()).port;
    this.server = server;
    return this;
  }

  /** Stops heartbeats and listening, and drops every connection at once (what a crash looks like). */
  async stop(): Promise<void> {
    this.stopHeartbeats();
    const link = this.link;
    this.link = undefined;
    await link?.close();
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

  /** Stops, then listens again on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops stalling and answers every held request. */
  releaseHeld(): void {
    this.stalled = false;
    for (const [request, connection] of this.held.splice(0)) this.answer(request, connection);
  }

  /** Registers with the balancer on `balancerPort` like a node: JOIN, then HEARTBEAT every `intervalMs`. */
  async register(balancerPort: number, intervalMs = 100): Promise<void> {
    const link = new PeerLink({ host: '127.0.0.1', port: balancerPort, role: 'node' });
    this.link = link;
    const joined = new Promise<void>((done) => {
      link.on('ready', () => {
        void link
          .request({ op: Op.JOIN, nodeId: this.id, host: '127.0.0.1', port: this.port, weight: 1 })
          .then(() => done());
      });
    });
    link.start();
    await joined;
    this.heartbeatTimer = setInterval(() => {
      void link
        .request({ op: Op.HEARTBEAT, nodeId: this.id, keyCount: this.store.size })
        .catch(() => undefined);
    }, intervalMs);
  }

  /** Stops heartbeating (the balancer will declare the node down). */
  stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** Sends LEAVE to the balancer it registered with. */
  async leave(): Promise<void> {
    await this.link?.request({ op: Op.LEAVE, nodeId: this.id });
  }

  private onRequest(request: Request, connection: Connection): void {
    this.received.push(request);
    if (!this.authenticator!.gate(connection, request)) return;
    if (this.mode === 'silent') return;
    if (this.stalled) {
      this.held.push([request, connection]);
      return;
    }
    if (this.delayMs <= 0) {
      this.answer(request, connection);
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.answer(request, connection);
    }, this.delayMs);
    this.timers.add(timer);
  }

  private answer(request: Request, connection: Connection): void {
    if (!connection.isOpen) return;
    // PING is no data request: a client's liveness probe must not use up a failure meant for one.
    const failure = request.op === Op.PING ? undefined : this.failNext.shift();
    if (failure) connection.replyError(request.id, failure, `fake failure ${failure}`);
    else connection.reply(this.execute(request));
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
      case Op.EXISTS:
        return { op: Op.COUNT, id, count: request.keys.filter((key) => this.store.has(keyOf(key))).length };
      case Op.PING:
        return { op: Op.OK, id };
      case Op.STATS:
        return {
          op: Op.STATS_RESULT,
          id,
          stats: { role: this.role, id: this.id, keys: this.store.size, ...this.stats },
        };
      // The cluster's control ops are accepted, and a MIGRATE streams nothing (a fake node moves
      // no keys): a balancer can run its transitions over fake nodes to the end.
      case Op.RING:
        return { op: Op.OK, id };
      case Op.MIGRATE:
      case Op.PURGE:
        return { op: Op.COUNT, id, count: 0 };
      default:
        return { op: Op.ERROR, id, code: ErrorCode.UNKNOWN_OP, message: `fake server: op ${request.op}` };
    }
  }
}

/** The {@link FakeServer.store} key of a byte key: latin1, so binary keys round-trip exactly. */
export function keyOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}
