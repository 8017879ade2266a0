import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/index.js';
import {
  parseAddress,
  parseAddressList,
  parseByteSize,
  parseDuration,
  parseInteger,
} from '../src/internal.js';

const refused = expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT });

describe('the CLIs’ shared parsers', () => {
  it('addresses: host:port, [v6]:port, a scheme, lists, defaults only when given', () => {
    expect(parseAddress('h:1')).toEqual({ host: 'h', port: 1 });
    expect(parseAddress('[::1]:7402')).toEqual({ host: '::1', port: 7402 });
    expect(parseAddress('dstore://h:7379')).toEqual({ host: 'h', port: 7379 });
    expect(parseAddress('h', { defaultPort: 7380 })).toEqual({ host: 'h', port: 7380 });
    expect(parseAddress(':7', { defaultPort: 1, defaultHost: '127.0.0.1' })).toEqual({
      host: '127.0.0.1',
      port: 7,
    });
    expect(parseAddressList('a:1, b:2')).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
    ]);
    for (const bad of ['h', ':7400', 'h:0', 'h:99999', 'h:x', 'h:1e3', 'a:1,,b:2', '']) {
      expect(() => parseAddressList(bad), bad).toThrow(refused);
    }
  });

  it('integers: decimal digits only, within bounds (1e3 and 1.0 are refused)', () => {
    expect(parseInteger('42')).toBe(42);
    expect(parseInteger(' 7 ', { min: 1, max: 10 })).toBe(7);
    for (const bad of ['1e3', '1.0', '0x10', '+1', '12abc', '', '11']) {
      expect(() => parseInteger(bad, { max: 10 }), bad).toThrow(refused);
    }
  });

  it('durations: a bare number is ms; ms, s, m, h units', () => {
    expect(parseDuration('250')).toBe(250);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('2m')).toBe(120_000);
    for (const bad of ['', 's', '1d', '-1', '1e3']) expect(() => parseDuration(bad), bad).toThrow(refused);
    expect(() => parseDuration('0', { min: 1 })).toThrow(refused);
  });

  it('byte sizes: bytes or binary units', () => {
    expect(parseByteSize('100')).toBe(100);
    expect(parseByteSize('64k')).toBe(65_536);
    expect(parseByteSize('1MiB')).toBe(1_048_576);
    expect(parseByteSize('1.5KB')).toBe(1536);
    for (const bad of ['', 'k', '1x', '-1']) expect(() => parseByteSize(bad), bad).toThrow(refused);
  });
});
