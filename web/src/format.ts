// Numbers and instants as the reader's language writes them (Intl).

import { currentLocale } from './i18n'

const numbers = new Map<string, Intl.NumberFormat>()

/** An integer or a decimal in the page's language. */
export function num(value: number, digits = 0): string {
  const key = `${currentLocale()}:${digits}`
  let format = numbers.get(key)
  if (!format) {
    format = new Intl.NumberFormat(currentLocale(), { minimumFractionDigits: digits, maximumFractionDigits: digits })
    numbers.set(key, format)
  }
  return format.format(value)
}

/** A date and time in the page's language and this browser's time zone; '—' for none. */
export function when(at: string | null | undefined): string {
  if (!at) {
    return '—'
  }
  return new Intl.DateTimeFormat(currentLocale(), { dateStyle: 'short', timeStyle: 'medium' }).format(new Date(at))
}

/** A time of day (hours and minutes) in the page's language. */
export function timeOfDay(at: string): string {
  return new Intl.DateTimeFormat(currentLocale(), { timeStyle: 'short' }).format(new Date(at))
}

/** A share (0–1) as a whole percentage in the page's language. */
export function percent(share: number): string {
  return new Intl.NumberFormat(currentLocale(), { style: 'percent', maximumFractionDigits: 0 }).format(share)
}
