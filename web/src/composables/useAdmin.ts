// The operator console's state: the token, the rounds, the chosen round's results and stats, the
// pipeline, refreshed from the stream and every two seconds while signed in.

import { computed, onBeforeUnmount, ref, watch } from 'vue'
import {
  adminJson,
  ApiError,
  getJson,
  type Certified,
  type Pipeline,
  type Readiness,
  type Results,
  type Round,
  type Rounds,
  type RoundStats,
} from '../api'
import { phaseOf } from '../rounds'

/** The token is kept for this tab only: closing it signs the operator out. */
const TOKEN_KEY = 'bandvote.admin-token'
const REFRESH_MS = 2000

export function useAdmin() {
  const token = ref<string | null>(sessionStorage.getItem(TOKEN_KEY))
  const signInError = ref<'refused' | 'none' | 'other' | 'expired' | null>(null)
  const rounds = ref<Round[]>([])
  const clockOffset = ref(0)
  const now = ref(Date.now())
  /** The round whose results are shown; null: the current one, as the public page picks it. */
  const selected = ref<string | null>(null)
  /** Whether the operator chose the round (else the console follows the open round). */
  let picked = false
  const results = ref<Results | null>(null)
  const history = ref<Array<[number, number]>>([])
  const pipeline = ref<Pipeline | null>(null)
  const readiness = ref<Readiness | null>(null)
  const problem = ref<string | null>(null)
  const certified = ref<Certified | null>(null)
  /** The shown round's refusals and viewers; null while the API has none for it (the panel hides). */
  const stats = ref<RoundStats | null>(null)
  const serverNow = computed(() => now.value + clockOffset.value)
  const shown = computed(() => rounds.value.find((r) => r.id === results.value?.round) ?? null)
  /** Votes counted per second over the last 10 s of the shown round's samples. */
  const votesPerSecond = computed(() => {
    const newest = history.value.length ? history.value[history.value.length - 1][0] : 0
    const recent = history.value.filter(([at]) => newest - at <= 10_000)
    if (recent.length < 2) {
      return 0
    }
    const [t0, n0] = recent[0]
    const [t1, n1] = recent[recent.length - 1]
    return Math.max(0, (n1 - n0) / Math.max(1, (t1 - t0) / 1000))
  })

  async function signIn(candidate: string) {
    signInError.value = null
    try {
      await adminJson<Pipeline>(candidate, 'GET', '/api/admin/pipeline')
    } catch (error) {
      const status = (error as ApiError).status
      signInError.value = status === 401 ? 'refused' : status === 404 ? 'none' : 'other'
      return
    }
    sessionStorage.setItem(TOKEN_KEY, candidate)
    token.value = candidate
  }

  function signOut(expired = false) {
    sessionStorage.removeItem(TOKEN_KEY)
    token.value = null
    signInError.value = expired ? 'expired' : null
  }

  /** An error's message; a refused token signs the operator out. */
  function fail(error: unknown): string {
    if (error instanceof ApiError && error.status === 401) {
      signOut(true)
    }
    return (error as Error).message
  }

  async function loadRounds() {
    const next = await getJson<Rounds>('/api/rounds')
    rounds.value = next.rounds
    clockOffset.value = Date.parse(next.now) - Date.now()
    if (!picked) {
      const open = next.rounds.find((r) => phaseOf(r, Date.parse(next.now)) === 'open')
      if (open && selected.value !== open.id) {
        selected.value = open.id
      }
    }
  }

  async function loadResults() {
    if (!token.value) {
      return
    }
    const query = selected.value ? `?round=${encodeURIComponent(selected.value)}` : ''
    const next = await adminJson<Results>(token.value, 'GET', `/api/results${query}`)
    if (results.value?.round !== next.round) {
      history.value = []
      certified.value = null
      stats.value = null
    }
    results.value = next
    const t = Date.now()
    history.value = [...history.value.filter(([at]) => t - at <= 600_000), [t, next.total]]
    const statsLoaded = statsDue(next.round ?? 'default') ? loadStats(next.round ?? 'default') : null
    if (next.final && !certified.value && next.round) {
      certified.value = await adminJson<Certified>(token.value, 'GET', `/api/rounds/${encodeURIComponent(next.round)}/result`)
    }
    await statsLoaded
  }

  /** When the stats were last asked for, and for which round. */
  let statsAsked: [string, number] = ['', 0]

  /** Whether to ask for `round`'s stats now: every two seconds, not on every stream event. */
  function statsDue(round: string): boolean {
    const now = Date.now()
    if (statsAsked[0] === round && now - statsAsked[1] < REFRESH_MS - 250) {
      return false
    }
    statsAsked = [round, now]
    return true
  }

  /**
   * The stats of `round`. Any failure (a 404: an unknown round, or an API without stats) hides the
   * panel rather than showing numbers that are no longer current; it never raises the banner.
   */
  async function loadStats(round: string) {
    let next: RoundStats | null = null
    try {
      const body = await adminJson<RoundStats>(token.value!, 'GET', `/api/admin/rounds/${encodeURIComponent(round)}/stats`)
      next = typeof body?.viewers === 'number' && typeof body.refused === 'object' && body.refused !== null ? body : null
    } catch {
      next = null
    }
    // Another round may have been chosen meanwhile: keep only the shown round's stats.
    if ((results.value?.round ?? 'default') === round) {
      stats.value = next
    }
  }

  async function loadHealth() {
    if (!token.value) {
      return
    }
    const [p, r] = await Promise.allSettled([
      adminJson<Pipeline>(token.value, 'GET', '/api/admin/pipeline'),
      // 503 still carries the checks: read the body whatever the status.
      fetch('/readyz').then((response) => response.json() as Promise<Readiness>),
    ])
    pipeline.value = p.status === 'fulfilled' ? p.value : null
    readiness.value = r.status === 'fulfilled' ? r.value : null
    if (p.status === 'rejected') {
      throw p.reason
    }
  }

  async function refresh() {
    try {
      await loadRounds()
      await Promise.all([loadResults(), loadHealth()])
      problem.value = null
    } catch (error) {
      problem.value = fail(error)
    }
  }

  function pick(id: string | null) {
    picked = true
    selected.value = id
  }

  let source: EventSource | null = null
  let poller: number | undefined
  let ticker: number | undefined
  let pending = false

  /** The stream says something changed: refresh once, however many events arrive meanwhile. */
  function nudge() {
    if (pending) {
      return
    }
    pending = true
    setTimeout(() => {
      pending = false
      void refresh()
    }, 150)
  }

  function start() {
    void refresh()
    source = new EventSource('/api/stream?logs=0')
    source.addEventListener('results', nudge)
    source.addEventListener('round', nudge)
    poller = window.setInterval(() => void refresh(), REFRESH_MS)
    ticker = window.setInterval(() => (now.value = Date.now()), 500)
  }

  function stop() {
    source?.close()
    source = null
    window.clearInterval(poller)
    window.clearInterval(ticker)
  }

  watch(
    token,
    (signedIn) => {
      stop()
      if (signedIn) {
        start()
      }
    },
    { immediate: true },
  )
  watch(selected, () => void refresh())
  onBeforeUnmount(stop)

  return {
    token,
    signInError,
    rounds,
    serverNow,
    selected,
    results,
    history,
    pipeline,
    readiness,
    problem,
    certified,
    stats,
    votesPerSecond,
    shown,
    signIn,
    signOut,
    fail,
    refresh,
    pick,
  }
}
