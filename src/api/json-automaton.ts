// A character-level prefix automaton for JSON documents conforming to a compiled schema
// (json-schema.ts). A state is an immutable stack of frames; feed() returns the next state or
// null when the character cannot continue any conforming document; closeLength() is the fewest
// characters that finish the document from a state (the structured-output constraint uses it
// to steer the output closed before the token budget runs out). Numbers are bounded (15
// integer digits) so every integer the automaton allows is exact in JavaScript. The only
// whitespace allowed is one space before a nested value (after ':' or ','), so a small model
// cannot spend its budget on blank lines.

import { ANY_OBJECT, memberLength, minLength, type SchemaNode } from './json-schema.js';

type ObjectNode = SchemaNode & { kind: 'object' };
type ArrayNode = SchemaNode & { kind: 'array' };

type Frame =
  /** a value of `node` is expected; below the top level one space may come first (sp: it came) */
  | { t: 'value'; node: SchemaNode; sp?: boolean }
  /** inside a string; esc: after a backslash; hex: \u digits still to come */
  | { t: 'str'; esc: boolean; hex: number }
  | { t: 'num'; int: boolean; s: string }
  /** one of a fixed set of JSON texts, `s` typed so far */
  | { t: 'lit'; texts: string[]; s: string }
  | { t: 'arr'; node: ArrayNode; phase: 'first' | 'val' | 'after' | 'next' }
  /**
   * phase first: after '{'; key: inside a key (`key` = its JSON-escaped text so far for schema
   * objects; a 'str' frame above for any-key objects); colon: after the key; val: a value is
   * above; after: after a value; comma: after ','. `cur` = the property being written.
   */
  | {
      t: 'obj';
      node: ObjectNode;
      used: readonly string[];
      phase: 'first' | 'key' | 'colon' | 'val' | 'after' | 'comma';
      key: string;
      cur: string;
    };

export type JsonState = readonly Frame[];

const ANY: SchemaNode = { kind: 'any' };
const ANY_ARRAY: ArrayNode = { kind: 'array', items: ANY };

const INT_PREFIX = /^-?(0|[1-9]\d{0,14})?$/;
const INT_DONE = /^-?(0|[1-9]\d{0,14})$/;
const NUM_PREFIX = /^-?$|^-?(0|[1-9]\d{0,14})(\.\d{0,8})?$|^-?(0|[1-9]\d{0,14})(\.\d{1,8})?[eE][+-]?\d{0,2}$/;
const NUM_DONE = /^-?(0|[1-9]\d{0,14})(\.\d{1,8})?([eE][+-]?\d{1,2})?$/;

/** the inside of a key's JSON string, e.g. a"b → a\"b */
const enc = (k: string): string => JSON.stringify(k).slice(1, -1);

export function initialState(root: SchemaNode): JsonState {
  return [{ t: 'value', node: root }];
}

/** the document is complete: nothing may follow */
export const isComplete = (s: JsonState): boolean => s.length === 0;

export function feedText(s: JsonState | null, text: string): JsonState | null {
  for (const ch of text) {
    if (!s) return null;
    s = feed(s, ch);
  }
  return s;
}

export function feed(stack: JsonState, ch: string): JsonState | null {
  if (stack.length === 0) return null;
  const top = stack[stack.length - 1];
  const below = stack.slice(0, -1);
  switch (top.t) {
    case 'value': {
      if (ch === ' ') return below.length > 0 && !top.sp ? [...below, { ...top, sp: true }] : null;
      const f = startValue(top.node, ch);
      return f && settle([...below, f]);
    }
    case 'str': {
      if (top.hex > 0) return /[0-9a-fA-F]/.test(ch) ? [...below, { t: 'str', esc: false, hex: top.hex - 1 }] : null;
      if (top.esc) {
        if ('"\\/bfnrt'.includes(ch)) return [...below, { t: 'str', esc: false, hex: 0 }];
        return ch === 'u' ? [...below, { t: 'str', esc: false, hex: 4 }] : null;
      }
      if (ch === '"') return childDone(below);
      if (ch === '\\') return [...below, { t: 'str', esc: true, hex: 0 }];
      return ch.charCodeAt(0) < 0x20 ? null : stack;
    }
    case 'num': {
      const s = top.s + ch;
      if ((top.int ? INT_PREFIX : NUM_PREFIX).test(s)) return [...below, { ...top, s }];
      if ((top.int ? INT_DONE : NUM_DONE).test(top.s)) return refeed(below, ch);
      return null;
    }
    case 'lit': {
      const s = top.s + ch;
      if (top.texts.some((t) => t.startsWith(s))) return settle([...below, { ...top, s }]);
      return top.texts.includes(top.s) ? refeed(below, ch) : null;
    }
    case 'arr': {
      if (top.phase === 'val') return null;
      if (top.phase === 'after') {
        if (ch === ',') return [...below, { ...top, phase: 'next' }];
        return ch === ']' ? childDone(below) : null;
      }
      if (top.phase === 'first' && ch === ']') return childDone(below);
      return feed([...below, { ...top, phase: 'val' }, { t: 'value', node: top.node.items }], ch);
    }
    case 'obj':
      return feedObject(below, top, ch);
  }
}

