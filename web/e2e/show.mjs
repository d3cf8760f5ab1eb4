// Browser test of a whole show, in Spanish, in headless Chromium: the operator's console on a
// laptop, a voter's phone (390×844, touch) and the venue's projector (1920×1080).
//
//   node e2e/show.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_DIR
//
// The operator creates a round with a ballot in the console (an entry added by hand, two pasted as
// CSV, reordered, one added and removed), a scratch round that is deleted, and a hidden free-text
// round that is edited; opens the first round. The phone taps a choice and confirms; its first
// attempt is lost on the network: the page says the vote was not sent and offers to send it again;
// the retry carries the same Idempotency-Key, gets a receipt that survives a reload (and the ballot
// is gone), and the round counts the vote once; the projector's QR code decodes to the
// audience's address. The console's round activity counts a vote off the ballot and, after the
// close, a late one. The console's Close asks first, and a double-click on it neither closes nor
// reveals. The closed round offers nothing to tap; "certifying… N s", then final with the winner;
// the reveal builds the bars up on the projector and names the winner. The phone's receipt says
// nothing of the certified result before the round is final, waits for the reveal while the round
// is final but hidden, then checks its vote's proof in the browser and says the vote is in the
// certified result; a receipt the round never counted, and a proof altered on its way, are said to
// be so. Then the hidden round takes
// votes: its bands appear in no public answer (results, all-time, logs, the stream's first event)
// nor on the phone or the projector, while the console sees them. Spanish throughout (`?lang=es`).
// Exits non-zero on the first failure.

import { mkdirSync } from 'node:fs'
import jsQR from 'jsqr'
import { PNG } from 'pngjs'
import { chromium } from 'playwright-core'
import { check, until } from './checks.mjs'

const [base, token, shots] = process.argv.slice(2)
if (!base || !token || !shots) {
  console.error('usage: node e2e/show.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_DIR')
  process.exit(2)
}
mkdirSync(shots, { recursive: true })

const SECRET = { name: 'Los Secretos Ocultos', album: 'Nadie Sabe', year: '2020' }
/** English that must not show on a Spanish page. */
const ENGLISH = ['Voting', 'Vote for', 'Results will', 'Sign in', 'Votes per', 'Receipt', 'Close voting', 'certifying', 'Winner', 'Scan to vote', 'reconnecting', 'live ·', 'Cancel', 'Rounds', 'ballot', 'certified result', 'How this is checked', 'Check again']
/** What the phone says of its vote once the final's certified result is checked. */
const VERIFIED = 'Tu voto por Alux Nahual (El Viaje) está en el resultado certificado.'
const WAITING = 'Tu voto se comprobará con el resultado certificado cuando se revelen los resultados.'

async function json(path, headers = {}) {
  const response = await fetch(`${base}${path}`, { headers })
  return { status: response.status, body: await response.text() }
}

async function vote(body, key) {
  const headers = { 'content-type': 'application/json' }
  if (key) {
    headers['idempotency-key'] = key
  }
  const response = await fetch(`${base}/grpc/votes`, { method: 'POST', headers, body: JSON.stringify(body) })
  return { status: response.status, body: await response.json() }
}

/** What a new stream client is sent first, up to and with its first `results` event. */
async function firstStreamEvents() {
  const abort = new AbortController()
  const response = await fetch(`${base}/api/stream`, { signal: abort.signal })
  const reader = response.body.getReader()
  let text = ''
  while (!/event: results\ndata: .*\n\n/.test(text)) {
    const { value, done } = await reader.read()
    if (done) {
      break
    }
    text += new TextDecoder().decode(value)
  }
  abort.abort()
  const results = JSON.parse(text.match(/event: results\ndata: (.*)\n\n/)[1])
  return { text, results }
}

async function rounds() {
  return JSON.parse((await json('/api/rounds')).body).rounds
}

