/**
 * The stream's documents as the page reads them: the history points from src/dashboard-wire.ts
 * (shared with the balancer), and the parts of `DashboardSnapshot` and `RingView` it draws, kept
 * apart because those modules import the balancer's Node.js code; the browser test checks the
 * page against `/ring`.
 */

import type { HistoryPoint } from '../src/dashboard-wire.js';

export type { HistoryPoint, NodeSample } from '../src/dashboard-wire.js';

/** One node of `/ring`. */
export interface RingNode {
  readonly id: string;
  readonly address: string;
  readonly status: 'up' | 'down';
  readonly weight: number;
  readonly share: number;
  readonly keys: number;
  readonly identity: string;
  readonly state: string;
  readonly storage?: {
    readonly state: 'ok' | 'degraded';
    readonly reason: string;
    readonly usedBytes: number;
    readonly availableBytes: number;
  };
}

/** The `/ring` document. */
export interface RingDocument {
  readonly epoch: number;
  readonly algorithm: string;
  readonly nodes: readonly RingNode[];
  readonly map: {
    readonly epoch: number;
    readonly cluster: string;
    readonly store: string;
    readonly location: string;
    readonly coordinator: string | undefined;
    readonly role: 'coordinator' | 'follower';
    readonly ringEpoch: number;
    readonly transition: {
      readonly phase: 'stream' | 'purge';
      readonly reason: string;
      readonly startedAt: string;
      readonly streamsDone: number;
      readonly keysMoved: number;
    } | null;
  };
  readonly migration: {
    readonly active: boolean;
    readonly pendingRanges: number;
    readonly totalRanges: number;
    readonly keysMoved: number;
    readonly keysPerSecond: number;
    readonly stalled: { readonly from: string; readonly to: string } | null;
  };
}

/** The owner of each equal slot of the circle, as an index into `owners` (`RingSlots` in src). */
export interface RingSlots {
  readonly owners: readonly string[];
  readonly slots: readonly number[];
}

/** What `/events` sends once a second (`DashboardSnapshot` in src/dashboard-server.ts). */
export interface Snapshot {
  readonly balancer: { readonly id: string; readonly role: 'coordinator' | 'follower' };
  readonly ring: RingDocument;
  /** Only when the ring changed since the previous snapshot; the hello carries the current ones. */
  readonly ringSlots?: RingSlots;
  readonly moving: readonly { readonly start: number; readonly end: number }[];
  readonly heartbeatAgeMs: Readonly<Record<string, number>>;
  readonly events: readonly { readonly at: number; readonly text: string }[];
  readonly point: HistoryPoint;
}
