// The latest votes' log lines: loaded from the API on demand, prepended live from the stream's
// `log` events while the live switch is on.

import { ref } from 'vue'
import { useI18n } from 'vue-i18n'
import { getJson, type LogEntry } from '../api'

export function useLogs(lines = 20) {
  const { t } = useI18n()
  const logs = ref<LogEntry[]>([])
  const error = ref<string | null>(null)
  const loading = ref(false)
  const live = ref(true)

  function add(entry: LogEntry) {
    if (live.value && !logs.value.some((e) => e.id === entry.id)) {
      logs.value = [entry, ...logs.value].slice(0, lines)
    }
  }

  async function load() {
    loading.value = true
    try {
      logs.value = await getJson<LogEntry[]>(`/api/logs?limit=${lines}`)
      error.value = null
    } catch (failure) {
      error.value = t('logs.unavailable', { reason: (failure as Error).message })
    } finally {
      loading.value = false
    }
  }

  return { logs, error, loading, live, add, load }
}
