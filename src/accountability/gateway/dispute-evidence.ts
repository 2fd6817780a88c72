// Settling some disputes by the accused's own signature. A hop that refuses its input names the
// hop before it (routing/disputes.ts): one word against another. But the accused signed a
// receipt over the output it sent (`outputHash`) and keeps that output for its session's owner
// (AUDIT_PROTOCOL, node/step-archive.ts). So the gateway asks the accused for its record of the
// step: a receipt validly signed by the accused, for that session, step and layer range, over
// output bytes that are not finite or not the size of its slot, proves the accused sent bad
// activations, whatever the accuser says: it is barred for good at once, and the peers in
// disputes with it (its accuser among them) are cleared. It is then audited at that step, held
// to that record (the referee re-executes its committed inputs; a non-finite output is never
// within tolerance), which convicts it with a signed verdict, evidence the ledger takes.
// Anything else (no record, a refusal, a sound output: the accused may have sent the accuser
// other bytes than it keeps, which only the link between them saw) settles nothing: it stays a
// dispute. Runs after the dispute, off the request's path; one examination per (session, step,
// accused), at most MAX_PENDING at a time.

import type { OdsiHost } from '../../p2p/host.js';
import type { DisputeSite } from '../../route/ban-worthy.js';
import { DTYPE_BYTES, decodeTensor, type Dtype } from '../../protocol/messages.js';
import { allFinite } from '../../util/all-finite.js';
import { outputRows, type OdsiDomain } from '../records/eip712.js';
import { checkSigned, hashTensor, type SignedReceipt } from '../records/receipts.js';
import { addressOfPeer, sessionIdOf } from '../records/wire.js';
import { AuditFetchError, fetchCommitted } from './auditor.js';

/** examinations under way at most; more disputes meanwhile settle nothing */
export const MAX_PENDING = 16;
/** a record asked for before the accused signed it is asked for again after this, ms, up to FETCH_TRIES times */
const RETRY_MS = 250;
const FETCH_TRIES = 3;

export interface DisputeEvidenceOptions {
  /** asks the accused (AUDIT_PROTOCOL, as the session's owner) */
  host: OdsiHost;
  /** the EIP-712 domain receipts are signed under */
  domain: OdsiDomain;
  /** activation width (model dim) */
  dim: number;
  /** the gateway's ban list: a proven accused is barred for good */
  bans: { banForGood(peerId: string, reason?: string): void };
  /** told of a proven accused: the peers in disputes with it are cleared (the gateway's Disputes.absolve) */
  absolve(liar: string): void;
  /** per fetch, ms (default 5 s) */
  fetchTimeoutMs?: number;
  /**
   * audits the accused's step held to the record it signed (GatewayAccountability.auditSigned):
   * true when that convicted it, with evidence for the ledger; absent, or false (the audit could
   * not finish: e.g. an earlier step's receipt never reached the gateway), the bar stays this
   * gateway's alone
   */
  audit?(c: DisputeCase, receipt: SignedReceipt): Promise<boolean>;
}

/** One dispute to examine: `accuser` refused the input `accused` (hop `hopIndex` of the route) sent it at `step` of route session `sessionId`. */
export interface DisputeCase {
  accuser: string;
  accused: { peerId: string; addrs: string[]; start: number; end: number };
  hopIndex: number;
  sessionId: string;
  step: number;
}

export class DisputeEvidence {
  /** since start: disputes examined, and those the accused's own record settled */
  readonly stats = { examined: 0, proven: 0 };
  /** what each proven dispute showed, newest last (bounded) */
  readonly proven: { at: number; accused: string; accuser: string; reason: string }[] = [];
  private readonly pending = new Map<string, Promise<void>>();
  private readonly seen = new Set<string>();

  constructor(private readonly o: DisputeEvidenceOptions) {}

