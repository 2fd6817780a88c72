// Bundles the dashboard page (src/dashboard/ui) into dist/dashboard with esbuild: one ES module
// with preact, htm and chart.js inside (no CDN: the page works offline), its CSS and HTML.
// Run by `npm run build` after tsc; the gateway serves dist/dashboard at `/`.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';

const src = 'src/dashboard/ui';
const out = 'dist/dashboard';
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [`${src}/main.ts`],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  legalComments: 'linked',
  outfile: `${out}/app.js`,
  logLevel: 'warning',
});
copyFileSync(`${src}/app.css`, `${out}/app.css`);
copyFileSync(`${src}/index.html`, `${out}/index.html`);
