import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../src/db/client.js'
import { rowsOf } from '../src/db/rows.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres, testDatabaseUrl } from './support/db.js'
import { databaseUrl, growForPlanner } from './support/grow.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// A gift batch's statements run on generic plans, made once per session
// (src/gifts/batch.ts, src/db/client.ts): planned on large tables without
// statistics, they must still probe what they need by key, not scan the
// users, the accounts, the ledger or the gift events (the ledger's check at
// commit did, test/ledger/plans.test.ts). The tables are shown to the
// planner at this size before the first gift plans them; then the rows and
// index entries that gifts read are counted.

const ROWS = 250_000
const FANS = 11
/**
 * Rows and index entries one gift (a batch of one) may read, all tables
 * together: ~5 measured; 75,010 with the ledger's check at commit as it was
 * before 49bf23d.
 */
const READS_PER_GIFT_MAX = 400

let app: TestApp
let fans: Actor[]
let streamId: string
let roseId: string
let n = 0

async function reads(database: Database): Promise<{ total: number; byRelation: Record<string, number> }> {
  const rows = rowsOf<{ name: string; n: string }>(
    await database.db.execute(sql`
      select relname as name, (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::text as n
        from pg_stat_user_tables
      union all
      select indexrelname, idx_tup_read::text from pg_stat_user_indexes`),
  )
  return {
    total: rows.reduce((sum, r) => sum + Number(r.n), 0),
    byRelation: Object.fromEntries(rows.map((r) => [r.name, Number(r.n)])),
  }
}

/** Backends send their statistics at most once a second, and when idle for about as long. */
const statsSettle = () => new Promise((resolve) => setTimeout(resolve, 1_500))

describe.skipIf(!onPostgres)('gift batches on grown tables (PostgreSQL)', () => {
  beforeAll(async () => {
    app = await startTestApp({
      env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '100000', RATE_LIMIT_MUTATIONS_BURST: '100000' },
    })
    const admin = await signIn(app, 'admin', ['admin'])
    const creator = await signIn(app, 'star', ['creator'])
    fans = []
    for (let i = 0; i < FANS; i++) {
      const fan = await signIn(app, `fan${i}`)
      await admin.ok(GRANT_COINS, { userId: fan.userId, coins: 100, reason: 'test', idempotencyKey: `g${i}` })
      fans.push(fan)
    }
    const { gifts } = await admin.ok<{ gifts: { id: string; name: string }[] }>(CATALOG)
    roseId = gifts.find((g) => g.name === 'Rose')?.id as string
    streamId = (await creator.ok(START_LIVE, { title: 'Grown' })).startLiveStream.liveStream.id

    const [db] = rowsOf<{ name: string }>(
      await app.database.db.execute(sql`select current_database() as name`),
    )
    const [account] = rowsOf<{ id: string }>(
      await app.database.db.execute(sql`select id::text from ledger_accounts order by id limit 1`),
    )
    const last = (then: string, otherwise: string) =>
      `case when g = ${ROWS} then ${then} else ${otherwise} end`
    await growForPlanner(databaseUrl(testDatabaseUrl as string, db?.name as string), [
      {
        insert: `insert into users (subject, handle, display_name)
          select 'grown|' || g, 'grown' || g, ${last('null', "'Grown'")} from generate_series(1, ${ROWS}) g`,
        error: /display_name/,
      },
      {
        insert: `insert into ledger_accounts (code, name, type, unit)
          select 'user:grown' || g || ':wallet', 'Grown', 'liability', ${last('null', "'COIN'")}
            from generate_series(1, ${ROWS}) g`,
        error: /"unit"/,
      },
      {
        insert: `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at)
          select 'grown-' || g, '', ${last("'-'", "'gift'")}, now() from generate_series(1, ${ROWS}) g`,
        error: /ledger_transactions_kind_format/,
      },
      {
        insert: `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
          select 1, ${account?.id}, 'debit', case when g = ${3 * ROWS} then 0 else 1 end, 'COIN', 1000000000 + g, 0, now()
            from generate_series(1, ${3 * ROWS}) g`,
        error: /ledger_entries_amount_positive/,
      },
      {
        insert: `insert into gift_events (stream_id, sequence, sender_id, creator_id, gift_id, quantity, coin_cost,
                                          coins, creator_coins, platform_coins, combo, transaction_id, sent_at)
          select null, null, '${fans[0]?.userId}', '${creator.userId}', '${roseId}', ${last('0', '1')}, 1,
                 1, 0, 1, 1, 1000000000 + g, now()
            from generate_series(1, ${ROWS}) g`,
        error: /gift_events_/,
      },
    ])
  }, 120_000)
  afterAll(() => app?.stop())

  const send = (fan: Actor) =>
    fan.ok(SEND_GIFT, { giftId: roseId, liveStreamId: streamId, quantity: 1, idempotencyKey: `grown-${++n}` })

  it('reads a few rows per gift, not the tables, in sessions planned on them', async () => {
    const first = await send(fans[0] as Actor) // the batch statements are planned here
    expect(first.sendGift.userErrors).toEqual([])
    const pipelinedBefore = app.services.gifts.batches.pipelined
    await statsSettle()
    const before = await reads(app.database)
    for (const fan of fans.slice(1)) expect((await send(fan)).sendGift.userErrors).toEqual([])
    await statsSettle()
    const after = await reads(app.database)
    // The gifts went the pipelined way, on the statements planned above.
    expect(app.services.gifts.batches.pipelined - pipelinedBefore).toBe(FANS - 1)
    const grew = Object.entries(after.byRelation)
      .map(([name, count]) => [name, count - (before.byRelation[name] ?? 0)] as const)
      .filter(([, count]) => count > 0)
    const perGift = (after.total - before.total) / (FANS - 1)
    expect(
      perGift,
      `reads per gift by relation: ${JSON.stringify(Object.fromEntries(grew))}`,
    ).toBeLessThanOrEqual(READS_PER_GIFT_MAX)
  })
})
