// Encrypted key files in the Ethereum "Web3 Secret Storage" v3 JSON format, so an odsi
// identity can be imported by geth, foundry (`cast wallet import`), ethers or MetaMask
// and vice versa. The KDF and cipher come from node:crypto (native scrypt, pbkdf2 and
// AES-128-CTR); only the keccak-256 MAC comes from @noble/hashes.

import { createCipheriv, createDecipheriv, pbkdf2, randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto';
import { chmod, link, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { scryptAsync as nobleScryptAsync } from '@noble/hashes/scrypt.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { identityFromSecret, type Identity } from './identity.js';

export class KeystoreError extends Error {
  constructor(
    message: string,
    readonly code: 'wrong_passphrase' | 'malformed' | 'unsupported' | 'io' = 'malformed',
  ) {
    super(message);
    this.name = 'KeystoreError';
  }
}

export interface ScryptParams {
  /** CPU/memory cost, a power of two */
  n: number;
  r: number;
  p: number;
}

/** geth's "standard" parameters: ~256 MiB and roughly a second per unlock, on purpose. */
export const STANDARD_SCRYPT: ScryptParams = { n: 262144, r: 8, p: 1 };

export interface KeystoreV3 {
  version: 3;
  id: string;
  /** lower-case hex address without 0x (geth writes it; optional when reading) */
  address?: string;
  crypto: {
    cipher: 'aes-128-ctr';
    cipherparams: { iv: string };
    ciphertext: string;
    kdf: 'scrypt' | 'pbkdf2';
    kdfparams: ScryptKdfParams | Pbkdf2KdfParams;
    mac: string;
  };
}
interface ScryptKdfParams {
  dklen: number;
  n: number;
  r: number;
  p: number;
  salt: string;
}
interface Pbkdf2KdfParams {
  dklen: number;
  c: number;
  prf: 'hmac-sha256';
  salt: string;
}

export interface EncryptOptions {
  scrypt?: ScryptParams;
  /** fixed salt / iv / uuid, only for reproducible tests */
  salt?: Uint8Array;
  iv?: Uint8Array;
  id?: string;
}

function scryptAsync(pass: Buffer, salt: Uint8Array, dklen: number, p: ScryptParams): Promise<Buffer> {
  if (!Number.isInteger(p.n) || p.n < 2 || (p.n & (p.n - 1)) !== 0)
    throw new KeystoreError(`scrypt n must be a power of two ≥ 2, got ${p.n}`, 'malformed');
  if (!Number.isInteger(p.r) || p.r < 1 || !Number.isInteger(p.p) || p.p < 1)
    throw new KeystoreError('scrypt r and p must be positive integers', 'malformed');
  // 128·r·n bytes of working memory (+ slack); refuse absurd files instead of exhausting RAM
  const need = 128 * p.r * p.n + 128 * p.r * p.p + (1 << 20);
  if (need > 2 ** 31) throw new KeystoreError(`scrypt parameters need ${Math.round(need / 2 ** 20)} MiB; refusing`, 'unsupported');
  // OpenSSL enforces RFC 7914's n < 2^(16·r); geth does not, and some files (the spec's own
  // example: n = 2^18, r = 1) break it. Those take the pure-JS path: correct, ~3× slower.
  if (p.n >= 2 ** Math.min(16 * p.r, 52))
    return nobleScryptAsync(pass, salt, { N: p.n, r: p.r, p: p.p, dkLen: dklen, maxmem: need * 2 }).then((k) => Buffer.from(k));
  return new Promise((resolve, reject) =>
    scrypt(pass, salt, dklen, { N: p.n, r: p.r, p: p.p, maxmem: need * 2 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

function pbkdf2Async(pass: Buffer, salt: Uint8Array, c: number, dklen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => pbkdf2(pass, salt, c, dklen, 'sha256', (err, key) => (err ? reject(err) : resolve(key))));
}

function mac(derived: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  const buf = new Uint8Array(16 + ciphertext.length);
  buf.set(derived.subarray(16, 32), 0);
  buf.set(ciphertext, 16);
  return keccak_256(buf);
}

function passBytes(passphrase: string): Buffer {
  // NFKD like ethers/geth-compatible tools, so the same typed passphrase unlocks everywhere
  return Buffer.from(passphrase.normalize('NFKD'), 'utf8');
}

/** Encrypts a 32-byte secp256k1 secret into a v3 keystore object. */
export async function encryptKeystore(secret: Uint8Array, passphrase: string, opts: EncryptOptions = {}): Promise<KeystoreV3> {
  const id = identityFromSecret(secret); // validates the secret
  const params = opts.scrypt ?? STANDARD_SCRYPT;
  const salt = opts.salt ?? randomBytes(32);
  const iv = opts.iv ?? randomBytes(16);
  if (iv.length !== 16) throw new KeystoreError('iv must be 16 bytes', 'malformed');
  const derived = await scryptAsync(passBytes(passphrase), salt, 32, params);
  const cipher = createCipheriv('aes-128-ctr', derived.subarray(0, 16), iv);
  const ciphertext = Buffer.concat([cipher.update(secret), cipher.final()]);
  return {
    version: 3,
    id: opts.id ?? randomUUID(),
    address: id.address.slice(2).toLowerCase(),
    crypto: {
      cipher: 'aes-128-ctr',
      cipherparams: { iv: bytesToHex(iv) },
      ciphertext: bytesToHex(ciphertext),
      kdf: 'scrypt',
      kdfparams: { dklen: 32, n: params.n, r: params.r, p: params.p, salt: bytesToHex(salt) },
      mac: bytesToHex(mac(derived, ciphertext)),
    },
  };
}

function hexField(v: unknown, what: string): Uint8Array {
  if (typeof v !== 'string' || !/^(0x)?([0-9a-fA-F]{2})*$/.test(v))
    throw new KeystoreError(`keystore field ${what} is not hex`, 'malformed');
  return hexToBytes(v.replace(/^0x/, ''));
}

/** Decrypts a v3 keystore (scrypt or pbkdf2-hmac-sha256, aes-128-ctr) to the 32-byte secret. */
export async function decryptKeystore(json: unknown, passphrase: string): Promise<Uint8Array> {
  const ks = json as Partial<KeystoreV3> & { Crypto?: KeystoreV3['crypto'] };
  if (!ks || typeof ks !== 'object') throw new KeystoreError('keystore is not a JSON object', 'malformed');
  if (ks.version !== 3) throw new KeystoreError(`unsupported keystore version ${String(ks.version)} (only v3)`, 'unsupported');
  const c = ks.crypto ?? ks.Crypto; // some old geth files capitalise it
  if (!c || typeof c !== 'object') throw new KeystoreError('keystore has no crypto section', 'malformed');
  if (c.cipher !== 'aes-128-ctr') throw new KeystoreError(`unsupported cipher ${String(c.cipher)} (only aes-128-ctr)`, 'unsupported');
  const iv = hexField(c.cipherparams?.iv, 'crypto.cipherparams.iv');
  const ciphertext = hexField(c.ciphertext, 'crypto.ciphertext');
  const expectedMac = hexField(c.mac, 'crypto.mac');
  if (iv.length !== 16) throw new KeystoreError('keystore iv must be 16 bytes', 'malformed');
  if (ciphertext.length === 0 || ciphertext.length > 32) throw new KeystoreError('keystore ciphertext must be 1..32 bytes', 'malformed');
  const kp = c.kdfparams as Partial<ScryptKdfParams & Pbkdf2KdfParams> | undefined;
  if (!kp || typeof kp !== 'object') throw new KeystoreError('keystore has no kdfparams', 'malformed');
  const dklen = kp.dklen ?? 32;
  if (dklen < 32) throw new KeystoreError('keystore dklen must be ≥ 32', 'malformed');
  const salt = hexField(kp.salt, 'kdfparams.salt');
  let derived: Uint8Array;
  if (c.kdf === 'scrypt') {
    derived = await scryptAsync(passBytes(passphrase), salt, dklen, { n: Number(kp.n), r: Number(kp.r), p: Number(kp.p) });
  } else if (c.kdf === 'pbkdf2') {
    if (kp.prf !== 'hmac-sha256') throw new KeystoreError(`unsupported pbkdf2 prf ${String(kp.prf)}`, 'unsupported');
    if (!Number.isInteger(kp.c) || kp.c! < 1) throw new KeystoreError('pbkdf2 c must be a positive integer', 'malformed');
    derived = await pbkdf2Async(passBytes(passphrase), salt, kp.c!, dklen);
  } else {
    throw new KeystoreError(`unsupported kdf ${String(c.kdf)} (scrypt or pbkdf2)`, 'unsupported');
  }
  const actual = mac(derived, ciphertext);
  if (expectedMac.length !== 32 || !timingSafeEqual(actual, expectedMac))
    throw new KeystoreError('wrong passphrase (keystore MAC mismatch)', 'wrong_passphrase');
  const decipher = createDecipheriv('aes-128-ctr', derived.subarray(0, 16), iv);
  const plain = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  // very old tools dropped leading zero bytes of the key; geth left-pads them back
  const secret = new Uint8Array(32);
  secret.set(plain, 32 - plain.length);
  return secret;
}

/** Decrypts a keystore object and checks its optional address field against the key. */
export async function identityFromKeystore(json: unknown, passphrase: string): Promise<Identity> {
  const secret = await decryptKeystore(json, passphrase);
  let id: Identity;
  try {
    id = identityFromSecret(secret);
  } catch {
    throw new KeystoreError('keystore decrypts to an invalid secp256k1 key', 'malformed');
  }
  const addr = (json as KeystoreV3).address;
  if (typeof addr === 'string' && addr.replace(/^0x/, '').toLowerCase() !== id.address.slice(2).toLowerCase())
    throw new KeystoreError(`keystore address ${addr} does not match its key (${id.address})`, 'malformed');
  return id;
}

/** Reads and decrypts a keystore file. */
export async function loadIdentity(file: string, passphrase: string): Promise<Identity> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new KeystoreError(`cannot read keystore ${file}: ${(e as Error).message}`, 'io');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KeystoreError(`keystore ${file} is not valid JSON`, 'malformed');
  }
  try {
    return await identityFromKeystore(json, passphrase);
  } catch (e) {
    if (e instanceof KeystoreError) e.message = `${file}: ${e.message}`;
    throw e;
  }
}

export interface SaveOptions extends EncryptOptions {
  /** replace an existing file (default: refuse) */
  overwrite?: boolean;
}

/**
 * Encrypts an identity and writes it with mode 0600. The file appears atomically (temp
 * file + rename) so a crash never leaves a half-written key behind.
 */
export async function saveIdentity(file: string, identity: Identity, passphrase: string, opts: SaveOptions = {}): Promise<KeystoreV3> {
  const ks = await encryptKeystore(identity.secret, passphrase, opts);
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await open(tmp, 'wx', 0o600).catch((e: Error) => {
    throw new KeystoreError(`cannot create ${tmp}: ${e.message}`, 'io');
  });
  try {
    await fh.writeFile(JSON.stringify(ks, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await chmod(tmp, 0o600); // umask cannot widen it, but be explicit
    if (opts.overwrite) await rename(tmp, file);
    else {
      // link() is atomic and fails if the target exists: never clobbers a key
      await link(tmp, file).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'EEXIST') throw new KeystoreError(`${file} already exists (use --force to replace it)`, 'io');
        throw new KeystoreError(`cannot create ${file}: ${e.message}`, 'io');
      });
    }
  } finally {
    await unlink(tmp).catch(() => {}); // after rename it is gone already
  }
  return ks;
}
