// `odsi conformance --target <multiaddr> --model <file>`: plays the protocol rules of
// docs/protocol.md §11 against one node (any implementation) and prints pass/fail per rule;
// exits 1 when a rule fails. `odsi conformance vectors` prints (or writes) the test vectors of
// docs/vectors/protocol.json, computed by this implementation.
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { openModel } from '../model/load.js';
import { modelIdentity } from '../model/identity.js';
import { createStage } from '../engine/create.js';
import { deploymentDomain } from '../accountability/records/wire.js';
import { runConformance, type RuleResult } from '../conformance/kit.js';
import { buildVectors, vectorsJson } from '../conformance/vectors.js';
import { integerOption } from './numbers.js';

interface Opts {
  target: string;
  model: string;
  modelId?: string;
  only?: string;
  waitMs: number;
  concurrency: number;
  json?: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command('conformance')
    .description("check a node against the protocol's numbered rules (docs/protocol.md §11)")
    .option('--target <multiaddr>', 'the node to test: a multiaddr ending in /p2p/<peer id>')
    .option('--model <file>', 'the model the node serves (.gguf or HF directory): its id, hidden size and KV width')
    .option('--model-id <id>', 'the model id the node announces, when it was started with --model-id')
    .option('--only <ids>', 'comma-separated rule ids or group letters (e.g. C,O3: every C rule, and O3)')
    .option('--wait-ms <ms>', 'how long one expected answer may take', integerOption('--wait-ms', { min: 1 }), 10_000)
    .option('--concurrency <n>', 'rules run at a time (each uses sessions of its own)', integerOption('--concurrency', { min: 1 }), 4)
    .option('--json', 'print the results as one JSON array')
    .addHelpText(
      'after',
      '\nThe EIP-712 domain is ODSI_CHAIN_ID (default 31337), as for odsi node; the target must have accountability on.',
    )
    .action(async (o: Opts) => {
      if (!o.target || !o.model) throw new Error('--target and --model are required (or use `odsi conformance vectors`)');
      const src = openModel(o.model);
      const c = src.config;
      const modelId = o.modelId ?? modelIdentity(src).modelId;
      const results = await runConformance(
        {
          multiaddr: o.target,
          modelId,
          dim: c.dim,
          kvDim: c.nKvHeads * c.headDim,
          domain: deploymentDomain(process.env),
          reference: (r) => createStage('reference', src, { start: r.start, end: r.end, embed: false, head: false }),
        },
        {
          waitMs: o.waitMs,
          only: o.only
            ?.split(',')
            .map((s) => s.trim())
            .filter(Boolean),
          concurrency: o.concurrency,
        },
      ).finally(() => src.close());
      const failed = results.filter((r) => !r.pass);
      if (o.json) console.log(JSON.stringify(results, null, 2));
      else for (const r of results) console.log(line(r));
      if (!o.json)
        console.log(
          `${results.length - failed.length}/${results.length} rules pass${failed.length ? `; failing: ${failed.map((r) => r.id).join(', ')}` : ''}`,
        );
      if (failed.length) process.exitCode = 1;
    });
  cmd
    .command('vectors')
    .description('the protocol test vectors (docs/vectors/protocol.json) as computed by this implementation')
    .option('--stories <file>', 'stories260K.gguf, for the model id vector of the test model')
    .option('--out <file>', 'write them here instead of stdout')
    .action((o: { stories?: string; out?: string }) => {
      const text = vectorsJson(buildVectors({ storiesModel: o.stories }));
      if (o.out) writeFileSync(o.out, text);
      else process.stdout.write(text);
    });
}

function line(r: RuleResult): string {
  return `${r.pass ? 'PASS' : 'FAIL'} ${r.id.padEnd(4)} ${r.title} (${r.ms} ms)${r.pass ? '' : `\n       ${r.detail}`}`;
}
