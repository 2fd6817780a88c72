// Locations shared by tests: the repository root and the shared test model beside it.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// compiled tests live in dist/test/helpers; sources in test/helpers
const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = existsSync(resolve(here, '../../package.json')) ? resolve(here, '../..') : resolve(here, '../../..');
export const STORIES_DIR = resolve(REPO_ROOT, '../shared/models/stories260K');
export const STORIES_GGUF = resolve(STORIES_DIR, 'stories260K.gguf');
export const ODSI_BIN = resolve(REPO_ROOT, 'bin/odsi.js');

export interface GoldenCase {
  prompt: string;
  prompt_tokens: number[];
  generated_tokens: number[];
  last_prompt_logits: number[];
}
export function loadGolden(): GoldenCase[] {
  return (JSON.parse(readFileSync(resolve(STORIES_DIR, 'golden.json'), 'utf8')) as { cases: GoldenCase[] }).cases;
}
