// The JSON-schema subset structured output supports, compiled to a small tree the JSON prefix
// automaton (json-automaton.ts) walks: objects with properties/required, string, integer,
// number, boolean, null, enum, arrays with items. Any other keyword is refused (400 naming it),
// so a schema is never half-honoured.

import { invalid } from './errors.js';

export type SchemaNode =
  | { kind: 'string' }
  | { kind: 'integer' }
  | { kind: 'number' }
  /** a fixed set of JSON texts: enum values, true/false, null */
  | { kind: 'literal'; texts: string[] }
  | { kind: 'array'; items: SchemaNode }
  /** props undefined = any keys, any values (response_format json_object) */
  | { kind: 'object'; props?: Map<string, SchemaNode>; required: string[] }
  /** any JSON value */
  | { kind: 'any' };

/** keywords that describe a schema without constraining the value */
const ANNOTATIONS = new Set(['title', 'description', '$schema', '$comment', 'examples', 'default']);

/** The top level of response_format json_object: any JSON object. */
export const ANY_OBJECT: SchemaNode = { kind: 'object', required: [] };

const MAX_DEPTH = 16;
const MAX_NODES = 256;
const MAX_ENUM = 256;
const MAX_ENUM_TEXT = 256;

/** Compile a JSON schema; throws a 400 naming `param.<path>` for anything outside the subset. */
export function compileSchema(schema: unknown, param: string): SchemaNode {
  let nodes = 0;
  const walk = (s: unknown, path: string, depth: number): SchemaNode => {
    if (++nodes > MAX_NODES) throw invalid(`the schema has more than ${MAX_NODES} subschemas`, param);
    if (depth > MAX_DEPTH) throw invalid(`the schema nests deeper than ${MAX_DEPTH} levels`, path);
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw invalid('a schema must be a JSON object', path);
    const o = s as Record<string, unknown>;
    const allowed = new Set(ANNOTATIONS);
    const use = (k: string) => allowed.add(k);
    let node: SchemaNode;
    if ('enum' in o) {
      use('enum');
      use('type');
      if (!Array.isArray(o.enum) || o.enum.length === 0 || o.enum.length > MAX_ENUM)
        throw invalid(`'enum' must be an array of 1 to ${MAX_ENUM} values`, `${path}.enum`);
      const texts = o.enum.map((v) => {
        if (v !== null && !['string', 'number', 'boolean'].includes(typeof v))
          throw invalid('enum values must be strings, numbers, booleans or null', `${path}.enum`);
        const text = JSON.stringify(v);
        if (text.length > MAX_ENUM_TEXT) throw invalid(`enum values must be at most ${MAX_ENUM_TEXT} characters as JSON`, `${path}.enum`);
        return text;
      });
      node = { kind: 'literal', texts: [...new Set(texts)] };
    } else {
      use('type');
      switch (o.type) {
        case 'string':
          node = { kind: 'string' };
          break;
        case 'integer':
          node = { kind: 'integer' };
          break;
        case 'number':
          node = { kind: 'number' };
          break;
        case 'boolean':
          node = { kind: 'literal', texts: ['true', 'false'] };
          break;
        case 'null':
          node = { kind: 'literal', texts: ['null'] };
          break;
        case 'array':
          use('items');
          if (o.items === undefined) throw invalid("an array schema needs 'items'", `${path}.items`);
          node = { kind: 'array', items: walk(o.items, `${path}.items`, depth + 1) };
          break;
        case 'object': {
          use('properties');
          use('required');
          use('additionalProperties');
          if (o.additionalProperties !== undefined && typeof o.additionalProperties !== 'boolean')
            throw invalid(
              "'additionalProperties' must be true or false (no extra properties are ever generated)",
              `${path}.additionalProperties`,
            );
          const props = new Map<string, SchemaNode>();
          const p = o.properties ?? {};
          if (typeof p !== 'object' || p === null || Array.isArray(p))
            throw invalid("'properties' must be an object", `${path}.properties`);
          for (const [k, v] of Object.entries(p)) props.set(k, walk(v, `${path}.properties.${k}`, depth + 1));
          const req = o.required ?? [];
          if (!Array.isArray(req) || !req.every((r) => typeof r === 'string' && props.has(r)))
            throw invalid("'required' must list names from 'properties'", `${path}.required`);
          if (props.size === 0) throw invalid("an object schema needs 'properties'", `${path}.properties`);
          node = { kind: 'object', props, required: [...new Set(req as string[])] };
          break;
        }
        default:
          throw invalid(
            `unsupported schema type ${JSON.stringify(o.type)}; supported: a single type of object, string, integer, number, boolean, null, array, or enum`,
            `${path}.type`,
          );
      }
    }
    for (const k of Object.keys(o)) {
      if (!allowed.has(k))
        throw invalid(
          `unsupported JSON-schema keyword '${k}'; supported: type, properties, required, additionalProperties, items, enum (and annotations)`,
          `${path}.${k}`,
        );
    }
    return node;
  };
  const root = walk(schema, param, 0);
  if (root.kind !== 'object') throw invalid('the top-level schema must be an object', `${param}.type`);
  return root;
}

/** The fewest characters a value of `n` can be written in (compact JSON). */
export function minLength(n: SchemaNode): number {
  switch (n.kind) {
    case 'string':
      return 2;
    case 'integer':
    case 'number':
    case 'any':
      return 1;
    case 'literal':
      return Math.min(...n.texts.map((t) => t.length));
    case 'array':
      return 2;
    case 'object':
      return 1 + membersLength(n, n.required) + 1;
  }
}

/** `"key":value` for each listed property at its shortest, with commas between them */
export function membersLength(n: SchemaNode & { kind: 'object' }, keys: readonly string[]): number {
  let len = Math.max(0, keys.length - 1);
  for (const k of keys) len += memberLength(n, k);
  return len;
}

export function memberLength(n: SchemaNode & { kind: 'object' }, key: string): number {
  return JSON.stringify(key).length + 1 + minLength(n.props?.get(key) ?? { kind: 'any' });
}
