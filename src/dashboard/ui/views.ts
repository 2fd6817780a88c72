// The dashboard's views: Swarm (coverage strip, node map, routes in use), Nodes (table, and
// the ledger panel when a ledger is configured), Requests (live list, per-token waterfall),
// Accountability (audits, verdicts, evidence, bans) and Try it (chat through /v1).

import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { DashboardSnapshot, FeedItem, NodeView, RequestDetail, RequestSummary } from '../types.js';
import { ThroughputChart, Waterfall, hopSlots, slotText } from './charts.js';
import { ago, ms, short } from './store.js';

const nodeLink = (peerId: string) => html`<a class="peer" href=${`#nodes/${peerId}`} title=${peerId}>${short(peerId)}</a>`;

export function SwarmView(p: { s: DashboardSnapshot }) {
  const { s } = p;
  const n = s.model.nLayers;
  const grid = { gridTemplateColumns: `repeat(${n}, minmax(0, 1fr))` };
  const gaps = s.coverage.filter((c) => c.nodes === 0).map((c) => c.layer);
  return html`<section aria-labelledby="cov-h">
      <h2 id="cov-h">Layer coverage</h2>
      <p class="hint">
        ${gaps.length ? html`<span class="bad">layers ${gaps.join(', ')} not covered</span>` : html`<span class="good">every layer covered</span>`}
        ${` · ${s.nodes.length} nodes known · counts routable nodes (reachable, neither banned nor convicted, eligible) · recoveries: ${s.recoveries.replay} by replay, ${s.recoveries.transfer} by transfer, ${s.recoveries.gaveUp} gave up`}
      </p>
      <${FallbackNote} s=${s} />
      <div class="strip" style=${grid} role="list" aria-label="layer coverage">
        ${s.coverage.map(
          (c) =>
            html`<div
              role="listitem"
              class=${`cell ${c.nodes === 0 ? 'gap' : c.nodes === 1 ? 'thin' : 'ok'}`}
              data-layer=${c.layer}
              data-nodes=${c.nodes}
              aria-label=${`layer ${c.layer}: ${c.nodes} node${c.nodes === 1 ? '' : 's'}, ${c.tokensPerSec} tokens/s`}
              title=${c.peers.map(short).join(' ')}
            >
              <span class="l">L${c.layer}</span><span class="c">×${c.nodes}</span>
            </div>`,
        )}
      </div>
      <${ThroughputChart} coverage=${s.coverage} />
    </section>
    <section aria-labelledby="map-h">
      <h2 id="map-h">Nodes by layer</h2>
      <div class="map" role="list" aria-label="nodes by layer">
        ${s.nodes.map(
          (nd) =>
            html`<div
              class="maprow"
              role="listitem"
              data-peer=${nd.peerId}
              aria-label=${`node ${nd.peerId} layers ${nd.layers[0]}:${nd.layers[1]} ${nd.state}`}
            >
              <span class="who">${nodeLink(nd.peerId)}</span>
              <div class="track" style=${grid}>
                <div class=${`span ${nd.state}`} style=${{ gridColumn: `${nd.layers[0] + 1} / ${nd.layers[1] + 1}` }}>
                  ${nd.layers[0]}:${nd.layers[1]} ${nd.state}
                </div>
              </div>
            </div>`,
        )}
      </div>
    </section>
    <section aria-labelledby="routes-h">
      <h2 id="routes-h">Routes in use</h2>
      ${
        s.routes.length
          ? html`<ul class="routes">
              ${s.routes.map(
                (r) =>
                  html`<li key=${r.requestId} aria-label=${`route of request ${r.requestId}`}>
                    <a href=${`#requests/${r.requestId}`}>${r.requestId.slice(0, 8)}</a>: gateway →
                    ${r.hops.map((h) => html` ${nodeLink(h.peerId)}[${h.start}:${h.end}] →`)} gateway
                  </li>`,
              )}
            </ul>`
          : html`<p class="hint">no request running</p>`
      }
    </section>`;
}

export function NodesView(p: { s: DashboardSnapshot; focus?: string }) {
  const { s, focus } = p;
  useEffect(() => {
    if (focus) document.getElementById(`node-${focus}`)?.scrollIntoView({ block: 'center' });
  }, [focus]);
  const ledger = s.ledger;
  return html`<section aria-labelledby="nodes-h">
      <h2 id="nodes-h">Nodes</h2>
      <div class="scroll">
        <table class="nodes">
          <thead>
            <tr>
              <th>peer id</th>
              <th>address</th>
              <th>layers</th>
              <th>engine / precision</th>
              <th>measured ms/token</th>
              <th>advertised</th>
              <th>RTT</th>
              <th>sessions</th>
              <th>free KV (tokens)</th>
              <th>audits ✓/✗</th>
              <th>state</th>
            </tr>
          </thead>
          <tbody>
            ${s.nodes.map((nd: NodeView) => {
              return html`<tr
                key=${nd.peerId}
                id=${`node-${nd.peerId}`}
                class=${`${nd.state} ${focus === nd.peerId ? 'focus' : ''}`}
                data-peer=${nd.peerId}
                aria-label=${`node ${nd.peerId}`}
              >
                <td class="mono">${nd.peerId}</td>
                <td class="mono small">${nd.addrs[0]?.replace(/\/p2p\/[^/]+$/, '') ?? '—'}</td>
                <td>${nd.layers[0]}:${nd.layers[1]}</td>
                <td>${nd.engine} / ${nd.precision}</td>
                <td>${nd.msPerTokenSource === 'measured' ? ms(nd.msPerToken, 2) : '—'}</td>
                <td>${ms(nd.advertisedMsPerToken, 2)}</td>
                <td>${ms(nd.rttMs ?? undefined, 2)}</td>
                <td>${nd.sessions}</td>
                <td>${nd.freeKvTokens ?? '—'}</td>
                <td>${nd.audits.passed} / <span class=${nd.audits.failed ? 'bad' : ''}>${nd.audits.failed}</span></td>
                <td>
                  <span class=${`badge ${nd.state}`}>${nd.state}</span>
                  ${nd.conviction ? html`<div class="why">convicted: ${nd.conviction}</div>` : null}
                  ${nd.banned && !nd.conviction ? html`<div class="why">${nd.banReason ?? 'banned'}${nd.bannedUntil && nd.bannedUntil < 8.64e15 ? ` (until ${new Date(nd.bannedUntil).toLocaleTimeString()})` : ''}</div>` : null}
                  ${nd.doubt && nd.routable ? html`<div class="why">doubted until ${new Date(nd.doubt.until).toLocaleTimeString()}: ${nd.doubt.reason ?? 'dispute'}</div>` : null}
                  ${nd.state === 'unreachable' ? html`<div class="why">does not answer pings</div>` : null}
                  ${nd.state === 'ineligible' ? html`<div class="why">${nd.unroutable}</div>` : null}
                </td>
              </tr>`;
            })}
          </tbody>
        </table>
      </div>
    </section>
    ${
      ledger
        ? html`<section aria-labelledby="ledger-h" class="ledger">
            <h2 id="ledger-h">Ledger · ${ledger.name}${ledger.epoch !== undefined ? ` · epoch ${ledger.epoch} settled` : ''}</h2>
            <div class="scroll">
              <table aria-label="ledger identities">
                <thead>
                  <tr>
                    <th>identity</th>
                    <th>role</th>
                    <th>stake (${ledger.unit})</th>
                    <th>slashed (${ledger.unit})</th>
                    <th>earned (${ledger.unit})</th>
                    <th>reputation</th>
                    <th>eligible</th>
                  </tr>
                </thead>
                <tbody>
                  ${Object.entries(ledger.nodes).map(
                    ([peer, e]) =>
                      html`<tr key=${peer} data-ledger-peer=${peer} class=${e.slashed && e.slashed !== '0' ? 'convicted' : ''}>
                        <td>${peer.startsWith('0x') ? html`<span class="mono">${peer}</span>` : nodeLink(peer)}</td>
                        <td>${e.role ?? '—'}</td>
                        <td data-col="stake">${e.stake}</td>
                        <td data-col="slashed">${e.slashed ?? '—'}</td>
                        <td data-col="earned">${e.earnings}</td>
                        <td data-col="reputation">${e.reputation}</td>
                        <td data-col="eligible">${e.eligible === undefined ? '—' : e.eligible ? 'yes' : 'no'}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>
              ${ledger.moreIdentities ? html`<p class="muted">${ledger.moreIdentities} more identities not shown</p>` : null}
              ${
                ledger.accounts?.length
                  ? html`<table aria-label="ledger accounts">
                      <thead>
                        <tr>
                          <th>client account</th>
                          <th>balance (${ledger.unit})</th>
                          <th>charged (${ledger.unit})</th>
                        </tr>
                      </thead>
                      <tbody>
                        ${ledger.accounts.map(
                          (a) =>
                            html`<tr key=${a.address} data-account=${a.address}>
                              <td class="mono">${a.address}</td>
                              <td data-col="balance">${a.balance}</td>
                              <td data-col="charged">${a.charged}</td>
                            </tr>`,
                        )}
                      </tbody>
                    </table>`
                  : null
              }
            </div>
          </section>`
        : null
    }`;
}

/** the cloud fallback's mark: requests the swarm could not serve went upstream */
function FallbackNote(p: { s: DashboardSnapshot }) {
  const f = p.s.fallback;
  if (!f) return null;
  return html`<p class="fallback" aria-label="cloud fallback">
    cloud fallback to ${f.url}${f.model ? ` (model ${f.model})` : ''} on ${f.when.join(', ')}:
    <b>${f.served}</b> request${f.served === 1 ? '' : 's'} served upstream (marked x-odsi-served-by: fallback); a request the swarm failed
    and the fallback took over shows here as failed on the swarm
  </p>`;
}

export function RequestsView(p: { s: DashboardSnapshot; selected?: string }) {
  const { s } = p;
  const selected = p.selected ?? s.requests[0]?.id;
  // rows are keyed (here and in every live list with links): a row stays its request's while
  // new ones arrive above it, else a click landing during an update could open the request
  // that moved into its place
  return html`<section aria-labelledby="req-h">
      <h2 id="req-h">Requests</h2>
      <${FallbackNote} s=${s} />
      <div class="scroll">
        <table class="requests">
          <thead>
            <tr>
              <th>request</th>
              <th>started</th>
              <th>status</th>
              <th>tokens</th>
              <th>first token</th>
              <th>ms/token</th>
              <th>route</th>
              <th>re-routes</th>
            </tr>
          </thead>
          <tbody>
            ${s.requests.map(
              (r: RequestSummary) =>
                html`<tr key=${r.id} class=${`${r.status} ${r.id === selected ? 'focus' : ''}`} data-request=${r.id}>
                  <td><a href=${`#requests/${r.id}`}>${r.id.slice(0, 8)}</a></td>
                  <td>${ago(r.startedAt, s.at)}</td>
                  <td><span class=${`badge ${r.status}`}>${r.status}</span>${r.error ? html`<div class="why">${r.error}</div>` : null}</td>
                  <td>${r.tokens}/${r.maxTokens}</td>
                  <td>${ms(r.firstTokenMs, 0)}</td>
                  <td>${ms(r.msPerToken, 2)}</td>
                  <td>${r.route.map((h) => html`${nodeLink(h.peerId)}[${h.start}:${h.end}] `)}</td>
                  <td>
                    ${r.reroutes ? html`<span class="warn">⟲ ${r.reroutes}</span>` : 0}${r.failures ? ` (${r.failures} failures)` : ''}
                  </td>
                </tr>`,
            )}
          </tbody>
        </table>
      </div>
    </section>
    ${selected ? html`<${RequestDetailView} id=${selected} summary=${s.requests.find((r) => r.id === selected)} />` : null}`;
}

function RequestDetailView(p: { id: string; summary?: RequestSummary }) {
  const [d, setD] = useState<RequestDetail | undefined>();
  const [err, setErr] = useState<string | undefined>();
  // refetch when the summary changes (a token arrived, the request ended)
  const key = `${p.id}:${p.summary?.tokens}:${p.summary?.status}:${p.summary?.reroutes}`;
  useEffect(() => {
    let live = true;
    fetch(`/dashboard/api/requests/${encodeURIComponent(p.id)}`)
      .then(async (r) => {
        if (!r.ok) throw new Error(r.status === 404 ? 'this request is no longer kept' : `HTTP ${r.status}`);
        return (await r.json()) as RequestDetail;
      })
      .then((x) => live && (setD(x), setErr(undefined)))
      .catch((e: Error) => live && setErr(e.message));
    return () => {
      live = false;
    };
  }, [key]);
  if (err) return html`<p class="bad">${err}</p>`;
  if (!d || d.id !== p.id) return html`<p class="hint">loading request ${p.id.slice(0, 8)}…</p>`;
  const steps = d.steps.slice(-64);
  const marks = new Set(d.events.filter((e) => e.type === 'reroute' && e.step !== undefined).map((e) => e.step!));
  const slots = hopSlots(steps);
  const avg = (i: number, k: 'queueMs' | 'computeMs' | 'sendMs' | 'slackMs') => {
    const xs = steps
      .slice(1)
      .map((s) => s.hops[i]?.[k])
      .filter((x): x is number => x !== undefined);
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined;
  };
  return html`<section aria-labelledby="wf-h" class="detail" data-request=${d.id}>
    <h2 id="wf-h">Request ${d.id.slice(0, 8)} · per-token waterfall</h2>
    <p class="hint">
      ${d.tokens}
      tokens${d.droppedSteps ? ` (showing the last ${steps.length})` : steps.length < d.steps.length ? ` (showing the last ${steps.length})` : ''}
      · prompt ${d.promptTokens} tokens · ${d.status}${d.finishReason ? ` (${d.finishReason})` : ''} · each row is one token: per hop queue,
      compute, send, then the gateway (embedding + head), the wire (the step's round trip less the hops' time) and how long the token was
      held before release (its receipts' check, the pipelining)
    </p>
    <ul class="hops" aria-label="hops">
      ${slots.map(
        (sl) =>
          html`<li class="hop" data-hop=${sl.index} aria-label=${`hop ${sl.index + 1}: ${slotText(sl)}`}>
            <b>hop ${sl.index + 1}</b> ${sl.served.map((x) => html`${nodeLink(x.peerId)}[${x.layers}] `)} · queue
            ${ms(avg(sl.index, 'queueMs'), 2)} · compute ${ms(avg(sl.index, 'computeMs'), 2)} · send ${ms(avg(sl.index, 'sendMs'), 2)} ·
            slack ${ms(avg(sl.index, 'slackMs'), 1)}
          </li>`,
      )}
    </ul>
    <${Waterfall} steps=${steps} marks=${marks} />
    ${
      d.events.length
        ? html`<h3>Failures and recoveries</h3>
            <ul class="events">
              ${d.events.map(
                (e) =>
                  html`<li class=${e.type} data-event=${e.type}>
                    ${e.type === 'reroute' ? '⟲' : e.type === 'failure' ? '✗' : '⨯'} at token #${e.step ?? '?'}: ${e.text}
                    ${e.peers.length ? html` · ${e.peers.map((x) => nodeLink(x))}` : null}
                  </li>`,
              )}
            </ul>`
        : html`<p class="hint">no failures or re-routes</p>`
    }
  </section>`;
}

export function AccountabilityView(p: { s: DashboardSnapshot }) {
  const feed = [...p.s.feed].reverse();
  const [onlyNotable, setOnly] = useState(false);
  const shown = onlyNotable ? feed.filter((f) => f.pass === false) : feed;
  return html`<section aria-labelledby="acc-h">
    <h2 id="acc-h">Accountability</h2>
    <label class="hint"
      ><input type="checkbox" checked=${onlyNotable} onChange=${() => setOnly(!onlyNotable)} /> only failures, evidence and bans</label
    >
    ${shown.length ? null : html`<p class="hint">no audits yet (the gateway audits with --audit-rate or --audit-reputation)</p>`}
    <ol class="feed" aria-label="accountability feed">
      ${shown.map(
        (f: FeedItem) =>
          html`<li class=${`${f.kind} ${f.pass === false ? 'fail' : 'pass'}`} data-kind=${f.kind} data-peer=${f.peerId}>
            <span class="t">${new Date(f.at).toLocaleTimeString()}</span>
            <span class=${`badge ${f.kind}`}>${f.kind === 'evidence' ? 'conviction' : f.kind}</span>
            ${nodeLink(f.peerId)} ${f.text}
            ${
              f.detail
                ? html`<details>
                    <summary>signed record</summary>
                    <pre>${f.detail}</pre>
                  </details>`
                : null
            }
          </li>`,
      )}
    </ol>
  </section>`;
}

interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
}

export function TryView(p: { s: DashboardSnapshot }) {
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [input, setInput] = useState('Once upon a time');
  const [maxTokens, setMaxTokens] = useState(48);
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<string | undefined>();
  const abort = useRef<AbortController | null>(null);
  useEffect(() => () => abort.current?.abort(), []);

  async function send(ev: Event) {
    ev.preventDefault();
    if (busy || !input.trim()) return;
    const history: ChatMessage[] = [...messages, { role: 'user', content: input }];
    setMessages([...history, { role: 'assistant', content: '' }]);
    setInput('');
    setBusy(true);
    setErr(undefined);
    abort.current = new AbortController();
    try {
      const r = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: p.s.model.name, messages: history, stream: true, max_tokens: maxTokens, temperature: 0 }),
        signal: abort.current.signal,
      });
      if (!r.ok || !r.body)
        throw new Error(((await r.json().catch(() => ({}))) as { error?: { message?: string } }).error?.message ?? `HTTP ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let reply = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 2);
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') continue;
          const chunk = JSON.parse(data) as { choices?: { delta?: { content?: string } }[]; error?: { message: string } };
          if (chunk.error) throw new Error(chunk.error.message);
          reply += chunk.choices?.[0]?.delta?.content ?? '';
          setMessages([...history, { role: 'assistant', content: reply }]);
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') setErr((e as Error).message);
    } finally {
      setBusy(false);
    }
  }

  return html`<section aria-labelledby="try-h" class="chat">
    <h2 id="try-h">Try it</h2>
    <p class="hint">Streams through this gateway's OpenAI-compatible API (POST /v1/chat/completions, model "${p.s.model.name}", greedy).</p>
    <ol class="messages" aria-label="conversation" aria-live="polite">
      ${messages.map((m) => html`<li class=${m.role} data-role=${m.role}><b>${m.role}</b> ${m.content}${busy && m === messages[messages.length - 1] && m.role === 'assistant' ? html`<span class="cursor">▍</span>` : null}</li>`)}
    </ol>
    ${err ? html`<p class="bad" role="alert">${err}</p>` : null}
    <form onSubmit=${send}>
      <input
        aria-label="message"
        value=${input}
        onInput=${(e: Event) => setInput((e.target as HTMLInputElement).value)}
        placeholder="Say something"
      />
      <label class="max"
        >max tokens
        <input
          type="number"
          min="1"
          max="512"
          aria-label="max tokens"
          value=${maxTokens}
          onInput=${(e: Event) => setMaxTokens(Math.max(1, Math.min(512, Number((e.target as HTMLInputElement).value) || 1)))}
        />
      </label>
      <button type="submit" disabled=${busy}>${busy ? 'streaming…' : 'Send'}</button>
    </form>
  </section>`;
}
