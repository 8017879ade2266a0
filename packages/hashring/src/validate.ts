import { HashRingError } from './errors.js';
import { checkHashTag } from './hash-tag.js';
import type { RingAlgorithm, RingNode, RingNodeInput, RingOptions } from './types.js';
import { DEFAULT_VNODES } from './types.js';

/** Options after defaults are applied. */
export interface ResolvedOptions {
  readonly algorithm: RingAlgorithm;
  readonly vnodes: number;
  readonly hashTag?: string;
}

// Caps memory: a ring point costs 6-8 bytes, and vnodes multiplies per node.
const MAX_VNODES = 1 << 16;

/** Validates one node input and returns its frozen, defaulted form. */
export function normalizeNode(input: RingNodeInput): RingNode {
  if (input === null || typeof input !== 'object') {
    throw new HashRingError('INVALID_NODE_ID', 'node must be an object with an id');
  }
  const { id } = input;
  if (typeof id !== 'string' || id.length === 0) {
    throw new HashRingError('INVALID_NODE_ID', `node id must be a non-empty string, got ${String(id)}`);
  }
  const weight = input.weight ?? 1;
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
    throw new HashRingError('INVALID_WEIGHT', `weight of "${id}" must be a positive finite number`);
  }
  const previousWeight = input.previousWeight ?? weight;
  if (typeof previousWeight !== 'number' || !Number.isFinite(previousWeight) || previousWeight <= 0) {
    throw new HashRingError('INVALID_WEIGHT', `previous weight of "${id}" must be a positive finite number`);
  }
  return Object.freeze(previousWeight === weight ? { id, weight } : { id, weight, previousWeight });
}

/** Code-unit order: identical on every machine, unlike `localeCompare`. */
export function compareIds(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

/** Validates, de-duplicates and sorts nodes by id. */
export function normalizeNodes(inputs: Iterable<RingNodeInput>): RingNode[] {
  if (inputs === null || typeof inputs !== 'object' || !(Symbol.iterator in inputs)) {
    throw new HashRingError('INVALID_ARGUMENT', 'nodes must be iterable');
  }
  const seen = new Set<string>();
  const nodes: RingNode[] = [];
  for (const input of inputs) {
    const node = normalizeNode(input);
    if (seen.has(node.id)) throw new HashRingError('DUPLICATE_NODE', `duplicate node id "${node.id}"`);
    seen.add(node.id);
    nodes.push(node);
  }
  return nodes.sort((a, b) => compareIds(a.id, b.id));
}

/** Applies defaults to options and rejects invalid values. */
export function resolveOptions(options: RingOptions | undefined): ResolvedOptions {
  const algorithm = options?.algorithm ?? 'vnode';
  if (algorithm !== 'vnode' && algorithm !== 'ketama' && algorithm !== 'rendezvous') {
    throw new HashRingError('INVALID_ARGUMENT', `unknown algorithm "${String(algorithm)}"`);
  }
  const vnodes = options?.vnodes ?? DEFAULT_VNODES;
  if (!Number.isInteger(vnodes) || vnodes < 1 || vnodes > MAX_VNODES) {
    throw new HashRingError('INVALID_ARGUMENT', `vnodes must be an integer in [1, ${MAX_VNODES}]`);
  }
  const hashTag = options?.hashTag;
  return { algorithm, vnodes, ...(hashTag === undefined ? {} : { hashTag: checkHashTag(hashTag) }) };
}

/** Rejects anything that is not a valid `n` for `getN`. */
export function checkCount(n: number): void {
  if (!Number.isInteger(n) || n < 1) {
    throw new HashRingError('INVALID_ARGUMENT', `n must be an integer >= 1, got ${String(n)}`);
  }
}
