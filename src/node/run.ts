// An odsi execution node: load only its layers, measure itself, join the DHT, announce a
// signed advert on a timer, serve sessions until stopped. Everything configurable arrives in
// NodeOptions (the CLI reads the environment once at start-up).

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { freemem } from 'node:os';
import type { Logger } from 'pino';
import { createStage, type EngineKind } from '../engine/create.js';
import type { ComputeThread, Stage } from '../engine/types.js';
import { generateIdentity, identityFromSecret, hexToBytes, bytesToHex, type Identity } from '../identity/identity.js';
import { loadIdentity, saveIdentity } from '../identity/keystore.js';
import { rangeBytes } from '../model/reads.js';
import { loadProgress } from '../util/progress.js';
import { openModel } from '../model/load.js';
import { modelIdentity } from '../model/identity.js';
import { layerTensorNames, type WeightSource } from '../model/types.js';
import { signAdvert, type NodeAdvert } from '../p2p/advert-record.js';
import { findAdverts, publishAdvert, serveAdverts } from '../p2p/adverts.js';
import { createHost, type OdsiHost } from '../p2p/host.js';
import { chooseLayers } from './placement.js';
import { PerfMeter, benchmarkStage } from './perf.js';
import { NodeServer } from './server.js';
import { sendOnward, type SendOnward } from './executor.js';
import { NodeMetrics, serveMetrics } from './metrics.js';
import { PeerLimits, type PeerLimitsOptions } from './peer-limits.js';
import { limitWeight, type StakeView } from '../routing/stake.js';
import { NO_STAMPER, type StepStamper } from './stamper.js';
import { errorSigner, type ErrorSigner } from '../protocol/error-signature.js';
import { NodeStamper } from '../accountability/node/stamper.js';
import type { ArchiveLimits } from '../accountability/node/step-archive.js';
import type { ReexecLimits } from '../accountability/node/audit-exec.js';
import { CryptoPool } from '../accountability/records/crypto-pool.js';
import { SlashingProtectionDb, type ProtectionSync } from '../accountability/node/slashing-protection.js';
import type { OdsiDomain } from '../accountability/records/eip712.js';
import { kvBudgetOf } from './kv-budget.js';

export const NODE_VERSION = 'odsi/0.1.0';

export interface NodeOptions {
  model: string;
  layers: [number, number] | 'auto';
  listen?: string[];
  bootstrap?: string[];
  identityFile?: string;
  dataDir?: string;
  engine?: EngineKind;
  threads?: number;
  /** where the engine computes (ORT, llama): its own worker thread (default) or this process's main thread */
  computeThread?: ComputeThread;
  kvBudgetMb?: number;
  /** continuous batching: tokens per scheduler iteration, longest prompt chunk in one */
  batching?: { tokenBudget?: number; chunkTokens?: number };
  announceIntervalMs?: number;
  /** memory for weights when choosing layers automatically (default: half the free memory) */
  memoryMb?: number;
  /** skip hashing the model: trust this id (e.g. from a manifest made elsewhere) */
  modelId?: string;
  idleTimeoutMs?: number;
  /** prompt tokens for the start-up benchmark (0: skip it and start from a nominal estimate) */
  benchTokens?: number;
  passphrase?: string;
  /** per remote peer bounds (unset members: DEFAULT_PEER_LIMITS) */
  peerLimits?: Partial<PeerLimitsOptions>;
  /** connections one remote peer may hold to this node (default: the host's) */
  maxConnectionsPerPeer?: number;
  /** negotiated onward streams kept ready per peer just used (default 1; 0: none; p2p/stream-pool.ts) */
  streamSpares?: number;
  /** a spare kept unused this long is closed (default 20 s; keep it below the next hops' --stream-idle-timeout) */
  streamSpareIdleMs?: number;
  /** receipts, commitments and audits (absent: accountability is off) */
  accountability?: NodeAccountability;
  /** stake (e.g. the ledger's view): scales each remote peer's limits (PeerLimits.weight); an excluded identity is refused */
  stake?: StakeView;
  /** SQLite file of the sessions this key signed for (slashing protection across restarts); absent: in memory only */
  protectionDb?: string;
  /** how durably each session's record is written (default 'full': fsync, once per session) */
  protectionSync?: ProtectionSync;
  /** wrappers applied once the node is measured (the CLI's test-only fault injection) */
  decorate?: NodeDecorators;
  /** serve Prometheus metrics at http://<metricsHost>:<metricsPort>/metrics (0 = any free port) */
  metricsPort?: number;
  /** default 127.0.0.1 */
  metricsHost?: string;
  log: Logger;
}

export interface NodeAccountability {
  /** the deployment's EIP-712 domain */
  domain: OdsiDomain;
  /** sign and check on a worker thread (false: on the main thread) */
  cryptoWorker: boolean;
  /** how long and how much the node keeps for auditors, and how often one peer may fetch (unset: DEFAULT_ARCHIVE_LIMITS) */
  archive?: Partial<ArchiveLimits>;
  /** re-execution requests per peer (unset: DEFAULT_REEXEC_LIMITS) */
  reexec?: Partial<ReexecLimits>;
}

