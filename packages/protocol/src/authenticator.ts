import { randomBytes } from 'node:crypto';
import {
  type AuthChallenge,
  authMessage,
  DEFAULT_USER,
  decoyCredential,
  isLoopbackAddress,
  newNonce,
  PEER_KDF,
  peerCredential,
  type StoredCredential,
  serverSignature,
  verifyProof,
} from './auth.js';
import { AuthFailureBudget } from './auth-failures.js';
import type { Connection } from './connection.js';
import { ErrorCode } from './errors.js';
import {
  type AuthRequest,
  type HelloRequest,
  Op,
  type PeerRole,
  PROTOCOL_VERSION,
  type Request,
  type Response,
} from './messages.js';
import type { UserDirectory, UserGrant } from './users.js';

/** Who is on the other end of an authenticated connection. */
export type Principal =
  /** A balancer or node that proved the cluster secret (or, without one, connected over loopback). */
  | { readonly kind: 'peer'; readonly role: 'balancer' | 'node' }
  /** A client that proved a user's password (or the token, user `default`). */
  | { readonly kind: 'user'; readonly grant: UserGrant }
  /** A client of a server with no users configured: every data operation is allowed. */
  | { readonly kind: 'anonymous' };

/** What kind of slot an authenticated connection takes (see `FrameServer.admit`). */
export type AdmissionKind = 'client' | 'peer';

/** Options of an {@link Authenticator}. */
export interface AuthenticatorOptions {
  /** The role this server announces in HELLO_OK. */
  readonly role: 'balancer' | 'node';
  /** This server's id, announced in HELLO_OK. */
  readonly serverId: () => string;
  /** The cluster secret peers must prove; undefined = peers are not authenticated. */
  readonly clusterSecret?: string | undefined;
  /** The users clients must prove; undefined or empty = clients are not authenticated. */
  readonly users?: UserDirectory | undefined;
  /**
   * Protected mode (default true): what is not authenticated (peers without a cluster secret,
   * clients without users) is accepted only from loopback addresses, as Redis does without a
   * password.
   */
  readonly protectedMode?: boolean;
  /**
   * Mutual TLS: accept a balancer or node only on a connection whose TLS client certificate
   * verified against the cluster CA (`Connection.tlsPeerVerified`), in addition to the cluster
   * secret. Set it when the server has a CA. Default false.
   */
  readonly requireVerifiedPeers?: boolean;
  /**
   * Gives an authenticated connection its slot (per-kind caps); false when there is none, and the
   * connection is then answered BUSY and closed. Default: always admitted.
   */
  readonly admit?: (connection: Connection, kind: AdmissionKind) => boolean;
  /**
   * Told of every HELLO or AUTH refused (UNAUTHORIZED, VERSION_MISMATCH) with the role it was for:
   * a node with the wrong cluster secret retries forever, and only the server can say so where the
   * operator looks. Default: nothing.
   */
  readonly onRefusal?: (connection: Connection, role: PeerRole, code: string, message: string) => void;
  /**
   * The per-address budget of failed client authentications, shared with the server's other ports
   * (the balancer's RESP AUTH): a client HELLO from an address it has locked out is refused at once
   * (UNAUTHORIZED, closed). Default: a budget of this authenticator's own, with its defaults.
   */
  readonly failures?: AuthFailureBudget;
}

interface PendingChallenge {
  readonly role: PeerRole;
  readonly user: string;
  readonly clientNonce: Uint8Array;
  readonly challenge: AuthChallenge;
  readonly credential: StoredCredential;
  /** The user's grant; undefined for a peer, and for an unknown user (the proof cannot match). */
  readonly grant: UserGrant | undefined;
}

/** The outcome of a step: the answer, and whether the connection must close after it. */
export interface AuthStep {
  readonly response: Response;
  readonly close: boolean;
}

const ANONYMOUS: Principal = { kind: 'anonymous' };

function refuse(id: number, message: string, close = false): AuthStep {
  return { response: { op: Op.ERROR, id, code: ErrorCode.UNAUTHORIZED, message }, close };
}

/**
 * The server side of authentication, shared by the balancer and the storage node: answers HELLO
 * (with a challenge when the role is authenticated) and AUTH, and gives each connection its
 * {@link Principal}. One instance per server; per-connection state lives in a WeakMap.
 */
export class Authenticator {
  private readonly peer: StoredCredential | undefined;
  private readonly users: UserDirectory | undefined;
  private readonly protectedMode: boolean;
  /** Secret per process: decoy challenges for unknown users are stable but unguessable. */
  private readonly pepper = randomBytes(32);
  private readonly pending = new WeakMap<Connection, PendingChallenge>();
  /** Failed client authentications per source address (see {@link AuthFailureBudget}). */
  readonly failures: AuthFailureBudget;

