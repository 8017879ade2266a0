import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, ProtocolError } from '../src/index.js';
import { FrameDecoder, OutputBuffer } from '../src/internal.js';
import { frame, header } from '../src/testing.js';

function collect(maxFrameBytes = 1024 * 1024): { decoder: FrameDecoder; frames: Uint8Array[] } {
  const frames: Uint8Array[] = [];
  const decoder = new FrameDecoder(maxFrameBytes, (body) => frames.push(Uint8Array.from(body)));
  return { decoder, frames };
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

/**
 * Frames as hex strings, to compare as one assertion: toEqual walks typed arrays element by
 * element (~1.5 s for the 300 KB of the slab test). The frames are all plain Uint8Arrays
 * (`collect` copies them), so the bytes are all there is to compare.
 */
function hex(frames: readonly Uint8Array[]): string[] {
  return frames.map((frame) => Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('hex'));
}

const bodies = fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 6 });

describe('FrameDecoder', () => {
  it('decodes many frames from one chunk, in order', () => {
    const { decoder, frames } = collect();
    const parts = Array.from({ length: 100 }, (_, i) => new Uint8Array(i).fill(i));
    decoder.push(concat(parts.map(frame)));
    expect(frames).toEqual(parts);
    expect(decoder.hasPartialFrame).toBe(false);
  });

  it('assembles a frame split at every byte boundary (property)', () => {
    fc.assert(
      fc.property(bodies, (parts) => {
        const stream = concat(parts.map(frame));
        for (let cut = 0; cut <= stream.length; cut++) {
          const { decoder, frames } = collect();
          decoder.push(stream.subarray(0, cut));
          decoder.push(stream.subarray(cut));
          expect(hex(frames)).toEqual(hex(parts));
          expect(decoder.bufferedBytes).toBe(0);
        }
      }),
    );
  });

  it('assembles frames fed in random-size pieces, including one byte at a time', () => {
    fc.assert(
      fc.property(bodies, fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 1 }), (parts, sizes) => {
        const stream = concat(parts.map(frame));
        const { decoder, frames } = collect();
        let offset = 0;
        let turn = 0;
        while (offset < stream.length) {
          // A drawn 0 pushes an empty chunk first; every step still advances, so the loop ends.
          const drawn = sizes[turn++ % sizes.length]!;
          if (drawn === 0) decoder.push(new Uint8Array(0));
          const size = Math.max(1, drawn);
          decoder.push(stream.subarray(offset, offset + size));
          offset += size;
        }
        expect(hex(frames)).toEqual(hex(parts));
      }),
    );
  });

  it('reports a partial frame until it completes', () => {
    const { decoder, frames } = collect();
    const whole = frame(new Uint8Array([1, 2, 3]));
    decoder.push(whole.subarray(0, 2));
    expect(decoder.hasPartialFrame).toBe(true);
    decoder.push(whole.subarray(2, 5));
    expect(decoder.bufferedBytes).toBe(5);
    decoder.push(whole.subarray(5));
    expect(frames).toEqual([new Uint8Array([1, 2, 3])]);
    expect(decoder.hasPartialFrame).toBe(false);
  });

  it('delivers a zero-length frame as an empty body', () => {
    const { decoder, frames } = collect();
    decoder.push(header(0));
    expect(frames).toEqual([new Uint8Array(0)]);
  });

  it('accepts a header declaring exactly the limit', () => {
    const { decoder, frames } = collect(2 ** 16);
    decoder.push(header(2 ** 16));
    expect(decoder.bufferedBytes).toBe(4);
    decoder.push(new Uint8Array(2 ** 16));
    expect(frames).toHaveLength(1);
    expect(frames[0]).toHaveLength(2 ** 16);
  });

  it.each([
    [1, 0],
    [2 ** 16, 2 ** 16 - 1],
    [2 ** 31 - 1, 2 ** 20],
    [2 ** 32 - 1, 2 ** 20],
  ])('refuses a %i-byte header over a %i-byte limit before buffering', (length, limit) => {
    for (const split of [false, true]) {
      const { decoder, frames } = collect(limit);
      const bytes = header(length, new Uint8Array(1000));
      let error: unknown;
      try {
        if (split) {
          decoder.push(bytes.subarray(0, 2));
          decoder.push(bytes.subarray(2));
        } else {
          decoder.push(bytes);
        }
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ProtocolError);
      expect(error).toMatchObject({ code: ErrorCode.FRAME_TOO_LARGE, fatal: true });
      expect(frames).toHaveLength(0);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  it('refuses an over-limit header after valid frames in the same chunk', () => {
    const { decoder, frames } = collect(100);
    expect(() => decoder.push(concat([frame(new Uint8Array([7])), header(101)]))).toThrow(ProtocolError);
    expect(frames).toEqual([new Uint8Array([7])]);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('holds only the bytes that arrived for a large declared frame', () => {
    const { decoder } = collect(2 ** 31 - 1);
    decoder.push(header(2 ** 31 - 1, new Uint8Array(10)));
    expect(decoder.bufferedBytes).toBe(14);
    decoder.reset();
    expect(decoder.hasPartialFrame).toBe(false);
  });

  it('ignores empty chunks', () => {
    const { decoder, frames } = collect();
    decoder.push(new Uint8Array(0));
    decoder.push(header(1).subarray(0, 3));
    decoder.push(new Uint8Array(0));
    decoder.push(concat([header(1).subarray(3), new Uint8Array([9])]));
    expect(frames).toEqual([new Uint8Array([9])]);
  });

  it('reads what OutputBuffer writes', () => {
    fc.assert(
      fc.property(bodies, (parts) => {
        const output = new OutputBuffer();
        for (const body of parts) output.appendFrame(body);
        const { decoder, frames } = collect();
        decoder.push(output.take());
        expect(hex(frames)).toEqual(hex(parts));
        expect(output.length).toBe(0);
      }),
    );
  });

  it('OutputBuffer never overwrites bytes it handed out, across slabs', () => {
    const output = new OutputBuffer();
    const taken: Buffer[] = [];
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) {
      const body = new Uint8Array(1000 + i).fill(i & 0xff);
      parts.push(body);
      output.appendFrame(body);
      if (i % 7 === 0) taken.push(output.take());
    }
    taken.push(output.take());
    const { decoder, frames } = collect();
    decoder.push(concat(taken));
    expect(hex(frames)).toEqual(hex(parts));
  });
});

describe('OutputBuffer without frames (RESP)', () => {
  it('append and appendLatin1 keep every byte across slab boundaries', () => {
    const output = new OutputBuffer();
    const expected: number[] = [];
    const taken: Buffer[] = [];
    for (let i = 0; i < 2000; i++) {
      // Sizes that cross the 64 KiB slab boundary at odd offsets, bytes and text interleaved.
      const body = new Uint8Array(97 + (i % 13)).fill(i & 0xff);
      output.append(body);
      expected.push(...body);
      const text = `+OK ${i}\r\n`;
      output.appendLatin1(text);
      for (const char of text) expected.push(char.charCodeAt(0));
      if (i % 50 === 0) taken.push(output.take());
    }
    taken.push(output.take());
    expect(Buffer.concat(taken).equals(Buffer.from(expected))).toBe(true);
  });
});

describe('another protocol on the other end', () => {
  it('says an HTTP answer looks like an HTTP server (VERSION_MISMATCH, fatal), not an absurd frame length', () => {
    const { decoder } = collect();
    const push = (): void => decoder.push(new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n\r\n'));
    expect(push).toThrow(ProtocolError);
    expect(push).toThrow(/HTTP server.*admin port/);
    try {
      push();
    } catch (error) {
      expect(error).toMatchObject({ code: ErrorCode.VERSION_MISMATCH, fatal: true, notExecuted: true });
    }
  });

  it('says a Redis command looks like a Redis client, with a RESP error line to answer it', () => {
    const { decoder } = collect();
    const push = (): void => decoder.push(new TextEncoder().encode('*1\r\n$4\r\nPING\r\n'));
    expect(push).toThrow(/Redis \(RESP\) client/);
    try {
      push();
    } catch (error) {
      expect(error).toMatchObject({ code: ErrorCode.VERSION_MISMATCH, fatal: true });
      const answer = new TextDecoder().decode((error as ProtocolError).foreignAnswer);
      expect(answer).toMatch(/^-ERR this port speaks dstore's native protocol, not RESP: .*\r\n$/);
    }
  });

  it("says a Redis server's error line looks like a Redis server", () => {
    const { decoder } = collect();
    expect(() => decoder.push(new TextEncoder().encode('-ERR unknown command\r\n'))).toThrow(/Redis server/);
  });

  it('says an HTTP request looks like one', () => {
    const { decoder } = collect();
    expect(() => decoder.push(new TextEncoder().encode('GET /health HTTP/1.1\r\n'))).toThrow(/HTTP request/);
  });
});
