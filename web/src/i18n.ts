// The pages' languages: Spanish and English, chosen by `?lang=es|en`, else the browser's language.

import { createI18n } from 'vue-i18n'
import en from './locales/en'
import es from './locales/es'

export type Locale = 'es' | 'en'

/** `?lang=` when it names a language we have, else the browser's first one we have, else English. */
export function chooseLocale(search: string, languages: readonly string[]): Locale {
  const asked = new URLSearchParams(search).get('lang')
  if (asked === 'es' || asked === 'en') {
    return asked
  }
  for (const language of languages) {
    const base = language.toLowerCase().split('-')[0]
    if (base === 'es' || base === 'en') {
      return base
    }
  }
  return 'en'
}

const locale = chooseLocale(window.location.search, navigator.languages?.length ? navigator.languages : [navigator.language])
document.documentElement.lang = locale

export const i18n = createI18n({
  legacy: false,
  locale,
  fallbackLocale: 'en',
  messages: { en, es },
})

/** The page's locale, for Intl. */
export function currentLocale(): Locale {
  return i18n.global.locale.value as Locale
}
