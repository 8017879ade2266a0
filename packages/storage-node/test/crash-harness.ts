/**
 * Crash-consistency harness shared by test/crash.test.ts (a few rounds in CI) and
 * scripts/crash-loop.ts (many rounds): a dstore-node on lmdb under concurrent writes is killed
 * with SIGKILL at a random moment and restarted on the same data directory; every acknowledged
 * write must be there.
 */
import { Connection, connectSocket, handshake, Op, toBytes } from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';

/** A running node the harness can write to and kill. */
export interface CrashTarget {
  readonly port: number;
  /** SIGKILL, resolving once the process is gone. */
  kill(): Promise<void>;
}

/** What {@link crashTarget} needs of a spawned node (the `SpawnedNode` of test/helpers.ts). */
export interface KillableNode {
  readonly child: { kill(signal: NodeJS.Signals): boolean };
  readonly exited: Promise<unknown>;
  readonly ready: { readonly port: number };
}

/** A spawned dstore-node as a {@link CrashTarget}: SIGKILL, no shutdown of any kind. */
export function crashTarget(node: KillableNode): CrashTarget {
  return {
    port: node.ready.port,
    kill: async () => {
      node.child.kill('SIGKILL');
      await node.exited;
    },
  };
}

/** Options of {@link runCrashRounds}. */
export interface CrashOptions {
  readonly rounds: number;
  /** Starts a node on the SAME data directory every time (lmdb, durability flush). */
  readonly start: () => Promise<CrashTarget>;
  readonly connections?: number;
  readonly inFlightPerConnection?: number;
  readonly keysPerConnection?: number;
  /** Random kill delay after the load starts, in ms. Default 50..400. */
  readonly killDelayMs?: readonly [number, number];
  /** Seeded randomness (the seed is reported so a failure can be replayed). */
  readonly seed?: number;
  readonly log?: (line: string) => void;
}

/** Per-round figures. */
export interface CrashRoundReport {
  readonly round: number;
  readonly killDelayMs: number;
  readonly sent: number;
  readonly acknowledged: number;
  /** Writes in flight at the kill that turned out durable anyway (allowed). */
  readonly inFlightSurvived: number;
}

/** One write's place in its connection's order: later writes to a key have larger seq. */
interface Version {
  readonly round: number;
  readonly seq: number;
}

/** What the client knows about one key. */
interface KeyHistory {
  /** Value verified at the last restart (undefined: never written or not yet verified). */
  baseline: string | undefined;
  /** Values sent this round, by value string. */
  readonly sentThisRound: Set<string>;
  /** Highest acknowledged version this round. */
  highestAcked: Version | undefined;
}

function encodeValue(round: number, connection: number, seq: number): string {
  return `r${round}-c${connection}-s${seq}`;
}

function parseValue(value: string): Version {
  const match = /^r(\d+)-c\d+-s(\d+)$/.exec(value);
  if (!match) throw new Error(`corrupt value '${value}'`);
  return { round: Number(match[1]), seq: Number(match[2]) };
}

function isLater(a: Version, b: Version): boolean {
  return a.round > b.round || (a.round === b.round && a.seq >= b.seq);
}

async function open(port: number): Promise<Connection> {
  const socket = await connectSocket({ host: '127.0.0.1', port });
  const connection = new Connection(socket, { maxInFlight: 4096, requestTimeoutMs: 30_000 });
  await handshake(connection, 'client');
  return connection;
}

/** Reads every key and checks it against what was acknowledged; resets the round's history. */
async function verify(port: number, histories: Map<string, KeyHistory>): Promise<number> {
  const connection = await open(port);
  const keys = [...histories.keys()];
  let inFlightSurvived = 0;
  try {
    for (let offset = 0; offset < keys.length; offset += 500) {
      const batch = keys.slice(offset, offset + 500);
      const answer = await connection.request({ op: Op.MGET, keys: batch.map((key) => toBytes(key)) });
      if (answer.op !== Op.VALUES) throw new Error(`MGET answered op ${answer.op}`);
      batch.forEach((key, index) => {
        const bytes = answer.values[index];
        const stored = bytes ? Buffer.from(bytes).toString('utf8') : undefined;
        inFlightSurvived += checkKey(key, stored, histories.get(key) as KeyHistory);
      });
    }
  } finally {
    connection.destroy();
  }
  return inFlightSurvived;
}

