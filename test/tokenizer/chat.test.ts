// Chat templates: real-world Jinja templates (Llama 3, Mistral with raise_exception) rendered
// with @huggingface/jinja, and the documented ChatML fallback.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createTokenizer, ChatTemplateError, FALLBACK_CHAT_TEMPLATE } from '../../src/tokenizer/index.js';
import { bpeSpec, LLAMA3_TEMPLATE } from './bpe-fixture.js';

/** Mistral-7B-Instruct-v0.1's template: alternation enforced with raise_exception. */
const MISTRAL_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

const chat = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: '  Hi there!  ' },
];

describe('chat templates', () => {
  it('renders the Llama 3 template with bos_token and a generation prompt', () => {
    const tok = createTokenizer(bpeSpec('llama-bpe', { chatTemplate: LLAMA3_TEMPLATE }));
    assert.equal(tok.hasChatTemplate, true);
    const text = tok.applyChatTemplate(chat, { addGenerationPrompt: true });
    assert.equal(
      text,
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    assert.ok(!tok.applyChatTemplate(chat, { addGenerationPrompt: false }).endsWith('assistant<|end_header_id|>\n\n'));
    // the rendered prompt tokenizes with its markers as control tokens (no second BOS added)
    const ids = tok.encode(text, { addBos: false, parseSpecial: true });
    assert.equal(ids[0], tok.bosId);
    assert.equal(ids.filter((id) => id === tok.tokenId('<|eot_id|>')).length, 2);
  });

  it('surfaces raise_exception from a template as ChatTemplateError', () => {
    const tok = createTokenizer(bpeSpec('llama-bpe', { chatTemplate: MISTRAL_TEMPLATE }));
    const ok = tok.applyChatTemplate([
      { role: 'user', content: 'a' },
      { role: 'assistant', content: 'b' },
      { role: 'user', content: 'c' },
    ]);
    assert.equal(ok, '<|begin_of_text|>[INST] a [/INST]b<|end_of_text|>[INST] c [/INST]');
    assert.throws(
      () => tok.applyChatTemplate(chat),
      (e: Error) => e instanceof ChatTemplateError && /roles must alternate/.test(e.message),
    );
  });

  it('falls back to ChatML when the model has no template', () => {
    const tok = createTokenizer(bpeSpec('llama-bpe'));
    assert.equal(tok.hasChatTemplate, false);
    assert.ok(FALLBACK_CHAT_TEMPLATE.includes('<|im_start|>'));
    assert.equal(
      tok.applyChatTemplate(chat, { addGenerationPrompt: true }),
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n  Hi there!  <|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('rejects malformed messages clearly', () => {
    const tok = createTokenizer(bpeSpec('llama-bpe'));
    assert.throws(() => tok.applyChatTemplate([{ role: 'user' } as never]), /message 0 needs a string role and a string content/);
  });
});
