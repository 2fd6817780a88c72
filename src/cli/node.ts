// `odsi node`: serve a contiguous range of a model's decoder layers to the swarm.
// Prints one JSON line on stdout when ready ({event:'ready', peerId, addrs, engine,
// computeThread, ...}); logs go to stderr (pino). SIGINT/SIGTERM stop it cleanly. The node's environment settings are read
// here, once, and passed down:
//   ODSI_ACCOUNTABILITY=0  no receipts, commitments or audits   ODSI_CHAIN_ID  the records' domain
//   ODSI_PASSPHRASE        unlocks a keystore                    ODSI_ALLOW_FAULTS=1  allow --fault (tests, demos)
//   ODSI_CRYPTO_WORKER     1: check upstream receipts on a worker thread, 0: on the main thread,
//                          auto (default): a worker unless secp256k1 is the native addon
import { join } from 'node:path';
import { Option, type Command } from 'commander';
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
import type { EngineKind } from '../engine/create.js';
import { computeThreadOption, engineOption } from './config.js';
import { PORT, integerOption, numberOption } from './numbers.js';

interface NodeCliOptions {
  model: string;
  layers: string;
  listen: string[];
  bootstrap: string[];
  identity?: string;
  dataDir?: string;
  engine: EngineKind;
  threads?: number;
  computeThread: ComputeThread;
  kvBudgetMb: number;
  batchTokens: number;
  prefillChunk: number;
  announceInterval: number;
  memoryMb?: number;
  modelId?: string;
  idleTimeout: number;
  benchTokens: number;
  logLevel: string;
  fault: string[];
  maxSessionsPerPeer: number;
  maxKvShare: number;
  maxStreamsPerPeer: number;
  streamIdleTimeout: number;
  maxStepTokens: number;
  maxConnectionsPerPeer: number;
  streamOpensPerSec: number;
  streamSpares: number;
  streamSpareIdle: number;
  auditWindow: number;
  auditFetchesPerMinute: number;
  auditFetchesInFlight: number;
  reexecPerMinute: number;
  reexecInFlight: number;
  metricsPort?: number;
  metricsHost: string;
  protectionDb?: string;
  protectionSync: ProtectionSync;
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
      challengeWindowMs: o.auditWindow,
      auditFetch: { perMinute: o.auditFetchesPerMinute, inFlight: o.auditFetchesInFlight },
    },
    reexec: { perPeer: { perMinute: o.reexecPerMinute, inFlight: o.reexecInFlight } },
  };
}

