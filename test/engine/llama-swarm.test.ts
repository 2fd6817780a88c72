// `odsi node --engine llama` in a real swarm: 2 node processes on the llama engine (stories260K
// split 3/2), a Gateway whose embedding and head run on the reference engine (llama.cpp cannot
// load a range without layers), every step audited by the gateway's reference engine. Greedy
// output equals the golden tokens, the nodes advertise the llama-f32 profile, and every audit
// passes under the f32 tolerance. Skipped only when llama.cpp's platform package is missing.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { post } from '../helpers/http.js';
import { startSwarmGateway, type SwarmGateway } from '../helpers/served.js';
import { findLibDir } from '../../src/engine/llama/ffi.js';
import { accountabilityReport } from '../../src/accountability/gateway/report.js';
import { gatewayAccountabilityConfig } from '../../src/cli/config.js';

const skip = findLibDir() ? false : 'llama.cpp platform package @node-llama-cpp/linux-x64 is not installed (linux x64 only)';

describe('a swarm of llama-engine nodes', { skip }, () => {
  let sg: SwarmGateway | undefined;
  before(
    async () => {
      sg = await startSwarmGateway({
        model: STORIES_GGUF,
        swarm: {
          ranges: [
            [0, 3],
            [3, 5],
          ],
          engine: 'llama',
          readyTimeoutMs: 60_000,
          extraArgs: ['--threads', '1'],
        },
        gateway: {
          engine: 'llama',
          refreshMs: 5_000,
          lookupTimeoutMs: 5_000,
          failover: { graceMs: 10_000, minStepMs: 2_000 },
          accountability: gatewayAccountabilityConfig({ auditRate: 1 }, {}),
        },
      });
      await sg.backend.waitForRoute(30_000);
    },
    { timeout: 120_000 },
  );
  after(async () => {
    await sg?.close();
  });

  it('reproduces the golden greedy tokens, and the reference engine audits every step as honest', async () => {
    assert.deepEqual(
      sg!.swarm.nodes.map((n) => n.engine),
      ['llama-f32', 'llama-f32'],
    );
    const g = loadGolden()[0]!;
    const r = await post(sg!.url, '/v1/completions', { model: 'stories260K', prompt: g.prompt, max_tokens: 12, temperature: 0, odsi: { timeline: true } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      r.json.odsi.timeline.map((t: { token: number }) => t.token),
      g.generated_tokens.slice(0, 12),
    );
    const rep = await accountabilityReport(
      sg!.backend.accountability,
      sg!.swarm.nodes.map((n) => n.peerId),
    );
    const audits = (rep.audits ?? []) as { pass?: boolean }[];
    assert.ok(audits.length >= 12, `${audits.length} audits`);
    assert.ok(
      audits.every((a) => a.pass === true),
      JSON.stringify(audits.filter((a) => a.pass !== true).slice(0, 2)),
    );
  });
});
