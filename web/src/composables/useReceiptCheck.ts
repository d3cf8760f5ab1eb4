// Once the receipt's round is final (and its results public), this browser asks for the certified
// result and the vote's proof, and checks the one against the other itself (src/receipt.ts).

import { onBeforeUnmount, ref, watch } from 'vue'
import { ApiError, getJson, type Certified, type Round } from '../api'
import { checkProof, type Leaf, type Proof } from '../receipt'
import type { Receipt } from './useVoting'

/**
 * Where the check stands: `waiting` (final, but the results are hidden until the reveal),
 * `checking`, `verified`, `missing` (the round counted no vote with this id), `mismatch` (the proof
 * does not lead to the certified result), `different` (the certified result holds another choice
 * under this receipt), `unavailable` (no answer now; it can be tried again).
 */
export type CheckState = 'waiting' | 'checking' | 'verified' | 'missing' | 'mismatch' | 'different' | 'unavailable'

export interface ReceiptCheck {
  state: CheckState
  /** The leaf the proof was about (what the certified result holds), once there is a proof. */
  leaf?: Leaf
  /** The certified root (hex) and the number of votes under it, once the result is read. */
  root?: string
  leaves?: number
  /** Hashes the browser combined with the vote to reach the root. */
  steps?: number
}

export function useReceiptCheck(receipt: () => Receipt | null, round: () => Round | null) {
  const check = ref<ReceiptCheck | null>(null)
  /** Bumped per run: an answer for an earlier run is dropped. */
  let run = 0
  /** The next automatic try after an answer that may change (no answer, or not public yet). */
  let later: ReturnType<typeof setTimeout> | undefined
  let tries = 0

  function again() {
    clearTimeout(later)
    const wait = Math.min(30_000, 2_000 * 2 ** tries++)
    later = setTimeout(() => retry(true), wait)
  }

  /** Checks `kept`; `quiet`: the state shown stays until the answer (an automatic try). */
  async function verify(kept: Receipt, quiet = false) {
    const mine = ++run
    clearTimeout(later)
    const set = (next: ReceiptCheck) => {
      if (mine === run) {
        check.value = next
        if (next.state === 'waiting' || next.state === 'unavailable') {
          again()
        }
      }
    }
    if (!quiet || !check.value) {
      set({ state: 'checking' })
    }
    const base = `/api/rounds/${encodeURIComponent(kept.round)}`
    let certified: Certified
    try {
      certified = await getJson<Certified>(`${base}/result`)
    } catch (error) {
      // A 409: the round is not final or not public yet, as far as the server knows.
      set({ state: error instanceof ApiError && error.status === 409 ? 'waiting' : 'unavailable' })
      return
    }
    if (typeof certified.merkle_root !== 'string') {
      // Certified without a tree of receipts: there is nothing to check the receipt against.
      if (mine === run) {
        check.value = null
      }
      return
    }
    const known = { root: certified.merkle_root, leaves: certified.leaves }
    let proof: Proof
    try {
      proof = await getJson<Proof>(`${base}/proof/${encodeURIComponent(kept.id)}`)
    } catch (error) {
      set({ state: error instanceof ApiError && error.status === 404 ? 'missing' : 'unavailable', ...known })
      return
    }
    let state: CheckState
    try {
      state = await checkProof(kept, certified, proof)
    } catch {
      // A body that is not a proof at all.
      state = 'mismatch'
    }
    set({ state, leaf: proof.leaf, steps: Array.isArray(proof.path) ? proof.path.length : undefined, ...known })
  }

  /** What decides whether and what to check: the receipt, and its round being final and public. */
  function key(): string | null {
    const kept = receipt()
    const r = round()
    if (!kept || !r || r.id !== kept.round || !r.final) {
      return null
    }
    return JSON.stringify([kept.round, kept.id, r.results === 'hidden'])
  }

  watch(
    key,
    (now) => {
      const kept = receipt()
      run++
      clearTimeout(later)
      tries = 0
      if (now === null || !kept) {
        check.value = null
      } else if (round()?.results === 'hidden') {
        // Not public until the reveal, whose `round` event brings us back here.
        check.value = { state: 'waiting' }
      } else {
        void verify(kept)
      }
    },
    { immediate: true },
  )

  /** Tries again (after `unavailable`, or a 409 from a round the page already knows is final). */
  function retry(quiet = false) {
    const kept = receipt()
    if (kept && key() !== null && round()?.results !== 'hidden') {
      void verify(kept, quiet)
    }
  }

  onBeforeUnmount(() => {
    run++
    clearTimeout(later)
  })

  return { check, retry }
}
