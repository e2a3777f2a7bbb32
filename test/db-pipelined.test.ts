import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { OneTrip, Pipelined } from '../src/db/client.js'
import { rowsOf } from '../src/db/rows.js'
import { createTestDatabase, onPostgres, type TestDatabase } from './support/db.js'

// Database.pipelined and Database.oneTrip (src/db/client.ts): a transaction whose statements go
// out without waiting for each other, on a connection reserved while such
// transactions come. What it must never do: leave a transaction open on a
// connection the pool gets back, commit what its caller did not ask to
// commit, or hang when its connection breaks.

let t: TestDatabase
let pipelined: Pipelined

const count = async () =>
  Number(
    rowsOf<{ n: string }>(
      await t.database.db.execute(sql`select count(*)::text as n from pipelined_probe`),
    )[0]?.n,
  )

describe.skipIf(!onPostgres)('pipelined transactions (PostgreSQL)', () => {
  beforeAll(async () => {
    t = await createTestDatabase()
    await t.database.db.execute(sql`create table pipelined_probe (n integer not null check (n > 0))`)
    pipelined = t.database.pipelined as Pipelined
  })
  afterAll(() => t?.drop())

  it('commits what it sends with COMMIT, in order, and rolls back what it does not', async () => {
    const rows = await pipelined(async (tx) => {
      await tx.db.execute(sql`insert into pipelined_probe values (1)`)
      return tx.send(
        [sql`insert into pipelined_probe values (2)`, sql`select count(*)::int as n from pipelined_probe`],
        {
          commit: true,
        },
      )
    })
    expect(rows[1]).toEqual([{ n: 2 }])
    expect(await count()).toBe(2)
    // Returned without COMMIT: rolled back.
    await pipelined(async (tx) => {
      await tx.send([sql`insert into pipelined_probe values (3)`])
    })
    expect(await count()).toBe(2)
  })

  it('plans on generic plans, on indexes, inside its transactions (and one-trip ones that ask); the pool plans each execution', async () => {
    const mode = sql`select current_setting('plan_cache_mode') as mode, current_setting('enable_seqscan') as seqscan`
    const [inside] = await pipelined((tx) => tx.send([mode], { commit: true }))
    expect(inside).toEqual([{ mode: 'force_generic_plan', seqscan: 'off' }])
    expect(rowsOf(await t.database.db.execute(mode))).toEqual([{ mode: 'force_custom_plan', seqscan: 'on' }])
    const [oneTrip] = await (t.database.oneTrip as OneTrip)([mode], { genericPlans: true })
    expect(oneTrip).toEqual([{ mode: 'force_generic_plan', seqscan: 'off' }])
  })

  it('rolls back when a statement fails, and the next transaction starts clean', async () => {
    await expect(
      pipelined((tx) =>
        tx.send([sql`insert into pipelined_probe values (4)`, sql`insert into pipelined_probe values (0)`], {
          commit: true,
        }),
      ),
    ).rejects.toMatchObject({ code: '23514' })
    expect(await count()).toBe(2)
    await expect(
      pipelined(async (tx) => {
        await tx.db.execute(sql`insert into pipelined_probe values (5)`)
        throw new Error('the caller changed its mind')
      }),
    ).rejects.toThrow('changed its mind')
    expect(await count()).toBe(2)
    await pipelined((tx) => tx.send([sql`insert into pipelined_probe values (6)`], { commit: true }))
    expect(await count()).toBe(3)
  })

  it('fails at once when its connection was cut, and works again on a new one', async () => {
    const pid = await pipelined(async (tx) => {
      const [rows] = await tx.send([sql`select pg_backend_pid() as pid`], { commit: true })
      return Number(rows?.[0]?.pid)
    })
    await t.database.db.execute(sql`select pg_terminate_backend(${pid})`)
    const startedAt = Date.now()
    const cut = await pipelined((tx) =>
      tx.send([sql`insert into pipelined_probe values (7)`], { commit: true }),
    ).then(
      () => 'committed',
      () => 'failed',
    )
    // Either way, promptly: no statement left waiting on the dead connection.
    expect(Date.now() - startedAt).toBeLessThan(5_000)
    const later = await pipelined(async (tx) => {
      const [, rows] = await tx.send(
        [sql`insert into pipelined_probe values (8)`, sql`select pg_backend_pid() as pid`],
        {
          commit: true,
        },
      )
      return Number(rows?.[0]?.pid)
    })
    expect(await count()).toBe(cut === 'committed' ? 5 : 4)
    expect(later).not.toBe(pid)
  })

  it('fails a one-trip transaction at once when its connection was cut, and works again on a new one', async () => {
    const oneTrip = t.database.oneTrip as OneTrip
    const [first] = await oneTrip([sql`select pg_backend_pid() as pid`])
    const pid = Number(first?.[0]?.pid)
    await t.database.db.execute(sql`select pg_terminate_backend(${pid})`)
    const before = await count()
    const startedAt = Date.now()
    const cut = await oneTrip([sql`insert into pipelined_probe values (9)`]).then(
      () => 'committed',
      () => 'failed',
    )
    expect(Date.now() - startedAt).toBeLessThan(5_000)
    const [, later] = await oneTrip([
      sql`insert into pipelined_probe values (10)`,
      sql`select pg_backend_pid() as pid`,
    ])
    expect(Number(later?.[0]?.pid)).not.toBe(pid)
    expect(await count()).toBe(before + (cut === 'committed' ? 2 : 1))
  })
})