/** Checks that a page is in Spanish: `<html lang="es">` and none of the English strings. */
async function spanish(page, what) {
  check((await page.evaluate(() => document.documentElement.lang)) === 'es', `${what}: <html lang="es">`)
  const text = await page.evaluate(() => document.body.innerText)
  const found = ENGLISH.filter((s) => text.includes(s))
  check(found.length === 0, `${what} shows English: ${found.join(', ')}`)
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
try {
  const errors = []
  const watch = (page, who) => page.on('pageerror', (error) => errors.push(`${who}: ${error}`))
  const laptop = await browser.newContext({ viewport: { width: 1366, height: 768 } })
  const op = await laptop.newPage()
  watch(op, 'console')
  const mobile = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true })
  const phone = await mobile.newPage()
  watch(phone, 'phone')
  const projector = await browser.newContext({ viewport: { width: 1920, height: 1080 } })
  const screen = await projector.newPage()
  watch(screen, 'projector')
  const text = (page, id) => async () => ((await page.getByTestId(id).count()) ? page.getByTestId(id).first().innerText() : null)
  const row = (id) => op.locator(`tr[data-round="${id}"]`)
  const slot = (id, action) => row(id).locator(`button[data-action="${action}"]`)
  const dialog = op.getByTestId('confirm-dialog')

  // The operator signs in, in Spanish.
  await op.goto(`${base}/admin?lang=es`)
  await op.getByTestId('token').fill(token)
  await op.getByRole('button', { name: 'Entrar' }).click()
  await until('the console', text(op, 'shown-round'), (t) => t !== null)
  const form = op.getByTestId('create')
  const entries = form.getByTestId('ballot-entry')

  // A scratch round, deleted (with a confirmation).
  await form.locator('input[name=id]').fill('borrador')
  await form.getByTestId('save-round').click()
  await until('the scratch round', () => row('borrador').count(), (n) => n === 1)
  await slot('borrador', 'delete').click()
  await until('the delete confirmation', () => dialog.count(), (n) => n === 1)
  await op.getByTestId('confirm-ok').click()
  await until('the scratch round deleted', () => row('borrador').count(), (n) => n === 0)

  // The final, hidden until revealed, with a ballot edited in the console.
  await form.locator('input[name=id]').fill('final')
  await form.locator('input[name=title]').fill('La Gran Final')
  await form.locator('select[name=results]').selectOption('hidden')
  await form.getByTestId('entry-add').click()
  await entries.nth(0).locator('input[name=entry-name]').fill('Viernes Verde')
  await entries.nth(0).locator('input[name=entry-album]').fill('Sesiones')
  await entries.nth(0).locator('input[name=entry-year]').fill('2008')
  await form.locator('details.paste summary').click()
  await form.getByTestId('ballot-paste').fill('name,album,year\nAlux Nahual,El Viaje,2011\n"Bohemia Suburbana",Mis palabras,1997\n')
  await form.getByTestId('ballot-import').click()
  await until('three entries', () => entries.count(), (n) => n === 3)
  await entries.nth(2).getByTestId('entry-up').click() // Viernes, Bohemia, Alux
  await entries.nth(0).getByTestId('entry-down').click() // Bohemia, Viernes, Alux
  await form.getByTestId('entry-add').click()
  await entries.nth(3).getByTestId('entry-remove').click()
  await form.getByTestId('save-round').click()
  await until('the final in the table', () => row('final').count(), (n) => n === 1)
  const created = (await rounds()).find((r) => r.id === 'final')
  const order = created.ballot.map((e) => `${e.name}/${e.album}/${e.year}`).join('; ')
  check(order === 'Bohemia Suburbana/Mis palabras/1997; Viernes Verde/Sesiones/2008; Alux Nahual/El Viaje/2011', `the ballot as edited: ${order}`)

  // The hidden free-text round, created and then edited (its title) while scheduled.
  await form.locator('input[name=id]').fill('secreta')
  await form.locator('input[name=title]').fill('Ronda secreta')
  await form.locator('select[name=results]').selectOption('hidden')
  await form.getByTestId('save-round').click()
  await until('the hidden round', () => row('secreta').count(), (n) => n === 1)
  await slot('secreta', 'edit').click()
  await form.locator('input[name=title]').fill('Premio del público')
  await form.getByTestId('save-round').click()
  await until('the edited title', async () => (await rounds()).find((r) => r.id === 'secreta')?.title, (t) => t === 'Premio del público')

  // Open the final from the console: the projector and the phone follow.
  await slot('final', 'open').click()
  await until('the open final', () => row('final').getByTestId('round-state').innerText(), (t) => t === 'abierta')
  await screen.goto(`${base}/screen?lang=es`)
  await until('the title on the projector', text(screen, 'screen-title'), (t) => t === 'La Gran Final')
  await until('the state on the projector', text(screen, 'screen-state'), (t) => t === 'Votación abierta')
  const config = JSON.parse((await json('/api/config')).body)
  const audienceUrl = config.public_url || `${base}/`
  await until('the QR code', () => screen.locator('[data-testid=qr] svg').count(), (n) => n === 1)
  const png = PNG.sync.read(await screen.getByTestId('qr').screenshot())
  const code = jsQR(new Uint8ClampedArray(png.data), png.width, png.height)
  check(code?.data === audienceUrl, `the QR code reads ${code?.data}, not ${audienceUrl}`)
  check((await screen.getByTestId('audience-url').innerText()) === audienceUrl, 'the address is printed under the QR code')
  check((await screen.locator('button, input, select, textarea, form').count()) === 0, 'nothing to click on the projector')

  await phone.goto(`${base}/?lang=es`)
  const choices = phone.getByTestId('choice')
  await until('the ballot on the phone', () => choices.count(), (n) => n === 3)
  const first = await choices.first().boundingBox()
  check(first.y + first.height <= 844 && first.height >= 44, `the first choice is on the first screen and big enough: ${JSON.stringify(first)}`)
  const last = await choices.last().boundingBox()
  check(last.y + last.height <= 844, `the whole ballot is on the first screen: ${JSON.stringify(last)}`)
  await until('the state on the phone', text(phone, 'round-state'), (t) => t === 'Votación abierta')
  await until('the hidden note on the phone', text(phone, 'round-hidden'), (t) => t?.includes('revelará'))
  await spanish(phone, 'the phone')
  await phone.screenshot({ path: `${shots}/phone.png` })

  // The phone votes: tap, confirm; the first attempt never reaches the server (the network drops it).
  const keys = []
  phone.on('request', (request) => {
    if (request.method() === 'POST' && new URL(request.url()).pathname === '/grpc/votes') {
      keys.push(request.headers()['idempotency-key'])
    }
  })
  await phone.route('**/grpc/votes', (route) => route.abort('internetdisconnected'), { times: 1 })
  await phone.locator('[data-testid=choice][data-name="Alux Nahual"]').tap()
  await until('the confirmation', text(phone, 'confirm-dialog'), (t) => t?.includes('¿Votar por Alux Nahual?'))
  await phone.getByTestId('confirm-ok').tap()
  await until('the vote said not sent', text(phone, 'vote-error'), (t) => t?.startsWith('Sin conexión: tu voto no se confirmó'))
  await until('the offer to send it again', text(phone, 'pending'), (t) => t?.includes('Tu voto por Alux Nahual — El Viaje no se confirmó'))
  check((await phone.getByTestId('receipt').count()) === 0, 'no receipt for a vote that was not sent')
  const retry = phone.getByTestId('retry')
  check((await retry.innerText()) === 'Enviar de nuevo', 'the retry button is in Spanish')
  const retryBox = await retry.boundingBox()
  check(retryBox.height >= 44, `the retry button is big enough to tap: ${JSON.stringify(retryBox)}`)
  await phone.screenshot({ path: `${shots}/phone-offline.png` })
  check((await (await fetch(`${base}/api/rounds`)).json()).rounds.find((r) => r.id === 'final').total === 0, 'the lost attempt was not counted')
  // The network is back: the retry goes through, under the same key.
  await retry.tap()
  await until('the receipt', text(phone, 'receipt-band'), (t) => t === 'Alux Nahual')
  check(keys.length === 2 && keys[0] && keys[0] === keys[1], `the retry reused the lost attempt's Idempotency-Key: ${JSON.stringify(keys)}`)
  check((await phone.getByTestId('vote-error').count()) === 0 && (await phone.getByTestId('pending').count()) === 0, 'nothing left to retry')
  await until('the vote counted once on the console', text(op, 'total'), (t) => t === '1')
  const receipt = await phone.getByTestId('receipt-id').innerText()
  check(/^[A-Za-z0-9._:-]{1,128}$/.test(receipt), `the receipt names the vote id: ${receipt}`)
  check((await phone.getByTestId('receipt').innerText()).includes('La Gran Final'), 'the receipt names the round')
  await phone.screenshot({ path: `${shots}/phone-receipt.png` })
  await phone.reload()
  await until('the receipt after a reload', text(phone, 'receipt-id'), (t) => t === receipt)
  check((await choices.count()) === 0, 'no ballot once voted')
  check((await phone.getByTestId('receipt-check').count()) === 0, 'no word of the certified result before the round is final')

  // More votes, from outside (no rank, no year); one off the ballot is refused.
  const sent = [['Bohemia Suburbana', 'Mis palabras'], ['Bohemia Suburbana', 'Mis palabras'], ['Bohemia Suburbana', 'Mis palabras'], ['Viernes Verde', 'Sesiones'], ['Viernes Verde', 'Sesiones']]
  for (const [name, album] of sent) {
    const answer = await vote({ name, album })
    check(answer.status === 202, `a ballot vote answered ${answer.status} ${JSON.stringify(answer.body)}`)
  }
  const off = await vote({ name: 'Alux Nahual', album: 'Rock chapin', year: '2014' })
  check(off.status === 422 && off.body.field === 'album', `an off-ballot vote: ${off.status} ${JSON.stringify(off.body)}`)
  await until('the off-ballot vote in the round activity', text(op, 'stats-ballot'), (t) => t === '1')
  await until('six votes on the console', text(op, 'total'), (t) => t === '6')
  await until('six votes on the projector', () => screen.getByTestId('screen-hidden').innerText(), (t) => t.startsWith('6'))
  const hiddenResults = JSON.parse((await json('/api/results')).body)
  check(hiddenResults.hidden && Object.keys(hiddenResults.bands).length === 0 && Object.keys(hiddenResults.albums).length === 0, `hidden results: ${JSON.stringify(hiddenResults)}`)
  for (const path of ['/api/results?round=default', '/api/logs?limit=100']) {
    const { body } = await json(path)
    check(!body.includes('Bohemia') && !body.includes('Viernes'), `${path} leaks the hidden round: ${body}`)
  }
  // The ballot itself is public (in the `round` event); the counts are not.
  const { results: streamed } = await firstStreamEvents()
  const counted = JSON.stringify([streamed.bands, streamed.albums])
  check(counted === '[{},{}]', `the stream's first results leak the hidden round: ${counted}`)
  check((await screen.getByTestId('band-bars').count()) === 0 && (await phone.getByTestId('band-bars').count()) === 0, 'no bars while hidden')

  // Close: a double-click on Close asks once, and never reveals.
  await op.getByRole('heading', { name: 'Rondas' }).scrollIntoViewIfNeeded()
  const close = await slot('final', 'close').boundingBox()
  await slot('final', 'close').dblclick()
  await until('the close confirmation', () => dialog.count(), (n) => n === 1)
  await new Promise((r) => setTimeout(r, 800))
  let final = (await rounds()).find((r) => r.id === 'final')
  check(final.state === 'open' && final.results === 'hidden', `a double-click neither closed nor revealed: ${final.state} ${final.results}`)
  const ok = await op.getByTestId('confirm-ok').boundingBox()
  const overlaps = ok.x < close.x + close.width && close.x < ok.x + ok.width && ok.y < close.y + close.height && close.y < ok.y + ok.height
  check(!overlaps, `the confirm button is away from Close: ${JSON.stringify({ ok, close })}`)
  check((await dialog.innerText()).includes('¿Cerrar la votación de «La Gran Final»?'), 'the dialog names the round')
  await op.getByTestId('confirm-ok').click()
  await until('the closed final', () => row('final').getByTestId('round-state').innerText(), (t) => t.startsWith('cerrada'))
  const under = await op.evaluate(([x, y]) => document.elementFromPoint(x, y)?.closest('button')?.dataset.action, [close.x + close.width / 2, close.y + close.height / 2])
  const moved = await slot('final', 'close').boundingBox()
  check(under === 'close', `the button under the cursor is still Close (disabled), not ${under} (Close was at ${JSON.stringify(close)}, is at ${JSON.stringify(moved)})`)
  final = (await rounds()).find((r) => r.id === 'final')
  check(final.results === 'hidden', 'closing did not reveal')
  await until('certifying… N s', text(op, 'certifying'), (t) => /^certificando… \d+ s$/.test(t ?? ''))

  // The closed round offers nothing to tap.
  await until('the closed round on the phone', text(phone, 'round-state'), (t) => t === 'La votación está cerrada')
  check((await phone.getByTestId('vote-form').count()) === 0 && (await choices.count()) === 0, 'no ballot and no form after the close')
  const late = await vote({ name: 'Bohemia Suburbana', album: 'Mis palabras' })
  check(late.status === 409, `a vote after the close answered ${late.status}`)
  await until('the late vote in the round activity', text(op, 'stats-late'), (t) => t === '1')
  await until('the closed final on the projector', text(screen, 'screen-state'), (t) => t === 'La votación está cerrada')

  // Final: the console names the winner.
  await until('the final badge', () => op.getByTestId('final-badge').count(), (n) => n === 1, 45_000)
  await until('the winner on the console', text(op, 'certified-winner'), (t) => t?.includes('Bohemia Suburbana'))
  check(/sha256 [0-9a-f]{64}/.test(await op.getByTestId('certified').innerText()), 'the certified hash')
  await spanish(op, 'the console')
  await op.screenshot({ path: `${shots}/admin.png`, fullPage: true })
  // Final but hidden: the certified result is not public yet, so the phone waits for the reveal.
  await until('the phone waiting for the reveal to check its vote', text(phone, 'receipt-check'), (t) => t === WAITING)

  // The reveal, confirmed: the projector builds the bars up, then names the winner.
  await slot('final', 'reveal').click()
  await until('the reveal confirmation', () => dialog.count(), (n) => n === 1)
  await op.getByTestId('confirm-ok').click()
  await until('the reveal building up', () => screen.locator('[data-testid=band-bars] li.pending').count(), (n) => n === 1)
  await screen.screenshot({ path: `${shots}/screen-reveal.png` })
  await until('the winner on the projector', text(screen, 'winner-name'), (t) => t === 'Bohemia Suburbana', 15_000)
  await until('certified on the projector', () => screen.getByTestId('certified').count(), (n) => n === 1)
  await new Promise((r) => setTimeout(r, 1200)) // the winner's entrance
  await spanish(screen, 'the projector')
  await screen.screenshot({ path: `${shots}/screen.png` })
  await until('the bars on the phone', () => phone.locator('[data-testid=band-bars] li').count(), (n) => n === 3)

  // The phone checks its vote's proof against the certified result, in the browser.
  const certified = JSON.parse((await json('/api/rounds/final/result')).body)
  check(/^[0-9a-f]{64}$/.test(certified.merkle_root) && certified.leaves === certified.total && certified.total === 6, `the certified result's tree: ${JSON.stringify(certified)}`)
  const unknown = await json('/api/rounds/final/proof/not-a-counted-vote')
  check(unknown.status === 404, `the proof of a vote never counted answered ${unknown.status} ${unknown.body}`)
  await until('the vote checked on the phone', text(phone, 'receipt-check'), (t) => t === VERIFIED)
  await phone.getByTestId('receipt').scrollIntoViewIfNeeded()
  await spanish(phone, 'the phone with its vote checked')
  await phone.screenshot({ path: `${shots}/receipt-verified.png` })
  await phone.getByTestId('receipt-how').locator('summary').tap()
  check((await phone.getByTestId('receipt-root').innerText()) === `${certified.merkle_root.slice(0, 12)}…`, 'the phone shows the certified root')
  check((await phone.getByTestId('receipt-leaves').innerText()) === '6', 'the phone shows the votes in the tree')
  const how = await phone.getByTestId('receipt-how').innerText()
  check(how.includes('Cómo se comprueba') && how.includes('huellas intermedias'), `the explanation, in Spanish: ${how}`)
  // Another phone keeps a receipt the round never counted; a third gets its true proof altered.
  const kept = JSON.parse(await phone.evaluate(() => localStorage.getItem('bandvote.receipt.final')))
  check(kept?.id === receipt, `the phone keeps its receipt: ${JSON.stringify(kept)}`)
  const cases = [
    [{ ...kept, id: 'not-a-counted-vote' }, false, 'Tu voto no aparece en el resultado certificado.'],
    [kept, true, 'La prueba no coincide con el resultado certificado: no se pudo confirmar tu voto.'],
  ]
  for (const [keeps, alter, says] of cases) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true })
    await context.addInitScript((value) => localStorage.setItem('bandvote.receipt.final', value), JSON.stringify(keeps))
    const other = await context.newPage()
    watch(other, 'another phone')
    if (alter) {
      await other.route('**/api/rounds/final/proof/**', async (route) => {
        const response = await route.fetch()
        const proof = await response.json()
        proof.path[0] = (proof.path[0][0] === '0' ? '1' : '0') + proof.path[0].slice(1)
        await route.fulfill({ response, json: proof })
      })
    }
    await other.goto(`${base}/?lang=es`)
    await until(`another phone: ${says}`, text(other, 'receipt-check'), (t) => t === says)
    await context.close()
  }

  // The hidden free-text round: its bands reach only the console.
  await slot('secreta', 'open').click()
  await until('the open hidden round', () => row('secreta').getByTestId('round-state').innerText(), (t) => t === 'abierta')
  // The gateways learn of the open within one refresh of their rounds (200 ms), maybe after the
  // console: until then a vote is refused as closed. The same key makes the retries one vote.
  await until('the gateways to take votes in the hidden round', () => vote(SECRET, 'show-secret-0'), (a) => a.status === 202)
  for (let i = 1; i < 3; i++) {
    const answer = await vote(SECRET, `show-secret-${i}`)
    check(answer.status === 202, `a vote in the hidden round answered ${answer.status} ${JSON.stringify(answer.body)}`)
  }
  await until('the hidden round on the console', () => op.locator(`[data-testid=band-bars] li[data-band="${SECRET.name}"]`).count(), (n) => n === 1)
  await until('the hidden round on the phone', text(phone, 'round-title'), (t) => t === 'Premio del público')
  await until('the hidden round on the projector', text(screen, 'screen-title'), (t) => t === 'Premio del público')
  await until('its total on the projector', () => screen.getByTestId('screen-hidden').innerText(), (t) => t.startsWith('3'))
  for (const path of ['/api/results', '/api/results?round=default', '/api/results?round=secreta', '/api/logs?limit=100', '/api/rounds', '/api/rounds/secreta/result']) {
    const { body } = await json(path)
    check(!body.includes('Secretos') && !body.includes('Nadie Sabe'), `${path} leaks the hidden round: ${body}`)
  }
  const { text: secretEvents } = await firstStreamEvents()
  check(!secretEvents.includes('Secretos'), `the stream's first events leak the hidden round: ${secretEvents}`)
  for (const [page, who] of [[phone, 'the phone'], [screen, 'the projector']]) {
    const shown = await page.evaluate(() => document.body.innerText)
    check(!shown.includes('Secretos'), `${who} shows the hidden round's band`)
    await spanish(page, who)
  }
  await phone.locator('[data-testid=logs-details] summary').tap()
  await new Promise((r) => setTimeout(r, 500))
  check(!(await phone.evaluate(() => document.body.innerText)).includes('Secretos'), 'the phone logs show the hidden band')

  check(errors.length === 0, `no page errors: ${errors.join('; ')}`)
  console.log(`OK: a show in Spanish: ballot edited, phone vote ${receipt} kept across a reload, QR ${audienceUrl}, close confirmed, final, revealed, vote found in the certified result (root ${certified.merkle_root.slice(0, 12)}…), hidden round kept hidden`)
} finally {
  await browser.close()
}