  constructor(private readonly options: AuthenticatorOptions) {
    this.failures = options.failures ?? new AuthFailureBudget();
    this.peer = options.clusterSecret === undefined ? undefined : peerCredential(options.clusterSecret);
    this.users = options.users;
    this.protectedMode = options.protectedMode ?? true;
  }

  /** Whether peers must prove the cluster secret. */
  get authenticatesPeers(): boolean {
    return this.peer !== undefined;
  }

  /** Whether clients must prove a user's password. */
  get authenticatesClients(): boolean {
    return this.users?.enabled === true;
  }

  /**
   * Answers a HELLO or AUTH on `connection` (closing it after a refusal that ends the attempt,
   * once the answer is written). True when the step succeeded.
   */
  respond(connection: Connection, request: HelloRequest | AuthRequest): boolean {
    // AUTH's role is its HELLO's, which the step consumes.
    const role = request.op === Op.HELLO ? request.role : this.pending.get(connection)?.role;
    const step = request.op === Op.HELLO ? this.hello(connection, request) : this.auth(connection, request);
    connection.reply(step.response);
    if (step.close) void connection.close();
    const answer = step.response;
    if (answer.op !== Op.ERROR) return true;
    if (role !== undefined) this.options.onRefusal?.(connection, role, answer.code, answer.message);
    return false;
  }

