import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { onPostgres, testDatabaseUrl } from './support/db.js'

// The `postgres` driver as installed (patched by src/scripts/patch-postgres.mjs):
// a failure of the array-types read every new connection starts with must
// not escape as an unhandled rejection, which kills a Node server
// (porsager/postgres#1192). CI saw it once as a crash of the server during a
// database restart (the read cut by `pg_ctl stop -m fast`); a 1 ms
// statement_timeout makes PostgreSQL cancel that read every time. The probe
// runs in a process of its own, where an unhandled rejection is counted, not
// reported by the test runner as another test's failure.

const run = promisify(execFile)

const PROBE = `
import postgres from 'postgres'
let unhandled = 0
process.on('unhandledRejection', () => { unhandled++ })
const codes = []
for (let i = 0; i < 3; i++) {
  const sql = postgres(process.env.PROBE_URL, { max: 1, connection: { statement_timeout: 1 }, onnotice: () => {} })
  try { await sql\`select 1\`; codes.push('ok') } catch (error) { codes.push(error.code) }
  await sql.end({ timeout: 1 })
}
await new Promise((resolve) => setTimeout(resolve, 200))
console.log(JSON.stringify({ unhandled, codes }))
`

describe.skipIf(!onPostgres)('the postgres driver as installed (PostgreSQL)', () => {
  it('keeps a failed array-types read of a new connection from becoming an unhandled rejection', async () => {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', PROBE], {
      env: { ...process.env, PROBE_URL: testDatabaseUrl },
      timeout: 20_000,
    })
    const { unhandled, codes } = JSON.parse(stdout) as { unhandled: number; codes: string[] }
    // The read was cancelled (57014): the first query of the connection fails with it.
    expect(codes).toContain('57014')
    expect(unhandled).toBe(0)
  })
})

// The patch's fourth part: messages of 1 KiB or more sent in the same run of
// JavaScript go to the socket in one write at its end (before, one write each,
// and each write to a sleeping backend costs a wake-up).
const WRITES_PROBE = `
import net from 'node:net'
import postgres from 'postgres'
let writes = 0
const write = net.Socket.prototype.write
net.Socket.prototype.write = function (...args) {
  if (this.remotePort === Number(new URL(process.env.PROBE_URL).port || 5432)) writes++
  return write.apply(this, args)
}
const sql = postgres(process.env.PROBE_URL, { max: 1, onnotice: () => {} })
// As src/db/client.ts sends a pipelined round trip: a reserved connection, prepared statements, execute().
const connection = await sql.reserve()
const big = (n) => 'x'.repeat(2000) + n
const send = (ns) => Promise.all(ns.map((n) => connection.unsafe('select length($1::text) as n', [big(n)], { prepare: true }).execute()))
// Once first: the driver describes a new statement in a round trip of its own.
await send([1, 2, 3])
writes = 0
const answers = await send([1, 2, 3])
const together = writes
writes = 0
const [one] = await send([4])
console.log(JSON.stringify({ together, alone: writes, lengths: [...answers, one].map((rows) => rows[0].n) }))
connection.release()
await sql.end({ timeout: 1 })
`

describe.skipIf(!onPostgres)('the postgres driver as installed: writes (PostgreSQL)', () => {
  it('sends large statements issued together in one write, each answered', async () => {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', WRITES_PROBE], {
      env: { ...process.env, PROBE_URL: testDatabaseUrl },
      timeout: 20_000,
    })
    const { together, alone, lengths } = JSON.parse(stdout) as {
      together: number
      alone: number
      lengths: number[]
    }
    expect(lengths).toEqual([2001, 2001, 2001, 2001])
    expect(together).toBe(1)
    expect(alone).toBe(1)
  })
})
