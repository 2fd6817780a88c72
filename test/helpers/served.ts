// Test fixtures that serve the OpenAI API: a backend behind an API server on an ephemeral
// port, and a local swarm of `odsi node` processes with an in-process Gateway in front.
// Each fixture's close() releases everything it started (safe to call after a failed start).
import { createApiServer, type ApiServer, type ApiServerOptions } from '../../src/api/server.js';
import type { Backend } from '../../src/api/backend.js';
import { Gateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import { modelIdentity } from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import { LocalSwarm, type LocalSwarmOptions } from '../../src/node/local-swarm.js';

export interface Served<B extends Backend> {
  backend: B;
  server: ApiServer;
  /** base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  /** stops the server, then the backend */
  close(): Promise<void>;
}

/** Serve `backend` on 127.0.0.1 (ephemeral port); close() also closes the backend. */
export async function serve<B extends Backend & { close(): Promise<void> }>(backend: B, opts: ApiServerOptions = {}): Promise<Served<B>> {
  const server = createApiServer(backend, opts);
  try {
    const url = await server.listen(0);
    return {
      backend,
      server,
      url,
      close: async () => {
        await server.close().catch(() => undefined);
        await backend.close().catch(() => undefined);
      },
    };
  } catch (e) {
    await backend.close().catch(() => undefined);
    throw e;
  }
}

export interface SwarmGateway extends Served<Gateway> {
  swarm: LocalSwarm;
}

/**
 * `odsi node` processes over `model` (its model id computed once, so nodes skip hashing), a
 * Gateway joined through the first node, and the API in front of the gateway.
 */
export async function startSwarmGateway(o: {
  model: string;
  swarm: Omit<LocalSwarmOptions, 'model' | 'modelId'>;
  gateway: Omit<GatewayOptions, 'modelPath' | 'bootstrap'>;
}): Promise<SwarmGateway> {
  const src = openModel(o.model);
  const { modelId } = modelIdentity(src);
  src.close();
  const swarm = await LocalSwarm.start({ ...o.swarm, model: o.model, modelId });
  let served: Served<Gateway>;
  try {
    served = await serve(await Gateway.start({ ...o.gateway, modelPath: o.model, bootstrap: swarm.bootstrap }));
  } catch (e) {
    await swarm.stop();
    throw e;
  }
  return {
    ...served,
    swarm,
    close: async () => {
      await served.close();
      await swarm.stop();
    },
  };
}
