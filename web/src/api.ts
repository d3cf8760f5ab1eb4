// The API contract of DESIGN.md, as the web app reads it.

export interface Results {
  total: number
  bands: Record<string, number>
  albums: Record<string, number>
  /** When the newest counted vote was counted (RFC 3339), or null before the first vote. */
  updated_at: string | null
  /** How long after it was received that vote was counted, in ms, or null. */
  freshness_ms: number | null
  /** The round shown: the open one, else the latest closed one, else "default". */
  round?: string
  /** Whether the public sees only the total until the host reveals the results. */
  hidden?: boolean
  /** Whether every vote of the round is counted and certified. */
  final?: boolean
}

/** One round of the show (GET /api/rounds). */
export interface Round {
  id: string
  title: string
  state: 'scheduled' | 'open' | 'closed'
  opens_at: string | null
  closes_at: string | null
  results: 'live' | 'hidden' | 'revealed'
  final: boolean
  /** Votes counted in it so far. */
  total?: number
  /** The candidates: a vote must be one of them (empty or absent: free text). */
  ballot?: BallotEntry[]
}

/** One candidate of a round's ballot. */
export interface BallotEntry {
  name: string
  album: string
  year: number
}

/** The body of `POST /api/admin/rounds` and `PUT /api/admin/rounds/{id}`. */
export interface NewRound {
  id: string
  title: string
  opens_at: string | null
  closes_at: string | null
  results: 'live' | 'hidden'
  ballot: BallotEntry[]
}

/** GET /api/rounds and the `round` stream event. */
export interface Rounds {
  now: string
  rounds: Round[]
}

export interface VoteData {
  name: string
  album: string
  /** Optional in a ballot round: the entry's year is used. */
  year?: string
  /** Optional for every vote; null in the log when it was not given. */
  rank?: string | null
}

export interface LogEntry {
  id: string
  data: VoteData
  path: string
  received_at: string
}

export interface WebConfig {
  /** Base URL that votes are posted to: "" for this origin, null when voting is off. */
  vote_url: string | null
  /** Whether votes carry a signed voter token (from POST /api/voter-token). */
  voter_token?: boolean
  /** The header the token goes in. */
  voter_header?: string
  /** The audience page's public address (`--public-url`), for the projector's QR code. */
  public_url?: string | null
}

interface VoterToken {
  token: string
  expires_at: string
}

const TOKEN_KEY = 'bandvote.voter-token'

/** This browser's voter token: kept until an hour before it expires, then renewed. */
export async function voterToken(renew = false): Promise<string> {
  const kept = localStorage.getItem(TOKEN_KEY)
  if (kept && !renew) {
    const parsed = JSON.parse(kept) as VoterToken
    if (Date.parse(parsed.expires_at) - Date.now() > 3600_000) {
      return parsed.token
    }
  }
  const response = await fetch('/api/voter-token', { method: 'POST' })
  if (!response.ok) {
    throw await errorOf(response)
  }
  const fresh = (await response.json()) as VoterToken
  localStorage.setItem(TOKEN_KEY, JSON.stringify(fresh))
  return fresh.token
}

export class ApiError extends Error {
  readonly status: number
  readonly field?: string
  constructor(status: number, message: string, field?: string) {
    super(message)
    this.status = status
    this.field = field
  }
}

/** GETs JSON; a non-2xx answer becomes an ApiError carrying the server's message. */
export async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { headers: { accept: 'application/json' } })
  if (!response.ok) {
    throw await errorOf(response)
  }
  return (await response.json()) as T
}

