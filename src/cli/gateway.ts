// `odsi gateway`: join a swarm and serve the OpenAI-compatible API over it.
import { Command, InvalidArgumentError } from 'commander';
import { createApiServer } from '../api/server.js';
import { createMetrics } from '../api/metrics.js';
import { FALLBACK_REASONS, UpstreamFallback, type FallbackReason } from '../api/fallback.js';
import { openLedger } from '../ledger/open.js';
import type { Address } from '../ledger/ledger.js';
import { Gateway, WAVE_WAIT_MS } from '../gateway/gateway.js';
import { Dashboard } from '../dashboard/hub.js';
import { mountDashboard } from '../dashboard/http.js';
import { computeThreadOption, engineOption, gatewayAccountabilityConfig } from './config.js';
import { PORT, integerOption, numberOption } from './numbers.js';
import type { ComputeThread } from '../engine/types.js';
import { loadOrCreateIdentity } from '../node/run.js';
import { pino } from 'pino';
import { DEFAULT_STREAM_SPARES } from '../p2p/stream-pool.js';

export function register(program: Command): void {
  program
    .command('gateway')
    .description('serve an OpenAI-compatible API backed by a swarm of odsi nodes')
    .requiredOption('--model <path>', 'model file or HF directory (the gateway loads only tokenizer, embedding and LM head)')
    .option('--port <n>', 'HTTP port (0 = any free port)', integerOption('--port', PORT), 8080)
    .option('--host <addr>', 'HTTP listen address', '127.0.0.1')
    .option('--bootstrap <multiaddr...>', 'swarm members to join through (with /p2p/<peer id>)', [])
    .option('--listen <multiaddr...>', 'libp2p listen addresses', ['/ip4/127.0.0.1/tcp/0'])
    .option('--deadline-ms <n>', 'default per-token deadline budget for routes (ms)', integerOption('--deadline-ms', { min: 1 }))
    .addOption(engineOption('the embedding and LM head', ['reference', 'ort']))
    .addOption(computeThreadOption('the LM head (ort)'))
    .option('--stream-spares <n>', 'negotiated activation streams kept ready to each first hop just used (saves a round trip per request; 0 = none)', integerOption('--stream-spares', { min: 0 }), DEFAULT_STREAM_SPARES.spares)
    .option(
      '--waves [ms]',
      `decode steps of the sessions sharing a route enter it together, one wave per round, waiting at most ms (default ${WAVE_WAIT_MS}) for the last wave's stragglers: for nodes that share cores`,
      integerOption('--waves', { min: 0 }),
    )
    .option('--wait-route-ms <n>', 'wait up to this long for a route over every layer before reporting ready', integerOption('--wait-route-ms', { min: 0 }), 0)
    .option('--identity <file>', 'gateway key: raw hex secret or v3 keystore (ODSI_PASSPHRASE); created if absent (default: a fresh key)')
    .option('--max-concurrent <n>', 'requests generated at once before answering 503', integerOption('--max-concurrent', { min: 1 }), 64)
    .option('--max-connections <n>', 'open HTTP connections; further ones are closed at once', integerOption('--max-connections', { min: 1 }), 256)
    .option('--max-body-bytes <n>', 'largest request body (bytes); larger ones get 413', integerOption('--max-body-bytes', { min: 1 }), 2 * 1024 * 1024)
    .option('--request-timeout-ms <n>', 'a request (headers and body) must arrive within this; slower clients are cut off', integerOption('--request-timeout-ms', { min: 1 }), 30_000)
    .option('--headers-timeout-ms <n>', 'request headers must arrive within this', integerOption('--headers-timeout-ms', { min: 1 }), 10_000)
    .option('--idle-timeout-ms <n>', 'a connection with no traffic either way is closed after this', integerOption('--idle-timeout-ms', { min: 1 }), 300_000)
    .option(
      '--audit-rate <p>',
      "accountability: share of each node's steps re-executed by another node of the same layers, in [0, 1] (default ODSI_AUDIT_RATE or 0); rates ≥ 0.5 hold each step until its verdict, lower ones audit in the background",
      numberOption('--audit-rate', { min: 0, max: 1 }),
    )
    .option(
      '--audit-reputation',
      'accountability: without an audit rate, audit each node at a rate from its record of passed audits (new nodes often, proven ones rarely)',
    )
    .option('--no-dashboard', 'do not serve the web dashboard at / (the API stays under /v1)')
    .option('--fallback-url <url>', 'upstream OpenAI-compatible base URL (ending in /v1) for what the swarm cannot serve; off unless given')
    .option('--fallback-model <name>', 'model name sent to the fallback upstream (default: the name the client asked for)')
    .option('--fallback-key-env <var>', 'environment variable holding the fallback upstream API key (read once at start-up)')
    .option(
      '--fallback-when <reasons>',
      `when to fall back, comma-separated: ${FALLBACK_REASONS.join(',')} (default: all; failure = a route failing mid-generation beyond repair)`,
      whenArg,
    )
    .option('--fallback-timeout-ms <n>', 'fallback upstream request time-out (ms)', integerOption('--fallback-timeout-ms', { min: 1 }), 120_000)
    .option('--ledger <spec>', 'ledger for evidence, per-epoch payments and reputation, and stake-aware routing: sqlite:PATH | evm:RPC_URL@ADDRESS')
    .option('--ledger-account <address>', 'with --ledger: the client account requests are charged to (default: the gateway\'s own address)')
    .option('--epoch-ms <n>', 'with --ledger: settle payments and publish reputation this often (ms)', integerOption('--epoch-ms', { min: 0 }), 60_000)
    .action(
      async (o: {
        ledger?: string;
        ledgerAccount?: string;
        epochMs: number;
        model: string;
        port: number;
        host: string;
        bootstrap: string[];
        listen: string[];
        deadlineMs?: number;
        engine: 'reference' | 'ort';
        computeThread: ComputeThread;
        waitRouteMs: number;
        streamSpares: number;
        waves?: true | number;
        maxConcurrent: number;
        maxConnections: number;
        maxBodyBytes: number;
        requestTimeoutMs: number;
        headersTimeoutMs: number;
        idleTimeoutMs: number;
        identity?: string;
        auditRate?: number;
        auditReputation?: boolean;
        dashboard: boolean;
        fallbackUrl?: string;
        fallbackModel?: string;
        fallbackKeyEnv?: string;
        fallbackWhen?: FallbackReason[];
        fallbackTimeoutMs: number;
      }) => {
        const accountability = gatewayAccountabilityConfig({ auditRate: o.auditRate, reputation: o.auditReputation }); // before anything starts: ODSI_AUDIT_RATE checked
        if (!o.fallbackUrl && (o.fallbackModel || o.fallbackKeyEnv || o.fallbackWhen))
          throw new Error('--fallback-model, --fallback-key-env and --fallback-when need --fallback-url');
        let apiKey: string | undefined;
        if (o.fallbackKeyEnv) {
          apiKey = process.env[o.fallbackKeyEnv]; // read once, here; never logged
          if (!apiKey) throw new Error(`--fallback-key-env ${o.fallbackKeyEnv}: that environment variable is not set`);
        }
        const fallback = o.fallbackUrl
          ? new UpstreamFallback({
              url: o.fallbackUrl,
              model: o.fallbackModel,
              apiKey,
              when: o.fallbackWhen,
              timeoutMs: o.fallbackTimeoutMs,
            })
          : undefined;
        if (o.ledgerAccount !== undefined && !/^0x[0-9a-fA-F]{40}$/.test(o.ledgerAccount))
          throw new Error(`--ledger-account must be an address (0x + 40 hex digits), got '${o.ledgerAccount}'`);
        // everything is read: now load (or create) the key and open what the gateway holds
        const log = pino({ level: 'info', base: { svc: 'odsi-gateway' } }, pino.destination(2));
        const identity = await loadOrCreateIdentity(o.identity, process.env.ODSI_PASSPHRASE, log);
        const metrics = createMetrics();
        const ledger = o.ledger ? await openLedger(o.ledger, { worker: true }) : undefined; // SQLite work off the token path
        const gw = await Gateway.start({
          ...(ledger ? { ledger: { ledger, account: (o.ledgerAccount ?? identity.address) as Address, epochMs: o.epochMs } } : {}),
          identity,
          metrics: metrics.registry,
          // no swarm to join and a fallback: every request goes upstream (no lookups to wait for)
          peers: fallback && !o.bootstrap.length ? [] : undefined,
          modelPath: o.model,
          bootstrap: o.bootstrap,
          listen: o.listen,
          deadlineMs: o.deadlineMs,
          engine: o.engine,
          computeThread: o.computeThread,
          streamSpares: o.streamSpares,
          waves: o.waves === undefined ? false : o.waves === true ? true : { waitMs: o.waves },
          accountability,
        });
        const api = createApiServer(gw, {
          metrics,
          fallback,
          deadlineMs: o.deadlineMs,
          maxConcurrent: o.maxConcurrent,
          maxConnections: o.maxConnections,
          maxBodyBytes: o.maxBodyBytes,
          requestTimeoutMs: o.requestTimeoutMs,
          headersTimeoutMs: o.headersTimeoutMs,
          idleTimeoutMs: o.idleTimeoutMs,
          onUsage: (u, request) => gw.chargeUsage(u.total_tokens, request),
          onEnd: (request) => gw.endRequest(request),
        });
        if (o.dashboard) mountDashboard(api.app, new Dashboard(gw, { fallback: fallback && (() => fallback.describe()) }));
        let stopping = false;
        const stop = async (code: number) => {
          if (stopping) return;
          stopping = true;
          await api.close().catch(() => undefined);
          await gw.close().catch(() => undefined); // settles the open epoch
          await ledger?.close().catch(() => undefined);
          process.exit(code);
        };
        process.once('SIGINT', () => void stop(0));
        process.once('SIGTERM', () => void stop(0));
        try {
          if (o.waitRouteMs > 0) await gw.waitForRoute(o.waitRouteMs).catch(() => undefined);
          const url = await api.listen(o.port, o.host);
          const st = gw.status();
          process.stdout.write(
            JSON.stringify({
              event: 'ready',
              api: `${url}/v1`,
              url,
              model: gw.model.id,
              modelId: gw.modelId,
              peerId: gw.host.peerId,
              addrs: gw.host.addrs(),
              ...(o.dashboard ? { dashboard: `${url}/` } : {}),
              routeReady: st.ready,
              reason: st.reason,
              ...(fallback ? { fallback: fallback.describe() } : {}),
            }) + '\n',
          );
        } catch (e) {
          await api.close().catch(() => undefined);
          await gw.close().catch(() => undefined);
          throw e;
        }
      },
    );
}

function whenArg(v: string): FallbackReason[] {
  const out = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const w of out)
    if (!FALLBACK_REASONS.includes(w as FallbackReason))
      throw new InvalidArgumentError(`unknown reason '${w}'; use ${FALLBACK_REASONS.join(', ')}`);
  if (!out.length) throw new InvalidArgumentError('name at least one reason');
  return out as FallbackReason[];
}
