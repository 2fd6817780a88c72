// Charts (chart.js, only the parts used): the per-layer throughput bars under the coverage
// strip and the per-token waterfall of a request. Each canvas carries an aria-label, and the
// same numbers are in labelled HTML next to it.

import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip, type ChartConfiguration } from 'chart.js';
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import type { LayerCoverage, StepView } from '../types.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend);
Chart.defaults.animation = false;

/** A canvas holding one chart, rebuilt when the config changes. */
function ChartCanvas(p: { config: ChartConfiguration<'bar'>; label: string; height: number }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart<'bar'> | null>(null);
  useEffect(() => {
    if (!ref.current) return;
    if (chart.current) {
      chart.current.data = p.config.data;
      chart.current.options = p.config.options ?? {};
      chart.current.update('none');
    } else chart.current = new Chart(ref.current, p.config);
  }, [p.config]);
  useEffect(() => () => chart.current?.destroy(), []);
  return html`<div class="chart" style=${{ height: `${p.height}px` }}><canvas ref=${ref} role="img" aria-label=${p.label}></canvas></div>`;
}

const RED = '#d64545';
const GREEN = '#2f9e6e';

export function ThroughputChart(p: { coverage: LayerCoverage[] }) {
  const config: ChartConfiguration<'bar'> = {
    type: 'bar',
    data: {
      labels: p.coverage.map((c) => `L${c.layer}`),
      datasets: [
        {
          label: 'combined tokens/s',
          data: p.coverage.map((c) => c.tokensPerSec),
          backgroundColor: p.coverage.map((c) => (c.nodes === 0 ? RED : GREEN)),
        },
      ],
    },
    options: {
      maintainAspectRatio: false,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, title: { display: true, text: 'tokens/s' } } },
    },
  };
  const label = `combined throughput per layer: ${p.coverage.map((c) => `layer ${c.layer} ${c.tokensPerSec} tokens/s`).join(', ')}`;
  return html`<${ChartCanvas} config=${config} label=${label} height=${140} />`;
}

/** hop i's colours for queue, compute, send */
const HOP_COLOURS = [
  ['#c6dbef', '#3182bd', '#9ecae1'],
  ['#fdd0a2', '#e6550d', '#fdae6b'],
  ['#c7e9c0', '#31a354', '#a1d99b'],
  ['#dadaeb', '#756bb1', '#bcbddc'],
];
const PART = ['queue', 'compute', 'send'] as const;

export interface HopSlot {
  /** position on the route */
  index: number;
  /** who served this position, with its layers (several after a re-route) */
  served: { peerId: string; layers: string }[];
}

/** hop slots of a request's steps: position i on the route, with the nodes seen there */
export function hopSlots(steps: StepView[]): HopSlot[] {
  const slots: HopSlot[] = [];
  for (const s of steps)
    s.hops.forEach((h, i) => {
      const slot = (slots[i] ??= { index: i, served: [] });
      const layers = `${h.start}:${h.end}`;
      if (!slot.served.some((x) => x.peerId === h.peerId && x.layers === layers)) slot.served.push({ peerId: h.peerId, layers });
    });
  return slots;
}

export const slotText = (s: HopSlot) => s.served.map((x) => `layers ${x.layers} on ${x.peerId}`).join(', then ');

/** The waterfall: one row per token, per hop its queue, compute and send in order, then gateway, wire, and how long the token was held before release. */
export function Waterfall(p: { steps: StepView[]; marks: Set<number> }) {
  const slots = hopSlots(p.steps);
  const labels = p.steps.map((s) => `${p.marks.has(s.step) ? '⟲ ' : ''}token #${s.step}`);
  const datasets: ChartConfiguration<'bar'>['data']['datasets'] = [];
  for (const slot of slots)
    PART.forEach((part, k) =>
      datasets.push({
        label: `hop ${slot.index + 1} ${part}`,
        data: p.steps.map((s) => s.hops[slot.index]?.[`${part}Ms`] ?? 0),
        backgroundColor: HOP_COLOURS[slot.index % HOP_COLOURS.length]![k],
        stack: 't',
      }),
    );
  datasets.push({ label: 'gateway', data: p.steps.map((s) => s.gatewayMs), backgroundColor: '#636363', stack: 't' });
  datasets.push({ label: 'wire', data: p.steps.map((s) => s.wireMs), backgroundColor: '#bdbdbd', stack: 't' });
  datasets.push({ label: 'held', data: p.steps.map((s) => s.heldMs), backgroundColor: '#f0f0f0', stack: 't' });
  const config: ChartConfiguration<'bar'> = {
    type: 'bar',
    data: { labels, datasets },
    options: {
      indexAxis: 'y',
      maintainAspectRatio: false,
      scales: { x: { stacked: true, title: { display: true, text: 'ms' } }, y: { stacked: true, ticks: { autoSkip: false } } },
      plugins: { legend: { position: 'bottom', labels: { boxWidth: 10 } } },
    },
  };
  const label = `per-token waterfall of ${p.steps.length} tokens over ${slots.length} hops: ${slots.map((s) => `hop ${s.index + 1}: ${slotText(s)}`).join('; ')}`;
  return html`<${ChartCanvas} config=${config} label=${label} height=${Math.max(160, 40 + p.steps.length * 18)} />`;
}