/** Wrappers around the node's parts, applied at start-up after the benchmark. */
export interface NodeDecorators {
  stage?(stage: Stage): Stage;
  /** only applied when the node is accountable */
  stamper?(stamper: StepStamper, signer: { identity: Identity; domain: OdsiDomain }): StepStamper;
  /** wraps the signer of the node's ERRORs (protocol/error-signature.ts) */
  errors?(sign: ErrorSigner): ErrorSigner;
  /** wraps how steps' outputs and receipts go on to the next hop (node/executor.ts) */
  onward?(send: SendOnward): SendOnward;
}

export interface RunningNode {
  host: OdsiHost;
  server: NodeServer;
  stage: Stage;
  modelId: string;
  advert(): NodeAdvert;
  /** the metrics URL, when metricsPort was given */
  metricsUrl?: string;
  stop(): Promise<void>;
}

/** Raw hex secret or v3 keystore; a missing file gets a new identity (keystore if a passphrase is set). */
export async function loadOrCreateIdentity(file: string | undefined, passphrase: string | undefined, log: Logger): Promise<Identity> {
  if (!file) return generateIdentity();
  if (existsSync(file)) {
    const text = readFileSync(file, 'utf8').trim();
    if (/^(0x)?[0-9a-fA-F]{64}$/.test(text)) return identityFromSecret(hexToBytes(text.replace(/^0x/, '')));
    if (passphrase === undefined) throw new Error(`${file} is a keystore: set ODSI_PASSPHRASE to unlock it`);
    return loadIdentity(file, passphrase);
  }
  mkdirSync(dirname(file), { recursive: true });
  const id = generateIdentity();
  if (passphrase !== undefined) await saveIdentity(file, id, passphrase);
  else writeFileSync(file, bytesToHex(id.secret) + '\n', { mode: 0o600 });
  log.info({ file, peerId: id.peerId.toString(), keystore: passphrase !== undefined }, 'created a new node identity');
  return id;
}

/** f32 bytes of one decoder layer's weights (what an engine that dequantizes holds). */
export function layerBytesF32(src: WeightSource, l: number): number {
  let n = 0;
  for (const name of layerTensorNames(l)) if (src.has(name)) n += src.info(name).shape.reduce((a, b) => a * b, 1) * 4;
  return n;
}

