// The command lines of README.md's ```sh blocks, as the README test runs them: continuation
// lines joined, comment-only and blank lines dropped, each line classified (set-up that the
// test cannot run, shell prelude such as alias/export, long-running, or run to completion).

export type CommandKind = 'setup' | 'prelude' | 'background' | 'foreground';

export interface ReadmeCommand {
  /** the line as the README writes it (continuations joined with a space) */
  line: string;
  kind: CommandKind;
  /** 1-based README line where the command starts */
  at: number;
}

/** Every command line of the README's ```sh blocks, in order. */
export function readmeCommands(readme: string): ReadmeCommand[] {
  const out: ReadmeCommand[] = [];
  const lines = readme.split('\n');
  let inSh = false;
  let pending: { text: string; at: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (!inSh) {
      if (raw.trim() === '```sh') inSh = true;
      continue;
    }
    if (raw.trim() === '```') {
      if (pending) throw new Error(`README line ${pending.at}: a continued command runs into the end of its block`);
      inSh = false;
      continue;
    }
    const text = pending ? `${pending.text} ${raw.trim()}` : raw.trim();
    const at = pending?.at ?? i + 1;
    if (text.endsWith('\\')) {
      pending = { text: text.slice(0, -1).trimEnd(), at };
      continue;
    }
    pending = undefined;
    if (text === '' || text.startsWith('#')) continue;
    out.push({ line: text, kind: classify(text), at });
  }
  return out;
}

/** The command without leading VAR=value assignments and without a trailing comment. */
export function commandWords(line: string): string[] {
  const words = line.replace(/\s+#.*$/, '').split(/\s+/);
  let i = 0;
  while (i < words.length && /^[A-Z_][A-Z0-9_]*=/.test(words[i]!)) i++;
  return words.slice(i);
}

function classify(line: string): CommandKind {
  if (/^npm (install|ci)\b/.test(line)) return 'setup';
  if (/^(alias|export) /.test(line)) return 'prelude';
  const w = commandWords(line);
  if (w[0] === 'odsi' && (w[1] === 'node' || w[1] === 'gateway')) return 'background';
  if (w[0] === 'odsi' && w[1] === 'demo' && w.includes('--serve')) return 'background';
  return 'foreground';
}
