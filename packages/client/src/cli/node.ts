import type { Command } from 'commander';
import { DstoreError, ErrorCode } from '../errors.js';
import {
  ADMIN_FLAGS,
  type AdminEndpoint,
  type AdminOptions,
  adminEndpoint,
  adminRequest,
} from './admin-http.js';
import { DEFAULT_ADMIN, duration, printJson, printLine, ServerRefusal } from './shared.js';
import type { RingView } from './status.js';

interface RemoveOptions extends AdminOptions {
  readonly timeout: number;
  readonly json?: boolean;
  readonly dead?: boolean;
}

/** How often `node remove` looks at /ring while the node's keys move. */
const POLL_MS = 200;

/**
 * Registers `node remove <id>`: a graceful, operator-driven leave through the balancer's admin
 * port; with `--dead`, the removal of a failed member declared gone for good (replication).
 */
export function registerNodeCommands(program: Command): void {
  const node = program.command('node').description('manage ring membership through the balancer');
  node
    .command('remove <id>')
    .description(
      "move a node's keys to their new owners, then take it out of the ring (POST /nodes/<id>/remove)",
    )
    .option('--admin <host:port>', 'balancer admin HTTP address', DEFAULT_ADMIN)
    .option('--timeout <ms>', 'longest wait for the hand-off (ms, or 30s, 2m)', duration, 60_000)
    .option('--json', 'print the final /ring migration state as JSON')
    .option(
      '--dead',
      'the node is gone for good (replication): never asked anything, its ranges are copied from the other replicas to the next nodes clockwise (it must be failed)',
    )
    .option(...ADMIN_FLAGS.token)
    .option(...ADMIN_FLAGS.tlsCa)
    .exitOverride()
    .action(async (id: string, options: RemoveOptions) => {
      const base = await adminEndpoint(options);
      const deadline = Date.now() + options.timeout;
      await requestRemoval(base, id, options.dead === true, Math.min(ADMIN_REQUEST_MS, options.timeout));
      const ring = await waitUntilGone(base, id, deadline, options.timeout);
      if (options.json) printJson({ removed: id, epoch: ring.epoch, migration: ring.migration });
      else {
        const moved = ring.migration?.keysMoved ?? 0;
        printLine(`node ${id} removed at epoch ${ring.epoch} (${moved} keys moved by the last migration)`);
      }
    });
  node.exitOverride();
}

/** The longest wait for one admin request (the POST, each poll of /ring), within `--timeout`. */
const ADMIN_REQUEST_MS = 5000;

async function requestRemoval(
  base: AdminEndpoint,
  id: string,
  dead: boolean,
  timeoutMs: number,
): Promise<void> {
  const path = `/nodes/${encodeURIComponent(id)}/remove${dead ? '?dead' : ''}`;
  const answer = await adminRequest<{ error?: string }>(base, path, { method: 'POST', timeoutMs });
  if (answer.status === 404) throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `no node '${id}' in the ring`);
  if (answer.status === 400) {
    throw new ServerRefusal(ErrorCode.INVALID_ARGUMENT, `remove refused: ${answer.body.error ?? ''}`);
  }
  if (answer.status < 200 || answer.status > 299) {
    throw new DstoreError(
      ErrorCode.INTERNAL,
      `remove answered HTTP ${answer.status}: ${answer.body.error ?? ''}`,
    );
  }
}

/** Polls /ring until `id` is out of it, or fails past `deadline` (`timeoutMs` from the start). */
async function waitUntilGone(
  base: AdminEndpoint,
  id: string,
  deadline: number,
  timeoutMs: number,
): Promise<RingView> {
  for (;;) {
    // A read: each poll gets its own bound, and the deadline is checked between polls (a poll cut
    // short at the deadline would report a fetch timeout instead of why the node is still there).
    const ring = (await adminRequest<RingView>(base, '/ring', { timeoutMs: ADMIN_REQUEST_MS })).body;
    if (!ring.nodes.some((node) => node.id === id)) return ring;
    if (Date.now() > deadline) throw stillInRing(id, timeoutMs, ring);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * TIMEOUT for a node still in the ring: the removal goes on at the balancer (it was accepted), and
 * when a stalled migration holds it up (ring changes run one at a time), the error says which.
 */
function stillInRing(id: string, timeoutMs: number, ring: RingView): DstoreError {
  const stalled = ring.migration?.stalled;
  const why =
    stalled === undefined || stalled === null
      ? ''
      : `: its removal waits behind a stalled migration (${stalled.from} -> ${stalled.to} refused ${stalled.attempts} times: ${stalled.code} ${stalled.message}); give ${stalled.to} room (restart it with a larger --max-memory or --map-size) and the removal goes on`;
  return new DstoreError(
    ErrorCode.TIMEOUT,
    `node ${id} still in the ring after ${timeoutMs} ms${why} (the removal was accepted: dstore status shows its progress)`,
  );
}
