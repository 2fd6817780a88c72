// `odsi status`: the swarm's nodes and per-layer coverage, from a gateway (GET /v1/odsi/status)
// or read straight from the DHT (joins as a client, verifies the signed adverts, pings the nodes).
import type { Command } from 'commander';
import { generateIdentity } from '../identity/identity.js';
import { modelIdentity } from '../model/identity.js';
import { openModel } from '../model/load.js';
import { createHost } from '../p2p/host.js';
import { Discovery } from '../gateway/discovery.js';
import { swarmStatus, type SwarmStatus } from '../gateway/swarm-status.js';
import { CostPlanner } from '../routing/planner.js';
import { covers, type Route } from '../routing/router.js';
import { integerOption } from './numbers.js';

interface StatusOptions {
  gateway?: string;
  bootstrap?: string[];
  model?: string;
  modelId?: string;
  layers?: number;
  json?: boolean;
  timeoutMs: number;
}

/** most bytes read from a gateway's status answer */
const MAX_STATUS_BYTES = 8 * 1024 * 1024;

export function register(program: Command): void {
  program
    .command('status')
    .description("show the swarm's nodes and per-layer coverage (from a gateway, or from the DHT)")
    .option('--gateway <url>', 'gateway base URL, http://host:port (with or without /v1)')
    .option('--bootstrap <multiaddr...>', 'swarm members to join through (reads the signed adverts itself)')
    .option('-m, --model <path>', 'with --bootstrap: the model file (its id and layer count)')
    .option('--model-id <id>', 'with --bootstrap: the model id instead of --model')
    .option(
      '--layers <n>',
      'with --model-id: the model has this many layers (default: the highest layer advertised)',
      integerOption('--layers', { min: 1 }),
    )
    .option('--timeout-ms <n>', 'how long to look (ms)', integerOption('--timeout-ms', { min: 1 }), 10_000)
    .option('--json', 'print one JSON object: { nodes: [...], coverage: [...], ... }')
    .action(async (o: StatusOptions) => {
      if (!o.gateway === !o.bootstrap?.length) throw new Error('give one of --gateway URL or --bootstrap MULTIADDR');
      const st = o.gateway ? await fromGateway(o.gateway, o.timeoutMs) : await fromDht(o);
      process.stdout.write(o.json ? JSON.stringify(st) + '\n' : render(st));
    });
}

async function fromGateway(base: string, timeoutMs: number): Promise<SwarmStatus> {
  let url: URL;
  try {
    url = new URL(base.replace(/\/+$/, '').replace(/\/v1$/, '') + '/v1/odsi/status');
  } catch {
    throw new Error(`--gateway: not a URL: ${base}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--gateway: expected an http(s) URL, got ${base}`);
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    throw new Error(`cannot reach the gateway at ${url.origin}: ${(e as Error).message}`);
  }
  const text = await boundedText(res, MAX_STATUS_BYTES);
  if (!res.ok) {
    let msg = text.slice(0, 300);
    try {
      msg = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? msg;
    } catch {
      /* not JSON */
    }
    throw new Error(`gateway answered ${res.status}: ${msg}`);
  }
  const st = JSON.parse(text) as SwarmStatus;
  if (!Array.isArray(st.nodes) || !Array.isArray(st.coverage)) throw new Error(`${url.href} did not answer a swarm status`);
  return st;
}

