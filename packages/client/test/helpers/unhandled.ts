import { afterAll, afterEach, beforeAll, expect } from 'vitest';

/** Fails the suite when any promise rejection goes unhandled (the client must never leak one). */
export function failOnUnhandledRejections(): void {
  const seen: unknown[] = [];
  const onRejection = (reason: unknown): void => {
    seen.push(reason);
  };
  beforeAll(() => {
    process.on('unhandledRejection', onRejection);
  });
  afterEach(async () => {
    // Give rejections of the test's last tick a chance to surface before checking.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const leaked = seen.splice(0);
    expect(leaked, 'unhandled rejections').toEqual([]);
  });
  afterAll(() => {
    process.off('unhandledRejection', onRejection);
  });
}
