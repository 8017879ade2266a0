/**
 * What a new connection's answers are expected to weigh before any was seen: past the first few
 * dozen small answers it no longer matters, and a client whose first burst is of large reads gets
 * `bound / (2 * 64 KiB)` of them fetched (128 on a 16 MiB output bound) instead of all it sent.
 */
export const FIRST_ANSWER_ESTIMATE = 64 * 1024;

/**
 * The expected size of a served connection's next answers, to bound the answers it has in flight
 * by bytes as well as by count: a client pipelining reads of large values it does not read (or
 * reads slowly) otherwise had every one of them fetched from the nodes at once (1024 GETs of 1 MB
 * each through the node links, queueing every other client's requests behind them), far past its
 * output bound. The estimate rises to a larger answer at once and decays by 1/64 of the difference
 * per smaller one, so a few large answers among small ones keep it high for a while, and many
 * small ones bring it down. The one implementation for the native port's connections and the
 * RESP port's.
 */
export class AnswerSizes {
  private estimate: number;

  constructor(initial = FIRST_ANSWER_ESTIMATE) {
    this.estimate = initial;
  }

  /** The expected size of one answer, in bytes. */
  get each(): number {
    return this.estimate;
  }

  /** Takes an answer of `size` bytes into the estimate. */
  note(size: number): void {
    const estimate = this.estimate;
    this.estimate = size >= estimate ? size : estimate - Math.ceil((estimate - size) / 64);
  }

  /**
   * Whether `inFlight` answers of the expected size plus `held` bytes already waiting reach
   * `limit`: then no more requests should be taken until some are answered or written.
   */
  over(inFlight: number, held: number, limit: number): boolean {
    return inFlight * this.estimate + held >= limit;
  }
}
