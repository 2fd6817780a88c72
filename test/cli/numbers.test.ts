// Numbers on odsi's command lines: one reading for every command (cli/numbers.ts), and the real
// CLI refusing what it cannot read before anything starts, naming the flag and its bounds.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { PORT, integerOption, numberOption, parseInteger, parseNumber } from '../../src/cli/numbers.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { runOdsiAsync } from '../helpers/cli.js';

describe('parseInteger', () => {
  test('takes decimal digits within the bounds', () => {
    assert.equal(parseInteger('--n', '0', { min: 0 }), 0);
    assert.equal(parseInteger('--n', '65535', PORT), 65_535);
    assert.equal(parseInteger('--n', '-1', { min: -1 }), -1);
    assert.equal(parseInteger('--n', '007', { min: 1 }), 7);
  });
  test("refuses what Number() would read as an integer but a user did not write as one: '', hex, exponents, fractions, spaces", () => {
    for (const v of ['', ' ', '0x10', '1e3', '2.0', '2.5', ' 7', '7 ', '+7', 'Infinity', 'seven', '9007199254740993'])
      assert.throws(
        () => parseInteger('--n', v, { min: 0 }),
        (e: Error) => e.message === `--n must be an integer >= 0, got "${v}"`,
        `'${v}' was taken`,
      );
  });
  test('refuses values outside the bounds, naming them', () => {
    assert.throws(() => parseInteger('--port', '65536', PORT), /^Error: --port must be an integer in \[0, 65535\], got "65536"$/);
    assert.throws(() => parseInteger('--nodes', '0', { min: 1 }), /^Error: --nodes must be an integer >= 1, got "0"$/);
  });
});

describe('parseNumber', () => {
  test('takes finite decimals within the bounds', () => {
    assert.equal(parseNumber('--p', '0.5', { min: 0, max: 1 }), 0.5);
    assert.equal(parseNumber('--p', '1', { min: 0, max: 1, aboveMin: true }), 1);
    assert.equal(parseNumber('--p', '.25', { min: 0 }), 0.25);
    assert.equal(parseNumber('--p', '1e-3', { min: 0 }), 0.001);
  });
  test('refuses empty, hex, infinite and out-of-bounds values; an exclusive bound excludes its value', () => {
    for (const v of ['', ' ', '0x1', 'Infinity', 'NaN', '1.5', '-0.1', 'often'])
      assert.throws(
        () => parseNumber('--p', v, { min: 0, max: 1 }),
        (e: Error) => e.message === `--p must be a number in [0, 1], got "${v}"`,
        `'${v}' was taken`,
      );
    assert.throws(() => parseNumber('--share', '0', { min: 0, max: 1, aboveMin: true }), /--share must be a number in \(0, 1\], got "0"/);
    assert.throws(() => parseNumber('--penalty', '0', { min: 0, aboveMin: true }), /--penalty must be a number > 0, got "0"/);
  });
});

test("the commander forms throw commander's InvalidArgumentError with the same message", () => {
  assert.equal(integerOption('--n', { min: 1 })('3'), 3);
  assert.equal(numberOption('--t', { min: 0, max: 2 })('0.7'), 0.7);
  assert.throws(
    () => integerOption('--n', { min: 1 })('0x3'),
    (e: Error) => e instanceof InvalidArgumentError && e.message === '--n must be an integer >= 1, got "0x3"',
  );
  assert.throws(
    () => numberOption('--t', { min: 0, max: 2 })('3'),
    (e: Error) => e instanceof InvalidArgumentError && /--t must be a number in \[0, 2\]/.test(e.message),
  );
});

