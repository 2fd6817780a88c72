// Numbers from the command line, read the same way by every odsi command: an integer is decimal
// digits (an optional minus sign; no '', '0x10', '1e3' or '2.0'), a number is a finite decimal
// ('0.5', '1e-3'; not '' or 'Infinity'), each within the bounds its flag names in the message.
// Two forms of each: `parse*` throws a plain Error (for values checked in an action, whose
// message main.ts prints), `*Option` is a commander parser (`.option(flag, text, integerOption(…))`)
// and throws commander's InvalidArgumentError, which commander prints with the flag's usage.

import { InvalidArgumentError } from 'commander';

/** inclusive bounds of an integer flag (max: none when absent) */
export interface IntegerBounds {
  min: number;
  max?: number;
}

/** bounds of a number flag: min inclusive, or exclusive with `aboveMin`; max inclusive (none when absent) */
export interface NumberBounds {
  min: number;
  max?: number;
  aboveMin?: boolean;
}

/** a TCP port, 0 = any free one */
export const PORT: IntegerBounds = { min: 0, max: 65_535 };

const INTEGER = /^-?\d+$/;
/** a finite decimal: digits with an optional fraction and exponent (what Number reads, less hex, '' and Infinity) */
const DECIMAL = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** The integer `v` spells, within `b`; else an Error naming `flag`, its bounds and what was given. */
export function parseInteger(flag: string, v: string, b: IntegerBounds): number {
  const n = Number(v);
  const max = b.max ?? Number.MAX_SAFE_INTEGER;
  if (!INTEGER.test(v) || !Number.isSafeInteger(n) || n < b.min || n > max) {
    const range = b.max === undefined ? `>= ${b.min}` : `in [${b.min}, ${b.max}]`;
    throw new Error(`${flag} must be an integer ${range}, got "${v}"`);
  }
  return n;
}

/** The number `v` spells, within `b`; else an Error naming `flag`, its bounds and what was given. */
export function parseNumber(flag: string, v: string, b: NumberBounds): number {
  const n = Number(v);
  if (!DECIMAL.test(v) || !Number.isFinite(n) || (b.aboveMin ? n <= b.min : n < b.min) || n > (b.max ?? Infinity)) {
    const range = b.max === undefined ? `${b.aboveMin ? '>' : '>='} ${b.min}` : `in ${b.aboveMin ? '(' : '['}${b.min}, ${b.max}]`;
    throw new Error(`${flag} must be a number ${range}, got "${v}"`);
  }
  return n;
}

/** commander's form of parseInteger */
export function integerOption(flag: string, b: IntegerBounds): (v: string) => number {
  return (v) => commanderError(() => parseInteger(flag, v, b));
}

/** commander's form of parseNumber */
export function numberOption(flag: string, b: NumberBounds): (v: string) => number {
  return (v) => commanderError(() => parseNumber(flag, v, b));
}

function commanderError(f: () => number): number {
  try {
    return f();
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}
