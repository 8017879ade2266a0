/**
 * INCRBYFLOAT's arithmetic, as Redis does it on x86-64: the value and the increment are read as C
 * `long double`s (x87 80-bit extended: a 64-bit significand) with `strtold`, added, and the sum is
 * written back with `"%.17Lf"` and its trailing zeros removed. JavaScript's doubles would give
 * other answers (`0.1 + 0.2` is "0.3" in Redis, 0.30000000000000004 in a double), so this module
 * does the same steps exactly: a long double is an integer significand and a power of two, held in
 * BigInts, every rounding is round-half-even as glibc's. Pure functions, no state.
 */

/** A finite long double: `significand × 2^exponent` (the significand signed, at most 64 bits). */
export interface LongDouble {
  readonly significand: bigint;
  readonly exponent: number;
}

/** What reading a text gives: a finite value, an infinity (`inf`, `infinity`), or no number. */
export type ParsedLongDouble = LongDouble | 'infinity' | undefined;

/** Bits of the significand (the x87 format keeps its integer bit: 2^63 <= a normal one < 2^64). */
const SIGNIFICAND_BITS = 64;
const SIGNIFICAND_MIN = 1n << 63n;
const SIGNIFICAND_LIMIT = 1n << 64n;
/** The exponent of the least subnormal (2^-16445) and of the largest finite value's unit. */
const EXPONENT_MIN = -16445;
const EXPONENT_MAX = 16320;
/** Redis reads at most this many bytes as a long double (`MAX_LONG_DOUBLE_CHARS`), less its NUL. */
const MAX_TEXT_BYTES = 5 * 1024 - 1;
/** Decimal places of the `"%.17Lf"` Redis writes with. */
const FRACTION_DIGITS = 17;
const FRACTION_SCALE = 10n ** 17n;
/** Exponents read past this are saturated: the value is already far out of range either way. */
const EXPONENT_SATURATION = 1_000_000;

const ZERO: LongDouble = { significand: 0n, exponent: 0 };

/**
 * The text as Redis's `string2ld` reads it: `strtold` must consume every byte (no leading
 * whitespace, nothing after the number), and a result that overflows or underflows to zero, or is
 * NaN, is no number. Accepts what glibc's `strtold` accepts in the C locale: an optional sign, then
 * decimal digits with an optional point and `e` exponent, or `0x` hexadecimal digits with an
 * optional point and `p` exponent, or `inf` / `infinity` (any case).
 */
export function parseLongDouble(text: Uint8Array): ParsedLongDouble {
  if (text.length === 0 || text.length > MAX_TEXT_BYTES) return undefined;
  let at = 0;
  const negative = text[0] === 0x2d;
  if (negative || text[0] === 0x2b) at = 1;
  const rest = latin1(text, at).toLowerCase();
  if (rest === 'inf' || rest === 'infinity') return 'infinity';
  const hex = rest.startsWith('0x');
  const number = hex ? readNumeral(rest.slice(2), HEXADECIMAL, 16) : readNumeral(rest, DECIMAL, 10);
  if (number === undefined) return undefined;
  const value = hex ? fromBinary(number) : fromDecimal(number);
  if (value === undefined) return undefined;
  return negative ? negate(value) : value;
}

/**
 * The sum of two long doubles rounded to one, as the x87 adds them; undefined when it overflows
 * (Redis's "increment would produce NaN or Infinity").
 */
export function addLongDouble(a: LongDouble, b: LongDouble): LongDouble | undefined {
  if (a.significand === 0n) return b;
  if (b.significand === 0n) return a;
  // Both are on the grid of the smaller exponent, so their sum is exact there before rounding.
  const exponent = Math.min(a.exponent, b.exponent);
  const sum =
    (a.significand << BigInt(a.exponent - exponent)) + (b.significand << BigInt(b.exponent - exponent));
  if (sum === 0n) return ZERO;
  const magnitude = sum < 0n ? -sum : sum;
  const rounded = roundToLongDouble(magnitude, 1n, exponent);
  if (rounded === 'overflow' || rounded === 'zero') return undefined;
  return sum < 0n ? negate(rounded) : rounded;
}

/**
 * The text Redis stores for a long double (`ld2string` in `LD_STR_HUMAN` mode): `"%.17Lf"` (fixed
 * point, 17 decimals, rounded half to even), trailing zeros and a trailing point removed, and
 * `-0` written `0`.
 */
export function formatLongDouble(value: LongDouble): string {
  const negative = value.significand < 0n;
  const magnitude = negative ? -value.significand : value.significand;
  // A whole number has no fraction to round: "%.17Lf" writes it with zeros, which are trimmed.
  if (value.exponent >= 0) return signed(negative, (magnitude << BigInt(value.exponent)).toString());
  const shift = BigInt(-value.exponent);
  const exact = magnitude * FRACTION_SCALE;
  let scaled = exact >> shift;
  const remainder = exact - (scaled << shift);
  const half = 1n << (shift - 1n);
  if (remainder > half || (remainder === half && (scaled & 1n) === 1n)) scaled += 1n;
  const whole = (scaled / FRACTION_SCALE).toString();
  const fraction = (scaled % FRACTION_SCALE).toString().padStart(FRACTION_DIGITS, '0').replace(/0+$/, '');
  return signed(negative, fraction === '' ? whole : `${whole}.${fraction}`);
}

/** Redis writes a negative value that rounds to zero as `0`, not `-0`. */
function signed(negative: boolean, text: string): string {
  return negative && text !== '0' ? `-${text}` : text;
}

/**
 * A numeral's parts: its digits as one integer, how many of them are significant (after leading
 * zeros) and how many follow the point, and its exponent (of 10 or of 2).
 */
