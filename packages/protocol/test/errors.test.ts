import { describe, expect, it } from 'vitest';
import { classifyError, DstoreError, ErrorCode, isRetryable, isSafeToResend } from '../src/index.js';
import { partlyApplied, stacklessError } from '../src/internal.js';

describe('classifyError: the one classification of failures', () => {
  const classOf = (code: string, notExecuted?: boolean) =>
    classifyError(new DstoreError(code, 'x', notExecuted === undefined ? undefined : { notExecuted }));

  it('refusals before execution are not executed; only transient ones are retryable', () => {
    for (const code of [ErrorCode.UNAVAILABLE, ErrorCode.BUSY, ErrorCode.SHUTTING_DOWN]) {
      expect(classOf(code)).toEqual({ retryable: true, notExecuted: true, indeterminate: false });
    }
    for (const code of [
      ErrorCode.UNAUTHORIZED,
      ErrorCode.KEY_TOO_LARGE,
      ErrorCode.VERSION_MISMATCH,
      ErrorCode.STALE_EPOCH,
    ]) {
      expect(classOf(code)).toEqual({ retryable: false, notExecuted: true, indeterminate: false });
    }
  });

  it('lost answers are indeterminate but retryable; unknown codes and non-dstore errors are indeterminate', () => {
    for (const code of [ErrorCode.TIMEOUT, ErrorCode.CONNECTION_CLOSED]) {
      expect(classOf(code)).toEqual({ retryable: true, notExecuted: false, indeterminate: true });
    }
    for (const code of [ErrorCode.INTERNAL, ErrorCode.ABORTED, 'SOME_FUTURE_CODE']) {
      expect(classOf(code)).toEqual({ retryable: false, notExecuted: false, indeterminate: true });
    }
    expect(classifyError(new Error('bug'))).toEqual({
      retryable: false,
      notExecuted: false,
      indeterminate: true,
    });
  });

  it('an error made knowing better overrides its code: a TIMEOUT while still queued', () => {
    expect(classOf(ErrorCode.TIMEOUT, true)).toEqual({
      retryable: true,
      notExecuted: true,
      indeterminate: false,
    });
    expect(isSafeToResend(new DstoreError(ErrorCode.TIMEOUT, 'queued', { notExecuted: true }))).toBe(true);
    expect(isSafeToResend(new DstoreError(ErrorCode.TIMEOUT, 'sent'))).toBe(false);
    expect(isRetryable(new DstoreError(ErrorCode.UNAUTHORIZED, 'x'))).toBe(false);
  });

  it('instanceof holds for a DstoreError of another copy of the module (brand, not prototype)', () => {
    const foreign = Object.create(Object.getPrototypeOf(new Error('x'))) as Error;
    expect(foreign instanceof DstoreError).toBe(false);
    Object.defineProperty(foreign, Symbol.for('@dstore/protocol.DstoreError'), { value: true });
    expect(foreign instanceof DstoreError).toBe(true);
  });
});

describe('partlyApplied (a write split over nodes, some parts failed)', () => {
  it('turns "not executed" failures into an indeterminate one when another part was stored', () => {
    const refused = new DstoreError(ErrorCode.OUT_OF_SPACE, 'disk full');
    const partly = partlyApplied([refused], 1, 3);
    expect(partly).toBeInstanceOf(DstoreError);
    expect(classifyError(partly)).toMatchObject({ notExecuted: false, indeterminate: true });
    expect((partly as DstoreError).message).toMatch(/1 of 3 nodes/);
    expect((partly as DstoreError).cause).toBe(refused);
  });

  it('keeps the failure when nothing was stored, or when it was indeterminate already', () => {
    const refused = new DstoreError(ErrorCode.OUT_OF_SPACE, 'disk full');
    expect(partlyApplied([refused], 0, 3)).toBe(refused);
    const timeout = new DstoreError(ErrorCode.TIMEOUT, 'late');
    expect(partlyApplied([timeout], 2, 3)).toBe(timeout);
  });

  it('is indeterminate when any failed part may have been applied, whatever fails first', () => {
    const refused = new DstoreError(ErrorCode.UNAVAILABLE, 'node down');
    const timeout = new DstoreError(ErrorCode.TIMEOUT, 'late');
    const closed = new DstoreError(ErrorCode.CONNECTION_CLOSED, 'cut');
    for (const failures of [
      [refused, timeout],
      [timeout, refused],
      [refused, refused, closed],
      [refused, new Error('not a DstoreError')],
    ]) {
      const outcome = partlyApplied(failures, 0, failures.length);
      expect(classifyError(outcome)).toMatchObject({ notExecuted: false });
      expect(failures).toContain(outcome);
    }
    expect(partlyApplied([refused, refused], 0, 2)).toBe(refused);
  });
});

describe('stacklessError (the refusals made by the thousand under overload)', () => {
  it('is a DstoreError like any other, with no stack frames, and leaves the stack limit as it was', () => {
    const limit = Error.stackTraceLimit;
    const error = stacklessError(ErrorCode.BUSY, 'full', { notExecuted: true });
    expect(error).toBeInstanceOf(DstoreError);
    expect(error.code).toBe(ErrorCode.BUSY);
    expect(error.message).toBe('full');
    expect(error.notExecuted).toBe(true);
    expect(error.stack).toBe('DstoreError: full');
    expect(Error.stackTraceLimit).toBe(limit);
    expect(new DstoreError(ErrorCode.BUSY, 'full').stack).toContain('\n    at ');
  });
});
