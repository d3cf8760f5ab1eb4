// The ballot editor's text import: CSV lines `name,album,year` (an optional header; fields may be
// quoted) or a JSON list of `{name, album, year}`.

/** An entry as edited: the year as typed. */
export interface DraftEntry {
  name: string
  album: string
  year: string
}

/** A line of the pasted text that could not be read (1-based), or the whole text (line 0). */
export class ImportError extends Error {
  readonly line: number
  constructor(line: number, message: string) {
    super(message)
    this.line = line
  }
}

/** The cells of one CSV line (RFC 4180 quoting). */
function cells(line: string): string[] {
  const out: string[] = []
  let cell = ''
  let quoted = false
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cell += '"'
        i++
      } else if (c === '"') {
        quoted = false
      } else {
        cell += c
      }
    } else if (c === '"') {
      quoted = true
    } else if (c === ',') {
      out.push(cell)
      cell = ''
    } else {
      cell += c
    }
  }
  out.push(cell)
  return out.map((s) => s.trim())
}

/** The entries of a pasted CSV or JSON list; throws an ImportError naming the bad line. */
export function parseBallot(text: string): DraftEntry[] {
  const trimmed = text.trim()
  if (!trimmed) {
    return []
  }
  if (trimmed.startsWith('[')) {
    let list: unknown
    try {
      list = JSON.parse(trimmed)
    } catch {
      throw new ImportError(0, 'json')
    }
    if (!Array.isArray(list)) {
      throw new ImportError(0, 'json')
    }
    return list.map((item, i) => {
      const entry = item as Record<string, unknown>
      if (typeof entry?.name !== 'string' || typeof entry.album !== 'string' || !/^\d{4}$/.test(String(entry.year ?? ''))) {
        throw new ImportError(i + 1, 'entry')
      }
      return { name: entry.name.trim(), album: entry.album.trim(), year: String(entry.year) }
    })
  }
  const entries: DraftEntry[] = []
  const lines = trimmed.split(/\r?\n/)
  lines.forEach((line, i) => {
    if (!line.trim()) {
      return
    }
    const [name = '', album = '', year = '', ...rest] = cells(line)
    if (i === 0 && /^(name|band)$/i.test(name) && /^album$/i.test(album)) {
      return
    }
    if (!name || !album || !/^\d{4}$/.test(year) || rest.some((c) => c !== '')) {
      throw new ImportError(i + 1, 'line')
    }
    entries.push({ name, album, year })
  })
  return entries
}
