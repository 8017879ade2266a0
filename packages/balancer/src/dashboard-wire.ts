/**
 * The documents the dashboard's stream carries, shared by the balancer (src/history.ts,
 * src/dashboard-server.ts) and the page (dashboard/), which compiles for the browser: types
 * only, no imports, so the page can use them without the balancer's Node.js types.
 */

/** What one node reported in its latest STATS (per-node series of the dashboard). */
export interface NodeSample {
  /** Operations per second the node served (its own counters, STATS excluded). */
  readonly ops: number;
  /** The same by operation (`get`, `set`, `del`, `mget`, `mset`; `other` = the rest but STATS). */
  readonly opsByOp: Readonly<Record<string, number>>;
  /** Keys per second the node sent and received by key migration. */
  readonly migrationKeys: number;
  /** Latency the node reports (µs; its own histogram), or -1 when unknown. */
  readonly p50Us: number;
  readonly p99Us: number;
  readonly keys: number;
}

/** One second of the cluster as the balancer saw it. */
export interface HistoryPoint {
  /** Unix time, seconds. */
  readonly t: number;
  /** Requests answered per second, by op (`other` = the rest). */
  readonly ops: Readonly<Record<string, number>>;
  /** Error answers per second, by error code. */
  readonly errors: Readonly<Record<string, number>>;
  /** Balancer-side latency percentiles of the requests answered in this second (ms; -1 = none). */
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Keys moved by key migration in this second. */
  readonly migrationKeys: number;
  /**
   * Failures per second of each node, by error code, as the balancer saw them (requests a node
   * refused or failed, or that were refused because it was down); only nodes with failures.
   */
  readonly nodeErrors: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Per node, from its STATS (absent for nodes that did not answer). */
  readonly nodes: Readonly<Record<string, NodeSample>>;
}

/** One membership change seen by the sampler. */
export interface MembershipEvent {
  /** Unix time, ms. */
  readonly at: number;
  readonly text: string;
}
