/**
 * READ_PART: STRLEN, GETRANGE, GETBIT, BITCOUNT and BITPOS computed on a key's value where it is
 * stored, so that only the answer leaves the node (a GETBIT of a 1 MiB bitmap answers one integer).
 * The arithmetic is the protocol's (`@dstore/protocol/internal`: Redis's rules), one implementation
 * for every reader.
 */
import { Op, type ReadPartRequest, type Response } from '@dstore/protocol';
import { bitCount, bitPos, byteRange, getBit } from '@dstore/protocol/internal';

/** The fields of a READ_PART that say what to compute. */
export type ValuePartQuery = Pick<ReadPartRequest, 'part' | 'start' | 'end' | 'unit' | 'bit'>;

const EMPTY = new Uint8Array(0);

/**
 * The answer (id 0) to `query` on `value` (undefined: the key does not exist): VALUE for GETRANGE
 * (a copy of the bytes, empty when none), INTEGER for the others. The decoder checked that each
 * part carries the fields it needs.
 */
export function valuePartAnswer(query: ValuePartQuery, value: Uint8Array | undefined): Response {
  const bytes = value ?? EMPTY;
  switch (query.part) {
    case 'strlen':
      return integer(bytes.length);
    case 'getrange': {
      const [from, to] = byteRange(bytes.length, query.start!, query.end!);
      // Copied: the answer leaves after the engine may have reused a memory-engine view.
      return { op: Op.VALUE, id: 0, value: bytes.slice(from, to) };
    }
    case 'getbit':
      return integer(getBit(bytes, query.start!));
    case 'bitcount':
      return integer(
        query.start === undefined
          ? bitCount(bytes)
          : bitCount(bytes, { start: query.start, end: query.end!, unit: query.unit ?? 'byte' }),
      );
    case 'bitpos':
      return integer(
        bitPos(
          value ?? null,
          query.bit!,
          query.start === undefined
            ? undefined
            : { start: query.start, end: query.end, unit: query.unit ?? 'byte' },
        ),
      );
  }
}

function integer(value: number): Response {
  return { op: Op.INTEGER, id: 0, value: BigInt(value) };
}
