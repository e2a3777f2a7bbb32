import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { growForPlanner, ledgerGrowth, readsBetween, readsSoFar } from './support/grow.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// A gift batch's statements run on generic plans, made once per session
// (src/gifts/batch.ts, src/db/client.ts): planned on large tables without
// statistics, they must still probe what they need by key, not scan the
// users, the accounts, the ledger or the gift events (the ledger's check at
// commit did, test/ledger/plans.test.ts). The tables are shown to the
// planner at this size, the app's sessions are ended, and the rows and
// index entries that gifts read in new sessions are counted.

const ROWS = 250_000
const FANS = 11
/**
 * Rows and index entries one gift (a batch of one) may read, all tables
 * together: ~53 measured; 68,499 with the ledger's check at commit as it
 * was before 49bf23d.
 */
const READS_PER_GIFT_MAX = 300

let app: TestApp
let fans: Actor[]
let streamId: string
let roseId: string
let n = 0

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

    const last = (then: string, otherwise: string) =>
      `case when g = ${ROWS} then ${then} else ${otherwise} end`
    await growForPlanner(app.databaseUrl as string, [
      ...ledgerGrowth(ROWS),
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
    const url = app.databaseUrl as string
    // Ends the app's sessions too: the gifts below run in new ones, planned on the grown tables.
    const before = await readsSoFar(url)
    const pipelined = app.services.gifts.batches.pipelined
    for (const fan of fans) expect((await send(fan)).sendGift.userErrors).toEqual([])
    expect(app.services.gifts.batches.pipelined - pipelined).toBe(FANS)
    const after = await readsSoFar(url)
    expect(
      (after.total - before.total) / FANS,
      `reads per gift by relation: ${JSON.stringify(readsBetween(before, after))}`,
    ).toBeLessThanOrEqual(READS_PER_GIFT_MAX)
  })
})