/** Returns 1 when the stored value is a write that was in flight (not acknowledged) at the crash. */
function checkKey(key: string, stored: string | undefined, history: KeyHistory): number {
  const acked = history.highestAcked;
  const fail = (why: string): never => {
    throw new Error(
      `key ${key}: stored ${stored ?? '<absent>'} but ${why} (highest acknowledged ${acked ? `r${acked.round}-s${acked.seq}` : 'none'}, baseline ${history.baseline ?? 'none'})`,
    );
  };
  let survivedInFlight = 0;
  if (stored === undefined) {
    if (acked || history.baseline !== undefined) fail('an acknowledged value was lost');
  } else if (history.sentThisRound.has(stored)) {
    const version = parseValue(stored);
    if (acked && !isLater(version, acked)) fail('it is older than an acknowledged write');
    if (!acked || version.seq > acked.seq) survivedInFlight = 1;
  } else if (stored !== history.baseline) {
    fail('that value was never sent for this key');
  } else if (acked) {
    fail('an acknowledged write was lost (the old value is still there)');
  }
  history.baseline = stored;
  history.sentThisRound.clear();
  history.highestAcked = undefined;
  return survivedInFlight;
}

interface LoadCounters {
  sent: number;
  acknowledged: number;
}

/** `inFlight` workers per connection, each writing random keys of its connection until the kill. */
async function writeUntilKilled(
  connection: Connection,
  connectionIndex: number,
  round: number,
  options: Required<Pick<CrashOptions, 'inFlightPerConnection' | 'keysPerConnection'>>,
  histories: Map<string, KeyHistory>,
  random: () => number,
  counters: LoadCounters,
): Promise<void> {
  let seq = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const key = `c${connectionIndex}-k${Math.floor(random() * options.keysPerConnection)}`;
      const value = encodeValue(round, connectionIndex, ++seq);
      const version: Version = { round, seq };
      const history = histories.get(key) as KeyHistory;
      history.sentThisRound.add(value);
      counters.sent++;
      try {
        await connection.request({ op: Op.SET, key: toBytes(key), value: toBytes(value) });
      } catch {
        return; // The node died: this write is indeterminate.
      }
      counters.acknowledged++;
      if (!history.highestAcked || isLater(version, history.highestAcked)) history.highestAcked = version;
    }
  };
  await Promise.all(Array.from({ length: options.inFlightPerConnection }, worker));
}

/** Resolves once the load has at least one acknowledged write (polling: no hook in the workers). */
async function firstAcknowledged(counters: LoadCounters): Promise<void> {
  while (counters.acknowledged === 0) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** Runs `rounds` kill/restart rounds; throws on the first lost acknowledged write. */
export async function runCrashRounds(options: CrashOptions): Promise<CrashRoundReport[]> {
  const connections = options.connections ?? 4;
  const load = {
    inFlightPerConnection: options.inFlightPerConnection ?? 50,
    keysPerConnection: options.keysPerConnection ?? 200,
  };
  const [minDelay, maxDelay] = options.killDelayMs ?? [50, 400];
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const random = seededRandom(seed);
  const log = options.log ?? (() => undefined);
  log(`crash rounds: ${options.rounds}, seed ${seed}`);
  const histories = new Map<string, KeyHistory>();
  for (let c = 0; c < connections; c++) {
    for (let k = 0; k < load.keysPerConnection; k++) {
      histories.set(`c${c}-k${k}`, {
        baseline: undefined,
        sentThisRound: new Set(),
        highestAcked: undefined,
      });
    }
  }
  const reports: CrashRoundReport[] = [];
  let target = await options.start();
  for (let round = 1; round <= options.rounds; round++) {
    const clients = await Promise.all(Array.from({ length: connections }, () => open(target.port)));
    const counters: LoadCounters = { sent: 0, acknowledged: 0 };
    const killDelayMs = Math.round(minDelay + random() * (maxDelay - minDelay));
    const loads = clients.map((client, index) =>
      writeUntilKilled(client, index, round, load, histories, random, counters),
    );
    // The kill delay counts from the first acknowledged write, so that the load really runs at
    // every kill however slow the machine is (a fixed delay alone is a timing assumption).
    await firstAcknowledged(counters);
    await new Promise((resolve) => setTimeout(resolve, killDelayMs));
    await target.kill();
    // A half-open Connection would wait for answers a dead peer can never send (until the
    // request deadline): fail the in-flight writes now; they are the indeterminate ones.
    for (const client of clients) client.destroy();
    await Promise.all(loads);
    target = await options.start();
    const inFlightSurvived = await verify(target.port, histories);
    const report = {
      round,
      killDelayMs,
      sent: counters.sent,
      acknowledged: counters.acknowledged,
      inFlightSurvived,
    };
    reports.push(report);
    log(
      `round ${round}: killed after ${killDelayMs} ms, ${report.acknowledged}/${report.sent} acknowledged, all present; ${inFlightSurvived} unacknowledged writes survived`,
    );
  }
  await target.kill();
  return reports;
}
