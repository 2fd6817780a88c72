// The web dashboard in real headless Chromium (Debian's chromium, driven by playwright-core)
// against a live `odsi demo --serve` swarm of real node processes (stories260K): nodes 0 [0,3)
// and 1 [3,5) are honest, node 2 [0,5) adds noise from its second step and is audited at rate
// 1, so the demo's own prompt convicts it and re-routes around it. The page must show every
// layer covered, the conviction in the accountability feed (linking to the node), a chat reply
// streamed through /v1 equal to the API's own greedy text, a waterfall with one bar group per
// hop, the ledger panel with the demo's SQLite ledger (--ledger) as the ledger itself reports it
// (stake, slashed, eligibility, the client's balance), and — once node 0 is killed — its layers
// uncovered and the node marked.
// With ODSI_SCREENSHOTS=<dir> it saves the views as PNGs (docs/img/dashboard-*.png).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startOdsi, type RunningOdsi } from '../helpers/cli.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { within } from '../helpers/wait.js';
import type { LedgerStatus } from '../../src/ledger/ledger.js';
import { formatAmount } from '../../src/ledger/rules.js';
import { addressOfPeerId } from '../../src/routing/stake.js';

// page functions run in the browser: Node's lib has no DOM, so name the little they use
interface PageElement {
  getAttribute(name: string): string | null;
  classList: { contains(c: string): boolean };
  textContent: string | null;
}
declare const document: {
  querySelectorAll(s: string): Iterable<PageElement> & { length: number };
  querySelector(s: string): PageElement | null;
};

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM)
  ? false
  : `no browser: Debian's chromium is not installed at ${CHROMIUM} (apt-get install chromium; .ci/run installs it)`;
const SHOTS = process.env.ODSI_SCREENSHOTS;
/** tokens the chat asks for (every step is audited, so each costs a referee re-execution) */
const CHAT_TOKENS = 12;
const t0 = performance.now();
const phase = (name: string) => console.log(`dashboard test: ${name} after ${((performance.now() - t0) / 1000).toFixed(1)} s`);

interface Serving {
  url: string;
  dashboard: string;
  model: string;
  nodes: { peerId: string; layers: [number, number]; pid: number }[];
}

async function shot(page: Page, name: string): Promise<void> {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `dashboard-${name}.png`) });
}

