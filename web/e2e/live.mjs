// Browser test of the web app against a running system (`bandvote up`), in headless Chromium.
//
//   node e2e/live.mjs BASE_URL SCREENSHOT_DIR
//
// CHROMIUM names the browser (default /usr/bin/chromium, Debian's package). The script opens the
// audience's page before any round (free-text voting in the implicit round), votes through its
// form on both paths (gRPC with the mouse and a rank, WebAssembly with the keyboard only and no
// rank) and checks that the logs console shows each path; sends more votes from outside the page
// through both paths, and checks that the total, the bars, the donut and the latest-votes console update
// live with no reload; that a bad vote gets a clear error; that the page talks to no other host. It then prints
// `STOP_THE_SERVER` and waits for a line on stdin: the caller stops the server, and the freshness
// badge must turn red. Screenshots go to SCREENSHOT_DIR. Exits non-zero on the first failure.

import { mkdirSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { chromium } from 'playwright-core'
import { check, until } from './checks.mjs'

const [base, shots] = process.argv.slice(2)
if (!base || !shots) {
  console.error('usage: node e2e/live.mjs BASE_URL SCREENSHOT_DIR')
  process.exit(2)
}
mkdirSync(shots, { recursive: true })



async function post(path, vote) {
  const response = await fetch(`${base}/${path}/votes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(vote),
  })
  check(response.status === 202, `POST /${path}/votes answered ${response.status}`)
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 960 } })
  const origin = new URL(base).host
  const foreign = []
  page.on('request', (request) => {
    const host = new URL(request.url()).host
    if (host !== origin) {
      foreign.push(request.url())
    }
  })
  const consoleErrors = []
  page.on('pageerror', (error) => consoleErrors.push(String(error)))
  let loads = 0
  page.on('load', () => loads++)

  await page.goto(base)
  const total = () => page.getByTestId('total').textContent()
  const badge = () => page.getByTestId('freshness').textContent()
  const logLines = () => page.locator('[data-testid=logs] li .line').allTextContents()
  await until('the empty contest', total, (t) => t === '0')
  await until('the live badge', badge, (t) => t.includes('no votes counted yet'))
  await page.screenshot({ path: `${shots}/empty.png`, fullPage: true })

  // Vote through the form, gRPC path (the default), with a rank: choosing a known album fills in
  // its year.
  const form = page.getByTestId('vote-form')
  const posted = []
  page.on('request', (request) => {
    if (request.method() === 'POST' && /\/(grpc|wasm)\/votes$/.test(request.url())) {
      posted.push({ path: new URL(request.url()).pathname, body: JSON.parse(request.postData() ?? '{}') })
    }
  })
  check(await form.locator('input[name=path][value=grpc]').isChecked(), 'gRPC is the default path')
  await form.locator('input[name=name]').fill('Bohemia Suburbana')
  await form.locator('input[name=album]').fill('Mis palabras')
  await form.locator('input[name=album]').dispatchEvent('change')
  check((await form.locator('input[name=year]').inputValue()) === '1997', 'year filled in from the known album')
  await form.locator('input[name=rank]').fill('9.5')
  await page.getByTestId('vote-submit').click()
  await until('the gRPC vote to be accepted', () => page.getByTestId('vote-message').textContent(), (t) =>
    t?.startsWith('Vote accepted through grpc: Bohemia Suburbana — Mis palabras (receipt '),
  )
  // Then the WebAssembly path, with the keyboard only (arrows choose the path, Enter sends), no rank.
  await form.locator('input[name=album]').fill('Imaginaria Sonora')
  await form.locator('input[name=album]').dispatchEvent('change')
  await form.locator('input[name=rank]').fill('')
  await form.locator('input[name=path][value=grpc]').focus()
  await page.keyboard.press('ArrowRight')
  check(await form.locator('input[name=path][value=wasm]').isChecked(), 'the arrow keys choose the wasm path')
  await page.keyboard.press('Enter')
  await until('the wasm vote to be accepted', () => page.getByTestId('vote-message').textContent(), (t) =>
    t?.startsWith('Vote accepted through wasm: Bohemia Suburbana — Imaginaria Sonora (receipt '),
  )
  await until('the two form votes in the total', total, (t) => t === '2')
  const sentPaths = posted.map((p) => `${p.path} ${JSON.stringify(p.body)}`).join('; ')
  check(
    posted.length === 2 && posted[0].path === '/grpc/votes' && posted[0].body.rank === '9.5' && posted[1].path === '/wasm/votes' && !('rank' in posted[1].body),
    `the form posted to each path, the rank only when given: ${sentPaths}`,
  )
  // The logs console names each vote's path; the vote without a rank prints none.
  await page.locator('[data-testid=logs-details] summary').click()
  const formLogs = () =>
    page.locator('[data-testid=logs] li').evaluateAll((items) =>
      items.filter((li) => li.querySelector('.path')).map((li) => `${li.querySelector('.line').textContent} | ${li.querySelector('.path').textContent}`),
    )
  const both = await until('both form votes in the logs console', formLogs, (l) => l.length === 2)
  check(both[0].endsWith('Bohemia Suburbana Imaginaria Sonora 2015 | wasm'), `the wasm vote's log line: ${both[0]}`)
  check(both[1].endsWith('Bohemia Suburbana Mis palabras 1997 9.5 | grpc'), `the gRPC vote's log line: ${both[1]}`)
  for (const path of ['grpc', 'wasm']) {
    check(await page.locator(`[data-testid=logs] li.${path} .path`).isVisible(), `the ${path} label is visible`)
  }
  await page.locator('[data-testid=logs-details] summary').click()

  // A bad vote gets a clear error naming the field, and is not counted.
  await form.locator('input[name=year]').fill('97')
  await page.getByTestId('vote-submit').click()
  const error = await until('the error message', () => page.getByTestId('vote-message').textContent(), (t) =>
    t?.includes('year'),
  )
  check(error.toLowerCase().includes('four-digit'), `error explains the year: ${error}`)
  await page.screenshot({ path: `${shots}/vote-error.png`, fullPage: true })

  // Votes from outside the page, both paths: the page follows them live.
  const mix = [
    { name: 'Alux Nahual', album: 'El Viaje', year: '2011', rank: '8.6' },
    { name: 'Alux Nahual', album: 'Rock chapin', year: '2014', rank: '6.4' },
    { name: 'Bohemia Suburbana', album: 'Mis palabras', year: '1997', rank: '9.5' },
  ]
  const started = Date.now()
  for (let i = 0; i < 30; i++) {
    if (i === 29) {
      // Logs are ordered by the time each vote was received, to the millisecond: two votes of
      // the same millisecond have no order, so the last one is sent in a later one.
      await new Promise((r) => setTimeout(r, 10))
    }
    await post(i % 2 ? 'wasm' : 'grpc', mix[i % 3])
  }
  await until('the total to reach 32', total, (t) => t === '32')
  const seenAfter = Date.now() - started
  const bands = await page.locator('[data-testid=band-bars] li').evaluateAll((items) =>
    Object.fromEntries(items.map((li) => [li.dataset.band, li.querySelector('.count').textContent])),
  )
  check(bands['Alux Nahual'] === '20' && bands['Bohemia Suburbana'] === '12', `bars: ${JSON.stringify(bands)}`)
  const albums = await page.locator('[data-testid=album-legend] li').evaluateAll((items) =>
    Object.fromEntries(items.map((li) => [li.dataset.album, li.querySelector('.count').textContent])),
  )
  check(albums['Alux Nahual / El Viaje']?.startsWith('10 '), `donut: ${JSON.stringify(albums)}`)
  check(albums['Bohemia Suburbana / Mis palabras']?.startsWith('11 '), `donut: ${JSON.stringify(albums)}`)
  const lines = await until('20 lines in the logs console', logLines, (l) => l.length === 20)
  check(/^\d{4}-\d{2}-\d{2} - \d{2}:\d{2}:\d{2}\.\d{3} - \S/.test(lines[0]), `log line format: ${lines[0]}`)
  // The newest line is the last vote sent: mix[29 % 3], Mis palabras.
  check(lines[0].endsWith('Bohemia Suburbana Mis palabras 1997 9.5'), `newest log line: ${lines[0]}`)
  await until('the live badge', badge, (t) => t.includes('updated'))
  // The page's stream came on a connection of its own (every GET before it was answered
  // `Connection: close`), so the stream's own writer serves it, without hyper's buffers.
  const metrics = await (await fetch(`${base}/metrics`)).text()
  const own = Number(/^bandvote_event_stream_connections_total (\d+)/m.exec(metrics)?.[1] ?? 0)
  check(own >= 1, `the page's live stream was not served by the stream's writer: ${own}`)
  await page.locator('[data-testid=logs-details] summary').click()
  // At this width every line's path label stays inside the console, none cut off at its edge.
  const clipped = await page.locator('[data-testid=logs]').evaluate((console_) => {
    const edge = console_.getBoundingClientRect().right
    return [...console_.querySelectorAll('.path')].filter((p) => p.getBoundingClientRect().right > edge).length
  })
  check(clipped === 0, `${clipped} path labels overflow the logs console`)
  await page.screenshot({ path: `${shots}/live.png`, fullPage: true })

  // The Update button (keyboard): reloads the last 20 logs from the API.
  await page.getByTestId('update').focus()
  await page.keyboard.press('Enter')
  await until('the logs after Update', logLines, (l) => l.length === 20 && l[0] === lines[0])

  // A phone-sized screen.
  await page.setViewportSize({ width: 390, height: 844 })
  await page.screenshot({ path: `${shots}/phone.png`, fullPage: true })
  await page.setViewportSize({ width: 1280, height: 960 })

  check(loads === 1, `the page never reloaded (loads: ${loads})`)
  check(foreign.length === 0, `requests to other hosts: ${foreign.join(', ')}`)
  check(consoleErrors.length === 0, `page errors: ${consoleErrors.join('; ')}`)

  // The server goes away: the badge must say so instead of showing stale numbers as live.
  console.log('STOP_THE_SERVER')
  const input = createInterface({ input: process.stdin })
  await new Promise((resolve) => input.once('line', resolve))
  input.close()
  const lost = await until('the badge to turn red', () => page.getByTestId('freshness').getAttribute('class'), (c) =>
    c?.includes('bad'),
  )
  check(lost.includes('bad'), 'badge is red')
  await page.screenshot({ path: `${shots}/stream-lost.png`, fullPage: true })
  console.log(`OK: live updates seen ${seenAfter} ms after the 30 votes were sent`)
} finally {
  await browser.close()
}