function feedObject(below: Frame[], top: Frame & { t: 'obj' }, ch: string): JsonState | null {
  const props = top.node.props;
  if (top.phase === 'key' && props) {
    const rest = unused(top);
    if (ch === '"') {
      const k = rest.find((name) => enc(name) === top.key);
      return k === undefined ? null : [...below, { ...top, phase: 'colon', cur: k, used: [...top.used, k] }];
    }
    const key = top.key + ch;
    return rest.some((name) => enc(name).startsWith(key)) ? [...below, { ...top, key }] : null;
  }
  const close = () => (missing(top).length > 0 ? null : childDone(below));
  const openKey = (): JsonState | null => {
    if (!props) return [...below, { ...top, phase: 'key' }, { t: 'str', esc: false, hex: 0 }];
    return unused(top).length > 0 ? [...below, { ...top, phase: 'key', key: '' }] : null;
  };
  switch (top.phase) {
    case 'first':
      return ch === '}' ? close() : ch === '"' ? openKey() : null;
    case 'comma':
      return ch === '"' ? openKey() : null;
    case 'colon':
      return ch === ':' ? [...below, { ...top, phase: 'val' }, { t: 'value', node: props ? props.get(top.cur)! : ANY }] : null;
    case 'after':
      if (ch === '}') return close();
      if (ch !== ',' || (props && unused(top).length === 0)) return null;
      return [...below, { ...top, phase: 'comma' }];
    default:
      return null;
  }
}

function startValue(node: SchemaNode, ch: string): Frame | null {
  const num = ch === '-' || (ch >= '0' && ch <= '9');
  switch (node.kind) {
    case 'string':
      return ch === '"' ? { t: 'str', esc: false, hex: 0 } : null;
    case 'integer':
    case 'number':
      return num ? { t: 'num', int: node.kind === 'integer', s: ch } : null;
    case 'literal':
      return node.texts.some((t) => t.startsWith(ch)) ? { t: 'lit', texts: node.texts, s: ch } : null;
    case 'array':
      return ch === '[' ? { t: 'arr', node, phase: 'first' } : null;
    case 'object':
      return ch === '{' ? { t: 'obj', node, used: [], phase: 'first', key: '', cur: '' } : null;
    case 'any':
      if (ch === '{') return startValue(ANY_OBJECT, ch);
      if (ch === '[') return startValue(ANY_ARRAY, ch);
      if (ch === '"') return { t: 'str', esc: false, hex: 0 };
      if (num) return { t: 'num', int: false, s: ch };
      return startValue({ kind: 'literal', texts: ['true', 'false', 'null'] }, ch);
  }
}

/** the frame on top finished its value: tell its parent */
function childDone(stack: Frame[]): JsonState {
  if (stack.length === 0) return stack;
  const p = stack[stack.length - 1];
  const below = stack.slice(0, -1);
  if (p.t === 'obj') return [...below, { ...p, phase: p.phase === 'key' ? 'colon' : 'after' }];
  if (p.t === 'arr') return [...below, { ...p, phase: 'after' }];
  return stack;
}

/** a number or literal ended at a character that is not its own: the parent reads it */
function refeed(below: Frame[], ch: string): JsonState | null {
  const up = childDone(below);
  return up.length === 0 ? null : feed(up, ch);
}

/** a literal that matched exactly and cannot grow is finished at once */
function settle(stack: Frame[]): JsonState {
  const top = stack[stack.length - 1];
  if (top.t !== 'lit' || !top.texts.includes(top.s)) return stack;
  if (top.texts.some((t) => t.length > top.s.length && t.startsWith(top.s))) return stack;
  return childDone(stack.slice(0, -1));
}

const unused = (o: Frame & { t: 'obj' }): string[] => [...(o.node.props?.keys() ?? [])].filter((k) => !o.used.includes(k));
const missing = (o: Frame & { t: 'obj' }): string[] => o.node.required.filter((k) => !o.used.includes(k));

/** the fewest characters that complete the document from `stack` */
export function closeLength(stack: JsonState): number {
  let n = 0;
  for (const f of stack) n += frameCost(f);
  return n;
}

function frameCost(f: Frame): number {
  switch (f.t) {
    case 'value':
      return minLength(f.node);
    case 'str':
      return f.hex > 0 ? f.hex + 1 : f.esc ? 2 : 1;
    case 'num':
      return (f.int ? INT_DONE : NUM_DONE).test(f.s) ? 0 : 1;
    case 'lit':
      return Math.min(...f.texts.filter((t) => t.startsWith(f.s)).map((t) => t.length - f.s.length));
    case 'arr':
      return f.phase === 'next' ? minLength(f.node.items) + 1 : 1;
    case 'obj':
      return objectCost(f);
  }
}

function objectCost(f: Frame & { t: 'obj' }): number {
  const n = f.node;
  if (!n.props) return { first: 1, key: 3, colon: 3, val: 1, after: 1, comma: 5 }[f.phase];
  const props = n.props;
  /** ',"k":v' for each still-missing required property, then '}' */
  const rest = (req: string[]) => req.reduce((a, k) => a + 1 + memberLength(n, k), 0) + 1;
  const req = missing(f);
  switch (f.phase) {
    case 'first':
      return req.length === 0 ? 1 : req.reduce((a, k) => a + memberLength(n, k), req.length - 1) + 1;
    case 'key': {
      let best = Infinity;
      for (const k of unused(f)) {
        if (!enc(k).startsWith(f.key)) continue;
        const c = enc(k).length - f.key.length + 2 + minLength(props.get(k)!) + rest(req.filter((r) => r !== k));
        best = Math.min(best, c);
      }
      return best;
    }
    case 'colon':
      return 1 + minLength(props.get(f.cur)!) + rest(req);
    case 'val':
    case 'after':
      return rest(req);
    case 'comma':
      if (req.length > 0) return req.reduce((a, k) => a + memberLength(n, k), req.length - 1) + 1;
      return Math.min(...unused(f).map((k) => memberLength(n, k))) + 1;
  }
}