interface Numeral {
  readonly digits: bigint;
  readonly significantDigits: number;
  readonly fractionDigits: number;
  readonly exponent: number;
}

/**
 * Reads `digits [. digits] [marker [sign] digits]` (`e` for decimal, `p` for hexadecimal) from the
 * whole of `text`, with at least one digit before the marker: `string2ld` takes all or nothing.
 */
function readNumeral(text: string, pattern: RegExp, radix: 10 | 16): Numeral | undefined {
  const match = pattern.exec(text);
  if (match === null) return undefined;
  const whole = match[1] ?? '';
  const fraction = match[2] ?? '';
  if (whole.length + fraction.length === 0) return undefined;
  const significant = (whole + fraction).replace(/^0+/, '');
  const exponent = match[3];
  return {
    digits: significant === '' ? 0n : BigInt(radix === 10 ? significant : `0x${significant}`),
    significantDigits: significant.length,
    fractionDigits: fraction.length,
    exponent: exponent === undefined ? 0 : saturatedExponent(exponent.slice(1)),
  };
}

/** `digits [. digits] [e [sign] digits]`, lower case (the text is lowered first). */
const DECIMAL = /^([0-9]*)(?:\.([0-9]*))?(e[+-]?[0-9]+)?$/;
/** The same after `0x`, in hexadecimal digits, with a binary exponent `p [sign] digits`. */
const HEXADECIMAL = /^([0-9a-f]*)(?:\.([0-9a-f]*))?(p[+-]?[0-9]+)?$/;

/** A signed decimal exponent, saturated at ±EXPONENT_SATURATION (already out of any range). */
function saturatedExponent(text: string): number {
  const negative = text.startsWith('-');
  const digits = text.replace(/^[+-]/, '').replace(/^0+/, '');
  const magnitude =
    digits.length > 7 ? EXPONENT_SATURATION : Math.min(Number(digits || '0'), EXPONENT_SATURATION);
  return negative ? -magnitude : magnitude;
}

/** A decimal numeral's value, `digits × 10^(exponent - fractionDigits)`, rounded to a long double. */
function fromDecimal(numeral: Numeral): LongDouble | undefined {
  if (numeral.digits === 0n) return ZERO;
  const power = numeral.exponent - numeral.fractionDigits;
  // Far out of range: decided from the digit count, before powers of ten that large are built.
  // The largest finite value is ~1.19e4932, the least subnormal ~3.65e-4951.
  if (numeral.significantDigits - 1 + power > 4933) return undefined;
  if (numeral.significantDigits + power < -4952) return undefined;
  const rounded =
    power >= 0
      ? roundToLongDouble(numeral.digits * 10n ** BigInt(power), 1n, 0)
      : roundToLongDouble(numeral.digits, 10n ** BigInt(-power), 0);
  return rounded === 'overflow' || rounded === 'zero' ? undefined : rounded;
}

/** A hexadecimal numeral's value, `digits × 2^(exponent - 4 × fractionDigits)`, rounded. */
function fromBinary(numeral: Numeral): LongDouble | undefined {
  if (numeral.digits === 0n) return ZERO;
  const power = numeral.exponent - 4 * numeral.fractionDigits;
  const bits = bitLength(numeral.digits);
  if (bits + power > 16384) return undefined;
  if (bits + power < EXPONENT_MIN - 1) return undefined;
  const rounded = roundToLongDouble(numeral.digits, 1n, power);
  return rounded === 'overflow' || rounded === 'zero' ? undefined : rounded;
}

/**
 * The long double nearest to `numerator / denominator × 2^scale` (both positive), ties to an even
 * significand, subnormal below 2^-16382; 'overflow' past the largest finite value, 'zero' when it
 * rounds to 0.
 */
function roundToLongDouble(
  numerator: bigint,
  denominator: bigint,
  scale: number,
): LongDouble | 'overflow' | 'zero' {
  // The exponent that gives a 64-bit quotient, from the operands' lengths, then corrected by one.
  let exponent = bitLength(numerator) - bitLength(denominator) + scale - SIGNIFICAND_BITS;
  let quotient = truncatedQuotient(numerator, denominator, exponent - scale);
  if (quotient >= SIGNIFICAND_LIMIT) {
    exponent += 1;
  } else if (quotient < SIGNIFICAND_MIN) {
    exponent -= 1;
  }
  if (exponent < EXPONENT_MIN) exponent = EXPONENT_MIN;
  const shift = exponent - scale;
  // numerator / (denominator × 2^shift), with the remainder for rounding.
  const dividend = shift >= 0 ? numerator : numerator << BigInt(-shift);
  const divisor = shift >= 0 ? denominator << BigInt(shift) : denominator;
  quotient = dividend / divisor;
  const twiceRemainder = (dividend - quotient * divisor) * 2n;
  if (twiceRemainder > divisor || (twiceRemainder === divisor && (quotient & 1n) === 1n)) quotient += 1n;
  if (quotient === SIGNIFICAND_LIMIT) {
    quotient = SIGNIFICAND_MIN;
    exponent += 1;
  }
  if (quotient === 0n) return 'zero';
  if (exponent > EXPONENT_MAX) return 'overflow';
  return { significand: quotient, exponent };
}

/** ⌊numerator / (denominator × 2^shift)⌋ for either sign of `shift`. */
function truncatedQuotient(numerator: bigint, denominator: bigint, shift: number): bigint {
  return shift >= 0
    ? numerator / (denominator << BigInt(shift))
    : (numerator << BigInt(-shift)) / denominator;
}

function bitLength(value: bigint): number {
  return value.toString(2).length;
}

function negate(value: LongDouble): LongDouble {
  return { significand: -value.significand, exponent: value.exponent };
}

function latin1(bytes: Uint8Array, from: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + from, bytes.byteLength - from).toString('latin1');
}
