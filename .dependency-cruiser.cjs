// Import rules of odsi, checked by `npm run lint` (depcruise src test bench).
//
// Layering of src/, lowest first; a layer never imports a higher one:
//   util (nothing of the project) < model, tokenizer, identity < engine < protocol < p2p
//   < routing (pure cost model, bans, planner) < route (knows only the StepVerifier interface)
//   < accountability < ledger (stake, slashing, payments, reputation) < node, gateway < cli;
//   api (the OpenAI surface over the Backend interface) sits on engine and tokenizer only, and
//   the gateway implements its Backend
// src/testing (fault injection, dishonest decorators) is imported only by src/cli, test/ and
// bench/; nothing in src imports test/ or bench/; no import cycles anywhere.

/** `src/<dir>/` for each layer directory named */
const under = (...dirs) => `^src/(${dirs.join('|')})/`;

/** a rule: files of `layer` must not import files of the layers in `banned` (higher or sibling) */
const noUpward = (layer, banned) => ({
  name: `${layer}-layering`,
  comment: `${layer} must not import ${banned.join(', ')}`,
  severity: 'error',
  from: { path: under(layer) },
  to: { path: under(...banned) },
});

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'import cycles make load order matter and layers meaningless',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'util-imports-nothing',
      comment: 'src/util holds generic helpers: it imports nothing else of the project',
      severity: 'error',
      from: { path: '^src/util/' },
      to: { path: '^(src|test|bench)/', pathNot: '^src/util/' },
    },
    ...['model', 'tokenizer', 'identity'].map((layer) =>
      noUpward(layer, ['engine', 'protocol', 'p2p', 'routing', 'route', 'accountability', 'ledger', 'node', 'gateway', 'api', 'cli']),
    ),
    noUpward('engine', ['protocol', 'p2p', 'routing', 'route', 'accountability', 'ledger', 'node', 'gateway', 'api', 'cli']),
    noUpward('protocol', ['p2p', 'routing', 'route', 'accountability', 'ledger', 'node', 'gateway', 'api', 'cli']),
    noUpward('routing', ['p2p', 'route', 'accountability', 'ledger', 'node', 'gateway', 'api', 'cli']),
    noUpward('route', ['accountability', 'ledger', 'node', 'gateway', 'api', 'cli']),
    noUpward('accountability', ['ledger', 'node', 'gateway', 'api', 'cli']),
    noUpward('ledger', ['node', 'gateway', 'api', 'cli']),
    noUpward('p2p', ['routing', 'route', 'accountability', 'ledger', 'node', 'gateway', 'api', 'cli']),
    noUpward('node', ['gateway', 'api', 'cli']),
    noUpward('gateway', ['node', 'cli']),
    noUpward('api', ['protocol', 'p2p', 'routing', 'route', 'accountability', 'ledger', 'node', 'gateway', 'cli']),
    {
      name: 'src-not-test-or-bench',
      comment: 'the product never depends on tests or benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'testing-only-from-cli-and-tests',
      comment: 'fault injection and dishonest decorators are wired in by the CLI and by tests only',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(cli|testing)/' },
      to: { path: '^src/testing/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    // type-only imports count: a layer must not even name a higher layer's types
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