async function boundedText(res: Response, max: number): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > max) {
      await reader.cancel();
      throw new Error(`gateway status larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function fromDht(o: StatusOptions): Promise<SwarmStatus> {
  let modelId = o.modelId;
  let nLayers = o.layers;
  let name = modelId ?? '';
  if (o.model) {
    const src = openModel(o.model);
    try {
      modelId = modelIdentity(src).modelId;
      nLayers = src.config.nLayers;
      name = src.config.name || modelId;
    } finally {
      src.close();
    }
  }
  if (!modelId) throw new Error('--bootstrap needs --model PATH or --model-id ID');
  const host = await createHost({ identity: generateIdentity(), bootstrap: o.bootstrap });
  try {
    const d = new Discovery(host, {
      modelId,
      nLayers: nLayers ?? Number.MAX_SAFE_INTEGER,
      refreshMs: 0,
      lookupTimeoutMs: Math.min(3_000, o.timeoutMs),
    });
    // let the DHT learn peers from the bootstrap nodes (bounded), then look twice: the second
    // pass pings again, so a node that is gone shows as unreachable
    const until = Date.now() + o.timeoutMs;
    for (let i = 0; i < 50 && Date.now() < until; i++) {
      await d.refresh();
      if (d.known().length && (!nLayers || covers(d.known(), nLayers))) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await d.refresh();
    const known = d.known();
    const L = nLayers ?? Math.max(0, ...known.map((a) => a.end));
    let route: Route | undefined;
    let noRouteReason = d.lastError;
    try {
      if (L > 0) route = new CostPlanner(d, { nLayers: L }).preview();
    } catch (e) {
      noRouteReason = (e as Error).message;
    }
    return swarmStatus({
      model: { id: name, modelId, nLayers: L },
      gatewayPeerId: host.peerId,
      candidates: d.candidates(),
      adverts: known,
      rttMs: d.rttMs(),
      unreachable: d.unavailable(),
      bans: [],
      measuredMsPerToken: new Map(),
      convictionOf: () => undefined,
      route,
      noRouteReason,
      recoveries: { replay: 0, transfer: 0, gaveUp: 0 },
    });
  } finally {
    await host.stop().catch(() => undefined);
  }
}

/**
 * The terminal view: coverage table, then one line per node. Much of it is peers' own words
 * (engine names from adverts, ban and dispute reasons from their ERRORs), so control and
 * bidirectional-override characters are shown escaped, never sent to the terminal.
 */
export function render(st: SwarmStatus): string {
  return printable(view(st));
}

/** `s` with C0/C1 controls (but the newline) and bidi overrides escaped as \x.. / \u.... */
export function printable(s: string): string {
  return s.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

function view(st: SwarmStatus): string {
  const lines: string[] = [];
  const gaps = st.uncovered.map(([a, b]) => `${a}:${b}`).join(' ');
  lines.push(
    `model ${st.model.id} (${st.model.modelId.slice(0, 16)}…), ${st.model.nLayers} layers, ${st.nodes.length} node(s); ` +
      (st.uncovered.length ? `UNCOVERED layers ${gaps}` : 'every layer covered'),
  );
  lines.push('');
  lines.push('layer  nodes  tokens/s  peers');
  for (const c of st.coverage)
    lines.push(
      `${String(c.layer).padStart(5)}  ${String(c.nodes).padStart(5)}  ${c.tokensPerSec.toFixed(1).padStart(8)}  ${c.nodes ? c.peers.map(short).join(' ') : '-- gap --'}`,
    );
  lines.push('');
  lines.push(
    'peer id                                                  layers  engine      ms/token       rtt ms  sessions  free KV  state',
  );
  for (const n of st.nodes) {
    const state = [
      whyNotRoutable(n) ? `NOT ROUTABLE (${whyNotRoutable(n)})` : 'up',
      n.doubt && !whyNotRoutable(n) ? `doubted until ${new Date(n.doubt.until).toLocaleTimeString()} (${n.doubt.reason ?? 'dispute'})` : '',
      n.audits.passed + n.audits.failed ? `audits ${n.audits.passed} ok/${n.audits.failed} failed` : '',
    ]
      .filter(Boolean)
      .join(', ');
    lines.push(
      [
        n.peerId.padEnd(55),
        `${n.layers[0]}:${n.layers[1]}`.padStart(7),
        n.engine.padEnd(10),
        `${n.msPerToken.toFixed(2)} ${n.msPerTokenSource === 'measured' ? 'meas' : 'adv '}`.padStart(13),
        (n.rttMs === null ? '-' : n.rttMs.toFixed(1)).padStart(11),
        String(n.sessions).padStart(9),
        String(n.freeKvTokens).padStart(8),
        state,
      ].join(' '),
    );
  }
  if (st.route) lines.push('', `route now: ${st.route.map((h) => `${short(h.peerId)}[${h.layers[0]}:${h.layers[1]}]`).join(' → ')}`);
  else if (st.reason) lines.push('', `no route: ${st.reason}`);
  if (st.fallback)
    lines.push(`fallback: ${st.fallback.url} (when ${st.fallback.when.join(', ')}; ${st.fallback.served} request(s) served)`);
  return lines.join('\n') + '\n';
}

const short = (p: string) => `…${p.slice(-6)}`;

/** why routing skips the node, or undefined (a gateway older than `routable` is read from its other fields) */
function whyNotRoutable(n: SwarmStatus['nodes'][number]): string | undefined {
  if (n.routable !== undefined) return n.routable ? undefined : (n.unroutable ?? 'not routable');
  if (n.conviction) return `convicted: ${n.conviction}`;
  if (n.banned) return `banned: ${n.banReason ?? 'failures'}`;
  return n.reachable ? undefined : 'unreachable';
}