describe('the odsi commands read numbers this way, and refuse before starting anything', () => {
  // each case is its own process, so a test's cases run side by side (await all of them)
  const refused = async (args: string[], message: RegExp, env: NodeJS.ProcessEnv = {}) => {
    const r = await runOdsiAsync(args, { timeoutMs: 30_000, env: { ...process.env, ...env } });
    assert.notEqual(r.code, 0, `odsi ${args.join(' ')} was accepted`);
    assert.match(r.stderr, message);
    assert.equal(r.stdout, '', 'nothing was started or printed');
  };
  test('gateway: a hex port, a port out of range, an empty port, zero concurrent requests', async () => {
    await Promise.all([
      refused(['gateway', '--model', STORIES_GGUF, '--port', '0x1f90'], /--port must be an integer in \[0, 65535\], got "0x1f90"/),
      refused(['gateway', '--model', STORIES_GGUF, '--port', '70000'], /--port must be an integer in \[0, 65535\], got "70000"/),
      // the old reading took '' as 0 (any free port)
      refused(['gateway', '--model', STORIES_GGUF, '--port', ''], /--port must be an integer in \[0, 65535\], got ""/),
      refused(['gateway', '--model', STORIES_GGUF, '--max-concurrent', '0'], /--max-concurrent must be an integer >= 1, got "0"/),
    ]);
  });
  test('node: negative spare streams (once refused as "a port number"), an exponent, a zero share, an unknown engine', async () => {
    const node = ['node', '--model', STORIES_GGUF, '--layers', '0:5', '--listen', '/ip4/127.0.0.1/tcp/0'];
    await Promise.all([
      refused([...node, '--stream-spares', '-1'], /--stream-spares must be an integer >= 0, got "-1"/),
      refused([...node, '--kv-budget-mb', '1e3'], /--kv-budget-mb must be an integer >= 1, got "1e3"/),
      refused([...node, '--max-kv-share', '0'], /--max-kv-share must be a number in \(0, 1\], got "0"/),
      refused([...node, '--engine', 'gpu'], /argument 'gpu' is invalid\. Allowed choices are reference, ort, llama/),
      refused([...node, '--protection-sync', 'off'], /argument 'off' is invalid\. Allowed choices are full, normal/),
    ]);
  });
  test('node: its flags are read before it opens anything, audit bounds also with accountability off (once read after the ledger opened, and then only with it on)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'odsi-cli-numbers-'));
    try {
      const ledgerFile = join(dir, 'ledger.db');
      const node = [
        'node',
        '--model',
        STORIES_GGUF,
        '--layers',
        '0:5',
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--ledger',
        `sqlite:${ledgerFile}`,
      ];
      await Promise.all([
        refused([...node, '--audit-window', '5s'], /--audit-window must be an integer >= 1, got "5s"/, { ODSI_ACCOUNTABILITY: '0' }),
        refused([...node, '--idle-timeout', '0'], /--idle-timeout must be an integer >= 1, got "0"/),
        refused([...node.map((a) => (a === '0:5' ? '3:9' : a))], /--layers 3:9 is not a non-empty range within the model's 5 layers/),
      ]);
      assert.equal(existsSync(ledgerFile), false, 'the ledger was not opened');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test('gateway: its flags are read before it loads or creates its key (a refused start once left a new key file behind)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'odsi-cli-numbers-'));
    try {
      const key = join(dir, 'gateway.key');
      const gw = ['gateway', '--model', STORIES_GGUF, '--port', '0', '--identity', key];
      await Promise.all([
        refused([...gw, '--fallback-model', 'm'], /--fallback-model, --fallback-key-env and --fallback-when need --fallback-url/),
        refused(
          [...gw, '--fallback-url', 'http://127.0.0.1:9/v1', '--fallback-key-env', 'ODSI_TEST_UNSET_KEY'],
          /ODSI_TEST_UNSET_KEY: that environment variable is not set/,
        ),
        refused([...gw, '--ledger-account', '0x12'], /--ledger-account must be an address/),
      ]);
      assert.equal(existsSync(key), false, 'no key was created');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test('gateway and demo: ODSI_AUDIT_RATE outside [0, 1] or not a number (once ignored silently)', async () => {
    await Promise.all([
      refused(['gateway', '--model', STORIES_GGUF, '--port', '0'], /ODSI_AUDIT_RATE must be a number in \[0, 1\], got "2"/, {
        ODSI_AUDIT_RATE: '2',
      }),
      refused(['demo', '--model', STORIES_GGUF, '--nodes', '1'], /ODSI_AUDIT_RATE must be a number in \[0, 1\], got "half"/, {
        ODSI_AUDIT_RATE: 'half',
      }),
    ]);
  });
  test('node and gateway: an ODSI_CHAIN_ID that is not a positive integer (once signed under 31337 instead), an ODSI_ACCOUNTABILITY other than 0 or 1 (once read as on)', async () => {
    const node = ['node', '--model', STORIES_GGUF, '--layers', '0:5', '--listen', '/ip4/127.0.0.1/tcp/0'];
    await Promise.all([
      refused(node, /ODSI_CHAIN_ID must be a positive integer, got "8453x"/, { ODSI_CHAIN_ID: '8453x' }),
      refused(node, /ODSI_ACCOUNTABILITY must be 1 \(on, the default\) or 0 \(off\), got "false"/, { ODSI_ACCOUNTABILITY: 'false' }),
      refused(['gateway', '--model', STORIES_GGUF, '--port', '0'], /ODSI_ACCOUNTABILITY must be 1/, { ODSI_ACCOUNTABILITY: 'off' }),
      refused(['gateway', '--model', STORIES_GGUF, '--port', '0'], /ODSI_CHAIN_ID must be a positive integer, got "0"/, {
        ODSI_CHAIN_ID: '0',
      }),
    ]);
  });
  test('demo, generate, model synth and status', async () => {
    await Promise.all([
      refused(['demo', '--model', STORIES_GGUF, '--nodes', '2.5'], /--nodes must be an integer >= 1, got "2.5"/),
      refused(['generate', '--model', STORIES_GGUF, '--top-p', '0'], /--top-p must be a number in \(0, 1\], got "0"/),
      refused(['model', 'synth', '--layers', '0', '--out', '/nonexistent/x.gguf'], /--layers must be an integer >= 1, got "0"/),
      refused(['status', '--gateway', 'http://127.0.0.1:9', '--timeout-ms', ''], /--timeout-ms must be an integer >= 1, got ""/),
    ]);
  });
});
