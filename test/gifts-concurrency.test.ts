import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'

// 50 funded users send 1,000 gifts at once, over HTTP, to one creator's live
// stream; many of them past their balance. Afterwards: no wallet is
// negative, what the senders lost is exactly what the creator and the
// platform gained, every refusal was INSUFFICIENT_COINS, and the stream's
// sequence has no gap and no duplicate.

const SENDERS = 50
const GIFTS = 1000

let app: TestApp

describe.skipIf(!onPostgres)('gifts under concurrent load (PostgreSQL)', () => {
  beforeAll(async () => {
    app = await startTestApp({
      env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '100000', RATE_LIMIT_MUTATIONS_BURST: '100000' },
    })
  })
  afterAll(() => app?.stop())

  it(`keeps every coin when ${SENDERS} users send ${GIFTS} gifts at once`, async () => {
    const admin = await signIn(app, 'admin', ['admin'])
    const creator = await signIn(app, 'star', ['creator'])
    const senders: Actor[] = await Promise.all(
      Array.from({ length: SENDERS }, (_, i) => signIn(app, `fan${i}`)),
    )
    const funded = new Map<string, number>()
    for (const [i, s] of senders.entries()) {
      const coins = 100 + 37 * i // 100 .. 1,913: many will run dry
      funded.set(s.userId, coins)
      await admin.ok(GRANT_COINS, { userId: s.userId, coins, reason: 'load', idempotencyKey: `fund-${i}` })
    }
    const { gifts } = await admin.ok<{ gifts: { id: string; coinCost: number }[] }>(CATALOG)
    const affordable = gifts.filter((g) => g.coinCost <= 300)
    const streamId = (await creator.ok(START_LIVE, { title: 'Big night' })).startLiveStream.liveStream.id

    const outcomes = await Promise.all(
      Array.from({ length: GIFTS }, (_, n) => {
        const sender = senders[n % SENDERS] as Actor
        const gift = affordable[n % affordable.length] as { id: string }
        return sender.ok(SEND_GIFT, {
          giftId: gift.id,
          liveStreamId: streamId,
          quantity: 1 + (n % 3),
          idempotencyKey: `load-${n}`,
        })
      }),
    )
    const sent = outcomes.map((o) => o.sendGift)
    const accepted = sent.filter((s) => s.userErrors.length === 0)
    const refused = sent.filter((s) => s.userErrors.length > 0)
    expect(refused.length).toBeGreaterThan(0)
    expect(accepted.length).toBeGreaterThan(0)
    expect(new Set(refused.map((s) => s.userErrors[0].code))).toEqual(new Set(['INSUFFICIENT_COINS']))

    const db = app.database.db
    const [money] = rowsOf<{ debited: string; creator: string; platform: string; events: string }>(
      await db.execute(sql`
        select (select coalesce(sum(coins), 0) from gift_events)::text as debited,
               (select coalesce(sum(creator_coins), 0) from gift_events)::text as creator,
               (select coalesce(sum(platform_coins), 0) from gift_events)::text as platform,
               (select count(*) from gift_events)::text as events`),
    )
    expect(Number(money?.events)).toBe(accepted.length)
    const acceptedCoins = accepted.reduce((sum, s) => sum + s.giftEvent.coins, 0)
    expect(Number(money?.debited)).toBe(acceptedCoins)
    expect(Number(money?.creator) + Number(money?.platform)).toBe(acceptedCoins)

    // Wallets: funding minus what each sent, never negative.
    let walletTotal = 0
    for (const s of senders) {
      const coins = (await s.ok('{ me { wallet { coins } } }')).me.wallet.coins as number
      expect(coins).toBeGreaterThanOrEqual(0)
      walletTotal += coins
    }
    const fundedTotal = [...funded.values()].reduce((a, b) => a + b, 0)
    expect(fundedTotal - walletTotal).toBe(acceptedCoins)
    const earnings = (await creator.ok('{ me { earnings { coins } } }')).me.earnings.coins
    expect(earnings).toBe(Number(money?.creator))

    // The stream's sequence: 1..n, once each.
    const sequences = accepted.map((s) => s.giftEvent.sequence as number).sort((a, b) => a - b)
    expect(sequences).toEqual(Array.from({ length: accepted.length }, (_, i) => i + 1))
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  }, 300_000)
})
