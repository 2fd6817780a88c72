// The gateway side of a multi-process route test: a scratch directory (node keys), the model
// id the nodes must serve, and production Gateways over a fixed list of those nodes (no DHT
// discovery), all closed together.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Gateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import { modelIdentity } from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import type { RouteCandidate } from '../../src/routing/router.js';
import { STORIES_GGUF } from './paths.js';

export interface GatewaySide {
  dir: string;
  /** stories260K's model id */
  modelId: string;
  /** a Gateway over stories260K routing over exactly these nodes */
  gateway(peers: readonly RouteCandidate[], opts?: Omit<GatewayOptions, 'modelPath' | 'peers'>): Promise<Gateway>;
  close(): Promise<void>;
}

export function openGatewaySide(tmpPrefix: string): GatewaySide {
  const dir = mkdtempSync(join(tmpdir(), tmpPrefix));
  const src = openModel(STORIES_GGUF);
  const { modelId } = modelIdentity(src);
  src.close();
  const gateways: Gateway[] = [];
  return {
    dir,
    modelId,
    async gateway(peers, opts = {}) {
      const gw = await Gateway.start({ ...opts, modelPath: STORIES_GGUF, peers });
      gateways.push(gw);
      return gw;
    },
    async close() {
      for (const gw of gateways) await gw.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
