// Patches the `postgres` driver (porsager/postgres 3.4.9) in node_modules
// after every install (package.json "postinstall"). Idempotent; fails the
// install if the code to patch is not found (another version: check whether
// it still needs this, then update or remove the patch).
//
// Why: when PostgreSQL closes connections under load (a restart, a failover,
// `pg_ctl stop -m fast`), a write the driver had deferred with setImmediate
// can run after the connection's socket was set to null, and throws from the
// immediate callback: an uncaught TypeError ("Cannot read properties of null
// (reading 'write')") that kills the whole server (porsager/postgres#1066,
// #1154, #1208; unmerged fixes #1168, #1176, #1209). And a connection closed
// with a deferred write pending kept the stale timer and the stale bytes, so
// its next connection attempt never sent its startup message and hung until
// connect_timeout. test/fault-database-restart.test.ts reproduces both.
// Third: a new connection first reads the array types (fetch_types), and the
// driver drops the promise of that read; when it fails (the server goes away
// or cancels it at that moment), the rejection is unhandled and kills the
// server (porsager/postgres#1192, #1205, #1223; seen in CI on 2026-11-26 as
// "write CONNECTION_CLOSED" during a database restart). test/postgres-
// driver.test.ts reproduces it with a 1 ms statement_timeout.
//
// The patch: a deferred write that finds no socket fails the connection's
// queries (CONNECTION_CLOSED, which callers see and retry) instead of
// throwing; closing a connection drops its pending bytes and timer; and the
// types read's failure is caught, since the connection has already dealt
// with it (a closed connection fails or retries its queries; an error
// answer is followed by ReadyForQuery, which goes on to the caller's query).
//
// Fourth, for speed: the driver wrote a message of 1 KiB or more to the socket
// at once, so a pipelined round trip of several statements (a gift batch:
// BEGIN, four reads; then two writes and COMMIT) took one write per large
// statement, and each write to a sleeping backend costs a wake-up (on these
// virtual machines about as much CPU as a whole small request). Now such a
// message is written at the end of the current run of JavaScript
// (process.nextTick): the statements sent together go in one write, with no
// turn of the event loop in between. Smaller messages still wait for
// setImmediate, as before.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const MARKER = 'giftledger-patch'
const require = createRequire(import.meta.url)

const replacements = [
  {
    find: '    if (fn || chunk.length >= 1024)\n      return nextWrite(fn)\n    nextWriteTimer === null && (nextWriteTimer = setImmediate(nextWrite))\n    return true\n  }\n',
    replace:
      '    if (fn)\n' +
      '      return nextWrite(fn)\n' +
      `    if (chunk.length >= 1024) { // ${MARKER}: large messages sent together go in one write\n` +
      '      flushTick || (flushTick = true, process.nextTick(flushNow))\n' +
      '      return true\n' +
      '    }\n' +
      '    nextWriteTimer === null && (nextWriteTimer = setImmediate(nextWrite))\n' +
      '    return true\n' +
      '  }\n' +
      '\n' +
      '  var flushTick = false\n' +
      '  function flushNow() {\n' +
      '    flushTick = false\n' +
      '    chunk && nextWrite()\n' +
      '  }\n',
    // Not the Cloudflare build: it has no process.nextTick (and is not what Node loads).
    variants: ['src', 'cjs/src'],
  },
  {
    find: '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)\n',
    replace:
      '  function nextWrite(fn) {\n' +
      `    if (!socket) { // ${MARKER}: a deferred write after the socket closed (porsager/postgres#1208)\n` +
      '      chunk = nextWriteTimer = null\n' +
      "      error(Errors.connection('CONNECTION_CLOSED', options))\n" +
      '      return false\n' +
      '    }\n' +
      '    const x = socket.write(chunk, fn)\n',
  },
  {
    find: '        return fetchArrayTypes()\n',
    replace: `        return fetchArrayTypes().catch(() => {}) // ${MARKER}: nobody else awaits it (porsager/postgres#1192)\n`,
  },
  {
    find: "    incomings = null\n    clearImmediate(nextWriteTimer)\n    socket.removeListener('data', data)\n",
    replace:
      '    incomings = null\n' +
      '    clearImmediate(nextWriteTimer)\n' +
      `    nextWriteTimer = chunk = null // ${MARKER}: nothing of a closed connection is sent on the next one\n` +
      "    socket.removeListener('data', data)\n",
  },
]

let root
try {
  // The package's main is cjs/src/index.js (its exports hide package.json).
  root = join(dirname(require.resolve('postgres')), '..', '..')
} catch {
  console.log('patch-postgres: postgres is not installed; nothing to patch')
  process.exit(0)
}
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
for (const variant of ['src', 'cjs/src', 'cf/src']) {
  const file = join(root, variant, 'connection.js')
  if (!existsSync(file)) continue
  let source = readFileSync(file, 'utf8')
  const before = source
  for (const { find, replace, variants } of replacements) {
    if (variants && !variants.includes(variant)) continue
    // Applied already (an earlier install, with this patch or an older one of fewer replacements).
    if (source.includes(replace)) continue
    if (!source.includes(find)) {
      console.error(
        `patch-postgres: postgres ${version}: ${variant}/connection.js is not the code this patch knows`,
      )
      process.exit(1)
    }
    source = source.replace(find, replace)
  }
  if (source === before) continue
  writeFileSync(file, source)
  console.log(`patch-postgres: patched postgres ${version} ${variant}/connection.js`)
}
