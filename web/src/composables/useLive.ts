// The public live state every page shares: the rounds, the current results, the server's clock and
// whether the live stream is really live.

import { computed, onBeforeUnmount, onMounted, ref } from 'vue'
import { getJson, type Results, type Round, type Rounds } from '../api'

/** A stream with no event for this long is presumed dead and reopened (the server speaks at least every 15 s). */
export const SILENT_MS = 35_000
/** How long a reopened stream may take before the page says it is reconnecting. */
const GRACE_MS = 4_000

export type StreamState = 'connecting' | 'open' | 'down'

export interface LiveOptions {
  /** How often the clock ticks, in ms. */
  tickMs?: number
  /** Called with each `log` event's data. */
  onLog?: (data: string) => void
  /**
   * The most `log` events the server sends per 250 ms (the newest): a ticker of the latest votes
   * needs as many as it shows, not every vote of a busy show. Without `onLog`, none are asked for.
   */
  logsPerTick?: number
}

/**
 * `log` events asked for per 250 ms by a page that shows the latest votes: as many as its console
 * shows (the newest 20), so that nothing the page would show is left out.
 */
export const LOGS_PER_TICK = 20

export function useLive(options: LiveOptions = {}) {
  const results = ref<Results | null>(null)
  const rounds = ref<Round[] | null>(null)
  const clockOffset = ref(0)
  const now = ref(Date.now())
  const stream = ref<StreamState>('connecting')
  const problem = ref<string | null>(null)
  const resultsError = ref<string | null>(null)
  /** (time, total) of recent results, for votes per second. */
  const samples = ref<Array<[number, number]>>([])
  const serverNow = computed(() => now.value + clockOffset.value)

  let source: EventSource | null = null
  let lastEvent = Date.now()
  let openedAt = Date.now()
  let ticker: number | undefined
  let retry: number | undefined

  function setRounds(next: Rounds) {
    rounds.value = next.rounds
    clockOffset.value = Date.parse(next.now) - Date.now()
  }

  function setResults(next: Results) {
    results.value = next
    resultsError.value = null
    const t = Date.now()
    samples.value = [...samples.value.filter(([at]) => t - at <= 10_000), [t, next.total]]
  }

  async function loadRounds() {
    try {
      setRounds(await getJson<Rounds>('/api/rounds'))
      return true
    } catch {
      return false
    }
  }

  async function loadResults() {
    try {
      setResults(await getJson<Results>('/api/results'))
    } catch (error) {
      resultsError.value = (error as Error).message
    }
  }

  function heard() {
    lastEvent = Date.now()
    stream.value = 'open'
  }

  function connect() {
    source?.close()
    if (stream.value === 'open') {
      stream.value = 'connecting'
    }
    openedAt = Date.now()
    lastEvent = Date.now()
    const logs = options.onLog ? (options.logsPerTick ?? LOGS_PER_TICK) : 0
    const current = new EventSource(`/api/stream?logs=${logs}`)
    source = current
    current.onopen = heard
    current.onerror = () => {
      stream.value = 'down'
      // Refused outright (e.g. 503 when the server is full): the browser gives up, so try again later.
      if (current.readyState === EventSource.CLOSED && source === current) {
        window.clearTimeout(retry)
        retry = window.setTimeout(connect, 3000 + Math.random() * 4000)
      }
    }
    current.addEventListener('results', (event) => {
      heard()
      setResults(JSON.parse((event as MessageEvent).data) as Results)
    })
    current.addEventListener('round', (event) => {
      heard()
      setRounds(JSON.parse((event as MessageEvent).data) as Rounds)
      // A round that changed may change which results are current.
      void loadResults()
    })
    current.addEventListener('status', (event) => {
      heard()
      const { status } = JSON.parse((event as MessageEvent).data) as { status: string }
      problem.value = status === 'ok' ? null : status
    })
    current.addEventListener('ping', heard)
    current.addEventListener('log', (event) => {
      heard()
      options.onLog?.((event as MessageEvent).data)
    })
  }

  /** Once a second: a silent stream is reopened, and said to be reconnecting until it speaks. */
  function watch() {
    const t = Date.now()
    if (t - lastEvent > SILENT_MS) {
      connect()
      return
    }
    if (stream.value === 'connecting' && t - openedAt > GRACE_MS) {
      stream.value = 'down'
    }
  }

  let watchdog: number | undefined
  onMounted(() => {
    ticker = window.setInterval(() => (now.value = Date.now()), options.tickMs ?? 500)
    watchdog = window.setInterval(watch, 1000)
    connect()
    void loadRounds()
    void loadResults()
  })
  onBeforeUnmount(() => {
    source?.close()
    window.clearInterval(ticker)
    window.clearInterval(watchdog)
    window.clearTimeout(retry)
  })

  const votesPerSecond = computed(() => {
    const recent = samples.value.filter(([t]) => now.value - t <= 5000)
    if (recent.length < 2) {
      return 0
    }
    const [t0, n0] = recent[0]
    const [t1, n1] = recent[recent.length - 1]
    return Math.max(0, (n1 - n0) / Math.max(1, (now.value - t0) / 1000, (t1 - t0) / 1000))
  })

  return { results, rounds, serverNow, now, stream, problem, resultsError, votesPerSecond, loadRounds, loadResults }
}
