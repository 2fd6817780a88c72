// `odsi node`: serve a contiguous range of a model's decoder layers to the swarm.
// Prints one JSON line on stdout when ready ({event:'ready', peerId, addrs, engine,
// computeThread, ...}); logs go to stderr (pino). SIGINT/SIGTERM stop it cleanly. The node's environment settings are read
// here, once, and passed down:
//   ODSI_ACCOUNTABILITY=0  no receipts, commitments or audits   ODSI_CHAIN_ID  the records' domain
//   ODSI_PASSPHRASE        unlocks a keystore                    ODSI_ALLOW_FAULTS=1  allow --fault (tests, demos)
//   ODSI_CRYPTO_WORKER     1: check upstream receipts on a worker thread, 0: on the main thread,
//                          auto (default): a worker unless secp256k1 is the native addon
import { join } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { runNode, type NodeAccountability } from '../node/run.js';
import { parseLayers } from '../node/placement.js';
import { openModel } from '../model/load.js';
import { accountabilityEnabled, deploymentDomain } from '../accountability/records/wire.js';
import { useCryptoWorker } from '../accountability/records/crypto-pool.js';
import { ecdsa } from '../identity/ecdsa.js';
import { createNodeFaults } from '../testing/inject.js';
import { DEFAULT_PEER_LIMITS } from '../node/peer-limits.js';
import { DEFAULT_ARCHIVE_LIMITS } from '../accountability/node/step-archive.js';
import { DEFAULT_REEXEC_LIMITS } from '../accountability/node/audit-exec.js';
import type { ProtectionSync } from '../accountability/node/slashing-protection.js';
import { openLedger } from '../ledger/open.js';
import { LedgerStakeView } from '../ledger/stake-view.js';
import { DEFAULT_MAX_CONNECTIONS_PER_PEER } from '../p2p/host.js';
import { DEFAULT_STREAM_SPARES } from '../p2p/stream-pool.js';
import type { ComputeThread } from '../engine/types.js';
import { computeThreadOption } from './config.js';
import { PORT, parseInteger, parseNumber } from './numbers.js';

interface NodeCliOptions {
  model: string;
  layers: string;
  listen: string[];
  bootstrap: string[];
  identity?: string;
  dataDir?: string;
  engine: string;
  threads?: string;
  computeThread: ComputeThread;
  kvBudgetMb: string;
  batchTokens: string;
  prefillChunk: string;
  announceInterval: string;
  memoryMb?: string;
  modelId?: string;
  idleTimeout: string;
  benchTokens: string;
  logLevel: string;
  fault: string[];
  maxSessionsPerPeer: string;
  maxKvShare: string;
  maxStreamsPerPeer: string;
  streamIdleTimeout: string;
  maxStepTokens: string;
  maxConnectionsPerPeer: string;
  streamOpensPerSec: string;
  streamSpares: string;
  streamSpareIdle: string;
  auditWindow: string;
  auditFetchesPerMinute: string;
  auditFetchesInFlight: string;
  reexecPerMinute: string;
  reexecInFlight: string;
  metricsPort?: string;
  metricsHost: string;
  protectionDb?: string;
  protectionSync: string;
  ledger?: string;
}

const collect = (v: string, prev: string[]) => [...prev, v];

/** Accountability as the environment sets it (undefined: off), with the audit bounds of the flags. */
function accountabilityFrom(env: NodeJS.ProcessEnv, o: NodeCliOptions): NodeAccountability | undefined {
  if (!accountabilityEnabled(env)) return undefined;
  return {
    domain: deploymentDomain(env),
    cryptoWorker: useCryptoWorker(env.ODSI_CRYPTO_WORKER, ecdsa().name),
    archive: {
      challengeWindowMs: positive('--audit-window', o.auditWindow),
      auditFetch: {
        perMinute: positive('--audit-fetches-per-minute', o.auditFetchesPerMinute),
        inFlight: positive('--audit-fetches-in-flight', o.auditFetchesInFlight),
      },
    },
    reexec: {
      perPeer: { perMinute: positive('--reexec-per-minute', o.reexecPerMinute), inFlight: positive('--reexec-in-flight', o.reexecInFlight) },
    },
  };
}

/** a count, size or duration flag: an integer ≥ 1 */
const positive = (flag: string, v: string): number => parseInteger(flag, v, { min: 1 });

function protectionSync(v: string): ProtectionSync {
  if (v !== 'full' && v !== 'normal') throw new Error(`--protection-sync must be "full" or "normal", got "${v}"`);
  return v;
}

/** The slashing-protection file: given, else beside the identity file; none for a throwaway identity. */
function protectionDbPath(o: NodeCliOptions): string | undefined {
  if (o.protectionDb) return o.protectionDb;
  if (o.identity) return `${o.identity}.protection.db`;
  return o.dataDir ? join(o.dataDir, 'protection.db') : undefined;
}