/** a count, size or duration flag: an integer ≥ 1 */
const positive = (flag: string) => integerOption(flag, { min: 1 });

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
    .addOption(
      new Option('--protection-sync <mode>', "fsync each session's protection record (full: once per session), or leave it to the OS: survives a killed process, not a power cut (normal)")
        .choices(['full', 'normal'] satisfies ProtectionSync[])
        .default('full'),
    )
    .addOption(engineOption('the layers'))
    .option('--threads <n>', 'engine threads (ort, llama)', positive('--threads'))
    .addOption(computeThreadOption('the engine (ort, llama)'))
    .option('--kv-budget-mb <n>', 'memory for KV caches across sessions, as the engine stores them (the engine stays within it: ORT admits sessions against four fifths, leaving batched attention at least a fifth; llama sizes its KV cells by it, F16 in its 4-bit profiles)', positive('--kv-budget-mb'), 512)
    .option('--batch-tokens <n>', 'continuous batching: tokens one scheduler iteration computes across sessions', positive('--batch-tokens'), 64)
    .option('--prefill-chunk <n>', 'continuous batching: most prompt tokens one session adds to an iteration', positive('--prefill-chunk'), 32)
    .option('--announce-interval <ms>', 'advert refresh interval (adverts expire after 3 intervals)', positive('--announce-interval'), 30_000)
    .option('--memory-mb <n>', 'weight memory for --layers auto (default: half the free memory)', positive('--memory-mb'))
    .option('--model-id <id>', 'trust this model id instead of hashing the model')
    .option('--idle-timeout <ms>', 'free a session after this long without a step', positive('--idle-timeout'), 300_000)
    .option('--bench-tokens <n>', 'prompt tokens for the start-up compute benchmark (0 = skip)', integerOption('--bench-tokens', { min: 0 }), 8)
    .option('--log-level <level>', 'pino log level', 'info')
    // per remote peer bounds (docs/threat-model.md, "Limits per peer")
    .option('--max-sessions-per-peer <n>', 'sessions one remote peer may hold open', positive('--max-sessions-per-peer'), DEFAULT_PEER_LIMITS.maxSessionsPerPeer)
    .option('--max-kv-share <f>', 'fraction (0, 1] of the KV budget one remote peer may reserve', numberOption('--max-kv-share', { min: 0, max: 1, aboveMin: true }), DEFAULT_PEER_LIMITS.maxKvShare)
    .option('--max-streams-per-peer <n>', 'open inbound streams one remote peer may hold per protocol', positive('--max-streams-per-peer'), DEFAULT_PEER_LIMITS.maxStreamsPerPeer)
    .option('--stream-idle-timeout <ms>', 'close an inbound stream with no complete message and no live session after this long', positive('--stream-idle-timeout'), DEFAULT_PEER_LIMITS.streamIdleMs)
    .option('--max-step-tokens <n>', 'f32 rows one STEP may carry, i.e. the bytes buffered per stream (f16 and bf16 steps carry twice as many rows)', positive('--max-step-tokens'), DEFAULT_PEER_LIMITS.maxStepTokens)
    .option('--max-connections-per-peer <n>', 'connections one remote peer may hold', positive('--max-connections-per-peer'), DEFAULT_MAX_CONNECTIONS_PER_PEER)
    .option('--stream-spares <n>', 'negotiated streams kept ready to each next hop and gateway just used (saves a round trip per session open; 0 = none)', integerOption('--stream-spares', { min: 0 }), DEFAULT_STREAM_SPARES.spares)
    .option('--stream-spare-idle <ms>', "close a spare kept unused this long (keep it below the next hops' --stream-idle-timeout)", positive('--stream-spare-idle'), DEFAULT_STREAM_SPARES.maxIdleMs)
    .option('--stream-opens-per-sec <n>', 'inbound streams one remote peer may open per second (bursts of 4 s allowed)', positive('--stream-opens-per-sec'), DEFAULT_PEER_LIMITS.streamOpensPerSec)
    // accountability (ODSI_ACCOUNTABILITY=1): what is kept for auditors, and per-peer audit bounds
    .option('--audit-window <ms>', 'keep committed steps for auditors this long after a session\'s last step', positive('--audit-window'), DEFAULT_ARCHIVE_LIMITS.challengeWindowMs)
    .option('--audit-fetches-per-minute <n>', 'audit fetches one remote peer may make per minute', positive('--audit-fetches-per-minute'), DEFAULT_ARCHIVE_LIMITS.auditFetch.perMinute)
    .option('--audit-fetches-in-flight <n>', 'audit fetches of one remote peer served at once', positive('--audit-fetches-in-flight'), DEFAULT_ARCHIVE_LIMITS.auditFetch.inFlight)
    .option('--reexec-per-minute <n>', 're-execution requests one remote peer may make per minute', positive('--reexec-per-minute'), DEFAULT_REEXEC_LIMITS.perPeer.perMinute)
    .option('--reexec-in-flight <n>', 're-executions of one remote peer served at once', positive('--reexec-in-flight'), DEFAULT_REEXEC_LIMITS.perPeer.inFlight)
    .option('--metrics-port <n>', 'serve Prometheus metrics at http://<metrics-host>:<n>/metrics (0 = any free port; off unless given)', integerOption('--metrics-port', PORT))
    .option('--metrics-host <addr>', 'listen address of the metrics endpoint', '127.0.0.1')
    // test/demo fault injection, refused unless ODSI_ALLOW_FAULTS=1
    .option(
      '--fault <spec>',
      'inject a fault, e.g. crash@N, stall@N, delay:MS, noise:STD@N (tests/demos only; needs ODSI_ALLOW_FAULTS=1)',
      collect,
      [],
    )
    .action(async (o: NodeCliOptions) => {
      const env = process.env;
      const faults = createNodeFaults(o.fault, env.ODSI_ALLOW_FAULTS === '1'); // before anything loads: a refused fault stops here
      const log = pino({ level: o.logLevel, base: { svc: 'odsi-node' } }, pino.destination(2));
      const accountability = accountabilityFrom(env, o);
      const probe = openModel(o.model); // the header only: the layer count that --layers is read against
      const nLayers = probe.config.nLayers;
      probe.close();
      const layers = parseLayers(o.layers, nLayers);
      // everything is read: now open what the node holds
      const ledger = o.ledger ? await openLedger(o.ledger, { worker: true }) : undefined; // SQLite work off the token path
      const stake = ledger ? await LedgerStakeView.open(ledger, { onError: (e) => log.warn({ err: e.message }, 'ledger read failed') }) : undefined;
      const node = await runNode({
        model: o.model,
        layers,
        listen: o.listen,
        bootstrap: o.bootstrap,
        identityFile: o.identity,
        dataDir: o.dataDir,
        engine: o.engine,
        threads: o.threads,
        computeThread: o.computeThread,
        kvBudgetMb: o.kvBudgetMb,
        batching: { tokenBudget: o.batchTokens, chunkTokens: o.prefillChunk },
        announceIntervalMs: o.announceInterval,
        memoryMb: o.memoryMb,
        modelId: o.modelId,
        idleTimeoutMs: o.idleTimeout,
        benchTokens: o.benchTokens,
        passphrase: env.ODSI_PASSPHRASE,
        peerLimits: {
          maxSessionsPerPeer: o.maxSessionsPerPeer,
          maxKvShare: o.maxKvShare,
          maxStreamsPerPeer: o.maxStreamsPerPeer,
          streamIdleMs: o.streamIdleTimeout,
          maxStepTokens: o.maxStepTokens,
          streamOpensPerSec: o.streamOpensPerSec,
        },
        maxConnectionsPerPeer: o.maxConnectionsPerPeer,
        streamSpares: o.streamSpares,
        streamSpareIdleMs: o.streamSpareIdle,
        accountability,
        protectionDb: protectionDbPath(o),
        protectionSync: o.protectionSync,
        stake,
        decorate: faults,
        metricsPort: o.metricsPort,
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