  /**
   * A dispute at `site`: examined when it is about an output the accused signed, i.e. the accuser
   * refused what the hop before it sent (an accusation of the next hop's reply is not).
   */
  consider(accuser: string, accused: string, site: DisputeSite): void {
    const i = site.hops.findIndex((h) => h.peerId === accuser);
    const up = i > 0 ? site.hops[i - 1] : undefined;
    if (up?.peerId === accused) this.examine({ accuser, accused: up, hopIndex: i - 1, sessionId: site.sessionId, step: site.step });
  }

  /** Examines the accused's record of the step in the background (at most once per session, step and accused). */
  examine(c: DisputeCase): void {
    const key = `${c.sessionId}#${c.step}#${c.accused.peerId}`;
    if (this.seen.has(key) || this.pending.size >= MAX_PENDING) return;
    this.seen.add(key);
    if (this.seen.size > 4096) this.seen.delete(this.seen.values().next().value as string);
    this.stats.examined++;
    const run = this.settle(c)
      .catch(() => undefined)
      .finally(() => this.pending.delete(key));
    this.pending.set(key, run);
  }

  /** resolves once every examination under way has finished (tests, reports) */
  async settled(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending.values()]);
  }

  private async settle(c: DisputeCase): Promise<void> {
    const found = await this.provenBadOutput(c);
    if (!found) return;
    const reason = `its own signed record of step ${c.step} of session ${c.sessionId}: ${found.why}`;
    this.stats.proven++;
    this.proven.push({ at: Date.now(), accused: c.accused.peerId, accuser: c.accuser, reason });
    if (this.proven.length > 256) this.proven.shift();
    this.o.bans.banForGood(c.accused.peerId, `sent bad activations (${reason})`);
    this.o.absolve(c.accused.peerId);
    // an audit held to that record convicts it with evidence the ledger takes (the bar then cites the verdict)
    await this.o.audit?.(c, found.receipt).catch(() => false);
  }

  /** What the accused's own record proves it sent wrong (and the receipt it signed), or undefined when it proves nothing. */
  private async provenBadOutput(c: DisputeCase): Promise<{ why: string; receipt: SignedReceipt } | undefined> {
    let data;
    for (let i = 0; ; i++) {
      try {
        data = await fetchCommitted(
          this.o.host,
          this.o.domain,
          c.accused,
          { sessionId: c.sessionId, fromStep: c.step, toStep: c.step },
          this.o.fetchTimeoutMs ?? 5_000,
        );
        break;
      } catch (e) {
        // a refusal may come before the accused signed (it signs after sending): asked again
        if (!(e instanceof AuditFetchError) || !e.answered || i + 1 >= FETCH_TRIES) return undefined;
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
    const why = recordProves(c, data, this.o.domain, this.o.dim);
    return why ? { why, receipt: data.receipt as SignedReceipt } : undefined;
  }
}

/**
 * What the accused's record of a step (as fetched: its receipt and the output it keeps) proves it
 * sent wrong, or undefined when it proves nothing: the receipt must verify, be the accused's, for
 * the case's session, step and layer range, and sign exactly these output bytes.
 */
export function recordProves(
  c: DisputeCase,
  record: { receipt: unknown; output: { dtype: Dtype; bytes: Uint8Array } },
  domain: OdsiDomain,
  dim: number,
): string | undefined {
  const receipt = record.receipt as SignedReceipt;
  if (!checkSigned('ExecutionReceipt', receipt, domain).ok) return undefined;
  const r = receipt.record;
  const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();
  if (!same(r.signer, addressOfPeer(c.accused.peerId)) || !same(r.sessionId, sessionIdOf(c.sessionId))) return undefined;
  if (r.step !== c.step || r.layerStart !== c.accused.start || r.layerEnd !== c.accused.end) return undefined;
  const { dtype, bytes } = record.output;
  if (!same(hashTensor(bytes), r.outputHash)) return undefined;
  const values = outputRows(r) * dim;
  if (bytes.length !== values * DTYPE_BYTES[dtype]) return `${bytes.length} output bytes signed for ${values} values of ${dtype}`;
  return allFinite(decodeTensor(bytes, dtype, values)) ? undefined : 'the output it signed is not finite';
}
