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
