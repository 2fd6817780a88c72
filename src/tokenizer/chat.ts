// Chat prompts from the model's own Jinja template (tokenizer.chat_template), rendered with
// @huggingface/jinja, or a ChatML fallback for models that ship none.
import { Template } from '@huggingface/jinja';
import type { ChatMessage } from './types.js';

export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

/**
 * Used when the model has no template (e.g. stories260K). It is ChatML, the same default
 * llama.cpp's server falls back to, so both render identical prompts for such models:
 *   <|im_start|>{role}\n{content}<|im_end|>\n ... then "<|im_start|>assistant\n" when a
 *   generation prompt is asked for.
 */
export const FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface ChatRenderer {
  render(messages: ChatMessage[], addGenerationPrompt: boolean): string;
}

export function createChatRenderer(source: string | undefined, bosToken: string, eosToken: string): ChatRenderer {
  let tpl: Template;
  try {
    tpl = new Template(source ?? FALLBACK_CHAT_TEMPLATE);
  } catch (e) {
    throw new ChatTemplateError(`the model's chat template does not parse: ${(e as Error).message}`);
  }
  return {
    render(messages, addGenerationPrompt) {
      if (!Array.isArray(messages)) throw new ChatTemplateError('messages must be an array of {role, content}');
      for (const [i, m] of messages.entries()) {
        if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') {
          throw new ChatTemplateError(`message ${i} needs a string role and a string content`);
        }
      }
      try {
        return tpl.render({
          messages: messages.map((m) => ({ ...m })),
          add_generation_prompt: addGenerationPrompt,
          bos_token: bosToken,
          eos_token: eosToken,
        });
      } catch (e) {
        // raise_exception() in templates (e.g. "roles must alternate") lands here
        throw new ChatTemplateError(`chat template failed: ${(e as Error).message}`);
      }
    },
  };
}
