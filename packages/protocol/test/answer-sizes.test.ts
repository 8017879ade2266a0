import { describe, expect, it } from 'vitest';
import { AnswerSizes, FIRST_ANSWER_ESTIMATE } from '../src/internal.js';

describe('AnswerSizes (the expected size of a served connection next answers)', () => {
  it('starts at the first-answer estimate, rises to a larger answer at once, decays by 1/64 per smaller one', () => {
    const sizes = new AnswerSizes();
    expect(sizes.each).toBe(FIRST_ANSWER_ESTIMATE);
    sizes.note(1_000_000);
    expect(sizes.each).toBe(1_000_000);
    sizes.note(100);
    expect(sizes.each).toBe(1_000_000 - Math.ceil((1_000_000 - 100) / 64));
    for (let index = 0; index < 1000; index++) sizes.note(100);
    expect(sizes.each).toBe(100);
  });

  it('is over when the answers in flight at the expected size plus those held reach the limit', () => {
    const sizes = new AnswerSizes(1000);
    expect(sizes.over(7, 2999, 10_000)).toBe(false);
    expect(sizes.over(7, 3000, 10_000)).toBe(true);
    expect(sizes.over(0, 9999, 10_000)).toBe(false);
  });
});
