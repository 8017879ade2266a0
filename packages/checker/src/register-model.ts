/**
 * The per-key register: the object every dstore key is. `null` is an absent key (never written, or
 * deleted): a read of it answers null.
 */
import { hashString, type Model, UNKNOWN, type Unknown } from './model.js';

/** The value of a register: a string, or null when the key does not exist. */
export type RegisterState = string | null;

/**
 * An operation on one key. `cas` is compare-and-set; `append` adds `value` at the end of the value
 * (an absent key taken as empty), as APPEND; `appendRead` is a transaction of an APPEND then a GET
 * in one atomic step (MULTI/EXEC on the key): it answers the value with its own append, and with
 * nothing of another operation's in between.
 */
export type RegisterInput =
  | { readonly f: 'read' }
  | { readonly f: 'write'; readonly value: string }
  | { readonly f: 'delete' }
  | { readonly f: 'cas'; readonly from: RegisterState; readonly to: string }
  | { readonly f: 'append'; readonly value: string }
  | { readonly f: 'appendRead'; readonly value: string };

/**
 * What an operation answered: a read its value; a delete whether it removed something (undefined
 * when not recorded); a cas whether it swapped; an append the value's length after it (undefined
 * when not recorded); an appendRead the value it read; a write nothing (undefined).
 */
export type RegisterOutput = string | null | boolean | number | undefined;

const describeValue = (value: RegisterState): string => (value === null ? 'null' : JSON.stringify(value));

function describeOutput(output: RegisterOutput | Unknown): string {
  if (output === UNKNOWN) return ' -> ?';
  if (output === undefined) return '';
  if (typeof output === 'boolean' || typeof output === 'number') return ` -> ${output}`;
  return ` -> ${describeValue(output)}`;
}

function stepRegister(
  state: RegisterState,
  input: RegisterInput,
  output: RegisterOutput | Unknown,
): readonly [boolean, RegisterState] {
  const unknown = output === UNKNOWN;
  switch (input.f) {
    case 'read':
      return [unknown || output === state, state];
    case 'write':
      return [true, input.value];
    case 'delete':
      // A delete answers whether a value was there; an unrecorded answer matches either.
      return [unknown || output === undefined || output === (state !== null), null];
    case 'cas': {
      const matches = state === input.from;
      if (unknown) return [true, matches ? input.to : state];
      return output === true ? [matches, input.to] : [!matches && output === false, state];
    }
    case 'append': {
      const next = (state ?? '') + input.value;
      return [unknown || output === undefined || output === next.length, next];
    }
    case 'appendRead': {
      const next = (state ?? '') + input.value;
      return [unknown || output === next, next];
    }
  }
}

/** The register model: read, write, delete, cas, append, appendRead. */
export const registerModel: Model<RegisterState, RegisterInput, RegisterOutput> = {
  init: () => null,
  step: stepRegister,
  equal: (a, b) => a === b,
  // 0x9e3779b9 keeps null apart from every string's FNV hash in practice.
  hash: (state) => (state === null ? 0x9e3779b9 : hashString(state)),
  describeOperation(input, output) {
    switch (input.f) {
      case 'read':
        return `read${describeOutput(output)}`;
      case 'write':
        return `write ${describeValue(input.value)}${output === UNKNOWN ? ' (outcome unknown)' : ''}`;
      case 'delete':
        return `delete${describeOutput(output)}`;
      case 'cas':
        return `cas ${describeValue(input.from)} -> ${describeValue(input.to)}${describeOutput(output)}`;
      case 'append':
        return `append ${describeValue(input.value)}${describeOutput(output)}`;
      case 'appendRead':
        return `append ${describeValue(input.value)} then read (one transaction)${describeOutput(output)}`;
    }
  },
  describeState: describeValue,
};
