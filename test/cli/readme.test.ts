// README.md's command lines run as written (bash, from the repository root, `odsi` = the README's
// own alias): outputs go to a temp dir, fixed ports become free ones, `<peer-id>` becomes the
// peer id keygen printed for node1.key; long-running commands (odsi node, odsi gateway,
// odsi demo --serve) run in the background until they say they are ready and are killed at the
// end. Only the set-up lines (`npm install && …`) are skipped: they install from the registry
// and build (CI does that before any test), and `npm test` would run this suite recursively.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';
import { commandWords, readmeCommands, type ReadmeCommand } from './readme-commands.js';

const FOREGROUND_TIMEOUT_MS = 240_000;
const READY_TIMEOUT_MS = 120_000;
const READY = /"event":"ready"|serving an OpenAI-compatible API/;

interface Shell {
  proc: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

/** `bash -c script` in its own process group (so the whole group can be killed). */
function shell(script: string, env: NodeJS.ProcessEnv): Shell {
  const proc = spawn('bash', ['-O', 'expand_aliases', '-c', script], {
    cwd: REPO_ROOT,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, out: () => out, err: () => err, exited };
}

async function killGroup(s: Shell): Promise<void> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
  try {
    process.kill(-s.proc.pid!, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const t = setTimeout(() => {
    try {
      process.kill(-s.proc.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, 10_000);
  await s.exited;
  clearTimeout(t);
}

/** Bounded wait until the output says ready (or the process exits, or time runs out). */
async function waitReady(s: Shell, what: string): Promise<void> {
  const until = Date.now() + READY_TIMEOUT_MS;
  let exited = false;
  void s.exited.then(() => (exited = true));
  for (let i = 0; i < READY_TIMEOUT_MS / 100 && Date.now() < until; i++) {
    if (READY.test(s.out()) || READY.test(s.err())) return;
    if (exited) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not ready (exited: ${exited}); stderr:\n${s.err().slice(-3000)}`);
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('README: every command line runs as written', { timeout: 1_200_000 }, async () => {
  const commands = readmeCommands(readFileSync(resolve(REPO_ROOT, 'README.md'), 'utf8'));
  // the README starts with exactly the two set-up commands
  const first = commands.slice(0, 2).map((c) => c.line.replace(/\s+#.*$/, ''));
  assert.deepEqual(first, ['npm install && npm run demo', 'npm install && npm test']);

  const tmp = mkdtempSync(join(tmpdir(), 'odsi-readme-'));
  const ports = { p2p: await freePort(), gateway: await freePort(), demo: await freePort() };
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.ODSI_PASSPHRASE; // the README's own export sets it
  delete env.ODSI_ALLOW_FAULTS;
  const prelude: string[] = [];
  const peerIds = new Map<string, string>(); // key file → peer id printed by keygen
  const background: Shell[] = [];
  const ran: string[] = [];

  const substitute = (c: ReadmeCommand): string => {
    const demo = commandWords(c.line)[1] === 'demo';
    let s = c.line
      .replace(/\bnode(\d)\.key\b/g, (_m, n: string) => join(tmp, `node${n}.key`))
      .replace(/\/tmp\/(smol[\w-]*\.gguf)/g, (_m, f: string) => join(tmp, f))
      .replace(/\b4001\b/g, String(ports.p2p))
      .replace(/\b8080\b/g, String(demo ? ports.demo : ports.gateway));
    if (s.includes('<peer-id>')) {
      const id = peerIds.get('node1.key');
      assert.ok(id, `README line ${c.at}: <peer-id> used before keygen printed node1.key's`);
      s = s.replaceAll('<peer-id>', id);
    }
    return s;
  };
  const script = (line: string) => [...prelude, line].join('\n');

  try {
    for (const c of commands) {
      if (c.kind === 'setup') continue; // see the header: installs and builds, or runs this suite
      if (c.kind === 'prelude') {
        prelude.push(c.line);
        continue;
      }
      const line = substitute(c);
      const what = `README line ${c.at}: ${c.line}`;
      if (c.kind === 'background') {
        const s = shell(script(line), env);
        background.push(s);
        await waitReady(s, what);
        const key = /--identity \S*\/(node\d\.key)/.exec(line)?.[1];
        if (key) {
          // the node runs with the key keygen made: the same peer id on every start
          const ready = JSON.parse(
            s
              .out()
              .split('\n')
              .find((l) => l.includes('"event":"ready"'))!,
          ) as { peerId: string };
          assert.equal(ready.peerId, peerIds.get(key), `${what}: peer id is not the key's`);
        }
        ran.push(c.line);
        continue;
      }
      const s = shell(script(line), env);
      const timer = setTimeout(() => void killGroup(s), FOREGROUND_TIMEOUT_MS);
      const code = await s.exited;
      clearTimeout(timer);
      assert.equal(code, 0, `${what}\nexit ${code}; stderr:\n${s.err().slice(-3000)}`);
      const w = commandWords(c.line);
      if (w[1] === 'keygen') {
        const key = /--out (node\d\.key)/.exec(c.line)?.[1];
        const id = /peer id: (\S+)/.exec(s.out())?.[1];
        assert.ok(key && id, `${what}: no peer id in ${s.out()}`);
        peerIds.set(key, id);
      }
      if (w[0] === 'curl') {
        const body = JSON.parse(s.out()) as { choices: { text: string }[] };
        assert.ok(body.choices[0]!.text.length > 0, `${what}: ${s.out()}`);
      }
      if (w[1] === 'demo' && w.includes('--fault')) {
        // the cheating node 0 (n1) is on the route every time and caught
        assert.match(s.err(), /evidence \(audit\) against n1 /, `${what}: no evidence; stderr:\n${s.err().slice(-3000)}`);
        assert.doesNotMatch(s.err(), /\{"accountability"/); // text mode prints text
      }
      ran.push(c.line);
    }
  } finally {
    for (const s of background.reverse()) await killGroup(s);
    rmSync(tmp, { recursive: true, force: true });
  }
  assert.ok(ran.some((l) => l.startsWith('curl')) && ran.some((l) => l.includes('--fault')), `ran: ${ran.join('\n')}`);
});
