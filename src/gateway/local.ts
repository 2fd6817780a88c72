// In-process Backend: the whole model on this machine, split into k local stages. Serves the
// same HTTP API as the swarm gateway (single-machine use, tests, reference answers).

import { basename } from 'node:path';
import { buildLocalPipeline, disposePipeline, type EngineKind, type StageOptions } from '../engine/create.js';
import type { Stage } from '../engine/types.js';
import { openModel } from '../model/load.js';
import { ModelFormatError, type WeightSource } from '../model/types.js';
import { createTokenizer } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { BackendModelInfo } from '../api/backend.js';
import { PipelineBackend, type RequestPipeline } from './pipeline-backend.js';
import { TimedStage } from './timed.js';

export interface LocalBackendOptions {
  engine?: EngineKind;
  /** number of in-process stages (default 1) */
  stages?: number;
  stageOptions?: StageOptions;
  /** name served as `model` (default: the file name without extension) */
  modelName?: string;
}

export class LocalBackend extends PipelineBackend {
  private constructor(
    readonly model: BackendModelInfo,
    readonly tokenizer: Tokenizer,
    readonly addBos: boolean,
    private readonly src: WeightSource,
    private readonly stages: Stage[],
  ) {
    super();
  }

  static async open(modelPath: string, opts: LocalBackendOptions = {}): Promise<LocalBackend> {
    const src = openModel(modelPath);
    try {
      if (!src.tokenizer) throw new ModelFormatError('model has no tokenizer; the API needs one', modelPath);
      const tokenizer = createTokenizer(src.tokenizer);
      const stages = await buildLocalPipeline(opts.engine ?? 'reference', src, opts.stages ?? 1, opts.stageOptions);
      const model: BackendModelInfo = {
        id: opts.modelName ?? modelNameOf(modelPath),
        aliases: [src.config.name].filter(Boolean),
        contextLength: src.config.contextLength,
        created: Math.floor(Date.now() / 1000),
        ownedBy: 'odsi-local',
      };
      return new LocalBackend(model, tokenizer, src.tokenizer.addBos, src, stages);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  protected async openPipeline(): Promise<RequestPipeline> {
    return { stages: this.stages.map((s) => new TimedStage(s, 'local')), release: async () => undefined };
  }

  async close(): Promise<void> {
    await disposePipeline(this.stages);
    this.src.close();
  }
}

/** 'models/stories260K.gguf' → 'stories260K'; a HF directory → its folder name */
export function modelNameOf(path: string): string {
  return basename(path.replace(/[/\\]+$/, '')).replace(/\.gguf$/i, '');
}
