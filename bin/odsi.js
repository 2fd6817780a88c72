#!/usr/bin/env node
// Entry point: load the Promise.withResolvers polyfill (libp2p on Node 20) before anything else.
import '../dist/src/util/polyfill.js';
const { main } = await import('../dist/src/cli/main.js');
await main(process.argv);
