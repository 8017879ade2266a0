import { DstoreError, ErrorCode } from './errors.js';

/** Options of {@link readInParts}. */
export interface ReadInPartsOptions<V> {
  /** Bytes an answer holds (a value's length; 0 for a missing key). */
  readonly sizeOf: (answer: V) => number;
  /** Most bytes the answers may hold together; past it the read fails with FRAME_TOO_LARGE. */
  readonly maxBytes: number;
  /** Most items one `read` is given (the batch limit); more are read that many at a time. Default: all. */
  readonly maxItems?: number;
}

/**
 * A batch read whose answer may not fit one frame (an MGET of large values): `read(items)`, and
 * when that fails with FRAME_TOO_LARGE (the answer, or the request, passes the frame limit) the
 * batch is read again in halves, one after the other, down to single items (whose answer always
 * fits), the answers concatenated in order. Only for reads: a half may be read after the other
 * changed. `maxBytes` bounds what the answers hold together, so a huge batch fails typed instead
 * of being held in memory; `maxItems` reads a batch past the batch limit that many items at a time,
 * one part after the other. The one implementation for the client's `mget` and the RESP port's MGET.
 */
export async function readInParts<I, V>(
  items: readonly I[],
  read: (items: readonly I[]) => Promise<readonly V[]>,
  options: ReadInPartsOptions<V>,
): Promise<V[]> {
  const answers: V[] = [];
  let bytes = 0;
  const collect = async (part: readonly I[]): Promise<void> => {
    let answered: readonly V[];
    try {
      answered = await read(part);
    } catch (error) {
      if (!(error instanceof DstoreError) || error.code !== ErrorCode.FRAME_TOO_LARGE || part.length < 2) {
        throw error;
      }
      const half = part.length >> 1;
      await collect(part.slice(0, half));
      await collect(part.slice(half));
      return;
    }
    for (const answer of answered) {
      bytes += options.sizeOf(answer);
      if (bytes > options.maxBytes) {
        throw new DstoreError(
          ErrorCode.FRAME_TOO_LARGE,
          `the answers pass ${options.maxBytes} bytes together: read fewer keys at a time`,
        );
      }
      answers.push(answer);
    }
  };
  const size = options.maxItems ?? items.length;
  if (items.length <= size) await collect(items);
  else
    for (let start = 0; start < items.length; start += size) await collect(items.slice(start, start + size));
  return answers;
}

/**
 * The sum of `count` over `items` in consecutive chunks of at most `size` (the batch limit), one
 * chunk after the other: a count past one batch (EXISTS, a DEL of many keys) with one batch in
 * flight at a time. The one implementation for the client's `exists` and the RESP port's.
 */
export async function sumInChunks<I>(
  items: readonly I[],
  size: number,
  count: (chunk: readonly I[]) => Promise<number>,
): Promise<number> {
  let total = 0;
  for (let start = 0; start < items.length; start += size)
    total += await count(items.slice(start, start + size));
  return total;
}
