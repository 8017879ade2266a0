import { describe, expect, it } from 'vitest';
import { DstoreError, ErrorCode } from '../src/index.js';
import { readInParts } from '../src/internal.js';

/** A reader whose answer may hold at most `frame` bytes, as a node's answer frame. */
function frameLimited(frame: number, sizes: readonly number[], calls: number[][]) {
  return async (part: readonly number[]): Promise<number[]> => {
    calls.push([...part]);
    const bytes = part.reduce((sum, index) => sum + sizes[index]!, 0);
    if (bytes > frame) throw new DstoreError(ErrorCode.FRAME_TOO_LARGE, `${bytes} bytes`);
    return part.map((index) => sizes[index]!);
  };
}

describe('readInParts (an MGET past one frame)', () => {
  it('reads the whole batch at once when it fits, else in halves, the answers in order', async () => {
    const sizes = [5, 5, 5, 5, 5, 5, 5, 5];
    const whole: number[][] = [];
    expect(
      await readInParts([0, 1, 2], frameLimited(100, sizes, whole), { sizeOf: (n) => n, maxBytes: 1e9 }),
    ).toEqual([5, 5, 5]);
    expect(whole).toEqual([[0, 1, 2]]);
    const split: number[][] = [];
    const items = [0, 1, 2, 3, 4, 5, 6, 7];
    expect(
      await readInParts(items, frameLimited(12, sizes, split), { sizeOf: (n) => n, maxBytes: 1e9 }),
    ).toEqual(sizes);
    // 8 items of 5 bytes in a 12-byte frame: halves of 4 do not fit, quarters of 2 do.
    expect(split.filter((part) => part.length === 2)).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
      [6, 7],
    ]);
  });

  it('gives a read at most maxItems items, one part after the other, each halved when too large', async () => {
    const sizes = [5, 5, 5, 5, 5, 5, 5, 20];
    const calls: number[][] = [];
    const items = [0, 1, 2, 3, 4, 5, 6, 7];
    expect(
      await readInParts(items, frameLimited(20, sizes, calls), {
        sizeOf: (n) => n,
        maxBytes: 1e9,
        maxItems: 3,
      }),
    ).toEqual(sizes);
    expect(calls).toEqual([[0, 1, 2], [3, 4, 5], [6, 7], [6], [7]]);
  });

  it('passes on other errors, a single item too large, and answers past maxBytes, typed', async () => {
    const unavailable = async (): Promise<number[]> => {
      throw new DstoreError(ErrorCode.UNAVAILABLE, 'down');
    };
    await expect(readInParts([1, 2], unavailable, { sizeOf: (n) => n, maxBytes: 1e9 })).rejects.toMatchObject(
      {
        code: ErrorCode.UNAVAILABLE,
      },
    );
    await expect(
      readInParts([0], frameLimited(4, [5], []), { sizeOf: (n) => n, maxBytes: 1e9 }),
    ).rejects.toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE });
    await expect(
      readInParts([0, 1, 2], frameLimited(100, [5, 5, 5], []), { sizeOf: (n) => n, maxBytes: 12 }),
    ).rejects.toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE, message: expect.stringMatching(/12 bytes/) });
  });
});
