// The secp256k1 ECDSA primitives behind odsi's record signatures, with three interchangeable
// backends, fastest first: libsecp256k1 as a native addon (npm secp256k1, its prebuilt binary;
// ~5x faster than the WASM build at recover, ~2x at sign), libsecp256k1 compiled to WASM (npm
// tiny-secp256k1; 4–6x faster than pure JS), and @noble/curves (pure JS). Every hop signs and
// checks a receipt per token, so this is on each token's CPU bill. Auto takes the first that
// loads; ODSI_ECDSA names one. All produce the same bytes: RFC 6979 nonces without extra
// entropy, low-s, same recovery id.

import { createRequire } from 'node:module';
import { secp256k1 } from '@noble/curves/secp256k1.js';

export type BackendName = 'native' | 'libsecp256k1' | 'noble';

export interface EcdsaBackend {
  readonly name: BackendName;
  /** RFC 6979 + low-s signature of `digest` (signed as is, no hashing): r ‖ s and the recovery id. */
  sign(digest: Uint8Array, secret: Uint8Array): { rs: Uint8Array; recovery: number };
  /**
   * The 65-byte uncompressed public key Q with ecrecover(digest, 27 + recovery, r, s) = Q.
   * Throws an Error saying why when there is none (r not an x coordinate, r or s out of range).
   * Does not judge s: callers reject high-s first.
   */
  recover(digest: Uint8Array, rs: Uint8Array, recovery: 0 | 1): Uint8Array;
  /**
   * Whether ecrecover(digest, 27 + recovery, r, s) is exactly `pub` (65 bytes uncompressed, a
   * key this process sees again and again: backends may keep per-key tables, weakly held).
   * Same low-s caveat as recover; false, never a throw, for anything that does not recover.
   */
  recoversTo(digest: Uint8Array, rs: Uint8Array, recovery: 0 | 1, pub: Uint8Array): boolean;
  /**
   * Plain ECDSA verification of r ‖ s over `digest` against `pub` (33 or 65 bytes), for
   * signatures that carry no recovery id (OPENs, adverts): true only for a low-s signature.
   * False, never a throw, for anything malformed.
   */
  verify(digest: Uint8Array, rs: Uint8Array, pub: Uint8Array): boolean;
}

export const nobleEcdsa: EcdsaBackend = {
  name: 'noble',
  sign(digest, secret) {
    // prehash: false — the EIP-712 digest is signed as is; "recovered" layout is recid ‖ r ‖ s
    const rec = secp256k1.sign(digest, secret, { prehash: false, lowS: true, format: 'recovered' });
    return { rs: rec.slice(1), recovery: rec[0]! };
  },
  recover(digest, rs, recovery) {
    const sig = new Uint8Array(65);
    sig[0] = recovery;
    sig.set(rs, 1);
    // Signature.recoverPublicKey hashes nothing (the top-level helper's prehash: false
    // equivalent) and gives the point, so it serialises uncompressed without a square root
    return secp256k1.Signature.fromBytes(sig, 'recovered').recoverPublicKey(digest).toBytes(false);
  },
  recoversTo(digest, rs, recovery, pub) {
    try {
      return nobleRecoversTo(digest, rs, recovery, pub);
    } catch {
      return false;
    }
  },
  verify(digest, rs, pub) {
    try {
      return secp256k1.verify(rs, digest, pub, { prehash: false, lowS: true });
    } catch {
      return false;
    }
  },
};

// Pure-JS recovery costs a square root plus an un-cached double multiplication; against a
// known key the check is u1·G + u2·Q with a precomputed window table for Q (~3x cheaper).
// It proves the same thing: R.x = r exactly and parity(R.y) = recovery means ecrecover
// returns Q.
const Point = secp256k1.Point;
const Fn = Point.Fn;
const N = Point.CURVE().n;
const noblePoints = new WeakMap<Uint8Array, { point: InstanceType<typeof Point>; seen: number }>();
const toBig = (b: Uint8Array) => BigInt(`0x${Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex') || '0'}`);

function nobleRecoversTo(digest: Uint8Array, rs: Uint8Array, recovery: number, pub: Uint8Array): boolean {
  let known = noblePoints.get(pub);
  if (!known) noblePoints.set(pub, (known = { point: Point.fromBytes(pub), seen: 0 }));
  if (++known.seen === 2) known.point.precompute(8, false); // a repeat signer: worth the table
  const r = toBig(rs.subarray(0, 32));
  const s = toBig(rs.subarray(32, 64));
  if (r <= 0n || r >= N || s <= 0n || s >= N) return false;
  const z = toBig(digest.subarray(0, 32)); // bits2int: the leftmost 256 bits
  const sInv = Fn.inv(s);
  const R = Point.BASE.multiplyUnsafe(Fn.mul(Fn.create(z), sInv)).add(known.point.multiplyUnsafe(Fn.mul(r, sInv)));
  if (R.is0()) return false;
  const a = R.toAffine();
  return a.x === r && Number(a.y & 1n) === recovery;
}

