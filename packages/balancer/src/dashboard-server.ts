import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { HashRing } from '@dstore/hashring';
import type { RingView } from './admin-server.js';
import type { ClusterHistory, HistoryPoint, MembershipEvent } from './history.js';
import { type Membership, ringOf } from './membership.js';

/** Dashboard streams open at once; one more is refused with 503. */
export const DASHBOARD_MAX_STREAMS = 16;
/** A stream whose unsent bytes exceed this is a slow consumer and is closed. */
export const DASHBOARD_MAX_BUFFERED_BYTES = 512 * 1024;
/** Positions sampled around the ring to draw its arcs (one per half degree). */
const RING_SAMPLES = 720;
const HASH_SPACE = 2 ** 32;

/**
 * Forbids every request outside the balancer: scripts, styles and fetches from this origin only,
 * no inline script, no frames, no form posts elsewhere.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
};

/** The page shell: no data in it, everything comes from the (authenticated) stream. */
const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dstore dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/dashboard.css">
<script defer src="/dashboard/dashboard.js"></script>
</head>
<body><noscript>The dstore dashboard needs JavaScript.</noscript></body>
</html>
`;

/** A file the dashboard serves, read once from the package's `dist/dashboard`. */
interface Asset {
  readonly contentType: string;
  readonly body: Buffer;
}

/** The only files served: a fixed table, so no request path ever reaches the file system. */
const ASSET_FILES: Readonly<Record<string, { file: string; contentType: string }>> = {
  '/dashboard/dashboard.js': { file: 'dashboard.global.js', contentType: 'text/javascript; charset=utf-8' },
  '/dashboard/dashboard.css': { file: 'dashboard.css', contentType: 'text/css; charset=utf-8' },
};

/** Where the built page is: next to the bundle (`dist/`), or `dist/` when running from `src/`. */
function assetDirectories(): URL[] {
  const here = import.meta.url;
  return [new URL('./dashboard/', here), new URL('../dist/dashboard/', here)];
}

function loadAsset(file: string): Buffer | undefined {
  for (const directory of assetDirectories()) {
    try {
      return readFileSync(fileURLToPath(new URL(file, directory)));
    } catch {
      // Try the next place.
    }
  }
  return undefined;
}

/**
 * The ring at drawing resolution: the owner of each of {@link RING_SAMPLES} equal slots of the
 * circle, as an index into `owners` (compact: a vnode ring has hundreds of arcs).
 */
export interface RingSlots {
  readonly owners: readonly string[];
  readonly slots: readonly number[];
}

/** Part of the ring where keys change owner in the running transition (fractions of the circle). */
export interface MovingRange {
  readonly start: number;
  readonly end: number;
}

/**
 * The moving parts of the ring at drawing resolution: every {@link RING_SAMPLES}th of the circle
 * that a move touches, merged. Bounded however many ranges a vnode ring moves, and a range too
 * small to see still shows as one slot.
 */
export function movingSlots(moves: readonly { start: number; end: number }[]): MovingRange[] {
  const touched = new Uint8Array(RING_SAMPLES);
  const slotOf = (position: number): number =>
    Math.min(RING_SAMPLES - 1, Math.floor((position / HASH_SPACE) * RING_SAMPLES));
  for (const move of moves) {
    // start is exclusive and the range may wrap past 2^32 - 1 to 0.
    const first = slotOf((move.start + 1) % HASH_SPACE);
    const last = slotOf(move.end);
    for (let slot = first; ; slot = (slot + 1) % RING_SAMPLES) {
      touched[slot] = 1;
      if (slot === last) break;
    }
  }
  const ranges: MovingRange[] = [];
  for (let slot = 0; slot < RING_SAMPLES; slot++) {
    if (touched[slot] === 0) continue;
    const start = slot;
    while (slot + 1 < RING_SAMPLES && touched[slot + 1] === 1) slot++;
    ranges.push({ start: start / RING_SAMPLES, end: (slot + 1) / RING_SAMPLES });
  }
  return ranges;
}

/** What the dashboard stream sends once a second. */
export interface DashboardSnapshot {
  readonly balancer: { readonly id: string; readonly role: 'coordinator' | 'follower' };
  readonly ring: RingView;
  /** The ring's slots, only when the ring changed since the previous snapshot (the hello has them). */
  readonly ringSlots?: RingSlots;
  readonly moving: readonly MovingRange[];
  readonly heartbeatAgeMs: Readonly<Record<string, number>>;
  readonly events: readonly MembershipEvent[];
  readonly point: HistoryPoint;
}

/** The owner of each slot of the circle (sampled at the slot's start). */
export function ringSlots(ring: HashRing): RingSlots {
  if (ring.size === 0) return { owners: [], slots: [] };
  const owners: string[] = [];
  const indexOf = new Map<string, number>();
  const slots: number[] = [];
  for (let slot = 0; slot < RING_SAMPLES; slot++) {
    const owner = ring.getByPosition(Math.floor((slot * HASH_SPACE) / RING_SAMPLES));
    let index = indexOf.get(owner);
    if (index === undefined) {
      index = owners.push(owner) - 1;
      indexOf.set(owner, index);
    }
    slots.push(index);
  }
  return { owners, slots };
}

/** What a dashboard request may see and do. */
export interface DashboardAccess {
  /** It carries the admin token: the page may offer operator actions. */
  readonly operator: boolean;
  /** The admin API needs a token for reads (`--admin-auth all`) and the request has none. */
  readonly refused: boolean;
}

/** Options of the {@link DashboardServer}. */
export interface DashboardOptions {
  /** This balancer's id, shown in the page's header. */
  readonly balancerId: string;
  /** Streams open at once (default {@link DASHBOARD_MAX_STREAMS}). */
  readonly maxStreams?: number;
  /** Unsent bytes past which a stream is closed (default {@link DASHBOARD_MAX_BUFFERED_BYTES}). */
  readonly maxBufferedBytes?: number;
}

/**
 * `GET /` (the page), `GET /dashboard/*` (its two built files, from a fixed table) and `GET /events`
 * (one Server-Sent Events stream per page: the history once, then a snapshot a second). The
 * snapshot is built once per second for every stream together, never per request; streams are
 * capped, and a stream that does not keep up is closed.
 */
