// The receipt check (src/receipt.ts) against RFC 6962's definitions and the Certificate
// Transparency project's test vectors. Run with `npm test`.

import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import { checkProof, leafBytes, sha256Bytes, toHex, verifyInclusion, type Leaf, type Proof } from '../src/receipt.ts'

/** The CT test leaves. */
const LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((hex) => new Uint8Array(Buffer.from(hex, 'hex')))

/** The CT roots of the first 1…8 leaves. */
const ROOTS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
]

// RFC 6962, section 2.1, written from its definitions with Node's own SHA-256 (not Web Crypto's),
// so that the code under test is checked against an independent reference.

function sha256(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash('sha256')
  for (const part of parts) {
    hash.update(part)
  }
  return new Uint8Array(hash.digest())
}

/** The largest power of two smaller than n (n > 1). */
function split(n: number): number {
  let k = 1
  while (k * 2 < n) {
    k *= 2
  }
  return k
}

/** MTH(D[n]). */
function mth(d: Uint8Array[]): Uint8Array {
  if (d.length === 0) {
    return sha256()
  }
  if (d.length === 1) {
    return sha256(Uint8Array.of(0), d[0])
  }
  const k = split(d.length)
  return sha256(Uint8Array.of(1), mth(d.slice(0, k)), mth(d.slice(k)))
}

