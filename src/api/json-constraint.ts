// Structured output as a TokenConstraint: only tokens whose text keeps the output a prefix of a
// schema-conforming compact JSON document may be drawn, and only those that leave enough of
// the token budget to close the document, so it always completes, parses and validates.
// The vocabulary is walked as a character trie, so a shared prefix is fed to the automaton once.

import type { TokenConstraint } from '../engine/sampling.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { closeLength, feed, feedText, initialState, isComplete, type JsonState } from './json-automaton.js';
import type { SchemaNode } from './json-schema.js';

interface TrieNode {
  next: Map<string, TrieNode>;
  ids: number[];
}

/** The vocabulary as a character trie: every token with printable, complete UTF-8 text. */
export class TokenTrie {
  readonly root: TrieNode = { next: new Map(), ids: [] };
  readonly texts: (string | undefined)[];

  constructor(tk: Tokenizer) {
    const utf8 = new TextDecoder('utf-8', { fatal: true });
    const stop = new Set(tk.stopIds);
    this.texts = new Array<string | undefined>(tk.vocabSize);
    for (let id = 0; id < tk.vocabSize; id++) {
      if (stop.has(id) || tk.isControl(id)) continue;
      let text: string;
      try {
        text = utf8.decode(tk.pieceBytes(id));
      } catch {
        continue; // a partial UTF-8 sequence (byte token) cannot be checked on its own
      }
      if (!text) continue;
      this.texts[id] = text;
      let node = this.root;
      for (const ch of text) {
        let n = node.next.get(ch);
        if (!n) node.next.set(ch, (n = { next: new Map(), ids: [] }));
        node = n;
      }
      node.ids.push(id);
    }
  }
}

export class JsonConstraint implements TokenConstraint {
  private state: JsonState;

  constructor(
    root: SchemaNode,
    private readonly trie: TokenTrie,
  ) {
    this.state = initialState(root);
  }

  /** characters still needed to close the document at the least */
  get closeLength(): number {
    return closeLength(this.state);
  }

  get done(): boolean {
    return isComplete(this.state);
  }

  mask(logits: Float32Array, remaining: number): void {
    const allowed = new Uint8Array(logits.length);
    // after this token, remaining - 1 tokens must be able to close the document
    const budget = remaining - 1;
    let any = false;
    const walk = (node: TrieNode, s: JsonState): void => {
      if (node.ids.length && closeLength(s) <= budget) {
        for (const id of node.ids) if (id < allowed.length) allowed[id] = 1;
        any = true;
      }
      for (const [ch, child] of node.next) {
        const t = feed(s, ch);
        if (t) walk(child, t);
      }
    };
    walk(this.trie.root, this.state);
    if (!any) throw new Error('structured output: no token can continue the JSON document within the token budget');
    for (let i = 0; i < logits.length; i++) if (!allowed[i]) logits[i] = -Infinity;
  }

  accept(id: number): void {
    const next = feedText(this.state, this.trie.texts[id] ?? '\u0000');
    if (!next) throw new Error(`structured output: token ${id} does not continue the JSON document`);
    this.state = next;
  }
}
