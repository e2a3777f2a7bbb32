import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { Ledger, platform, userWallet } from '../src/ledger/index.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// On PostgreSQL a gift batch is a pipelined transaction of two round trips
// (src/gifts/batch.ts): the reads, then the ledger's statement, the events'
// statement and COMMIT, sent without waiting for each other. The events'
// statement writes only if the ledger's did; when the ledger's expectations
// were stale, neither writes and the batch runs again the usual way.

let app: TestApp
let admin: Actor
let fan: Actor
let streamId: string
let roseId: string
let n = 0
const key = () => `pipelined-${++n}`

describe.skipIf(!onPostgres)('gift batches as pipelined transactions (PostgreSQL)', () => {
  beforeAll(async () => {
    app = await startTestApp({
      env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '100000', RATE_LIMIT_MUTATIONS_BURST: '100000' },
    })
    admin = await signIn(app, 'admin', ['admin'])
    fan = await signIn(app, 'fan')
    const creator = await signIn(app, 'star', ['creator'])
    await admin.ok(GRANT_COINS, { userId: fan.userId, coins: 1000, reason: 'test', idempotencyKey: key() })
    const { gifts } = await admin.ok<{ gifts: { id: string; name: string }[] }>(CATALOG)
    roseId = gifts.find((g) => g.name === 'Rose')?.id as string
    streamId = (await creator.ok(START_LIVE, { title: 'Pipelined' })).startLiveStream.liveStream.id
  })
  afterAll(() => app?.stop())

  const send = (quantity: number) =>
    fan.ok(SEND_GIFT, { giftId: roseId, liveStreamId: streamId, quantity, idempotencyKey: key() })

  it('writes a batch in two round trips, with its events, streaks and totals', async () => {
    const before = { ...app.services.gifts.batches }
    const sent = await Promise.all(Array.from({ length: 20 }, () => send(1)))
    expect(sent.every((s) => s.sendGift.userErrors.length === 0)).toBe(true)
    expect(app.services.gifts.batches.pipelined).toBeGreaterThan(before.pipelined)
    expect(app.services.gifts.batches.usual).toBe(before.usual)
    // One streak: each gift continues the one before it, across batches too.
    const combos = sent.map((s) => s.sendGift.giftEvent.combo as number).sort((a, b) => a - b)
    expect(combos).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    const balances = sent.map((s) => s.sendGift.wallet.coins as number).sort((a, b) => b - a)
    expect(balances).toEqual(Array.from({ length: 20 }, (_, i) => 999 - i))
    const [stream] = rowsOf<{ gift_coins: string; last_sequence: string; events: string; ranked: string }>(
      await app.database.db.execute(sql`
        select s.gift_coins::text, s.last_sequence::text,
               (select count(*) from gift_events e where e.stream_id = s.id)::text as events,
               (select coins from stream_gifters g where g.stream_id = s.id)::text as ranked
          from live_streams s where s.id = ${streamId}::uuid`),
    )
    expect(stream).toEqual({ gift_coins: '20', last_sequence: '20', events: '20', ranked: '20' })
  })

  it('runs a batch again the usual way when the ledger found its expectations stale, and writes it once', async () => {
    // Another engine moves the fan's wallet: this instance's expectation of it is now stale.
    const other = new Ledger(app.database, { concurrency: 1 })
    await other.post({
      idempotencyKey: key(),
      kind: 'grant',
      entries: [
        { account: platform.promotions, direction: 'debit', amount: 50n },
        { account: userWallet(fan.userId), direction: 'credit', amount: 50n },
      ],
    })
    const before = { ...app.services.gifts.batches }
    const sent = await send(3)
    expect(sent.sendGift.userErrors).toEqual([])
    expect(sent.sendGift.giftEvent).toMatchObject({ sequence: 21, combo: 23, coins: 3 })
    expect(sent.sendGift.wallet.coins).toBe(980 + 50 - 3)
    expect(app.services.gifts.batches.usual).toBe(before.usual + 1)
    expect(app.services.ledger.expectations.stale).toBeGreaterThan(0)
    // Written once: one event, one transaction, for the key.
    const [counts] = rowsOf<{ events: string; transactions: string }>(
      await app.database.db.execute(sql`
        select (select count(*) from gift_events where stream_id = ${streamId}::uuid)::text as events,
               (select count(*) from ledger_transactions where kind = 'gift')::text as transactions`),
    )
    expect(counts).toEqual({ events: '21', transactions: '21' })
    // Another writer moved the wallet: for a while (contendedAccountMs) its
    // batches are planned under the locks, the usual way, rather than found stale.
    const next = await send(1)
    expect(next.sendGift.wallet.coins).toBe(980 + 50 - 3 - 1)
    expect(app.services.gifts.batches).toEqual({ pipelined: before.pipelined, usual: before.usual + 2 })
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })

  it('answers a key sent twice at once with one gift, debited once, whichever batches they land in', async () => {
    const coins = async () => (await fan.ok('{ me { wallet { coins } } }')).me.wallet.coins as number
    const before = await coins()
    const twin = key()
    // Gifts under other keys keep a batch in flight, so the twins queue and most often share the next one.
    const sent = await Promise.all([
      ...Array.from({ length: 6 }, () => send(1)),
      fan.ok(SEND_GIFT, { giftId: roseId, liveStreamId: streamId, quantity: 2, idempotencyKey: twin }),
      fan.ok(SEND_GIFT, { giftId: roseId, liveStreamId: streamId, quantity: 2, idempotencyKey: twin }),
    ])
    const [a, b] = sent.slice(-2).map((s) => s.sendGift)
    expect(a.userErrors).toEqual([])
    expect(b.userErrors).toEqual([])
    expect(b.giftEvent.id).toBe(a.giftEvent.id)
    expect(await coins()).toBe(before - 6 - 2)
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })
})