/** PATH(m, D[n]). */
function auditPath(m: number, d: Uint8Array[]): Uint8Array[] {
  if (d.length <= 1) {
    return []
  }
  const k = split(d.length)
  return m < k ? [...auditPath(m, d.slice(0, k)), mth(d.slice(k))] : [...auditPath(m - k, d.slice(k)), mth(d.slice(0, k))]
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex')

test('the reference tree gives the CT roots', () => {
  assert.equal(hex(mth([])), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  for (let n = 1; n <= 8; n++) {
    assert.equal(hex(mth(LEAVES.slice(0, n))), ROOTS[n - 1], `root of ${n} leaves`)
  }
})

/** CT's published audit paths: (index, size, path). */
const PATHS: Array<[number, number, string[]]> = [
  [0, 1, []],
  [
    0,
    8,
    [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  ],
  [
    5,
    8,
    [
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  ],
  [2, 3, ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125']],
  [
    1,
    5,
    [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  ],
]

test("CT's published audit paths are the reference's, and verify", async () => {
  for (const [index, size, path] of PATHS) {
    assert.deepEqual(auditPath(index, LEAVES.slice(0, size)).map(hex), path, `path of leaf ${index} of ${size}`)
    assert.equal(await verifyInclusion(LEAVES[index], index, size, path, ROOTS[size - 1]), true, `leaf ${index} of ${size}`)
  }
})

test('every leaf of every tree of 1 to 8 leaves verifies', async () => {
  for (let size = 1; size <= 8; size++) {
    const tree = LEAVES.slice(0, size)
    for (let index = 0; index < size; index++) {
      const path = auditPath(index, tree).map(hex)
      assert.equal(await verifyInclusion(tree[index], index, size, path, ROOTS[size - 1]), true, `leaf ${index} of ${size}`)
      // The root may come in upper case.
      assert.equal(await verifyInclusion(tree[index], index, size, path, ROOTS[size - 1].toUpperCase()), true)
    }
  }
})

test('a forged leaf, a wrong index, a wrong size or a changed path is refused', async () => {
  const forged = new Uint8Array(Buffer.from('not a leaf'))
  for (let size = 1; size <= 8; size++) {
    const tree = LEAVES.slice(0, size)
    const root = ROOTS[size - 1]
    for (let index = 0; index < size; index++) {
      const leaf = tree[index]
      const path = auditPath(index, tree).map(hex)
      const at = `leaf ${index} of ${size}`
      assert.equal(await verifyInclusion(forged, index, size, path, root), false, `${at}: a forged leaf`)
      for (let other = 0; other < size; other++) {
        if (other !== index) {
          assert.equal(await verifyInclusion(tree[other], index, size, path, root), false, `${at}: leaf ${other} in its place`)
          assert.equal(await verifyInclusion(leaf, other, size, path, root), false, `${at}: index ${other}`)
        }
      }
      for (const wrong of [-1, size, size + 1, 0.5, Number.NaN]) {
        assert.equal(await verifyInclusion(leaf, wrong, size, path, root), false, `${at}: index ${wrong}`)
      }
      // A size the index is not in. (A wrong size is not always caught by the path alone: the
      // receipt check also holds the size to the certified number of leaves.)
      for (const wrong of [0, index, -1, Number.NaN]) {
        assert.equal(await verifyInclusion(leaf, index, wrong, path, root), false, `${at}: size ${wrong}`)
      }
      if (path.length > 0) {
        assert.equal(await verifyInclusion(leaf, index, size, path.slice(0, -1), root), false, `${at}: a truncated path`)
        assert.equal(await verifyInclusion(leaf, index, size, path.slice(1), root), false, `${at}: a path without its first step`)
        const flipped = [...path]
        flipped[0] = (flipped[0][0] === '0' ? '1' : '0') + flipped[0].slice(1)
        assert.equal(await verifyInclusion(leaf, index, size, flipped, root), false, `${at}: a changed path`)
        assert.equal(await verifyInclusion(leaf, index, size, [...path].reverse(), root), path.length === 1, `${at}: a reversed path`)
      }
      assert.equal(await verifyInclusion(leaf, index, size, [...path, ROOTS[0]], root), false, `${at}: a longer path`)
      assert.equal(await verifyInclusion(leaf, index, size, path, ROOTS[(size % 8)]), false, `${at}: another root`)
      assert.equal(await verifyInclusion(leaf, index, size, path, 'zz' + root.slice(2)), false, `${at}: a root that is not hex`)
      assert.equal(await verifyInclusion(leaf, index, size, path, root.slice(2)), false, `${at}: a short root`)
      if (path.length > 0) {
        assert.equal(await verifyInclusion(leaf, index, size, [path[0].slice(1), ...path.slice(1)], root), false, `${at}: a short step`)
      }
    }
  }
})

test("a leaf's bytes are its canonical JSON, UTF-8, not ASCII-escaped", () => {
  const leaf: Leaf = { year: '1997', round: 'final', rank: null, id: 'v-1', band: 'Café "Tacvba"', album: 'Re\\ ñ 日本 🎸' }
  const text = '{"album":"Re\\\\ ñ 日本 🎸","band":"Café \\"Tacvba\\"","id":"v-1","rank":null,"round":"final","year":"1997"}'
  assert.equal(new TextDecoder().decode(leafBytes(leaf)), text)
  assert.deepEqual(leafBytes(leaf), new Uint8Array(Buffer.from(text, 'utf8')))
  assert.equal(new TextDecoder().decode(leafBytes({ ...leaf, rank: '9.5', extra: 'ignored' } as Leaf)), text.replace('"rank":null', '"rank":"9.5"'))
  assert.equal(toHex(Uint8Array.of(0, 15, 16, 255)), '000f10ff')
})

test("the plain SHA-256 (for pages without Web Crypto) is SHA-256", () => {
  assert.equal(toHex(sha256Bytes(new Uint8Array())), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  assert.equal(toHex(sha256Bytes(new TextEncoder().encode('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  // Every length around the block and padding edges, and a few long ones.
  for (const length of [...Array.from({ length: 140 }, (_, i) => i), 1000, 4097, 100_000]) {
    const data = new Uint8Array(length).map((_, i) => (i * 131 + length) & 0xff)
    assert.equal(toHex(sha256Bytes(data)), hex(sha256(data)), `${length} bytes`)
  }
})

test('without Web Crypto, the check gives the same answers', async (t) => {
  const subtle = Object.getOwnPropertyDescriptor(globalThis.crypto, 'subtle')
  Object.defineProperty(globalThis.crypto, 'subtle', { value: undefined, configurable: true })
  t.after(() => {
    if (subtle) {
      Object.defineProperty(globalThis.crypto, 'subtle', subtle)
    } else {
      delete (globalThis.crypto as { subtle?: unknown }).subtle
    }
  })
  assert.equal(globalThis.crypto.subtle, undefined)
  for (let size = 1; size <= 8; size++) {
    const tree = LEAVES.slice(0, size)
    for (let index = 0; index < size; index++) {
      const path = auditPath(index, tree).map(hex)
      assert.equal(await verifyInclusion(tree[index], index, size, path, ROOTS[size - 1]), true, `leaf ${index} of ${size}`)
      assert.equal(await verifyInclusion(LEAVES[(index + 1) % 8], index, size, path, ROOTS[size - 1]), false, `leaf ${index} of ${size}, forged`)
    }
  }
})

/** A round's tree of vote leaves, ordered by id as the server orders them. */
function round(leaves: Leaf[]) {
  const sorted = [...leaves].sort((a, b) => Buffer.compare(Buffer.from(a.id), Buffer.from(b.id)))
  const bytes = sorted.map(leafBytes)
  const root = hex(mth(bytes))
  const certified = { round: 'final', leaves: sorted.length, merkle_root: root }
  const proof = (id: string): Proof => {
    const index = sorted.findIndex((l) => l.id === id)
    return { round: 'final', leaf: sorted[index], index, size: sorted.length, path: auditPath(index, bytes).map(hex), merkle_root: root }
  }
  return { certified, proof }
}

test('a receipt is checked against the certified result', async () => {
  const vote = (id: string, band: string, album: string): Leaf => ({ id, round: 'final', band, album, year: '2011', rank: null })
  const { certified, proof } = round([
    vote('0192c3d4-0000-7000-8000-000000000003', 'Bohemia Suburbana', 'Mis palabras'),
    vote('0192c3d4-0000-7000-8000-000000000001', 'Alux Nahual', 'El Viaje'),
    vote('0192c3d4-0000-7000-8000-000000000002', 'Viernes Verde', 'Sesiones'),
    vote('mine', 'Café Tacvba', 'Re'),
    vote('0192c3d4-0000-7000-8000-000000000005', 'Bohemia Suburbana', 'Mis palabras'),
  ])
  const kept = { id: 'mine', round: 'final', name: 'Café Tacvba', album: 'Re', year: '2011' }
  const mine = proof('mine')
  assert.equal(await checkProof(kept, certified, mine), 'verified')
  // As typed: decomposed accents and spaces around count as the server's composed, trimmed name.
  assert.equal(await checkProof({ ...kept, name: ' Cafe\u0301 Tacvba ' }, certified, mine), 'verified')
  assert.equal(await checkProof({ ...kept, year: undefined }, certified, mine), 'verified')
  assert.equal(await checkProof({ ...kept, name: 'Alux Nahual' }, certified, mine), 'different')
  assert.equal(await checkProof({ ...kept, album: 'El Viaje' }, certified, mine), 'different')
  assert.equal(await checkProof({ ...kept, year: '1997' }, certified, mine), 'different')
  // Another vote's proof, another round, another tree: not this receipt's.
  assert.equal(await checkProof(kept, certified, proof('0192c3d4-0000-7000-8000-000000000001')), 'mismatch')
  assert.equal(await checkProof({ ...kept, round: 'semi' }, certified, mine), 'mismatch')
  assert.equal(await checkProof(kept, { ...certified, round: 'semi' }, mine), 'mismatch')
  assert.equal(await checkProof(kept, { ...certified, leaves: 6 }, mine), 'mismatch')
  assert.equal(await checkProof(kept, { ...certified, merkle_root: ROOTS[7] }, mine), 'mismatch')
  assert.equal(await checkProof(kept, certified, { ...mine, merkle_root: ROOTS[7] }), 'mismatch')
  assert.equal(await checkProof(kept, certified, { ...mine, round: 'semi' }), 'mismatch')
  // A leaf changed after the fact (its band) no longer leads to the root.
  assert.equal(await checkProof({ ...kept, name: 'Alux Nahual' }, certified, { ...mine, leaf: { ...mine.leaf, band: 'Alux Nahual' } }), 'mismatch')
  assert.equal(await checkProof(kept, certified, { ...mine, index: mine.index - 1 }), 'mismatch')
  assert.equal(await checkProof(kept, certified, { ...mine, path: mine.path.slice(1) }), 'mismatch')
  // A round of one vote: an empty path.
  const single = round([vote('mine', 'Café Tacvba', 'Re')])
  assert.deepEqual(single.proof('mine').path, [])
  assert.equal(await checkProof(kept, single.certified, single.proof('mine')), 'verified')
})