type Tiny = typeof import('tiny-secp256k1');

/** What odsi calls of npm secp256k1's native build (`secp256k1/bindings`: it throws when no binary loads, never falls back to JS). */
interface NativeSecp256k1 {
  privateKeyVerify(secret: Uint8Array): boolean;
  ecdsaSign(digest: Uint8Array, secret: Uint8Array): { signature: Uint8Array; recid: number };
  ecdsaRecover(rs: Uint8Array, recid: number, digest: Uint8Array, compressed: false): Uint8Array;
  ecdsaVerify(rs: Uint8Array, digest: Uint8Array, pub: Uint8Array): boolean;
}

/** What differs between the two libsecp256k1 builds: their calls for 32-byte digests. */
interface LibsecpBuild {
  /** whether this build signs `digest` with `secret` as RFC 6979 does (else noble signs) */
  signs(digest: Uint8Array, secret: Uint8Array): boolean;
  sign(digest: Uint8Array, secret: Uint8Array): { rs: Uint8Array; recovery: number };
  /** the uncompressed key; null or a throw when none recovers */
  recover(digest: Uint8Array, rs: Uint8Array, recovery: 0 | 1): Uint8Array | null;
  /** plain verification, low-s only; false or a throw when it fails */
  verify(digest: Uint8Array, rs: Uint8Array, pub: Uint8Array): boolean;
}

/** A libsecp256k1 build as a backend; anything outside its domain goes to noble. */
function libsecpBackend(name: BackendName, build: LibsecpBuild): EcdsaBackend {
  const backend: EcdsaBackend = {
    name,
    sign(digest, secret) {
      // noble accepts digests of any length (bits2int) and reports bad keys in its own words:
      // route those cases to it so behaviour never depends on the backend
      if (digest.length !== 32 || !build.signs(digest, secret)) return nobleEcdsa.sign(digest, secret);
      return build.sign(digest, secret);
    },
    recover(digest, rs, recovery) {
      if (digest.length !== 32) return nobleEcdsa.recover(digest, rs, recovery);
      let pub: Uint8Array | null;
      try {
        pub = build.recover(digest, rs, recovery);
      } catch {
        // the builds say only "Expected Signature" / "couldn't parse signature" for every malformed case
        throw new Error('r or s is zero or not below the curve order, or r is not the x coordinate of a curve point');
      }
      if (!pub) throw new Error('no public key recovers from this signature');
      return pub;
    },
    // libsecp256k1's plain verify would be cheaper but ignores v: with v flipped it still
    // passes against Q while ecrecover returns another key, so recover and compare
    recoversTo(digest, rs, recovery, pub) {
      try {
        return equalBytes(backend.recover(digest, rs, recovery), pub);
      } catch {
        return false;
      }
    },
    verify(digest, rs, pub) {
      if (digest.length !== 32) return nobleEcdsa.verify(digest, rs, pub);
      try {
        return rs.length === 64 && build.verify(digest, rs, pub);
      } catch {
        return false;
      }
    },
  };
  return backend;
}

/** libsecp256k1 as a native addon (npm secp256k1). */
function nativeBackend(lib: NativeSecp256k1): EcdsaBackend {
  return libsecpBackend('native', {
    // this build's nonce takes the digest unreduced: for a digest ≥ n (a 2^-128 chance for a
    // hash) RFC 6979 reduces it first, so noble signs those
    signs: (digest, secret) => !notBelowN(digest) && secret.length === 32 && lib.privateKeyVerify(secret),
    sign(digest, secret) {
      const { signature, recid } = lib.ecdsaSign(digest, secret);
      return { rs: signature, recovery: recid };
    },
    recover: (digest, rs, recovery) => lib.ecdsaRecover(rs, recovery, digest, false),
    // libsecp256k1's verify accepts only the lower-s form
    verify: (digest, rs, pub) => lib.ecdsaVerify(rs, digest, pub),
  });
}

/** libsecp256k1 compiled to WASM (npm tiny-secp256k1). */
function wasmBackend(tiny: Tiny): EcdsaBackend {
  return libsecpBackend('libsecp256k1', {
    signs: (_digest, secret) => tiny.isPrivate(secret),
    sign(digest, secret) {
      const { signature, recoveryId } = tiny.signRecoverable(digest, secret);
      return { rs: signature, recovery: recoveryId };
    },
    recover: (digest, rs, recovery) => tiny.recover(digest, rs, recovery, false),
    verify: (digest, rs, pub) => tiny.verify(digest, pub, rs, true), // strict: low-s only
  });
}