export class DashboardServer {
  /**
   * Open streams, each with the bytes of its hello not yet flushed: a page's first message carries
   * up to 15 minutes of history, so a slow link may hold that much more before it counts as behind.
   */
  private readonly streams = new Map<ServerResponse, { helloBytes: number }>();
  /** The ring whose slots the last snapshot carried. */
  private broadcastRing: HashRing | undefined;
  private readonly assets = new Map<string, Asset>();
  private unsubscribe: (() => void) | undefined;
  private slotsCache: { ring: HashRing; slots: RingSlots } | undefined;
  private movingCache: { key: string; moving: MovingRange[] } | undefined;

  constructor(
    private readonly membership: Membership,
    private readonly history: ClusterHistory,
    private readonly ringViewOf: (membership: Membership) => RingView,
    private readonly options: DashboardOptions,
  ) {}

  /** Whether `path` is one of the dashboard's (the admin server routes it here, before its own). */
  static serves(path: string): boolean {
    return path === '/events' || DashboardServer.servesWithoutToken(path);
  }

  /**
   * The page shell and its built files: the package's own code, no cluster data, so served to a
   * browser that has not given the token yet (it cannot send a header on navigation).
   */
  static servesWithoutToken(path: string): boolean {
    return path === '/' || path in ASSET_FILES;
  }

