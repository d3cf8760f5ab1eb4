// Browser test of the operator console (`/admin`) beside the audience's page, in headless Chromium.
//
//   node e2e/admin.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_DIR
//
// The operator signs in (a wrong token is refused, the right one is kept across a reload of the
// tab), creates a hidden round that closes by itself in two minutes with the console's form and
// opens it; votes arrive on both paths: the console shows the bands while the audience's page shows
// only the total; the pipeline panel shows every vote counted and logged; the round's activity panel
// counts an invalid vote and the pages watching live. The operator closes the
// round with both pages open (Close asks for a confirmation first): the audience's page says
// "Voting closed" without a reload, a vote after it gets 409; the console shows the final badge and
// the certified hash (equal to the API's), the late vote in the activity panel, the audit agrees, the CSV export downloads the API's
// rows; the reveal (confirmed too) shows the bars to the audience. Exits non-zero on the first failure.

import { mkdirSync, readFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { check, until } from './checks.mjs'

const [base, token, shots] = process.argv.slice(2)
if (!base || !token || !shots) {
  console.error('usage: node e2e/admin.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_DIR')
  process.exit(2)
}
mkdirSync(shots, { recursive: true })

const VOTES = [
  ['grpc', 'Alux Nahual', 'El Viaje', '2011'],
  ['wasm', 'Alux Nahual', 'Rock chapin', '2014'],
  ['grpc', 'Bohemia Suburbana', 'Mis palabras', '1997'],
  ['wasm', 'Bohemia Suburbana', 'Mis palabras', '1997'],
  ['grpc', 'Bohemia Suburbana', 'Imaginaria Sonora', '2015'],
]

async function vote([path, name, album, year], key) {
  const response = await fetch(`${base}/${path}/votes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ name, album, year, rank: '8.0' }),
  })
  return response.status
}

/** A malformed vote (a two-digit year): refused with 400. */
async function invalidVote() {
  const response = await fetch(`${base}/grpc/votes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Alux Nahual', album: 'El Viaje', year: '11' }),
  })
  return response.status
}

async function asOperator(path) {
  const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
  check(response.ok, `GET ${path} answered ${response.status}`)
  return response
}

