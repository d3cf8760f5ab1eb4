// What every browser test script checks with.

/** Throws `message` unless `condition`. */
export function check(condition, message) {
  if (!condition) {
    throw new Error(message)
  }
}

/** Polls `read` until it returns something `accept` approves, or fails after `timeout` ms. */
export async function until(what, read, accept, timeout = 10_000) {
  const deadline = Date.now() + timeout
  let last
  while (Date.now() < deadline) {
    last = await read()
    if (accept(last)) {
      return last
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(last)}`)
}