export function register(program: Command): void {
  program
    .command('node')
    .description('serve a range of decoder layers to the swarm (libp2p, private Kademlia DHT)')
    .requiredOption('-m, --model <path>', 'GGUF file or Hugging Face model directory')
    .requiredOption('-l, --layers <a:b|auto>', 'decoder layers [a, b) to serve, or "auto" to fill the weakest coverage')
    .option('--listen <multiaddr>', 'listen address (repeatable)', collect, [])
    .option('--bootstrap <multiaddr>', 'peer to join through, with /p2p/<id> (repeatable)', collect, [])
    .option('--identity <file>', 'node key: raw hex secret or v3 keystore (ODSI_PASSPHRASE); created if absent')
    .option('--data-dir <dir>', 'directory for node state (identity at <dir>/node.key when --identity is not given)')
    .option(
      '--protection-db <file>',
      'slashing-protection database (SQLite) of the sessions this key signed for; default <identity>.protection.db, or <data-dir>/protection.db',
    )
    .option('--ledger <spec>', 'read stake from this ledger: slashed identities are refused, staked ones get larger per-peer limits (sqlite:PATH | evm:RPC_URL@ADDRESS)')
    .option('--protection-sync <full|normal>', "fsync each session's protection record (full: once per session), or leave it to the OS: survives a killed process, not a power cut (normal)", 'full')
    .option('--engine <ort|reference|llama>', 'execution engine', 'reference')
    .option('--threads <n>', 'engine threads (ort, llama)')
    .addOption(computeThreadOption('the engine (ort, llama)'))
    .option('--kv-budget-mb <n>', 'memory for KV caches across sessions, as the engine stores them (the engine stays within it: ORT admits sessions against four fifths, leaving batched attention at least a fifth; llama sizes its KV cells by it, F16 in its 4-bit profiles)', '512')
    .option('--batch-tokens <n>', 'continuous batching: tokens one scheduler iteration computes across sessions', '64')
    .option('--prefill-chunk <n>', 'continuous batching: most prompt tokens one session adds to an iteration', '32')
    .option('--announce-interval <ms>', 'advert refresh interval (adverts expire after 3 intervals)', '30000')
    .option('--memory-mb <n>', 'weight memory for --layers auto (default: half the free memory)')
    .option('--model-id <id>', 'trust this model id instead of hashing the model')
    .option('--idle-timeout <ms>', 'free a session after this long without a step', '300000')
    .option('--bench-tokens <n>', 'prompt tokens for the start-up compute benchmark (0 = skip)', '8')
    .option('--log-level <level>', 'pino log level', 'info')
    // per remote peer bounds (docs/threat-model.md, "Limits per peer")
    .option('--max-sessions-per-peer <n>', 'sessions one remote peer may hold open', String(DEFAULT_PEER_LIMITS.maxSessionsPerPeer))
    .option('--max-kv-share <f>', 'fraction (0, 1] of the KV budget one remote peer may reserve', String(DEFAULT_PEER_LIMITS.maxKvShare))
    .option('--max-streams-per-peer <n>', 'open inbound streams one remote peer may hold per protocol', String(DEFAULT_PEER_LIMITS.maxStreamsPerPeer))
    .option('--stream-idle-timeout <ms>', 'close an inbound stream with no complete message and no live session after this long', String(DEFAULT_PEER_LIMITS.streamIdleMs))
    .option('--max-step-tokens <n>', 'f32 rows one STEP may carry, i.e. the bytes buffered per stream (f16 and bf16 steps carry twice as many rows)', String(DEFAULT_PEER_LIMITS.maxStepTokens))
    .option('--max-connections-per-peer <n>', 'connections one remote peer may hold', String(DEFAULT_MAX_CONNECTIONS_PER_PEER))
    .option('--stream-spares <n>', 'negotiated streams kept ready to each next hop and gateway just used (saves a round trip per session open; 0 = none)', String(DEFAULT_STREAM_SPARES.spares))
    .option('--stream-spare-idle <ms>', "close a spare kept unused this long (keep it below the next hops' --stream-idle-timeout)", String(DEFAULT_STREAM_SPARES.maxIdleMs))
    .option('--stream-opens-per-sec <n>', 'inbound streams one remote peer may open per second (bursts of 4 s allowed)', String(DEFAULT_PEER_LIMITS.streamOpensPerSec))
    // accountability (ODSI_ACCOUNTABILITY=1): what is kept for auditors, and per-peer audit bounds
    .option('--audit-window <ms>', 'keep committed steps for auditors this long after a session\'s last step', String(DEFAULT_ARCHIVE_LIMITS.challengeWindowMs))
    .option('--audit-fetches-per-minute <n>', 'audit fetches one remote peer may make per minute', String(DEFAULT_ARCHIVE_LIMITS.auditFetch.perMinute))
    .option('--audit-fetches-in-flight <n>', 'audit fetches of one remote peer served at once', String(DEFAULT_ARCHIVE_LIMITS.auditFetch.inFlight))
    .option('--reexec-per-minute <n>', 're-execution requests one remote peer may make per minute', String(DEFAULT_REEXEC_LIMITS.perPeer.perMinute))
    .option('--reexec-in-flight <n>', 're-executions of one remote peer served at once', String(DEFAULT_REEXEC_LIMITS.perPeer.inFlight))
    .option('--metrics-port <n>', 'serve Prometheus metrics at http://<metrics-host>:<n>/metrics (0 = any free port; off unless given)')
    .option('--metrics-host <addr>', 'listen address of the metrics endpoint', '127.0.0.1')
    // test/demo fault injection, refused unless ODSI_ALLOW_FAULTS=1
    .option(
      '--fault <spec>',
      'inject a fault, e.g. crash@N, stall@N, delay:MS, noise:STD@N (tests/demos only; needs ODSI_ALLOW_FAULTS=1)',
      collect,
      [],
    )
    .action(async (o: NodeCliOptions) => {
      if (o.engine !== 'ort' && o.engine !== 'reference' && o.engine !== 'llama') throw new Error(`--engine must be "ort", "reference" or "llama", got "${o.engine}"`);
      const env = process.env;
      const faults = createNodeFaults(o.fault, env.ODSI_ALLOW_FAULTS === '1'); // before anything loads: a refused fault stops here
      const log = pino({ level: o.logLevel, base: { svc: 'odsi-node' } }, pino.destination(2));
      const ledger = o.ledger ? await openLedger(o.ledger, { worker: true }) : undefined; // SQLite work off the token path
      const stake = ledger ? await LedgerStakeView.open(ledger, { onError: (e) => log.warn({ err: e.message }, 'ledger read failed') }) : undefined;
      const probe = openModel(o.model);
      const nLayers = probe.config.nLayers;
      probe.close();
      const node = await runNode({
        model: o.model,
        layers: parseLayers(o.layers, nLayers),
        listen: o.listen,
        bootstrap: o.bootstrap,
        identityFile: o.identity,
        dataDir: o.dataDir,
        engine: o.engine,
        threads: o.threads ? positive('--threads', o.threads) : undefined,
        computeThread: o.computeThread,
        kvBudgetMb: positive('--kv-budget-mb', o.kvBudgetMb),
        batching: { tokenBudget: positive('--batch-tokens', o.batchTokens), chunkTokens: positive('--prefill-chunk', o.prefillChunk) },
        announceIntervalMs: positive('--announce-interval', o.announceInterval),
        memoryMb: o.memoryMb ? positive('--memory-mb', o.memoryMb) : undefined,
        modelId: o.modelId,
        idleTimeoutMs: positive('--idle-timeout', o.idleTimeout),
        benchTokens: parseInteger('--bench-tokens', o.benchTokens, { min: 0 }),
        passphrase: env.ODSI_PASSPHRASE,
        peerLimits: {
          maxSessionsPerPeer: positive('--max-sessions-per-peer', o.maxSessionsPerPeer),
          maxKvShare: parseNumber('--max-kv-share', o.maxKvShare, { min: 0, max: 1, aboveMin: true }),
          maxStreamsPerPeer: positive('--max-streams-per-peer', o.maxStreamsPerPeer),
          streamIdleMs: positive('--stream-idle-timeout', o.streamIdleTimeout),
          maxStepTokens: positive('--max-step-tokens', o.maxStepTokens),
          streamOpensPerSec: positive('--stream-opens-per-sec', o.streamOpensPerSec),
        },
        maxConnectionsPerPeer: positive('--max-connections-per-peer', o.maxConnectionsPerPeer),
        streamSpares: parseInteger('--stream-spares', o.streamSpares, { min: 0 }),
        streamSpareIdleMs: positive('--stream-spare-idle', o.streamSpareIdle),
        accountability: accountabilityFrom(env, o),
        protectionDb: protectionDbPath(o),
        protectionSync: protectionSync(o.protectionSync),
        stake,
        decorate: faults,
        metricsPort: o.metricsPort === undefined ? undefined : parseInteger('--metrics-port', o.metricsPort, PORT),
        metricsHost: o.metricsHost,
        log,
      });
      const a = node.advert();
      process.stdout.write(
        JSON.stringify({
          event: 'ready',
          peerId: node.host.peerId,
          addrs: node.host.addrs(),
          modelId: node.modelId,
          start: a.start,
          end: a.end,
          msPerToken: a.msPerToken,
          prefillMsPerToken: a.prefillMsPerToken,
          engine: a.engine,
          ...(node.stage.computeThread ? { computeThread: node.stage.computeThread } : {}),
          pid: process.pid,
          ...(node.metricsUrl ? { metrics: node.metricsUrl } : {}),
        }) + '\n',
      );
      log.info({ peerId: node.host.peerId, addrs: node.host.addrs(), start: a.start, end: a.end }, 'node ready');
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          log.info({ sig }, 'stopping');
          const force = setTimeout(() => process.exit(1), 5000);
          force.unref();
          stake?.stop();
          void ledger?.close();
          node.stop().then(resolve, (e: Error) => {
            log.error({ err: e.message }, 'stop failed');
            resolve();
          });
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      log.flush?.();
      process.exit(0);
    });
}
