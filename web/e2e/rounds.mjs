// Browser test of a round on the audience's page, in headless Chromium.
//
//   node e2e/rounds.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_DIR
//
// With the page open, the operator creates a hidden round that closes by itself in a minute and
// opens it: the page shows its title, "Voting open" with a countdown, "Results will be revealed by
// the host" and only the total while votes arrive; the operator reveals it, the bars appear; the
// operator closes it: "Voting closed", then "Final result" once it is certified, all without a
// reload. Exits non-zero on the first failure.

import { mkdirSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { check, until } from './checks.mjs'

const [base, token, shots] = process.argv.slice(2)
if (!base || !token || !shots) {
  console.error('usage: node e2e/rounds.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_DIR')
  process.exit(2)
}
mkdirSync(shots, { recursive: true })



async function admin(path, body) {
  const response = await fetch(`${base}/api/admin/${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  })
  check(response.ok, `POST /api/admin/${path} answered ${response.status}`)
}

async function vote(path, i) {
  const response = await fetch(`${base}/${path}/votes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': `e2e-round-${i}` },
    body: JSON.stringify({ name: 'Alux Nahual', album: 'El Viaje', year: '2011', rank: '8.6' }),
  })
  return response.status
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 960 } })
  const errors = []
  page.on('pageerror', (error) => errors.push(String(error)))
  let loads = 0
  page.on('load', () => loads++)
  await page.goto(base)
  const text = (id) => async () => ((await page.getByTestId(id).count()) ? page.getByTestId(id).textContent() : null)
  await until('the page', text('total'), (t) => t !== null && t !== '—')
  check((await page.getByTestId('round').count()) === 0, 'no round banner before the first round')

  const closesAt = new Date(Date.now() + 60_000).toISOString()
  await admin('rounds', { id: 'final', title: 'The Final', results: 'hidden', closes_at: closesAt })
  await admin('rounds/final/open')
  await until('the round title', text('round-title'), (t) => t === 'The Final')
  const open = await until('the countdown', text('round-state'), (t) => /^Voting open · closes in 0[01]:\d\d$/.test(t ?? ''))
  await until('the hidden note', text('round-hidden'), (t) => t?.includes('revealed by the host'))

  let sent = 0
  await until('votes in the open round', () => vote(sent % 2 ? 'wasm' : 'grpc', sent++), (s) => s === 202)
  for (let i = 0; i < 5; i++) {
    check((await vote(sent % 2 ? 'wasm' : 'grpc', sent++)) === 202, 'a vote in the open round')
  }
  await until('the total of the hidden round', text('total'), (t) => t === '6')
  check((await page.locator('[data-testid=band-bars] li').count()) === 0, 'no bars while hidden')
  await page.screenshot({ path: `${shots}/round-hidden.png`, fullPage: true })

  await admin('rounds/final/reveal')
  await until('the bars after the reveal', () => page.locator('[data-testid=band-bars] li').count(), (n) => n === 1)
  await until('no hidden note', () => page.getByTestId('round-hidden').count(), (n) => n === 0)

  await admin('rounds/final/close')
  await until('the closed round', text('round-state'), (t) => t === 'Voting closed')
  check((await vote('grpc', sent++)) === 409, 'a vote after the close is refused')
  await page.screenshot({ path: `${shots}/round-closed.png`, fullPage: true })
  await until('the final badge', text('round-final'), (t) => t === 'Final result', 45_000)
  await page.screenshot({ path: `${shots}/round-final.png`, fullPage: true })

  check(loads === 1, `the page never reloaded (${loads} loads)`)
  check(errors.length === 0, `no page errors: ${errors.join('; ')}`)
  console.log(`OK: ${open}; revealed, closed and final without a reload`)
} finally {
  await browser.close()
}