export async function runNode(o: NodeOptions): Promise<RunningNode> {
  const log = o.log;
  const src = openModel(o.model);
  const c = src.config;
  const modelId = o.modelId ?? modelIdentity(src).modelId;
  const identityFile = o.identityFile ?? (o.dataDir ? join(o.dataDir, 'node.key') : undefined);
  const identity = await loadOrCreateIdentity(identityFile, o.passphrase, log);
  const host = await createHost({ identity, listen: o.listen, bootstrap: o.bootstrap, maxConnectionsPerPeer: o.maxConnectionsPerPeer });
  let protection: SlashingProtectionDb | undefined;
  try {
    let range: [number, number];
    if (o.layers === 'auto') {
      const memBytes = (o.memoryMb ?? freemem() / 2 / 2 ** 20) * 2 ** 20;
      const maxLayers = Math.max(1, Math.floor(memBytes / Math.max(1, layerBytesF32(src, 0))));
      // give the DHT a moment to learn peers from the bootstrap nodes (bounded)
      const rt = host.libp2p.services.dht as unknown as { routingTable?: { size: number } };
      for (let i = 0; i < 30 && (o.bootstrap?.length ?? 0) > 0 && (rt.routingTable?.size ?? 1) === 0; i++)
        await new Promise((r) => setTimeout(r, 100));
      const found = await findAdverts(host, modelId, { timeoutMs: 3000 });
      range = chooseLayers(c.nLayers, maxLayers, found);
      log.info({ range, maxLayers, adverts: found.length }, 'chose layers');
    } else range = o.layers;
    const t0 = performance.now();
    // the engine holds its KV within this (its capacity says what fits); sessions are admitted against both
    const kvBudgetBytes = (o.kvBudgetMb ?? 512) * 2 ** 20;
    const bar = loadProgress(`layers ${range[0]}:${range[1]}`, rangeBytes(src, range[0], range[1], false, false));
    const loaded = await createStage(
      o.engine ?? 'reference',
      src,
      { start: range[0], end: range[1], embed: false, head: false },
      { threads: o.threads, onProgress: bar.add, kvBudgetBytes, computeThread: o.computeThread },
    ).finally(bar.stop);
    log.info({ range, loadMs: Math.round(performance.now() - t0), capacity: loaded.capacity ?? 'no bound of its own' }, 'stage loaded');
    const bench = o.benchTokens ?? 8;
    // without a benchmark, start from a nominal 1 GFLOP/s estimate; the EWMA corrects it while serving
    const nominal = (2 * (range[1] - range[0]) * layerBytesF32(src, range[0])) / 4 / 1e6;
    const perf = new PerfMeter(
      bench > 0 ? await benchmarkStage(loaded, { prefill: bench, decode: 2 }) : { msPerToken: nominal, prefillMsPerToken: nominal },
    );
    log.info({ msPerToken: perf.msPerToken, prefillMsPerToken: perf.prefillMsPerToken, benchmark: bench > 0 }, 'measured compute');
    const { tokens: kvBudgetTokens, bytesPerToken: kvBytesPerToken } = kvBudgetOf(loaded, kvBudgetBytes);
    const stage = o.decorate?.stage?.(loaded) ?? loaded;
    const acct = o.accountability;
    let stamper: StepStamper = NO_STAMPER;
    if (acct) {
      if (o.protectionDb) {
        protection = new SlashingProtectionDb(o.protectionDb, identity.address, o.protectionSync);
        log.info({ file: o.protectionDb, sync: o.protectionSync ?? 'full' }, 'slashing protection: signed sessions kept on disk');
      }
      stamper = new NodeStamper({
        host,
        domain: acct.domain,
        crypto: new CryptoPool({ worker: acct.cryptoWorker }),
        limits: acct.archive,
        protection,
      });
      stamper = o.decorate?.stamper?.(stamper, { identity, domain: acct.domain }) ?? stamper;
    }
    const stakeView = o.stake;
    const weight = stakeView ? (peer: string) => limitWeight(stakeView, peer) : undefined;
    const limits = new PeerLimits({ ...o.peerLimits, ...(weight ? { weight } : {}), log });
    const metrics: NodeMetrics | undefined =
      o.metricsPort === undefined
        ? undefined
        : new NodeMetrics(
            {
              layers: `${range[0]}:${range[1]}`,
              sessions: () => server.load,
              kvBytes: () => ({
                reserved: (server.kvBudgetTokens - server.freeKvTokens) * kvBytesPerToken,
                budget: server.kvBudgetTokens * kvBytesPerToken,
              }),
              refusals: () => ({ ...limits.stats }),
              audits: () => server.auditStats,
            },
            { defaultMetrics: true },
          );
    // (the metrics read the server at scrape time, after it exists)
    const server: NodeServer = new NodeServer({
      host,
      stage,
      modelId,
      perf,
      stamper,
      signError: o.decorate?.errors?.(errorSigner(identity)),
      sendOnward: o.decorate?.onward?.(sendOnward),
      kvBudgetTokens,
      idleTimeoutMs: o.idleTimeoutMs,
      limits,
      reexecLimits: acct?.reexec,
      metrics,
      log,
      batching: o.batching,
      streamSpares: o.streamSpares,
      streamSpareIdleMs: o.streamSpareIdleMs,
    });
    await server.start();
    const metricsHttp = metrics ? await serveMetrics(metrics.registry, o.metricsPort ?? 0, o.metricsHost) : undefined;

    const interval = o.announceIntervalMs ?? 30_000;
    let current: NodeAdvert;
    let currentRecord: Uint8Array | undefined;
    const makeAdvert = () =>
      signAdvert(identity, {
        addrs: host.addrs(),
        modelId,
        start: range[0],
        end: range[1],
        msPerToken: round3(perf.msPerToken * 1),
        prefillMsPerToken: round3(perf.prefillMsPerToken),
        load: server.load,
        freeKvTokens: server.freeKvTokens,
        engine: stage.profile,
        version: NODE_VERSION,
        issuedAt: Date.now(),
        ttlMs: interval * 3,
      });
    let announcing: Promise<void> = Promise.resolve();
    let busy = false;
    let rounds = 0;
    const announce = () => {
      const { advert, record } = makeAdvert();
      current = advert;
      currentRecord = record;
      if (busy) return announcing; // a slow publish is still running: never pile them up
      busy = true;
      const t0 = performance.now();
      // provide while the routing table fills up, then every 10th refresh
      const provide = rounds < 4 || rounds % 10 === 0;
      rounds++;
      announcing = publishAdvert(host, advert, record, { signal: AbortSignal.timeout(Math.max(5000, interval)), provide })
        .then(
          () => {
            metrics?.advertPublished(performance.now() - t0);
            log.debug({ load: advert.load }, 'advert published');
          },
          (e: Error) => log.warn({ err: e.message }, 'advert publish incomplete'),
        )
        .finally(() => (busy = false));
      return announcing;
    };
    ({ advert: current, record: currentRecord } = makeAdvert());
    await serveAdverts(host, (m) => (m === modelId ? currentRecord : undefined));
    void announce();
    const timer = setInterval(() => void announce(), interval);
    timer.unref();

    let stopped = false;
    return {
      host,
      server,
      stage,
      modelId,
      advert: () => current,
      metricsUrl: metricsHttp?.url,
      async stop() {
        if (stopped) return;
        stopped = true;
        await server.drain().catch((e: Error) => log.warn({ err: e.message }, 'drain failed')); // kv-transfer: hand sessions over first
        clearInterval(timer);
        await server.stop();
        await metricsHttp?.close();
        await Promise.race([announcing, new Promise((r) => setTimeout(r, 500))]);
        await host.stop();
        await protection?.close();
        await stage.dispose();
        src.close();
      },
    };
  } catch (e) {
    await host.stop();
    await protection?.close().catch(() => undefined);
    src.close();
    throw e;
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
