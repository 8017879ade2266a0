/**
 * Received requests this large or larger (in bytes) count against a serving connection's byte
 * bound ({@link ServingBytes}); smaller ones cost no bookkeeping: a pipeline of small requests is
 * already bounded by the count of requests in flight, and a map entry each would cost more than
 * the bytes they hold.
 */
export const LARGE_REQUEST_BYTES = 16 * 1024;

/**
 * The byte bound on large requests in flight of one serving connection: the bytes of the requests
 * of {@link LARGE_REQUEST_BYTES} or more it has read and not answered yet, each remembered by its
 * key (a request id on the native port, a command's sequence number on the RESP port). Reading
 * should pause once they reach the bound ({@link shouldPause}) and may resume once answers bring
 * them down to half of it ({@link mayResume}): the gap keeps a client at the bound from pausing
 * and resuming at every answer.
 *
 * It only counts and tells: pausing and resuming the socket, and the connection's other bounds
 * (requests in flight, buffered output), stay with the connection. The one implementation behind
 * the native port's `maxServingBytes` and the RESP port's (both the balancer's
 * `--max-client-bytes-in-flight`). Per large request it costs one map entry; a small request or a
 * connection without a bound costs nothing but a comparison.
 */
export class ServingBytes {
  /** Bytes of the large requests counted and not answered yet. */
  private total = 0;
  /** Each counted request's bytes by key: an answer must take back exactly what its request added. */
  private readonly sizes = new Map<number, number>();
  /** {@link limit}, or infinity without a bound: one comparison tells whether to pause. */
  private readonly pauseAt: number;
  /** Half of {@link limit}: not `>> 1`, which wraps for bounds of 2 GiB or more. */
  private readonly resumeAt: number;

  /** @param limit - The bound in bytes; 0 (or less): none, nothing is counted. */
  constructor(readonly limit: number) {
    this.pauseAt = limit > 0 ? limit : Number.POSITIVE_INFINITY;
    this.resumeAt = limit / 2;
  }

  /** Whether there is a bound: without one nothing is counted, so callers may skip measuring. */
  get bounded(): boolean {
    return this.limit > 0;
  }

  /** Bytes of the large requests read and not answered yet. */
  get bytes(): number {
    return this.total;
  }

  /** Whether the bytes in flight reached the bound: the connection should stop reading. */
  get shouldPause(): boolean {
    return this.total >= this.pauseAt;
  }

  /** Whether the bytes in flight are down to half the bound: as far as they go, reading may resume. */
  get mayResume(): boolean {
    return this.total <= this.resumeAt;
  }

  /**
   * Counts request `key` of `bytes` bytes as read and not answered, if it is large and there is a
   * bound. A key already counted is not counted again: a peer reusing a request id it still waits
   * on gets one entry, which the first answer ends (the second answer then finds nothing).
   *
   * @returns whether this request was counted and took the bytes in flight to the bound or past
   * it: the caller should pause reading (a request not counted changes nothing).
   */
  add(key: number, bytes: number): boolean {
    // Small requests (most of them) and unbounded connections stop at the first comparison.
    if (bytes < LARGE_REQUEST_BYTES || this.limit <= 0 || this.sizes.has(key)) return false;
    this.sizes.set(key, bytes);
    this.total += bytes;
    return this.total >= this.pauseAt;
  }

  /**
   * Request `key` is answered: its bytes no longer count (the connection no longer holds them).
   * A key not counted (a small request) changes nothing.
   *
   * @returns {@link mayResume} after the answer: whether the bytes in flight allow reading again.
   */
  answered(key: number): boolean {
    // Nothing counted (no large request in flight): no map lookup for an answer.
    if (this.total > 0) {
      const bytes = this.sizes.get(key);
      if (bytes !== undefined) {
        this.sizes.delete(key);
        this.total -= bytes;
      }
    }
    return this.total <= this.resumeAt;
  }

  /** Forgets every request counted (the connection closed: no answer will take them back). */
  clear(): void {
    this.sizes.clear();
    this.total = 0;
  }
}
