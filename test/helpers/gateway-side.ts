// The gateway's half of a route test: stories260K opened once, its model id, tokenizer,
// embedding-only and head-only stages, and a libp2p host — what every route test drives.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStage } from '../../src/engine/create.js';
import type { Stage } from '../../src/engine/types.js';
import { generateIdentity } from '../../src/identity/identity.js';
import { modelIdentity } from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import type { WeightSource } from '../../src/model/types.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { createTokenizer } from '../../src/tokenizer/index.js';
import type { Tokenizer } from '../../src/tokenizer/types.js';
import { STORIES_GGUF } from './paths.js';

export interface GatewaySide {
  dir: string;
  src: WeightSource;
  modelId: string;
  tokenizer: Tokenizer;
  embed: Stage;
  head: Stage;
  host: OdsiHost;
  close(): Promise<void>;
}

export async function openGatewaySide(tmpPrefix: string): Promise<GatewaySide> {
  const dir = mkdtempSync(join(tmpdir(), tmpPrefix));
  const src = openModel(STORIES_GGUF);
  const L = src.config.nLayers;
  const embed = await createStage('reference', src, { start: 0, end: 0, embed: true, head: false });
  const head = await createStage('reference', src, { start: L, end: L, embed: false, head: true });
  const host = await createHost({ identity: generateIdentity() });
  return {
    dir,
    src,
    modelId: modelIdentity(src).modelId,
    tokenizer: createTokenizer(src.tokenizer!),
    embed,
    head,
    host,
    async close() {
      await host.stop().catch(() => undefined);
      await embed.dispose();
      await head.dispose();
      src.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
