// Casting this browser's vote in a round: one Idempotency-Key per attempt, kept until the server
// answers (so a retry after a lost answer is the same vote), and the receipt kept per round.

import { ref } from 'vue'
import { ApiError, castVote, voteKey, type Accepted, type VoteData, type VotePath, type WebConfig } from '../api'

/** What the voter keeps of an accepted vote. */
export interface Receipt {
  id: string
  round: string
  title: string
  name: string
  album: string
  year?: string
  /** The path that took it (grpc or wasm). */
  path?: string
  at: string
}

/** A vote sent whose answer never came: retried with the same key. */
export interface Pending {
  key: string
  vote: VoteData
  /** The path it was sent through: the retry goes the same way. */
  path?: VotePath
}

const RECEIPT = 'bandvote.receipt.'
const PENDING = 'bandvote.pending.'

function read<T>(key: string): T | null {
  try {
    const kept = localStorage.getItem(key)
    return kept ? (JSON.parse(kept) as T) : null
  } catch {
    return null
  }
}

export function receiptOf(round: string): Receipt | null {
  return read<Receipt>(RECEIPT + round)
}

export function pendingOf(round: string): Pending | null {
  return read<Pending>(PENDING + round)
}

/** Why a vote was not taken, as the page tells the voter (keys of `vote.error`). */
export type Refusal = 'offline' | 'closed' | 'offBallot' | 'alreadyVoted' | 'tooFast' | 'busy' | 'identity' | 'invalid'

export function refusalOf(error: unknown): Refusal {
  const e = error instanceof ApiError ? error : new ApiError(0, String(error))
  switch (e.status) {
    case 0:
      return 'offline'
    case 409:
      return 'closed'
    case 422:
      return 'offBallot'
    case 429:
      return /already voted/i.test(e.message) ? 'alreadyVoted' : 'tooFast'
    case 401:
    case 403:
      return 'identity'
    case 503:
    case 502:
    case 504:
      return 'busy'
    default:
      return e.status >= 500 ? 'busy' : 'invalid'
  }
}

export function useVoting(config: () => WebConfig | null) {
  const sending = ref(false)
  const refusal = ref<Refusal | null>(null)
  /** The field the server named in a 400 or 422. */
  const field = ref<string | null>(null)
  const receipts = ref<Record<string, Receipt | null>>({})
  const pendings = ref<Record<string, Pending | null>>({})

  function receipt(round: string): Receipt | null {
    if (!(round in receipts.value)) {
      receipts.value = { ...receipts.value, [round]: receiptOf(round) }
    }
    return receipts.value[round] ?? null
  }

  function pending(round: string): Pending | null {
    if (!(round in pendings.value)) {
      pendings.value = { ...pendings.value, [round]: pendingOf(round) }
    }
    return pendings.value[round] ?? null
  }

  function setPending(round: string, value: Pending | null) {
    if (value) {
      localStorage.setItem(PENDING + round, JSON.stringify(value))
    } else {
      localStorage.removeItem(PENDING + round)
    }
    pendings.value = { ...pendings.value, [round]: value }
  }

  /**
   * Sends `vote` in `round` (titled `title`) through `path`: the key of an unanswered attempt at the
   * same choice is reused. Answers the receipt, or null with `refusal` set.
   */
  async function send(round: string, title: string, vote: VoteData, path: VotePath = 'grpc'): Promise<Receipt | null> {
    const cfg = config()
    if (!cfg || cfg.vote_url === null) {
      refusal.value = 'closed'
      return null
    }
    const before = pending(round)
    const same =
      before &&
      before.vote.name === vote.name &&
      before.vote.album === vote.album &&
      before.vote.year === vote.year &&
      (before.vote.rank ?? null) === (vote.rank ?? null)
    const attempt: Pending = same ? { ...before, path } : { key: voteKey(), vote, path }
    setPending(round, attempt)
    sending.value = true
    refusal.value = null
    field.value = null
    let accepted: Accepted
    try {
      accepted = await castVote(cfg, attempt.vote, attempt.key, path)
    } catch (error) {
      const why = refusalOf(error)
      refusal.value = why
      field.value = error instanceof ApiError ? (error.field ?? null) : null
      // Answered for good: forget the key. Not answered, or busy: keep it for the retry.
      if (why !== 'offline' && why !== 'busy') {
        setPending(round, null)
      }
      return null
    } finally {
      sending.value = false
    }
    const kept: Receipt = {
      id: accepted.id,
      round,
      title,
      name: vote.name,
      album: vote.album,
      year: vote.year,
      path: accepted.path,
      at: new Date().toISOString(),
    }
    localStorage.setItem(RECEIPT + round, JSON.stringify(kept))
    receipts.value = { ...receipts.value, [round]: kept }
    setPending(round, null)
    return kept
  }

  return { sending, refusal, field, receipt, pending, send }
}