  /** Serves a GET or HEAD of a path {@link serves} accepted. */
  handle(path: string, request: IncomingMessage, response: ServerResponse, access: DashboardAccess): void {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/') {
      // Without a needed token the shell answers 401: it only shows the token form.
      const headers = { ...SECURITY_HEADERS, 'content-type': 'text/html; charset=utf-8' };
      response.writeHead(
        access.refused ? 401 : 200,
        access.refused ? { ...headers, 'www-authenticate': 'Bearer realm="dstore-admin"' } : headers,
      );
      response.end(request.method === 'HEAD' ? undefined : INDEX_HTML);
      return;
    }
    if (path === '/events') {
      this.openStream(request, response, access.operator);
      return;
    }
    this.serveAsset(path, request, response);
  }

  /** Streams open now. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Ends every stream (the admin server cannot close while they are open). */
  close(): void {
    for (const stream of this.streams.keys()) stream.destroy();
    this.streams.clear();
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  private serveAsset(path: string, request: IncomingMessage, response: ServerResponse): void {
    const entry = ASSET_FILES[path]!;
    let asset = this.assets.get(path);
    if (asset === undefined) {
      const body = loadAsset(entry.file);
      if (body === undefined) {
        response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('dashboard not built\n');
        return;
      }
      asset = { contentType: entry.contentType, body };
      this.assets.set(path, asset);
    }
    response.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': asset.contentType,
      'content-length': asset.body.length,
    });
    response.end(request.method === 'HEAD' ? undefined : asset.body);
  }

  private openStream(request: IncomingMessage, response: ServerResponse, operator: boolean): void {
    const maxStreams = this.options.maxStreams ?? DASHBOARD_MAX_STREAMS;
    if (this.streams.size >= maxStreams) {
      response
        .writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '5' })
        .end(`${JSON.stringify({ error: `too many dashboard streams (at most ${maxStreams})` })}\n`);
      return;
    }
    response.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'x-accel-buffering': 'no',
    });
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    // A stream lives as long as the page: no idle timeout of the admin server's applies to it.
    request.socket.setTimeout(0);
    const hello = `event: hello\ndata: ${JSON.stringify({ operator, ringSlots: this.slots(), history: this.history.history() })}\n\n`;
    const state = { helloBytes: Buffer.byteLength(hello) };
    this.streams.set(response, state);
    response.on('close', () => this.streams.delete(response));
    response.write(hello, () => {
      state.helloBytes = 0;
    });
    this.unsubscribe ??= this.history.subscribe((point) => this.broadcast(point));
  }

  /** The current ring's slots (recomputed only when the ring changes). */
  private slots(): RingSlots {
    const ring = this.membership.ring;
    if (this.slotsCache?.ring !== ring) this.slotsCache = { ring, slots: ringSlots(ring) };
    return this.slotsCache.slots;
  }

  /** Builds the snapshot once and writes it to every stream, closing those that fall behind. */
  private broadcast(point: HistoryPoint): void {
    if (this.streams.size === 0) return;
    const message = `event: snapshot\ndata: ${JSON.stringify(this.snapshot(point))}\n\n`;
    const maxBuffered = this.options.maxBufferedBytes ?? DASHBOARD_MAX_BUFFERED_BYTES;
    for (const [stream, state] of this.streams) {
      if (stream.writableLength > maxBuffered + state.helloBytes) {
        // A consumer this far behind would only ever see old data; it reconnects when it can.
        stream.destroy();
        this.streams.delete(stream);
        continue;
      }
      stream.write(message);
    }
  }

  private snapshot(point: HistoryPoint): DashboardSnapshot {
    const ring = this.membership.ring;
    const ringChanged = this.broadcastRing !== ring;
    this.broadcastRing = ring;
    return {
      balancer: {
        id: this.options.balancerId,
        role: this.membership.isCoordinator ? 'coordinator' : 'follower',
      },
      ring: this.ringViewOf(this.membership),
      ...(ringChanged ? { ringSlots: this.slots() } : {}),
      moving: this.movingRanges(ring),
      heartbeatAgeMs: this.history.heartbeatAges(),
      events: this.history.eventLog(),
      point,
    };
  }

  /** The ranges the running transition moves (cached per transition; none when no transition runs). */
  private movingRanges(ring: HashRing): MovingRange[] {
    const transition = this.membership.clusterMap.transition;
    if (transition === null || transition.phase !== 'stream') return [];
    const key = `${transition.from.epoch}>${this.membership.clusterMap.ring.epoch}`;
    if (this.movingCache?.key !== key) {
      let moving: MovingRange[] = [];
      try {
        moving = movingSlots(ringOf(transition.from).diff(ring));
      } catch {
        // Rendezvous rings and empty rings have no ranges to draw.
      }
      this.movingCache = { key, moving };
    }
    return this.movingCache.moving;
  }
}