/** "YYYY-MM-DDTHH:MM:SS" in this machine's time zone, as a datetime-local input takes it. */
function local(date) {
  const pad = (n) => String(n).padStart(2, '0')
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1300 }, acceptDownloads: true })
  const console_ = await context.newPage()
  const audience = await context.newPage()
  const errors = []
  for (const page of [console_, audience]) {
    page.on('pageerror', (error) => errors.push(String(error)))
  }
  let audienceLoads = 0
  audience.on('load', () => audienceLoads++)
  const text = (page, id) => async () => ((await page.getByTestId(id).count()) ? page.getByTestId(id).first().textContent() : null)
  const row = (id) => console_.locator(`tr[data-round="${id}"]`)

  // Sign in: a wrong token is refused, the right one kept for the tab.
  await console_.goto(`${base}/admin`)
  await console_.getByTestId('token').fill('not-the-token')
  await console_.getByRole('button', { name: 'Sign in' }).click()
  await until('the refusal', text(console_, 'sign-in-error'), (t) => t?.includes('not the admin token'))
  await console_.getByTestId('token').fill(token)
  await console_.getByRole('button', { name: 'Sign in' }).click()
  await until('the console', text(console_, 'shown-round'), (t) => t !== null)
  await console_.reload()
  await until('the console after a reload', () => console_.getByTestId('sign-in').count(), (n) => n === 0)
  await until('the stores up', text(console_, 'health'), (t) => t?.includes('ok'))

  // A hidden round, closing by itself in two minutes, created and opened from the console.
  const form = console_.getByTestId('create')
  await form.locator('input[name=id]').fill('semi')
  await form.locator('input[name=title]').fill('Semi-final')
  await form.locator('select[name=results]').selectOption('hidden')
  await form.locator('input[name=closes_at]').fill(local(new Date(Date.now() + 120_000)))
  await form.getByRole('button', { name: 'Create' }).click()
  await until('the new round', () => row('semi').count(), (n) => n === 1)
  await row('semi').getByRole('button', { name: 'Open' }).click()
  await until('the open round', () => row('semi').getByTestId('round-state').textContent(), (t) => /^open · closes in 0[12]:\d\d$/.test(t))

  await audience.goto(base)
  await until('the round on the audience page', text(audience, 'round-title'), (t) => t === 'Semi-final')
  await until('the hidden note', text(audience, 'round-hidden'), (t) => t?.includes('revealed by the host'))

  let accepted = 0
  for (const [i, v] of VOTES.entries()) {
    const status = await vote(v, `e2e-admin-${i}`)
    check(status === 202, `vote ${i} answered ${status}`)
    accepted++
  }
  await until('the total on the console', text(console_, 'total'), (t) => t === String(accepted))
  await until('the bands on the console', () => console_.locator('[data-testid=band-bars] li').count(), (n) => n === 2)
  check((await console_.getByTestId('hidden-badge').count()) === 1, 'the console says the round is hidden')
  await until('the total on the audience page', text(audience, 'total'), (t) => t === String(accepted))
  check((await audience.locator('[data-testid=band-bars] li').count()) === 0, 'the audience sees no bars while hidden')
  await until('every vote logged', text(console_, 'behind'), (t) => t === '0')
  check((await console_.getByTestId('logged').textContent()) === String(accepted), 'the pipeline panel counts the log')
  const invalid = await invalidVote()
  check(invalid === 400, `a malformed vote is refused (answered ${invalid})`)
  await until('the invalid vote in the activity panel', text(console_, 'stats-invalid'), (t) => t === '1')
  // The console and the audience's page are both on the live stream.
  await until('the viewers in the activity panel', text(console_, 'stats-viewers'), (t) => Number(t) >= 2)
  check((await console_.getByTestId('stats-late').textContent()) === '0', 'no late votes while the round is open')
  check(Number((await console_.getByTestId('stats-rate').textContent()).replace(',', '.')) >= 0, 'the activity panel shows the rate')
  await console_.screenshot({ path: `${shots}/console-open.png`, fullPage: true })

  // The close, with both pages open.
  await row('semi').getByRole('button', { name: 'Close' }).click()
  check((await row('semi').getByTestId('round-state').textContent()).startsWith('open'), 'Close asks before it closes')
  await console_.getByTestId('confirm-ok').click()
  await until('the closed round on the console', () => row('semi').getByTestId('round-state').textContent(), (t) => t.startsWith('closed'))
  await until('the closed round on the audience page', text(audience, 'round-state'), (t) => t === 'Voting closed')
  // The close reaches the gateways within one refresh of their rounds (200 ms); the pages may learn
  // it sooner, from the stream, so the late vote comes a few refreshes after them.
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const late = await vote(VOTES[0], 'e2e-admin-late')
  check(late === 409, `a vote after the close is refused (answered ${late})`)
  await until('the late vote in the activity panel', text(console_, 'stats-late'), (t) => t === '1')

  await until('the final badge', () => console_.getByTestId('final-badge').count(), (n) => n === 1, 45_000)
  const certified = await until('the certified hash', text(console_, 'certified'), (t) => /sha256 [0-9a-f]{64}/.test(t ?? ''))
  const result = await (await asOperator('/api/rounds/semi/result')).json()
  check(certified.includes(result.sha256) && result.total === accepted, `the console shows the API's certified result ${result.sha256}`)

  await console_.getByTestId('audit').click()
  await until('the audit', text(console_, 'audit-result'), (t) => t?.startsWith(`Counters and log agree: ${accepted} counted, ${accepted} logged in semi`))

  const [download] = await Promise.all([
    console_.waitForEvent('download'),
    row('semi').getByRole('button', { name: 'results.csv' }).click(),
  ])
  const saved = readFileSync(await download.path(), 'utf8')
  const served = await (await asOperator('/api/rounds/semi/results.csv')).text()
  check(saved === served && saved.includes('"Bohemia Suburbana","Mis palabras",2'), `the export is the API's CSV: ${saved}`)
  await console_.screenshot({ path: `${shots}/console-final.png`, fullPage: true })

  await row('semi').getByRole('button', { name: 'Reveal' }).click()
  await console_.getByTestId('confirm-ok').click()
  await until('the bars after the reveal', () => audience.locator('[data-testid=band-bars] li').count(), (n) => n === 2)
  await until('the final badge on the audience page', text(audience, 'round-final'), (t) => t === 'Final result')
  await audience.screenshot({ path: `${shots}/audience-final.png`, fullPage: true })

  check(audienceLoads === 1, `the audience page never reloaded (${audienceLoads} loads)`)
  check(errors.length === 0, `no page errors: ${errors.join('; ')}`)
  console.log(`OK: ${accepted} votes, closed, final (sha256 ${result.sha256}), audited, exported and revealed from the console`)
} finally {
  await browser.close()
}
