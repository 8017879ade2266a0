import {
  type Connection,
  DstoreError,
  ErrorCode,
  type HeartbeatRequest,
  type JoinRequest,
  type LeaveRequest,
  Op,
  type Response,
} from '@dstore/protocol';
import type { Logger } from 'pino';
import type { JoinOutcome, Membership } from './membership.js';

/** Hosts a node may announce that mean "this machine" rather than an address to dial. */
export const UNSPECIFIED_HOSTS: ReadonlySet<string> = new Set(['', '0.0.0.0', '::', '[::]']);

function invalid(id: number, message: string): Response {
  return { op: Op.ERROR, id, code: ErrorCode.INVALID_ARGUMENT, message };
}

/**
 * Membership requests sent by storage nodes on the client port: JOIN, HEARTBEAT and LEAVE.
 * They only change the registry; forwarding never waits on them.
 */
export class ControlHandler {
  constructor(
    private readonly membership: Membership,
    private readonly logger: Logger,
  ) {}

  /**
   * JOIN: adds or updates the member in the cluster map, answered once the map is stored;
   * re-registering the same identity at the same address is a no-op. A refusal (removed identity,
   * id held by another live identity, data of another cluster) is answered with its typed error.
   */
  async join(request: JoinRequest, connection: Connection, registersHere = true): Promise<Response> {
    const { id, nodeId, port, weight } = request;
    if (nodeId === '') return invalid(id, 'JOIN needs a non-empty nodeId');
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      return invalid(id, `JOIN port ${port} is not a port`);
    if (!Number.isFinite(weight) || weight <= 0) return invalid(id, `JOIN weight ${weight} must be positive`);
    // A node bound to all interfaces announces 0.0.0.0; dial the address it connected from.
    const host = UNSPECIFIED_HOSTS.has(request.host)
      ? (connection.socket.remoteAddress ?? '127.0.0.1')
      : request.host;
    let outcome: JoinOutcome;
    try {
      outcome = await this.membership.join(
        {
          id: nodeId,
          host,
          port,
          weight,
          identity: request.identity,
          generation: request.generation,
          availableBytes: request.availableBytes,
        },
        registersHere,
      );
    } catch (error) {
      // Logged by the membership, which knows how often this node was refused.
      if (!(error instanceof DstoreError)) throw error;
      return { op: Op.ERROR, id, code: error.code, message: error.message };
    }
    const level = outcome === 'unchanged' ? 'debug' : 'info';
    this.logger[level](
      { node: nodeId, address: `${host}:${port}`, weight, outcome, epoch: this.membership.epoch },
      'JOIN',
    );
    return { op: Op.OK, id };
  }

  /**
   * LEAVE: removes the node from the ring (idempotent). Answered once the node's ranges moved to
   * their new owners, so a node that waits for the answer exits only when nothing is lost.
   */
  async leave(request: LeaveRequest): Promise<Response> {
    // Forwarded by a follower balancer or sent by the node itself: a graceful leave either way.
    this.logger.info({ node: request.nodeId, epoch: this.membership.epoch }, 'LEAVE');
    let removed: boolean;
    try {
      removed = await this.membership.leave(request.nodeId, 'node', request.identity);
    } catch (error) {
      if (!(error instanceof DstoreError) || error.code !== ErrorCode.IDENTITY_CONFLICT) throw error;
      this.logger.warn(
        { node: request.nodeId, identity: request.identity, err: error.message },
        'LEAVE refused',
      );
      return { op: Op.ERROR, id: request.id, code: error.code, message: error.message };
    }
    if (removed) this.logger.info({ node: request.nodeId, epoch: this.membership.epoch }, 'LEAVE done');
    return { op: Op.OK, id: request.id };
  }

  /**
   * HEARTBEAT: refreshes liveness and records the key count and the storage condition. With
   * replication the answer carries the lease the map's writer grants: a follower (etcd) relays the
   * heartbeat to the coordinator and answers with its lease.
   */
  heartbeat(request: HeartbeatRequest): Response | Promise<Response> {
    const keyCount = Number.isFinite(request.keyCount) && request.keyCount >= 0 ? request.keyCount : 0;
    const before = this.membership.node(request.nodeId)?.storage?.degraded ?? '';
    const storage =
      request.degraded === undefined
        ? undefined
        : {
            degraded: request.degraded,
            usedBytes: request.usedBytes ?? 0,
            availableBytes: request.availableBytes ?? 0,
          };
    if (!this.membership.heartbeat(request.nodeId, keyCount, storage)) {
      return invalid(request.id, `node '${request.nodeId}' is not in the ring: JOIN first`);
    }
    const after = storage?.degraded ?? '';
    // Logged when the state changes, not the reason: the reason carries byte counts that change
    // with every heartbeat of a full node (it logged several warnings a second).
    if ((after === '') !== (before === '')) {
      if (after === '') this.logger.info({ node: request.nodeId }, 'node storage recovered: writes accepted');
      else this.logger.warn({ node: request.nodeId, reason: after }, 'node storage degraded: writes refused');
    }
    if (this.membership.forwardsHeartbeats) {
      return this.membership.forwardHeartbeat({ nodeId: request.nodeId, keyCount, storage }).then(
        (lease) =>
          lease === undefined ? { op: Op.OK, id: request.id } : { op: Op.OK, id: request.id, lease },
        // No lease this time: the node keeps its current one until it runs out.
        () => ({ op: Op.OK, id: request.id }),
      );
    }
    // The map's writer grants a lease to an up member of a replicated map (none otherwise).
    const lease = this.membership.leaseFor(request.nodeId);
    return lease === undefined ? { op: Op.OK, id: request.id } : { op: Op.OK, id: request.id, lease };
  }
}
