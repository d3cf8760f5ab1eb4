// Checking a voter's receipt against a final round's certified result (DESIGN.md, "Receipts"): the
// vote's leaf, its RFC 6962 audit path and the certified Merkle root, all recomputed in the browser
// (with Web Crypto where the page has it).
// Self-contained (type imports only), so that it runs in the browser and under `node --test` alike.

import type { Certified } from './api'

/** A counted vote as the tree holds it: `year` and `rank` as strings, `rank` null when absent. */
export interface Leaf {
  album: string
  band: string
  id: string
  rank: string | null
  round: string
  year: string | null
}

/** `GET /api/rounds/{id}/proof/{vote id}`: where a vote sits in the round's tree. */
export interface Proof {
  round: string
  leaf: Leaf
  index: number
  size: number
  /** The audit path, lowercase hex, from the leaf's sibling up. */
  path: string[]
  merkle_root: string
}

/** What the receipt to check says: its vote id, round, band and album (and year, when kept). */
export interface Kept {
  id: string
  round: string
  name: string
  album: string
  year?: string
}

/**
 * A check's outcome: `verified` (the proof leads to the certified root and the leaf is the vote
 * kept), `mismatch` (the proof does not lead to the certified root, or it is about another vote or
 * round), `different` (it does, but the leaf's band or album is not the one the voter chose).
 */
export type Outcome = 'verified' | 'mismatch' | 'different'

const encoder = new TextEncoder()

/** A leaf's bytes: its canonical JSON (keys sorted, no spaces, UTF-8, non-ASCII as is). */
export function leafBytes(leaf: Leaf): Uint8Array {
  // Built key by key, in sorted order: the server's other fields, if any, are not part of the leaf.
  const canonical = {
    album: leaf.album,
    band: leaf.band,
    id: leaf.id,
    rank: leaf.rank ?? null,
    round: leaf.round,
    year: leaf.year ?? null,
  }
  return encoder.encode(JSON.stringify(canonical))
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** The bytes of a SHA-256 written in hex (either case), or null when it is not 64 hex digits. */
export function hashOfHex(hex: string): Uint8Array | null {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    return null
  }
  const out = new Uint8Array(32)
  for (let i = 0; i < 32; i++) {
    out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16)
  }
  return out
}

/** SHA-256 of the parts, one after the other: Web Crypto's, or {@link sha256Bytes} where a page
 * served over plain HTTP has none (`crypto.subtle` exists only in secure contexts). */
async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const length = parts.reduce((n, p) => n + p.length, 0)
  const all = new Uint8Array(length)
  let at = 0
  for (const p of parts) {
    all.set(p, at)
    at += p.length
  }
  const subtle = globalThis.crypto?.subtle
  return subtle ? new Uint8Array(await subtle.digest('SHA-256', all)) : sha256Bytes(all)
}

const K = Uint32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
  0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
  0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
  0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
])

/** SHA-256 (FIPS 180-4) in plain code, for pages without Web Crypto. */
export function sha256Bytes(data: Uint8Array): Uint8Array {
  // The message, a 1 bit, zeros, and its length in bits (64-bit big-endian): whole 64-byte blocks.
  const blocks = Math.ceil((data.length + 9) / 64)
  const padded = new Uint8Array(blocks * 64)
  padded.set(data)
  padded[data.length] = 0x80
  const view = new DataView(padded.buffer)
  view.setUint32(padded.length - 8, Math.floor(data.length / 0x20000000))
  view.setUint32(padded.length - 4, (data.length * 8) >>> 0)
  const h = Uint32Array.from([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19])
  const w = new Uint32Array(64)
  const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n))
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < 16; i++) {
      w[i] = view.getUint32(b * 64 + i * 4)
    }
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3)
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10)
      w[i] = w[i - 16] + s0 + w[i - 7] + s1
    }
    let [a, bb, c, d, e, f, g, hh] = h
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c))) >>> 0
      hh = g
      g = f
      f = e
      e = (d + t1) >>> 0
      d = c
      c = bb
      bb = a
      a = (t1 + t2) >>> 0
    }
    h[0] += a
    h[1] += bb
    h[2] += c
    h[3] += d
    h[4] += e
    h[5] += f
    h[6] += g
    h[7] += hh
  }
  const out = new Uint8Array(32)
  const outView = new DataView(out.buffer)
  h.forEach((x, i) => outView.setUint32(i * 4, x))
  return out
}

const LEAF = Uint8Array.of(0)
const NODE = Uint8Array.of(1)

/** RFC 6962's leaf hash: SHA-256(0x00 || leaf). */
export function leafHash(leaf: Uint8Array): Promise<Uint8Array> {
  return sha256(LEAF, leaf)
}

/** RFC 6962's node hash: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Promise<Uint8Array> {
  return sha256(NODE, left, right)
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

/**
 * Whether `path` (hex) proves that the leaf `leaf` (its bytes) is number `index` of a tree of
 * `size` leaves whose root is `root` (hex): RFC 9162, section 2.1.3.2.
 */
export async function verifyInclusion(leaf: Uint8Array, index: number, size: number, path: readonly string[], root: string): Promise<boolean> {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size || !Array.isArray(path)) {
    return false
  }
  const expected = hashOfHex(root)
  const siblings = path.map(hashOfHex)
  if (!expected || siblings.some((p) => p === null)) {
    return false
  }
  // Halving by division: the numbers may pass 2^31, where `>>` would break.
  const half = (n: number) => Math.floor(n / 2)
  const odd = (n: number) => n % 2 === 1
  let fn = index
  let sn = size - 1
  let r = await leafHash(leaf)
  for (const p of siblings as Uint8Array[]) {
    if (sn === 0) {
      return false
    }
    if (odd(fn) || fn === sn) {
      r = await nodeHash(p, r)
      while (!odd(fn) && fn !== 0) {
        fn = half(fn)
        sn = half(sn)
      }
    } else {
      r = await nodeHash(r, p)
    }
    fn = half(fn)
    sn = half(sn)
  }
  return sn === 0 && equal(r, expected)
}

/** A name as the server keeps it: trimmed, in Unicode's composed form (NFC). */
function normal(text: string | null | undefined): string {
  return (text ?? '').trim().normalize('NFC')
}

/**
 * Checks `proof` for the receipt `kept` against the certified result `certified`: the proof must be
 * about this vote in this round, lead from its leaf to the certified root in a tree of the certified
 * number of leaves, and its leaf must be the band and album the voter chose.
 */
export async function checkProof(kept: Kept, certified: Pick<Certified, 'round' | 'leaves' | 'merkle_root'>, proof: Proof): Promise<Outcome> {
  const root = (certified.merkle_root ?? '').toLowerCase()
  const about =
    proof.round === kept.round &&
    certified.round === kept.round &&
    proof.leaf?.id === kept.id &&
    proof.leaf.round === kept.round &&
    typeof proof.merkle_root === 'string' &&
    proof.merkle_root.toLowerCase() === root &&
    proof.size === certified.leaves
  if (!about || !(await verifyInclusion(leafBytes(proof.leaf), proof.index, proof.size, proof.path, root))) {
    return 'mismatch'
  }
  const same =
    normal(proof.leaf.band) === normal(kept.name) &&
    normal(proof.leaf.album) === normal(kept.album) &&
    (!kept.year || normal(proof.leaf.year) === normal(kept.year))
  return same ? 'verified' : 'different'
}
