// `odsi model ...`: inspect, synthesize and convert model files.
import { Command, Option } from 'commander';
import { convertModel } from '../model/convert.js';
import { modelIdentity } from '../model/identity.js';
import { openModel } from '../model/load.js';
import { typeName } from '../model/quant.js';
import { SHAPES, writeSyntheticGguf, writeSyntheticSafetensors, type SynthDtype } from '../model/synth.js';
import type { WeightSource } from '../model/types.js';
import { integerOption } from './numbers.js';

/** Everything `model info` reports, as plain JSON. */
export function modelInfo(src: WeightSource, opts: { hash?: boolean } = {}): Record<string, unknown> {
  const types: Record<string, number> = {};
  let bytes = 0;
  for (const n of src.tensorNames()) {
    const i = src.info(n);
    types[typeName(i.type)] = (types[typeName(i.type)] ?? 0) + 1;
    bytes += i.byteLength;
  }
  const t = src.tokenizer;
  const info: Record<string, unknown> = {
    path: src.path,
    format: src.format,
    config: src.config,
    tensors: { count: src.tensorNames().length, bytes, types },
    tokenizer: t
      ? {
          model: t.model,
          vocabSize: t.tokens.length,
          pre: t.pre,
          bosId: t.bosId,
          eosId: t.eosId,
          eotIds: t.eotIds,
          addBos: t.addBos,
          hasChatTemplate: !!t.chatTemplate,
        }
      : null,
  };
  if (opts.hash !== false) {
    const id = modelIdentity(src);
    info.modelId = id.modelId;
    info.globalHash = id.globalHash;
    info.layerHashes = id.layerHashes;
  }
  return info;
}

function printInfo(i: Record<string, unknown>): void {
  const c = i.config as WeightSource['config'];
  const t = i.tensors as { count: number; bytes: number; types: Record<string, number> };
  const tok = i.tokenizer as Record<string, unknown> | null;
  const lines = [
    `path:       ${String(i.path)} (${String(i.format)})`,
    `model:      ${c.name}: ${c.nLayers} layers, dim ${c.dim}, ffn ${c.ffnDim}, heads ${c.nHeads}/${c.nKvHeads} kv, head ${c.headDim}, vocab ${c.vocabSize}`,
    `rope:       theta ${c.ropeTheta}${c.ropeScaling ? `, ${JSON.stringify(c.ropeScaling)}` : ''}; norm eps ${c.normEps}; context ${c.contextLength}; ${c.tiedEmbeddings ? 'tied' : 'untied'} embeddings`,
    `tensors:    ${t.count}, ${(t.bytes / 2 ** 20).toFixed(1)} MiB, ${Object.entries(t.types)
      .map(([k, v]) => `${k}×${v}`)
      .join(' ')}`,
    `tokenizer:  ${tok ? `${String(tok.model)}${tok.pre ? `/${String(tok.pre)}` : ''}, ${String(tok.vocabSize)} tokens, bos ${String(tok.bosId)}, eos ${String(tok.eosId)}${tok.hasChatTemplate ? ', chat template' : ''}` : 'none'}`,
  ];
  if (i.modelId) {
    lines.push(`model id:   ${String(i.modelId)}`, `global:     ${String(i.globalHash)}`);
    (i.layerHashes as string[]).forEach((h, l) => lines.push(`layer ${String(l).padStart(3)}:  ${h}`));
  }
  console.log(lines.join('\n'));
}

export function register(program: Command): void {
  const model = program.command('model').description('inspect, synthesize and convert model files');

  model
    .command('info <path>')
    .description('show a model (GGUF file or Hugging Face directory): config, tensors, tokenizer, model id and layer hashes')
    .option('--json', 'machine-readable output')
    .option('--no-hash', 'skip hashing (no model id)')
    .action((path: string, o: { json?: boolean; hash: boolean }) => {
      const src = openModel(path);
      try {
        const info = modelInfo(src, { hash: o.hash });
        if (o.json) console.log(JSON.stringify(info, null, 2));
        else printInfo(info);
      } finally {
        src.close();
      }
    });

  model
    .command('synth')
    .description('write a seeded random model with a real model shape')
    .addOption(new Option('--shape <name>', 'model shape').choices(Object.keys(SHAPES)).default('tiny'))
    .addOption(new Option('--dtype <type>', 'stored type').choices(['f32', 'f16', 'bf16', 'q8_0', 'q4_0']).default('f32'))
    .addOption(new Option('--format <fmt>', 'output format').choices(['gguf', 'safetensors']).default('gguf'))
    .option('--seed <n>', 'random seed', integerOption('--seed', { min: 0 }), 1)
    .option('--layers <n>', "number of layers (default: the shape's)", integerOption('--layers', { min: 1 }))
    .requiredOption('--out <path>', 'output file (gguf) or directory (safetensors)')
    .action(async (o: { shape: string; dtype: string; format: string; seed: number; layers?: number; out: string }) => {
      const t0 = Date.now();
      if (o.format === 'safetensors') {
        if (!['f32', 'f16', 'bf16'].includes(o.dtype)) throw new Error(`safetensors output supports f32, f16, bf16 (not ${o.dtype})`);
        await writeSyntheticSafetensors({
          shape: o.shape,
          dtype: o.dtype as 'f32' | 'f16' | 'bf16',
          seed: o.seed,
          out: o.out,
          nLayers: o.layers,
        });
      } else {
        if (o.dtype === 'bf16') throw new Error('synthetic GGUF supports f32, f16, q8_0, q4_0');
        await writeSyntheticGguf({ shape: o.shape, dtype: o.dtype as SynthDtype, seed: o.seed, out: o.out, nLayers: o.layers });
      }
      console.error(`wrote ${o.out} (${o.shape}, ${o.dtype}, seed ${o.seed}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });

  model
    .command('convert <in>')
    .description('convert a GGUF file or Hugging Face directory to GGUF of another type')
    .addOption(new Option('--dtype <type>', 'target type').choices(['f32', 'f16', 'bf16', 'q8_0', 'q4_0']).makeOptionMandatory())
    .requiredOption('--out <file>', 'output GGUF file')
    .action(async (input: string, o: { dtype: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0'; out: string }) => {
      const t0 = Date.now();
      const r = await convertModel(input, { dtype: o.dtype, out: o.out });
      console.error(
        `wrote ${o.out}: ${r.tensors} tensors, ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
    });
}
