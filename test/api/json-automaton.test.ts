// The JSON prefix automaton behind structured output (src/api/json-automaton.ts): which
// prefixes it accepts for a schema, when a document is complete, and the fewest characters
// that close it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeLength, feedText, initialState, isComplete } from '../../src/api/json-automaton.js';
import { ANY_OBJECT, compileSchema } from '../../src/api/json-schema.js';

const person = compileSchema(
  {
    type: 'object',
    properties: { name: { type: 'string' }, age: { type: 'integer' }, ok: { type: 'boolean' } },
    required: ['name', 'age'],
  },
  'schema',
);
const accepts = (schema: typeof person, text: string) => feedText(initialState(schema), text) !== null;
const complete = (schema: typeof person, text: string) => {
  const s = feedText(initialState(schema), text);
  return s !== null && isComplete(s);
};

describe('JSON prefix automaton', () => {
  it('accepts exactly the prefixes of conforming documents', () => {
    assert.ok(complete(person, '{"name":"Al","age":3}'));
    assert.ok(complete(person, '{"age": -12,"ok": true,"name": "a\\"b\\u00e9"}'));
    assert.ok(accepts(person, '{"na'));
    assert.ok(!accepts(person, '{"nam"'), 'unknown key');
    assert.ok(!accepts(person, '{"name":3'), 'wrong type');
    assert.ok(!accepts(person, '{"age":1.5'), 'integer with a fraction');
    assert.ok(!accepts(person, '{"age":01'), 'leading zero');
    assert.ok(!accepts(person, '{"name":"x"}'), 'missing required age');
    assert.ok(!accepts(person, '{"name":"x","name"'), 'duplicate key');
    assert.ok(!accepts(person, '{"name":"a\nb"'), 'raw control character in a string');
    assert.ok(!accepts(person, '{"name":"x","age":1} '), 'nothing after the document');
    assert.ok(!accepts(person, ' {'), 'no leading whitespace');
    assert.ok(complete(ANY_OBJECT, '{"a":[1,{"b":null}],"c":false,"d":-0.5e+3}'));
    assert.ok(!accepts(ANY_OBJECT, '['), 'json_object is an object');
  });

  it('closeLength is the shortest completion', () => {
    const len = (t: string) => closeLength(feedText(initialState(person), t)!);
    assert.equal(len(''), '{"name":"","age":0}'.length);
    assert.equal(len('{"name":"abc"'), ',"age":0}'.length);
    assert.equal(len('{"age":12'), ',"name":""}'.length);
    assert.equal(len('{"a'), 'ge":0,"name":""}'.length);
    assert.equal(len('{"name":"","age":0'), 1);
    const enumSchema = compileSchema({ type: 'object', properties: { m: { enum: ['happy', 'sad'] } }, required: ['m'] }, 's');
    assert.equal(closeLength(feedText(initialState(enumSchema), '{"m":"h')!), 'appy"}'.length);
  });

  it('the schema subset: other keywords are refused by name', () => {
    assert.throws(() => compileSchema({ type: 'object', properties: { a: { type: 'string', minLength: 2 } } }, 's'), /'minLength'/);
    assert.throws(() => compileSchema({ type: 'object', properties: { a: { anyOf: [] } } }, 's'), /anyOf|type/);
    assert.throws(() => compileSchema({ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, 's'), /required/);
  });
});
