/**
 * Per-key history checker shared by the load tests (migration, balancer restarts) and
 * scripts/migration-soak.ts.
 *
 * Each key has exactly one writer (so its versions are ordered) and every value is
 * `<key index>:<version>` with a version that increases per write. A read must return the newest
 * version acknowledged before the read began, or a later one; anything else is classified:
 * - `nil`: nothing, although a write was acknowledged before the read began;
 * - `stale`: an older version than one acknowledged before the read began;
 * - `wrong`: a value that was never written to this key (another key's value, a version never issued).
 * At the end every key must read its last acknowledged version (or a later write whose outcome was
 * indeterminate: a timeout or a lost connection).
 */
import {
  bytesToString,
  DstoreError,
  Op,
  type Request,
  type Response,
  toBytes,
  type WithoutId,
} from '@dstore/protocol';

/** Anything that sends a request and resolves with the answer: a Connection, a PeerLink. */
export interface Requester {
  request(message: WithoutId<Request>): Promise<Response>;
}

interface WriteRecord {
  readonly version: number;
  state: 'pending' | 'acked' | 'failed' | 'indeterminate';
  ackedAt: number;
}

/** Per-key write history and the read checker. */
export class History {
  readonly writes: WriteRecord[][];
  readonly issued: number[];
  /** Reads that returned an older version than one acknowledged before them. */
  readonly stale: string[] = [];
  /** Reads that returned nothing for a key with a write acknowledged before them. */
  readonly nil: string[] = [];
  /** Reads that returned a value never written to the key. */
  readonly wrong: string[] = [];
  reads = 0;
  writeCount = 0;
  failed = 0;
  /** Failures by error code. */
  readonly failures = new Map<string, number>();

  constructor(readonly keys: number) {
    this.writes = Array.from({ length: keys }, () => []);
    this.issued = new Array<number>(keys).fill(0);
  }

  newestAckedBefore(key: number, time: number): number {
    let newest = 0;
    for (const write of this.writes[key]!) {
      if (write.state === 'acked' && write.ackedAt < time && write.version > newest) newest = write.version;
    }
    return newest;
  }

  lastAcked(key: number): number {
    return this.newestAckedBefore(key, Number.POSITIVE_INFINITY);
  }

  /** Versions a final read may return: the last acknowledged, or a later indeterminate one. */
  acceptableFinal(key: number, version: number): boolean {
    const acked = this.lastAcked(key);
    if (version === acked) return true;
    return this.writes[key]!.some(
      (write) => write.version === version && version > acked && write.state === 'indeterminate',
    );
  }

  /** Every anomaly found by reads so far. */
  anomalies(): string[] {
    return [...this.nil, ...this.stale, ...this.wrong];
  }

  noteFailure(error: unknown): void {
    this.failed++;
    const code = error instanceof DstoreError ? error.code : 'NOT_A_DSTORE_ERROR';
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
  }

  /** Checks a read of `key` that began at `startedAt` and returned `value`. */
  checkRead(key: number, startedAt: number, value: Uint8Array | null): void {
    const newest = this.newestAckedBefore(key, startedAt);
    if (value === null) {
      if (newest > 0) this.nil.push(`${keyName(key)}: read nil, v${newest} acked before`);
      return;
    }
    const [owner, versionText] = bytesToString(value).split(':');
    const version = Number(versionText);
    if (
      owner !== String(key) ||
      !Number.isSafeInteger(version) ||
      version < 1 ||
      version > this.issued[key]!
    ) {
      this.wrong.push(`${keyName(key)}: read '${bytesToString(value).slice(0, 40)}', never written to it`);
      return;
    }
    if (version < newest) this.stale.push(`${keyName(key)}: read v${version}, v${newest} acked before`);
  }
}

/** The key name of key index `index`. */
export const keyName = (index: number): string => `load-${index}`;

const versionOf = (value: Uint8Array | null): number =>
  value === null ? 0 : Number(bytesToString(value).split(':')[1]);

/** Writes the next version of `key`, recording the outcome. */
export async function write(history: History, client: Requester, key: number): Promise<void> {
  const version = ++history.issued[key]!;
  const record: WriteRecord = { version, state: 'pending', ackedAt: 0 };
  history.writes[key]!.push(record);
  history.writeCount++;
  try {
    await client.request({ op: Op.SET, key: toBytes(keyName(key)), value: toBytes(`${key}:${version}`) });
    record.state = 'acked';
    record.ackedAt = performance.now();
  } catch (error) {
    history.noteFailure(error);
    record.state = error instanceof DstoreError && error.notExecuted ? 'failed' : 'indeterminate';
  }
}

/** Reads `key` and checks the answer against the history. */
export async function read(history: History, client: Requester, key: number): Promise<void> {
  const startedAt = performance.now();
  history.reads++;
  try {
    const answer = await client.request({ op: Op.GET, key: toBytes(keyName(key)) });
    if (answer.op !== Op.VALUE) throw new Error(`GET answered op ${answer.op}`);
    history.checkRead(key, startedAt, answer.value);
  } catch (error) {
    if (!(error instanceof DstoreError)) throw error;
    history.noteFailure(error);
  }
}

/** One client: random reads of any key, writes of the keys it owns (index % clients). */
export async function clientLoop(
  history: History,
  client: Requester,
  index: number,
  clients: number,
  shouldStop: () => boolean,
  pauseAfterFailureMs = 0,
): Promise<void> {
  const owned = Math.ceil((history.keys - index) / clients);
  while (!shouldStop()) {
    const failedBefore = history.failed;
    if (Math.random() < 0.5)
      await write(history, client, index + clients * Math.floor(Math.random() * owned));
    else await read(history, client, Math.floor(Math.random() * history.keys));
    // A client facing an outage backs off instead of spinning on instant UNAVAILABLE answers.
    if (pauseAfterFailureMs > 0 && history.failed > failedBefore) {
      await new Promise((resolve) => setTimeout(resolve, pauseAfterFailureMs));
    }
  }
}

/** Reads every key; returns the keys whose value is not the last acknowledged one. */
export async function finalCheck(history: History, client: Requester): Promise<string[]> {
  const lost: string[] = [];
  for (let start = 0; start < history.keys; start += 200) {
    const keys = Array.from({ length: Math.min(200, history.keys - start) }, (_, i) => start + i);
    await Promise.all(
      keys.map(async (key) => {
        const answer = await client.request({ op: Op.GET, key: toBytes(keyName(key)) });
        if (answer.op !== Op.VALUE) throw new Error(`GET answered op ${answer.op}`);
        const version = versionOf(answer.value);
        if (!history.acceptableFinal(key, version)) {
          lost.push(`${keyName(key)}: read v${version}, last acked v${history.lastAcked(key)}`);
        }
      }),
    );
  }
  return lost;
}