async function errorOf(response: Response): Promise<ApiError> {
  try {
    const body = await response.json()
    return new ApiError(response.status, body.error ?? response.statusText, body.field)
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`)
  }
}

export interface Accepted {
  id: string
  path: string
}

/** A fresh Idempotency-Key, so that a retry of the same vote is counted once. */
export function voteKey(): string {
  if (typeof crypto.randomUUID === 'function') {
    return crypto.randomUUID()
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

/**
 * Posts one vote through `/grpc/votes` or `/wasm/votes` of `base` (with `voter` = [header, token]),
 * under the Idempotency-Key `key` (a fresh one when not given). Status 0: no answer came.
 */
export async function postVote(
  base: string,
  path: VotePath,
  vote: VoteData,
  voter?: [string, string],
  key: string = voteKey(),
): Promise<Accepted> {
  let response: Response
  const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': key }
  if (voter) {
    headers[voter[0]] = voter[1]
  }
  try {
    response = await fetch(`${base.replace(/\/$/, '')}/${path}/votes`, {
      method: 'POST',
      headers,
      body: JSON.stringify(vote),
    })
  } catch {
    throw new ApiError(0, 'the vote service cannot be reached')
  }
  if (response.status !== 202) {
    throw await errorOf(response)
  }
  return (await response.json()) as Accepted
}

/** The two ingest paths a vote can be posted through. */
export type VotePath = 'grpc' | 'wasm'

/**
 * `date - time - band album year rank`, as the original's console printed it (UTC); a year or rank
 * left out (null or empty) prints nothing.
 */
export function formatLog(entry: LogEntry): string {
  const at = entry.received_at
  const { name, album, year, rank } = entry.data
  const fields = [name, album, year, rank].filter((f) => f != null && f !== '')
  return `${at.slice(0, 10)} - ${at.slice(11, 23)} - ${fields.join(' ')}`
}

/** `GET /api/admin/audit`: the counters against the log. */
export interface Audit {
  round?: string
  counted: { total: number }
  logged: { total: number }
  agree: boolean
}

/** `GET /api/admin/pipeline`. */
export interface Pipeline {
  counted: number
  logged: number
  updated_at: string | null
  freshness_ms: number | null
}

/** `GET /readyz`. */
export interface Readiness {
  status: string
  checks: Record<string, string>
}

/** `GET /api/admin/rounds/{id}/stats`: a round's votes refused, by reason, and the live audience. */
export interface RoundStats {
  round: string
  total: number
  /** Votes refused in the round: closed (409, late after the close), off the ballot (422), by the
   * voter policy or its rate (401/429), invalid (400). */
  refused: { closed: number; ballot: number; fairness: number; invalid: number }
  /** Clients connected to the live stream right now. */
  viewers: number
}

/** The certified result of a final round (`GET /api/rounds/{id}/result`). */
export interface Certified {
  round: string
  closed_at: string
  total: number
  bands: Record<string, number>
  albums: Record<string, number>
  /** The number of votes counted in the round: the leaves of its Merkle tree (absent for a round
   * certified before receipts could be checked). */
  leaves?: number
  /** The root of the round's Merkle tree of counted votes (RFC 6962), lowercase hex. */
  merkle_root?: string | null
  sha256: string
}

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'

/** Calls the operator API (or any route) with the admin token; a non-2xx answer becomes an ApiError. */
export async function adminFetch(token: string, method: Method, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' }
  if (body !== undefined) {
    headers['content-type'] = 'application/json'
  }
  let response: Response
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch {
    throw new ApiError(0, 'the API cannot be reached')
  }
  if (!response.ok) {
    throw await errorOf(response)
  }
  return response
}

/** Like {@link adminFetch}, answering the JSON body. */
export async function adminJson<T>(token: string, method: Method, path: string, body?: unknown): Promise<T> {
  return (await (await adminFetch(token, method, path, body)).json()) as T
}

/**
 * Posts `vote` as this browser's voter, to the deployment's vote service: with a voter token when
 * the deployment asks for one (renewed once if it is refused), under the Idempotency-Key `key`.
 */
export async function castVote(config: WebConfig, vote: VoteData, key: string, path: VotePath = 'grpc'): Promise<Accepted> {
  const base = config.vote_url ?? ''
  if (!config.voter_token) {
    return postVote(base, path, vote, undefined, key)
  }
  const header = config.voter_header ?? 'x-voter-id'
  try {
    return await postVote(base, path, vote, [header, await voterToken()], key)
  } catch (error) {
    // An expired or foreign token: get a new one once.
    if (!(error instanceof ApiError) || error.status !== 401) {
      throw error
    }
    return postVote(base, path, vote, [header, await voterToken(true)], key)
  }
}
