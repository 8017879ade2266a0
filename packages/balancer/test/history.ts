/**
 * Per-key history checker shared by the load tests (migration, balancer restarts) and
 * scripts/migration-soak.ts.
 *
 * Each key has exactly one writer (so its operations are ordered) and every operation gets the
 * next version of its key: a SET stores `<key index>:<version>`, a DEL deletes. A read must see the
 * newest operation acknowledged before the read began, or a later one; anything else is classified:
 * - `nil`: nothing, although a SET was acknowledged before the read began and no later DEL was sent;
 * - `stale`: an older version than an operation acknowledged before the read began (after an
 *   acknowledged DEL, any value older than it is a resurrected delete);
 * - `wrong`: a value that was never written to this key (another key's value, a version never
 *   issued, or a DEL's version).
 * At the end every key must read its last acknowledged operation's result (or the result of a later
 * operation whose outcome was indeterminate: a timeout or a lost connection).
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
  /** A DEL rather than a SET. */
  readonly deleted: boolean;
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

  /** The newest operation on `key` acknowledged before `time` (undefined: none). */
  newestAckedRecord(key: number, time: number): WriteRecord | undefined {
    let newest: WriteRecord | undefined;
    for (const write of this.writes[key]!) {
      if (write.state === 'acked' && write.ackedAt < time && write.version > (newest?.version ?? 0))
        newest = write;
    }
    return newest;
  }

  newestAckedBefore(key: number, time: number): number {
    return this.newestAckedRecord(key, time)?.version ?? 0;
  }

  lastAcked(key: number): number {
    return this.newestAckedBefore(key, Number.POSITIVE_INFINITY);
  }

  /** Whether a DEL newer than `version` was sent and may have been applied. */
  private mayBeDeletedAfter(key: number, version: number): boolean {
    return this.writes[key]!.some(
      (write) => write.deleted && write.version > version && write.state !== 'failed',
    );
  }

  /**
   * Whether a final read may return `version` (0 = nil): the result of the last acknowledged
   * operation, or of a later one whose outcome is unknown.
   */
  acceptableFinal(key: number, version: number): boolean {
    const last = this.newestAckedRecord(key, Number.POSITIVE_INFINITY);
    const lastVersion = last?.version ?? 0;
    const lastResult = last === undefined || last.deleted ? 0 : lastVersion;
    if (version === lastResult) return true;
    const later = this.writes[key]!.filter(
      (write) => write.version > lastVersion && write.state === 'indeterminate',
    );
    return version === 0
      ? later.some((write) => write.deleted)
      : later.some((write) => write.version === version && !write.deleted);
  }

  /** The operations on `key`, for failure messages: `v<n> SET|DEL <state> @<ms since origin>`. */
  describe(key: number, origin: number): string {
    return (this.writes[key] ?? [])
      .map((write) => {
        const at = write.state === 'acked' ? ` @${Math.round(write.ackedAt - origin)}` : '';
        return `v${write.version} ${write.deleted ? 'DEL' : 'SET'} ${write.state}${at}`;
      })
      .join(', ');
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
    const newest = this.newestAckedRecord(key, startedAt);
    if (value === null) {
      if (newest !== undefined && !newest.deleted && !this.mayBeDeletedAfter(key, newest.version)) {
        this.nil.push(
          `${keyName(key)}: read nil, v${newest.version} acked before (read @${Math.round(startedAt)})`,
        );
      }
      return;
    }
    const [owner, versionText] = bytesToString(value).split(':');
    const version = Number(versionText);
    const record = this.writes[key]!.find((write) => write.version === version);
    if (owner !== String(key) || record === undefined || record.deleted) {
      this.wrong.push(`${keyName(key)}: read '${bytesToString(value).slice(0, 40)}', never written to it`);
      return;
    }
    if (newest !== undefined && version < newest.version) {
      const what = newest.deleted ? 'deleted (resurrected)' : 'acked';
      this.stale.push(
        `${keyName(key)}: read v${version}, v${newest.version} ${what} before (read @${Math.round(startedAt)})`,
      );
    }
  }
}

/** The key name of key index `index`. */
export const keyName = (index: number): string => `load-${index}`;

const versionOf = (value: Uint8Array | null): number =>
  value === null ? 0 : Number(bytesToString(value).split(':')[1]);

/** Writes (or, with `remove`, deletes) the next version of `key`, recording the outcome. */
export async function write(history: History, client: Requester, key: number, remove = false): Promise<void> {
  const version = ++history.issued[key]!;
  const record: WriteRecord = { version, deleted: remove, state: 'pending', ackedAt: 0 };
  history.writes[key]!.push(record);
  history.writeCount++;
  try {
    const name = toBytes(keyName(key));
    await client.request(
      remove ? { op: Op.DEL, key: name } : { op: Op.SET, key: name, value: toBytes(`${key}:${version}`) },
    );
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

/**
 * One client: random reads of any key, writes (and, with `deleteRatio`, deletes) of the keys it
 * owns (index % clients).
 */
export async function clientLoop(
  history: History,
  client: Requester,
  index: number,
  clients: number,
  shouldStop: () => boolean,
  pauseAfterFailureMs = 0,
  deleteRatio = 0,
): Promise<void> {
  const owned = Math.ceil((history.keys - index) / clients);
  const mine = () => index + clients * Math.floor(Math.random() * owned);
  while (!shouldStop()) {
    const failedBefore = history.failed;
    const dice = Math.random();
    if (dice < deleteRatio) await write(history, client, mine(), true);
    else if (dice < 0.5) await write(history, client, mine());
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
          const last = history.newestAckedRecord(key, Number.POSITIVE_INFINITY);
          const expected =
            last === undefined
              ? 'nothing'
              : last.deleted
                ? `deleted at v${last.version}`
                : `v${last.version}`;
          lost.push(`${keyName(key)}: read ${version === 0 ? 'nil' : `v${version}`}, last acked ${expected}`);
        }
      }),
    );
  }
  return lost;
}

/** A running load started by {@link startLoad}. */
export interface RunningLoad {
  /** Stops every client loop after its current operation; resolves when all have stopped. */
  stop(): Promise<void>;
}

/**
 * Writes a first version of every key (spread over the links, 100 at a time), then runs one
 * {@link clientLoop} per link until {@link RunningLoad.stop}. Key `k` is written by link
 * `k % links.length` throughout, so each key keeps exactly one writer.
 */
export async function startLoad(
  history: History,
  links: readonly Requester[],
  options: { readonly pauseAfterFailureMs?: number; readonly deleteRatio?: number } = {},
): Promise<RunningLoad> {
  for (let key = 0; key < history.keys; key += 100) {
    const batch = Array.from({ length: Math.min(100, history.keys - key) }, (_, i) => key + i);
    await Promise.all(batch.map((k) => write(history, links[k % links.length]!, k)));
  }
  let stopping = false;
  const loops = Promise.all(
    links.map((link, index) =>
      clientLoop(
        history,
        link,
        index,
        links.length,
        () => stopping,
        options.pauseAfterFailureMs ?? 5,
        options.deleteRatio ?? 0,
      ),
    ),
  );
  return {
    stop: async () => {
      stopping = true;
      await loops;
    },
  };
}
