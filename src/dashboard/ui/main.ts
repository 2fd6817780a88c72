// The dashboard page: follows the gateway's SSE stream and shows one view at a time, chosen by
// the URL's hash (#swarm, #nodes/<peer id>, #requests/<id>, #accountability, #try).

import { html, render } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import type { DashboardSnapshot } from '../types.js';
import { follow, type Connection } from './store.js';
import { AccountabilityView, NodesView, RequestsView, SwarmView, TryView } from './views.js';

const VIEWS = [
  ['swarm', 'Swarm'],
  ['nodes', 'Nodes'],
  ['requests', 'Requests'],
  ['accountability', 'Accountability'],
  ['try', 'Try it'],
] as const;
type View = (typeof VIEWS)[number][0];

function parseHash(): { view: View; arg?: string } {
  const [v, ...rest] = location.hash.replace(/^#/, '').split('/');
  const view = (VIEWS.find(([k]) => k === v)?.[0] ?? 'swarm') as View;
  return { view, arg: rest.length ? decodeURIComponent(rest.join('/')) : undefined };
}

function App() {
  const [s, setS] = useState<DashboardSnapshot | undefined>();
  const [conn, setConn] = useState<Connection>('connecting');
  const [route, setRoute] = useState(parseHash());
  useEffect(() => follow(setS, setConn), []);
  useEffect(() => {
    const on = () => setRoute(parseHash());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const down = s ? s.nodes.filter((n) => n.state !== 'up').length : 0;
  const gaps = s ? s.coverage.filter((c) => c.nodes === 0).length : 0;
  return html`<header>
      <h1>odsi <span class="model">${s ? s.model.name : ''}</span></h1>
      <span class=${`conn ${conn}`} role="status">${conn}</span>
      ${s ? html`<span class="sum">${s.nodes.length} nodes${down ? html` · <span class="bad">${down} not usable</span>` : ''}${gaps ? html` · <span class="bad">${gaps} layers uncovered</span>` : ''}</span>` : null}
      <nav aria-label="views">
        ${VIEWS.map(([k, label]) => html`<a href=${`#${k}`} class=${route.view === k ? 'on' : ''} aria-current=${route.view === k ? 'page' : undefined}>${label}</a>`)}
      </nav>
    </header>
    <main>
      ${
        !s
          ? html`<p class="hint">waiting for the gateway…</p>`
          : route.view === 'nodes'
            ? html`<${NodesView} s=${s} focus=${route.arg} />`
            : route.view === 'requests'
              ? html`<${RequestsView} s=${s} selected=${route.arg} />`
              : route.view === 'accountability'
                ? html`<${AccountabilityView} s=${s} />`
                : route.view === 'try'
                  ? html`<${TryView} s=${s} />`
                  : html`<${SwarmView} s=${s} />`
      }
    </main>`;
}

const root = document.getElementById('app')!;
root.textContent = ''; // the static 'Loading…' line
render(html`<${App} />`, root);
