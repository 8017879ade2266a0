import { ErrorCode } from '@dstore/protocol';
import { stacklessError } from '@dstore/protocol/internal';

/** A command waiting for its turn to assemble a large answer. */
interface Waiter {
  readonly seq: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/**
 * The turns of one RESP connection's large answers. An MGET whose answer passes one frame is read
 * again in parts (`readInParts`), each part a round trip, the answer assembled in the balancer's
 * memory: up to the connection's output bound for one command. Only one such answer is assembled
 * at a time per connection, and a turn is given only while the answers written to the client and
 * not yet read are under half the output bound: a client pipelining MGETs of large values waits
 * for its own answers to be read instead of making the balancer fetch them all at once (pressure
 * audit 2, F3: three connections with 1024 MGETs of 16 x 1 MB in flight each stalled the
 * balancer's event loop for seconds and let every node's lease lapse).
 *
 * Turns go to the earliest command first (lowest sequence number), and the room counted is the
 * written output only, not answers held aside for their turn: the command whose answer would
 * release those is then never the one kept waiting.
 */
export class LargeAnswerTurns {
  private readonly waiting: Waiter[] = [];
  private taken = false;
  private assembledBytes = 0;
  private closedWith: Error | undefined;

  /** `hasRoom`: whether the client has read enough of its answers for another to be assembled. */
  constructor(private readonly hasRoom: () => boolean) {}

  /** Bytes of the large answer being assembled: they count as the connection's answers. */
  get bytes(): number {
    return this.assembledBytes;
  }

  /** Set once the connection closed: an answer being assembled stops fetching its parts. */
  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Resolves when command `seq` may assemble its answer; rejects (CONNECTION_CLOSED) if the connection closes first. */
  take(seq: number): Promise<void> {
    if (this.closedWith !== undefined) return Promise.reject(this.closedWith);
    return new Promise((resolve, reject) => {
      this.waiting.push({ seq, resolve, reject });
      this.grant();
    });
  }

  /** Counts `bytes` more of the answer holding the turn. */
  add(bytes: number): void {
    this.assembledBytes += bytes;
  }

  /** Ends the current turn (its answer was written, or failed) and gives the next one if there is room. */
  release(): void {
    this.taken = false;
    this.assembledBytes = 0;
    this.grant();
  }

  /** Gives the turn to the earliest waiting command when it is free and the client has room. */
  grant(): void {
    if (this.taken || this.waiting.length === 0 || !this.hasRoom()) return;
    let earliest = 0;
    for (let index = 1; index < this.waiting.length; index++) {
      if (this.waiting[index]!.seq < this.waiting[earliest]!.seq) earliest = index;
    }
    const [next] = this.waiting.splice(earliest, 1);
    this.taken = true;
    next!.resolve();
  }

  /** The connection closed: every waiting command fails, and later ones at once. */
  close(): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = stacklessError(ErrorCode.CONNECTION_CLOSED, 'the client connection closed');
    for (const waiter of this.waiting.splice(0)) waiter.reject(this.closedWith);
  }
}
