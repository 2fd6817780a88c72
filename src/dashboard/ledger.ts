// The dashboard's ledger panel: what a gateway's ledger (src/ledger/ledger.ts, read only) says
// about the swarm's identities — stake, slashed, earned, reputation, eligibility — and the
// client accounts' balances. Read with Ledger.status() at most once per refresh interval, one
// read at a time, off the token path (the dashboard's timer or a snapshot that finds it stale);
// the view is bounded: the nodes the gateway knows first, then the largest stakes, and the
// largest balances.

import type { Ledger, LedgerStatus } from '../ledger/ledger.js';
import { formatAmount } from '../ledger/rules.js';
import { addressOfPeerId } from '../routing/stake.js';
import type { LedgerEntry, LedgerView } from './types.js';

export interface LedgerFeedOptions {
  /** re-read at most this often, ms (default 5000) */
  refreshMs?: number;
  /** identities shown (default 256) */
  maxIdentities?: number;
  /** client accounts shown (default 32) */
  maxAccounts?: number;
  /** a read failed (the last view stays) */
  onError?: (e: Error) => void;
}

export class LedgerFeed {
  private last?: LedgerView;
  private readAt = -Infinity;
  private reading?: Promise<void>;
  private readonly refreshMs: number;

  /** `peers`: the peer ids the gateway knows now (shown by peer id, and first) */
  constructor(
    private readonly ledger: Ledger,
    private readonly peers: () => readonly string[],
    private readonly o: LedgerFeedOptions = {},
  ) {
    this.refreshMs = o.refreshMs ?? 5000;
  }

  /** the last view read (undefined before the first read completes) */
  get view(): LedgerView | undefined {
    return this.last;
  }

  /** Starts a read when the last one is older than the refresh interval (never two at once). */
  refreshIfStale(now = Date.now()): void {
    if (now - this.readAt >= this.refreshMs) void this.refresh();
  }

  /** Reads the ledger now (a read in flight is shared). */
  refresh(): Promise<void> {
    this.readAt = Date.now();
    this.reading ??= this.ledger
      .status()
      .then((st) => {
        this.last = viewOf(st, this.peers(), this.o.maxIdentities ?? 256, this.o.maxAccounts ?? 32);
      })
      .catch((e: Error) => this.o.onError?.(e))
      .finally(() => (this.reading = undefined));
    return this.reading;
  }
}

/** The panel's view of a ledger status: identities keyed by peer id where the gateway knows the node, else by address. */
export function viewOf(st: LedgerStatus, peers: readonly string[], maxIdentities: number, maxAccounts: number): LedgerView {
  const peerOf = new Map<string, string>();
  for (const p of peers) {
    const a = addressOfPeerId(p);
    if (a) peerOf.set(a.toLowerCase(), p);
  }
  const ids = [...st.identities].sort(
    (x, y) =>
      Number(peerOf.has(y.address.toLowerCase())) - Number(peerOf.has(x.address.toLowerCase())) || cmpDesc(BigInt(x.stake), BigInt(y.stake)),
  );
  const nodes: Record<string, LedgerEntry> = {};
  for (const i of ids.slice(0, maxIdentities))
    nodes[peerOf.get(i.address.toLowerCase()) ?? i.address] = {
      address: i.address,
      role: i.role,
      stake: formatAmount(BigInt(i.stake)),
      slashed: formatAmount(BigInt(i.slashed)),
      earnings: formatAmount(BigInt(i.earned)),
      reputation: Math.round(i.reputation * 1000) / 1000,
      eligible: i.eligible,
    };
  const accounts = [...st.accounts]
    .sort((x, y) => cmpDesc(BigInt(x.balance), BigInt(y.balance)))
    .slice(0, maxAccounts)
    .map((a) => ({ address: a.address, balance: formatAmount(BigInt(a.balance)), charged: formatAmount(BigInt(a.charged)) }));
  return {
    name: `${st.backend} ${st.location}`,
    unit: 'ODSI',
    epoch: st.epoch,
    nodes,
    accounts,
    ...(st.identities.length > maxIdentities ? { moreIdentities: st.identities.length - maxIdentities } : {}),
    ...(st.accounts.length > maxAccounts ? { moreAccounts: st.accounts.length - maxAccounts } : {}),
  };
}

const cmpDesc = (x: bigint, y: bigint) => (x > y ? -1 : x < y ? 1 : 0);