const SELF_TEST = {
  rs: '5b8478db7aca5ce61cb05a96ae1a82f63d3cf68e74012dfe74f8379aee6f2e1e0fa6b21ba8c6d03e4877ccb11f3abfdbbe033d9594eb8c2b4055807ee1964b1d',
  recovery: 0,
};

type Loaded = { backend?: EcdsaBackend; error?: string };

/**
 * `make` builds the backend from its CommonJS module (through require: a load failure is then an
 * exception caught here, not a failed static import of every module that signs); then a
 * self-test against noble's signature for a fixed key and digest (precomputed: calling noble
 * here would build its base-point tables for nothing). A mismatch disables that backend.
 */
function load(make: (require: NodeJS.Require) => EcdsaBackend): Loaded {
  try {
    const backend = make(createRequire(import.meta.url));
    const a = backend.sign(new Uint8Array(32).fill(0xab), new Uint8Array(32).fill(0x11));
    if (a.recovery !== SELF_TEST.recovery || Buffer.from(a.rs).toString('hex') !== SELF_TEST.rs)
      return { error: `${backend.name} self-test signature differs from the RFC 6979 one` };
    return { backend };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

let wasm: Loaded | undefined;
/** The libsecp256k1 WASM backend, or undefined (and why) when its module cannot load. Loaded once, on first use. */
export function wasmEcdsa(): Loaded {
  return (wasm ??= load((require) => wasmBackend(require('tiny-secp256k1') as Tiny)));
}

let native: Loaded | undefined;
/** The libsecp256k1 native backend, or undefined (and why) when no binary for this platform loads. Loaded once, on first use. */
export function nativeEcdsa(): Loaded {
  return (native ??= load((require) => nativeBackend(require('secp256k1/bindings') as NativeSecp256k1)));
}

/** Which backend to use: auto (the fastest that loads: native, libsecp256k1 (WASM), noble), or one of them, required. */
export type EcdsaChoice = 'auto' | 'native' | 'libsecp256k1' | 'noble';

/** Parses the ODSI_ECDSA setting (read once at start-up by the CLI); a misspelt value is an error. */
export function parseEcdsaChoice(value: string | undefined): EcdsaChoice {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto';
  if (v !== 'auto' && v !== 'native' && v !== 'libsecp256k1' && v !== 'noble')
    throw new Error(`ODSI_ECDSA must be auto, native, libsecp256k1 or noble, got ${JSON.stringify(value)}`);
  return v;
}

let want: EcdsaChoice = 'auto';
let chosen: EcdsaBackend | undefined;

/** Sets the backend choice for this process (start-up, before the first signature). */
export function selectEcdsa(choice: EcdsaChoice): void {
  want = choice;
  chosen = undefined;
}

/** The backend odsi signs and verifies with, as chosen by selectEcdsa (default auto). */
export function ecdsa(): EcdsaBackend {
  if (chosen) return chosen;
  if (want === 'noble') return (chosen = nobleEcdsa);
  if (want === 'native' || want === 'auto') {
    const n = nativeEcdsa();
    if (n.backend) return (chosen = n.backend);
    if (want === 'native') throw new Error(`ODSI_ECDSA=native but the secp256k1 addon cannot load: ${n.error}`);
  }
  const w = wasmEcdsa();
  if (w.backend) return (chosen = w.backend);
  if (want === 'libsecp256k1') throw new Error(`ODSI_ECDSA=libsecp256k1 but tiny-secp256k1 cannot load: ${w.error}`);
  return (chosen = nobleEcdsa);
}

// n / 2, big-endian: s above it is the malleable twin of a low-s signature
const HALF_N = Uint8Array.from(Buffer.from('7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0', 'hex'));

const N_BYTES = Uint8Array.from(Buffer.from('fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141', 'hex'));

/** Whether the 32-byte big-endian x is ≥ n. */
function notBelowN(x: Uint8Array): boolean {
  for (let i = 0; i < 32; i++) if (x[i] !== N_BYTES[i]) return x[i]! > N_BYTES[i]!;
  return true;
}

/** Whether the 32-byte big-endian s exceeds n / 2 (rejected, like OpenZeppelin ECDSA.recover). */
export function isHighS(s: Uint8Array): boolean {
  for (let i = 0; i < 32; i++) if (s[i] !== HALF_N[i]) return s[i]! > HALF_N[i]!;
  return false;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
