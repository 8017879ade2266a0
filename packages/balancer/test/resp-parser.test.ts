import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MAX_INLINE_BYTES,
  RespParser,
  type RespParserLimits,
  RespProtocolError,
  splitInline,
} from '../src/resp/parser.js';

const LIMITS: RespParserLimits = { maxArgBytes: 1024, maxCommandBytes: 4096, maxArgs: 16 };
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');

/** Feeds `chunks` and returns what the parser found: commands as strings, refusals, the error. */
function parse(chunks: (string | Uint8Array)[], limits = LIMITS): { out: string[]; error?: string } {
  const out: string[] = [];
  const parser = new RespParser(limits, {
    command: (args) => out.push(args.map(text).join(' ')),
    refused: (message) => out.push(`refused: ${message}`),
  });
  try {
    for (const chunk of chunks) parser.push(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk);
  } catch (error) {
    if (!(error instanceof RespProtocolError)) throw error;
    return { out, error: error.message };
  }
  return { out };
}

const PIPELINE =
  '*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n*1\r\n$4\r\nPING\r\nGET  "a b"\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n';
const EXPECTED = ['SET key va\r\nl', 'PING', 'GET a b', 'GET '];

describe('RESP request parser', () => {
  it('parses multibulk and inline commands in one chunk', () => {
    expect(parse([PIPELINE])).toEqual({ out: EXPECTED });
  });

  it('gives the same commands whatever the chunk boundaries (every split, and 1 byte at a time)', () => {
    for (let split = 1; split < PIPELINE.length; split++) {
      expect(parse([PIPELINE.slice(0, split), PIPELINE.slice(split)]), `split at ${split}`).toEqual({
        out: EXPECTED,
      });
    }
    expect(parse([...PIPELINE])).toEqual({ out: EXPECTED });
  });

  it('ignores empty and negative multibulk counts and empty inline lines, as Redis', () => {
    expect(parse(['*0\r\n*-1\r\n\r\n   \r\nPING\r\n'])).toEqual({ out: ['PING'] });
  });

  it('refuses malformed lengths with Redis protocol errors', () => {
    expect(parse(['*1x\r\n']).error).toBe('Protocol error: invalid multibulk length');
    expect(parse(['*1\r\n$-3\r\n']).error).toBe('Protocol error: invalid bulk length');
    expect(parse(['*1\r\n$-1\r\n']).error).toBe('Protocol error: invalid bulk length');
    expect(parse(['*1\r\n$\r\n']).error).toBe('Protocol error: invalid bulk length');
    expect(parse(['*1\r\n*1\r\n']).error).toBe("Protocol error: expected '$', got '*'");
    expect(parse(['*2000000\r\n']).error).toBe('Protocol error: invalid multibulk length');
    expect(parse(['*99999999999999999999\r\n']).error).toBe('Protocol error: invalid multibulk length');
    expect(parse(['*1\r\n$600000000\r\n']).error).toBe('Protocol error: invalid bulk length');
    expect(parse(['*1\r\n$3\r\nabcXY']).error).toBe('Protocol error: expected CRLF after a bulk string');
    expect(parse(['*1\r\n$1\r\n']).error).toBeUndefined();
  });

  it('answers what came before a protocol error', () => {
    expect(parse(['PING\r\n*1\r\n$x'])).toEqual({
      out: ['PING'],
      error: 'Protocol error: invalid bulk length',
    });
  });

  it('refuses an inline line over 64 KiB without a newline', () => {
    const line = 'A'.repeat(MAX_INLINE_BYTES + 1);
    expect(parse([line]).error).toBe('Protocol error: too big inline request');
    // The same across many small chunks.
    const chunks = Array.from({ length: 66 }, () => 'A'.repeat(1024));
    expect(parse(chunks).error).toBe('Protocol error: too big inline request');
  });

  it('skips (without keeping) an argument over the limit and refuses only that command', () => {
    const big = 'x'.repeat(LIMITS.maxArgBytes + 1);
    const stream = `*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${big.length}\r\n${big}\r\n*1\r\n$4\r\nPING\r\n`;
    const expected = {
      out: [
        `refused: argument of ${big.length} bytes is over the limit of ${LIMITS.maxArgBytes} bytes`,
        'PING',
      ],
    };
    expect(parse([stream])).toEqual(expected);
    expect(parse([...stream])).toEqual(expected);
  });

  it('refuses a command with too many arguments or bytes, and goes on', () => {
    const many = `*20\r\n${'$1\r\nx\r\n'.repeat(20)}PING\r\n`;
    expect(parse([many])).toEqual({
      out: ['refused: too many arguments in one command (20, limit 16)', 'PING'],
    });
    const arg = 'y'.repeat(1000);
    const heavy = `*5\r\n${`$1000\r\n${arg}\r\n`.repeat(5)}PING\r\n`;
    expect(parse([heavy])).toEqual({ out: ['refused: command of more than 4096 bytes', 'PING'] });
  });

  it('keeps binary bulks intact, split or not', () => {
    const value = Uint8Array.from({ length: 300 }, (_, index) => index % 256);
    const head = Buffer.from(`*2\r\n$3\r\nSET\r\n$${value.length}\r\n`, 'latin1');
    const whole = Buffer.concat([head, value, Buffer.from('\r\n')]);
    const seen: Uint8Array[] = [];
    const parser = new RespParser(LIMITS, {
      command: (args) => seen.push(args[1]!),
      refused: () => undefined,
    });
    parser.push(whole);
    for (const byte of whole) parser.push(Uint8Array.of(byte));
    expect(seen.map((bytes) => [...bytes])).toEqual([[...value], [...value]]);
  });

  it('hands out every argument of every command exactly, as plain views, whatever the sizes and splits (property)', () => {
    const limits: RespParserLimits = { maxArgBytes: 64, maxCommandBytes: 100_000, maxArgs: 40 };
    // Commands of 1 to 40 arguments (small ones get a preallocated array, larger ones grow), some
    // with an argument over the limit (refused midway, then the next command must start clean).
    const command = fc.array(fc.uint8Array({ maxLength: 70 }), { minLength: 1, maxLength: 40, size: 'max' });
    fc.assert(
      fc.property(fc.array(command, { minLength: 1, maxLength: 8 }), fc.nat(), (commands, seed) => {
        const wire = Buffer.concat(
          commands.flatMap((args) => [
            Buffer.from(`*${args.length}\r\n`),
            ...args.flatMap((arg) => [Buffer.from(`$${arg.length}\r\n`), arg, Buffer.from('\r\n')]),
          ]),
        );
        const expected = commands.map((args) =>
          args.some((arg) => arg.length > limits.maxArgBytes) ? 'refused' : args.map((arg) => [...arg]),
        );
        const seen: unknown[] = [];
        const parser = new RespParser(limits, {
          command: (args) => {
            for (let index = 0; index < args.length; index++) {
              expect(args[index]?.constructor).toBe(Uint8Array);
            }
            seen.push(args.map((arg) => [...arg]));
          },
          refused: () => seen.push('refused'),
        });
        // Split into chunks at pseudo-random points (some single bytes, some large).
        let at = 0;
        let state = seed;
        while (at < wire.length) {
          state = (state * 1103515245 + 12345) % 2147483648;
          const size = 1 + (state % 97);
          parser.push(wire.subarray(at, at + size));
          at += size;
        }
        expect(seen).toEqual(expected);
      }),
    );
  });

  it('splits inline arguments as Redis does (quotes and escapes)', () => {
    expect(splitInline(Buffer.from("SET \"a\\x41\\n\" 'it\\'s'  x")).map(text)).toEqual([
      'SET',
      'aA\n',
      "it's",
      'x',
    ]);
    expect(() => splitInline(Buffer.from('GET "abc'))).toThrow('unbalanced quotes');
    expect(() => splitInline(Buffer.from('GET "abc"def'))).toThrow('unbalanced quotes');
  });
});