  /**
   * The whole gate, for a server with no accounting of its own (the test fakes, benches): answers
   * HELLO and AUTH, gives a request sent without HELLO its anonymous principal when allowed, and
   * answers UNAUTHORIZED otherwise. True when the caller should serve `request`.
   */
  gate(connection: Connection, request: Request): boolean {
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      this.respond(connection, request);
      return false;
    }
    const refusal = this.implicit(connection);
    if (refusal === undefined) return true;
    connection.replyError(request.id, ErrorCode.UNAUTHORIZED, refusal);
    return false;
  }

  /** HELLO: version check, then a challenge, or (nothing to prove) the principal at once. */
  hello(connection: Connection, hello: HelloRequest): AuthStep {
    const id = hello.id;
    if (hello.version !== PROTOCOL_VERSION) {
      return {
        response: {
          op: Op.ERROR,
          id,
          code: ErrorCode.VERSION_MISMATCH,
          message: `this peer speaks protocol version ${PROTOCOL_VERSION}, not ${hello.version}`,
        },
        close: false,
      };
    }
    if (connection.principal !== undefined) return refuse(id, 'this connection is already authenticated');
    if (hello.role === 'client') return this.helloClient(connection, hello);
    const refusal = this.peerRefusal(connection);
    if (refusal !== undefined) return refuse(id, refusal, true);
    if (this.peer === undefined) {
      return this.grant(connection, id, { kind: 'peer', role: hello.role }, undefined);
    }
    if (hello.nonce === undefined) {
      return refuse(
        id,
        'this cluster authenticates its peers: set the same --cluster-secret on this process',
      );
    }
    return this.challenge(connection, hello, '', this.peer, undefined);
  }

  /**
   * Why a peer on `connection` may not be served before any proof is checked, or undefined: the
   * cluster CA requires a verified TLS certificate, and without a cluster secret protected mode
   * accepts peers only on loopback. Checked on a peer's HELLO, and by a node that serves the
   * requests of a peer it connected to itself (after the handshake proved the cluster secret when
   * there is one): the same bar both ways.
   */
  peerRefusal(connection: Connection): string | undefined {
    if (this.options.requireVerifiedPeers === true && !connection.tlsPeerVerified) {
      return 'peers need a TLS client certificate signed by the cluster CA (--tls-cert/--tls-key, --tls-ca)';
    }
    if (
      this.peer === undefined &&
      this.protectedMode &&
      !isLoopbackAddress(connection.socket.remoteAddress)
    ) {
      return (
        'peers are accepted only from loopback addresses when no cluster secret is set ' +
        '(protected mode): set --cluster-secret on every balancer and node'
      );
    }
    return undefined;
  }

  /** AUTH: checks the proof against the challenge sent on this connection; one attempt only. */
  auth(connection: Connection, request: AuthRequest): AuthStep {
    const pending = this.pending.get(connection);
    if (pending === undefined) return refuse(request.id, 'AUTH needs the challenge of a HELLO first', true);
    this.pending.delete(connection);
    const message = authMessage(pending.role, pending.user, pending.clientNonce, pending.challenge);
    const isPeer = pending.role !== 'client';
    if (
      !verifyProof(pending.credential, message, request.proof) ||
      (!isPeer && pending.grant === undefined)
    ) {
      if (!isPeer) this.failures.failed(connection.socket.remoteAddress);
      return refuse(request.id, isPeer ? 'wrong cluster secret' : 'invalid user or password', true);
    }
    const principal: Principal = isPeer
      ? { kind: 'peer', role: pending.role as 'balancer' | 'node' }
      : { kind: 'user', grant: pending.grant! };
    const signature = serverSignature(pending.credential, message);
    return this.grant(connection, request.id, principal, signature);
  }

  /**
   * For a request that arrives before any HELLO: clients of a server without users may skip
   * HELLO (they get the anonymous principal, subject to protected mode). Returns the refusal
   * message, or undefined once the connection has a principal.
   */
  implicit(connection: Connection): string | undefined {
    if (connection.principal !== undefined) return undefined;
    if (this.authenticatesClients) return 'authenticate first: HELLO with a user (or the token), then AUTH';
    if (this.protectedMode && !isLoopbackAddress(connection.socket.remoteAddress)) {
      return 'no users are configured: clients are accepted only from loopback addresses (protected mode)';
    }
    if (this.options.admit !== undefined && !this.options.admit(connection, 'client')) {
      return 'too many client connections';
    }
    connection.principal = ANONYMOUS;
    return undefined;
  }

  /**
   * The connection's principal as of now: a user whose grant a reload replaced is looked up
   * again (undefined when the user is gone: the caller refuses and closes).
   */
  current(connection: Connection): Principal | undefined {
    const principal = connection.principal;
    if (principal?.kind !== 'user' || !principal.grant.revoked) return principal;
    const grant = this.users?.get(principal.grant.name);
    connection.principal = grant === undefined ? undefined : { kind: 'user', grant };
    return connection.principal;
  }

  private helloClient(connection: Connection, hello: HelloRequest): AuthStep {
    if (!this.authenticatesClients) {
      if (this.protectedMode && !isLoopbackAddress(connection.socket.remoteAddress)) {
        return refuse(
          hello.id,
          'no users are configured: clients are accepted only from loopback addresses (protected ' +
            'mode); configure --users or --token',
          true,
        );
      }
      return this.grant(connection, hello.id, ANONYMOUS, undefined);
    }
    if (hello.nonce === undefined) {
      return refuse(hello.id, 'authentication required: connect with a user and password, or the token');
    }
    // Before a challenge: a locked-out address gets no chance to try a password.
    const locked = this.failures.refusal(connection.socket.remoteAddress);
    if (locked !== undefined) return refuse(hello.id, locked, true);
    const user = hello.user ?? DEFAULT_USER;
    const grant = this.users!.get(user);
    const credential = grant?.credential ?? decoyCredential(user, this.pepper);
    return this.challenge(connection, hello, user, credential, grant);
  }

  private challenge(
    connection: Connection,
    hello: HelloRequest,
    user: string,
    credential: StoredCredential,
    grant: UserGrant | undefined,
  ): AuthStep {
    const challenge: AuthChallenge = {
      nonce: newNonce(),
      salt: credential.salt,
      kdf: hello.role === 'client' ? credential.kdf : PEER_KDF,
    };
    this.pending.set(connection, {
      role: hello.role,
      user,
      clientNonce: hello.nonce!,
      challenge,
      credential,
      grant,
    });
    return {
      response: {
        op: Op.HELLO_OK,
        id: hello.id,
        version: PROTOCOL_VERSION,
        role: this.options.role,
        serverId: this.options.serverId(),
        challenge,
      },
      close: false,
    };
  }

  /** Admits the connection under `principal` and builds the success answer. */
  private grant(
    connection: Connection,
    id: number,
    principal: Principal,
    signature: Uint8Array | undefined,
  ): AuthStep {
    const kind: AdmissionKind = principal.kind === 'peer' ? 'peer' : 'client';
    if (this.options.admit !== undefined && !this.options.admit(connection, kind)) {
      return {
        response: { op: Op.ERROR, id, code: ErrorCode.BUSY, message: `too many ${kind} connections` },
        close: true,
      };
    }
    connection.principal = principal;
    if (signature !== undefined) return { response: { op: Op.AUTH_OK, id, signature }, close: false };
    return {
      response: {
        op: Op.HELLO_OK,
        id,
        version: PROTOCOL_VERSION,
        role: this.options.role,
        serverId: this.options.serverId(),
      },
      close: false,
    };
  }
}
