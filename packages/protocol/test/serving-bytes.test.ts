import { describe, expect, it } from 'vitest';
import { LARGE_REQUEST_BYTES } from '../src/index.js';
import { ServingBytes } from '../src/internal.js';

const LARGE = LARGE_REQUEST_BYTES;

describe('ServingBytes (the byte bound on large requests in flight)', () => {
  it('counts only requests of LARGE_REQUEST_BYTES or more', () => {
    const bytes = new ServingBytes(10 * LARGE);
    expect(bytes.add(1, LARGE - 1)).toBe(false);
    expect(bytes.bytes).toBe(0);
    expect(bytes.add(2, LARGE)).toBe(false);
    expect(bytes.bytes).toBe(LARGE);
    // Answering a small request (never counted) takes nothing back.
    bytes.answered(1);
    expect(bytes.bytes).toBe(LARGE);
    bytes.answered(2);
    expect(bytes.bytes).toBe(0);
  });

  it('says pause when a counted request takes the bytes to the bound, resume once answers bring them to half', () => {
    const bytes = new ServingBytes(4 * LARGE);
    expect(bytes.add(1, LARGE)).toBe(false);
    expect(bytes.add(2, LARGE)).toBe(false);
    expect(bytes.add(3, LARGE)).toBe(false);
    expect(bytes.shouldPause).toBe(false);
    // Exactly at the bound: pause.
    expect(bytes.add(4, LARGE)).toBe(true);
    expect(bytes.shouldPause).toBe(true);
    expect(bytes.mayResume).toBe(false);
    // Below the bound but above half: no pause wanted, but no resume either (the gap).
    expect(bytes.answered(4)).toBe(false);
    expect(bytes.shouldPause).toBe(false);
    expect(bytes.mayResume).toBe(false);
    // Exactly half: resume.
    expect(bytes.answered(3)).toBe(true);
    expect(bytes.mayResume).toBe(true);
    expect(bytes.bytes).toBe(2 * LARGE);
  });

  it('tells the caller to pause only for the request that reached the bound or went past it', () => {
    const bytes = new ServingBytes(2 * LARGE + 1);
    expect(bytes.add(1, LARGE)).toBe(false);
    expect(bytes.add(2, LARGE)).toBe(false);
    expect(bytes.add(3, LARGE)).toBe(true);
    expect(bytes.add(4, 3 * LARGE)).toBe(true);
    // Not counted (small): changes nothing, so nothing to do, although the bound is passed.
    expect(bytes.add(5, 10)).toBe(false);
    expect(bytes.shouldPause).toBe(true);
  });

  it('counts a key already counted once, and its first answer ends it', () => {
    const bytes = new ServingBytes(3 * LARGE);
    expect(bytes.add(7, 2 * LARGE)).toBe(false);
    // A peer reusing id 7 while it waits on it: no second entry, no pause.
    expect(bytes.add(7, 2 * LARGE)).toBe(false);
    expect(bytes.bytes).toBe(2 * LARGE);
    bytes.answered(7);
    expect(bytes.bytes).toBe(0);
    // The second answer finds nothing to take back.
    bytes.answered(7);
    expect(bytes.bytes).toBe(0);
    // Once answered, the key counts again.
    expect(bytes.add(7, LARGE)).toBe(false);
    expect(bytes.bytes).toBe(LARGE);
  });

  it('takes back exactly what each request added, answered in any order', () => {
    const bytes = new ServingBytes(100 * LARGE);
    const sizes = [LARGE, 3 * LARGE + 17, 2 * LARGE + 1, 5 * LARGE];
    for (const [key, size] of sizes.entries()) bytes.add(key, size);
    expect(bytes.bytes).toBe(sizes.reduce((sum, size) => sum + size, 0));
    bytes.answered(2);
    bytes.answered(0);
    expect(bytes.bytes).toBe(sizes[1]! + sizes[3]!);
    bytes.answered(3);
    bytes.answered(1);
    expect(bytes.bytes).toBe(0);
  });

  it('without a bound (0) counts nothing, never says pause, always allows reading', () => {
    const bytes = new ServingBytes(0);
    expect(bytes.bounded).toBe(false);
    expect(bytes.add(1, 100 * LARGE)).toBe(false);
    expect(bytes.bytes).toBe(0);
    expect(bytes.shouldPause).toBe(false);
    expect(bytes.mayResume).toBe(true);
    expect(bytes.answered(1)).toBe(true);
  });

  it('resumes at half of a bound of 2 GiB or more (no 32-bit wrap)', () => {
    // 3 GiB >> 1 is negative: a resume test written with a shift would never allow reading again.
    const bytes = new ServingBytes(3 * 2 ** 30);
    expect(bytes.add(1, 2 ** 30)).toBe(false);
    expect(bytes.add(2, 2 * 2 ** 30)).toBe(true);
    expect(bytes.answered(2)).toBe(true);
    expect(bytes.mayResume).toBe(true);
  });

  it('forgets everything on clear', () => {
    const bytes = new ServingBytes(2 * LARGE);
    bytes.add(1, LARGE);
    expect(bytes.add(2, LARGE)).toBe(true);
    bytes.clear();
    expect(bytes.bytes).toBe(0);
    expect(bytes.shouldPause).toBe(false);
    expect(bytes.mayResume).toBe(true);
    // An answer arriving after the clear takes nothing back.
    bytes.answered(1);
    expect(bytes.bytes).toBe(0);
  });
});