test('dashboard: coverage, conviction feed, streamed chat, per-hop waterfall, a killed node', { skip, timeout: 240_000 }, async () => {
  let demo: RunningOdsi | undefined;
  let ctx: BrowserContext | undefined;
  const profile = mkdtempSync(join(tmpdir(), 'odsi-chromium-'));
  try {
    demo = startOdsi(
      [
        'demo',
        '--model',
        STORIES_GGUF,
        '--layers',
        '0:3',
        '3:5',
        '0:5',
        '--fault',
        '2:noise:0.05@1',
        '--audit-rate',
        '1',
        '-n',
        '8',
        '--serve',
        '--json',
        '--port',
        '0',
        '--ledger',
        `sqlite:${join(profile, 'ledger.db')}`,
      ],
      { env: { ...process.env, ODSI_ALLOW_FAULTS: '1' } },
    );
    const run = (await demo.nextJson(120_000)) as { accountability: { evidence: { peerId: string }[] }; ledger: LedgerStatus };
    const info = (await demo.nextJson(30_000)) as Serving;
    phase('demo up');
    assert.equal(info.dashboard, `${info.url}/`);
    const [honest0, honest1, cheat] = info.nodes as [Serving['nodes'][0], Serving['nodes'][0], Serving['nodes'][0]];
    assert.ok(
      run.accountability.evidence.some((e) => e.peerId === cheat.peerId),
      'the demo prompt should have convicted node 2 (it is on the first route)',
    );

    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
      viewport: { width: 1100, height: 760 },
    });
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // Swarm: every layer covered (node 0 or 1; node 2 is convicted), each cell and node labelled
    await page.goto(`${info.url}/#swarm`);
    await page.waitForFunction(
      () => {
        const cells = [...document.querySelectorAll('.strip .cell')];
        return cells.length === 5 && cells.every((c) => Number(c.getAttribute('data-nodes')) >= 1);
      },
      undefined,
      { timeout: 20_000 },
    );
    phase('swarm');
    for (let l = 0; l < 5; l++)
      assert.match((await page.locator(`.strip [data-layer="${l}"]`).getAttribute('aria-label')) ?? '', new RegExp(`^layer ${l}: 1 node,`));
    for (const nd of info.nodes)
      assert.equal(await page.locator(`.map [aria-label^="node ${nd.peerId} layers ${nd.layers[0]}:${nd.layers[1]}"]`).count(), 1);
    assert.match((await page.locator(`.map [data-peer="${cheat.peerId}"]`).getAttribute('aria-label')) ?? '', /convicted$/);
    assert.ok(await page.locator('canvas[aria-label^="combined throughput per layer"]').isVisible());
    await shot(page, 'swarm');

    // Accountability: the conviction, linking to the node's row
    await page.goto(`${info.url}/#accountability`);
    const conviction = page.locator(`.feed li[data-kind="evidence"][data-peer="${cheat.peerId}"]`);
    await conviction.first().waitFor({ timeout: 10_000 });
    assert.match(await conviction.first().innerText(), /convicted \(audit\)/);
    assert.equal(await page.locator(`.feed li[data-peer="${honest0.peerId}"].fail`).count(), 0, 'an honest node in the failures');
    await shot(page, 'accountability');
    phase('accountability');
    await conviction.first().locator(`a[href="#nodes/${cheat.peerId}"]`).click();
    const row = page.locator(`tr[data-peer="${cheat.peerId}"]`);
    await row.waitFor({ timeout: 5_000 });
    assert.match((await row.getAttribute('class')) ?? '', /convicted/);
    assert.match(await row.innerText(), /convicted: audit/);
    await shot(page, 'nodes');

    // Ledger: the gateway's ledger as the ledger reported it after the demo's settlement
    const onLedger = (peer: string) => run.ledger.identities.find((i) => i.address.toLowerCase() === addressOfPeerId(peer)!.toLowerCase())!;
    const cell = (peer: string, col: string) => page.locator(`.ledger tr[data-ledger-peer="${peer}"] [data-col="${col}"]`).innerText();
    await page.locator(`.ledger tr[data-ledger-peer="${honest0.peerId}"]`).waitFor({ timeout: 15_000 });
    assert.equal(await cell(honest0.peerId, 'stake'), formatAmount(BigInt(onLedger(honest0.peerId).stake)));
    assert.ok(BigInt(onLedger(honest0.peerId).stake) > 0n);
    assert.equal(await cell(honest0.peerId, 'eligible'), 'yes');
    assert.equal(await cell(honest0.peerId, 'slashed'), '0');
    // the demo settles (its evidence submitted, the epoch closed) before it prints: node 2's
    // conviction is already a slash on the ledger, and the panel must show it
    const bad = onLedger(cheat.peerId);
    assert.equal(
      bad.slashes[0]?.kind,
      'computation',
      `the demo's conviction of node 2 is not a slash on the ledger: ${JSON.stringify(bad)}`,
    );
    const slashed = BigInt(bad.slashed);
    assert.ok(slashed > 0n && !bad.eligible, `node 2 slashed ${bad.slashed}, eligible ${String(bad.eligible)}`);
    // the panel re-reads the ledger at most every 5 s: wait for the read that shows the slash
    const want = formatAmount(slashed);
    await page.waitForFunction(
      ([peer, v]) => document.querySelector(`.ledger tr[data-ledger-peer="${peer}"] [data-col="slashed"]`)?.textContent?.trim() === v,
      [cheat.peerId, want] as const,
      { timeout: 15_000 },
    );
    assert.equal(await cell(cheat.peerId, 'slashed'), want);
    assert.equal(await cell(cheat.peerId, 'eligible'), 'no');
    const client = run.ledger.accounts[0]!;
    const balance = await page.locator(`.ledger tr[data-account="${client.address}"] [data-col="balance"]`).innerText();
    assert.ok(Number(balance) > 0 && Number(balance) <= Number(formatAmount(BigInt(client.balance))), `client balance ${balance}`);
    phase('ledger');

    // Try it: a reply streams in (several partial texts), equal to the API's own greedy answer
    await page.goto(`${info.url}/#try`);
    await page.locator('.chat input[aria-label="message"]').fill('Tell me a story');
    await page.locator('.chat input[aria-label="max tokens"]').fill(String(CHAT_TOKENS));
    // every text the assistant's message shows while the reply comes in
    await page.evaluate(`(() => {
      const seen = (window.seen = []);
      new MutationObserver(() => {
        const t = document.querySelector('.messages li.assistant')?.textContent ?? '';
        if (seen.at(-1) !== t) seen.push(t);
      }).observe(document.querySelector('.messages'), { subtree: true, childList: true, characterData: true });
    })()`);
    await page.locator('.chat button[type="submit"]').click();
    await page.waitForFunction(
      () => document.querySelector('.chat button')?.textContent === 'Send' && !!document.querySelector('.messages li.assistant'),
      undefined,
      {
        timeout: 60_000,
      },
    );
    const reply = (await page.locator('.messages li.assistant').innerText()).replace(/^assistant\s*/, '');
    const partials = ((await page.evaluate('window.seen')) as string[]).filter((t) => t.replace(/^assistant\s*/, '').length > 0);
    phase('chat');
    assert.ok(partials.length >= 3, `the reply did not stream: ${JSON.stringify(partials)}`);
    const api = (await (
      await fetch(`${info.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: info.model,
          messages: [{ role: 'user', content: 'Tell me a story' }],
          max_tokens: CHAT_TOKENS,
          temperature: 0,
        }),
      })
    ).json()) as { choices: { message: { content: string } }[] };
    assert.equal(reply.trim(), api.choices[0]!.message.content.trim());
    await shot(page, 'try');

    // Requests: the newest (the API call) is shown: one bar group per hop of its route (0:3, 3:5)
    await page.goto(`${info.url}/#requests`);
    const hops = page.locator('.detail ul.hops li.hop');
    // the detail view is re-rendered as the stream's updates arrive (the list can be empty for a
    // moment): wait until it shows the two hops rather than counting once
    await page
      .waitForFunction(() => document.querySelectorAll('.detail ul.hops li.hop').length === 2, undefined, { timeout: 10_000 })
      .catch(async () => assert.fail(`expected 2 hops in the request's detail, saw ${await hops.count()}`));
    // (node 2's ban may have run out: then this request tried it first and was re-routed at once)
    assert.ok((await hops.nth(0).getAttribute('aria-label'))?.includes(`layers 0:3 on ${honest0.peerId}`));
    assert.match((await hops.nth(1).getAttribute('aria-label')) ?? '', new RegExp(`^hop 2: layers 3:5 on ${honest1.peerId}$`));
    assert.match((await page.locator('.detail canvas').getAttribute('aria-label')) ?? '', /^per-token waterfall of \d+ tokens over 2 hops/);
    // the demo's own prompt (the oldest request): re-routed around node 2, marked on its waterfall
    const first = page.locator('tr[data-request]').last();
    assert.match(await first.innerText(), /⟲ 1/);
    const firstId = (await first.getAttribute('data-request'))!;
    await page.locator(`tr[data-request="${firstId}"] a[href="#requests/${firstId}"]`).click();
    // its detail first (a failure here says what the page showed instead), then its events
    const detail = page.locator(`.detail[data-request="${firstId}"]`);
    await detail.waitFor({ timeout: 10_000 }).catch(async () => {
      assert.fail(`request ${firstId}'s detail did not open; the page: ${(await page.locator('main').innerText()).slice(0, 600)}`);
    });
    await detail.locator('.events li[data-event="reroute"]').waitFor({ timeout: 10_000 });
    assert.ok((await page.locator('.detail canvas').getAttribute('aria-label'))?.includes(`then layers 0:3 on ${honest0.peerId}`));
    await shot(page, 'requests');
    phase('requests');

    // kill node 0: layers 0..2 lose their only usable node, the node is marked unreachable
    await page.goto(`${info.url}/#swarm`);
    process.kill(honest0.pid, 'SIGKILL');
    await page.waitForFunction(
      (peer: string) => {
        const cells = [...document.querySelectorAll('.strip .cell')];
        const down = cells.slice(0, 3).every((c) => c.getAttribute('data-nodes') === '0' && c.classList.contains('gap'));
        const up = cells.slice(3).every((c) => c.getAttribute('data-nodes') === '1');
        const node = document.querySelector(`.map [data-peer="${peer}"]`)?.getAttribute('aria-label') ?? '';
        return down && up && node.endsWith('unreachable');
      },
      honest0.peerId,
      { timeout: 30_000 },
    );
    phase('node down');
    await shot(page, 'swarm-node-down');
    if (SHOTS) {
      await page.setViewportSize({ width: 390, height: 844 });
      await shot(page, 'phone');
    }
    assert.deepEqual(errors, []);
  } finally {
    await ctx?.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
    if (demo && demo.proc.exitCode === null) {
      demo.proc.kill('SIGTERM');
      await within(demo.exited, 15_000);
      if (demo.proc.exitCode === null) demo.proc.kill('SIGKILL');
    }
  }
});
