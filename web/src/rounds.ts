// What the pages derive from the rounds and the results: which round is shown, its phase on the
// server's clock, countdowns, and the rows of the result bars.

import type { BallotEntry, Results, Round } from './api'

export type Phase = 'scheduled' | 'open' | 'closed'

/** The round's phase at `serverNow`: its instants decide, as the gateways do. */
export function phaseOf(round: Round, serverNow: number): Phase {
  const opens = round.opens_at ? Date.parse(round.opens_at) : null
  const closes = round.closes_at ? Date.parse(round.closes_at) : null
  if (opens === null || serverNow < opens) {
    return 'scheduled'
  }
  return closes === null || serverNow < closes ? 'open' : 'closed'
}

/**
 * The round a page is about: the open one, else the one the results show (the latest closed), else
 * the next scheduled one; null while there are no rounds (the implicit `default` round).
 */
export function mainRound(rounds: Round[], results: Results | null, serverNow: number): Round | null {
  return (
    rounds.find((r) => phaseOf(r, serverNow) === 'open') ??
    rounds.find((r) => r.id === results?.round) ??
    nextRound(rounds, serverNow) ??
    rounds[0] ??
    null
  )
}

/** The scheduled round that opens soonest (one without an opening time last). */
export function nextRound(rounds: Round[], serverNow: number): Round | null {
  const scheduled = rounds.filter((r) => phaseOf(r, serverNow) === 'scheduled')
  scheduled.sort((a, b) => (a.opens_at ? Date.parse(a.opens_at) : Infinity) - (b.opens_at ? Date.parse(b.opens_at) : Infinity))
  return scheduled[0] ?? null
}

/** `h:mm:ss` or `mm:ss` of a duration in ms (never negative). */
export function clock(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000))
  const h = Math.floor(s / 3600)
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0')
  const ss = String(s % 60).padStart(2, '0')
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`
}

/** One bar: a band (with its album, for a ballot round) and its votes. */
export interface Row {
  key: string
  name: string
  album?: string
  count: number
}

/** The album key of the counters: `<band> / <album>`. */
export function albumKey(entry: { name: string; album: string }): string {
  return `${entry.name} / ${entry.album}`
}

/**
 * The bars, most votes first: one per ballot entry (zeros included) for a ballot round, else one
 * per band counted.
 */
export function rowsOf(results: Results | null, ballot: BallotEntry[] | undefined): Row[] {
  let rows: Row[]
  if (ballot && ballot.length > 0) {
    rows = ballot.map((e) => ({ key: albumKey(e), name: e.name, album: e.album, count: results?.albums[albumKey(e)] ?? 0 }))
  } else {
    rows = Object.entries(results?.bands ?? {}).map(([name, count]) => ({ key: name, name, count }))
  }
  return rows.sort((a, b) => b.count - a.count || a.key.localeCompare(b.key))
}

type Translate = (key: string, values?: Record<string, unknown>) => string

/** The round's state in words, with its countdown (e.g. "Voting open · closes in 01:30"). */
export function stateText(t: Translate, round: Round, serverNow: number): string {
  const phase = phaseOf(round, serverNow)
  if (phase === 'open') {
    return round.closes_at ? t('round.closesIn', { clock: clock(Date.parse(round.closes_at) - serverNow) }) : t('round.open')
  }
  if (phase === 'scheduled') {
    return round.opens_at ? t('round.opensIn', { clock: clock(Date.parse(round.opens_at) - serverNow) }) : t('round.opensSoon')
  }
  return t('round.closed')
}
