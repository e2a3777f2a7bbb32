import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { platform } from '../src/ledger/index.js'
import { type Actor, anonymous, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import {
  CATALOG,
  END_LIVE,
  GRANT_COINS,
  LIVE_NOW,
  ME,
  MY_ACTIVITY,
  SEND_GIFT,
  START_LIVE,
  STREAM,
} from './support/operations.js'

// End to end over HTTP: going live, sending gifts, wallets, grants and limits.

let app: TestApp
let admin: Actor
let creator: Actor
let otherCreator: Actor
let alice: Actor
let bob: Actor
let gifts: Record<string, { id: string; coinCost: number }>
let streamId: string

beforeAll(async () => {
  // A per-gift cap low enough to test, and no rate limit in the way.
  app = await startTestApp({
    env: {
      GIFT_COINS_MAX: '50000',
      RATE_LIMIT_MUTATIONS_PER_SECOND: '1000',
      RATE_LIMIT_MUTATIONS_BURST: '1000',
    },
  })
  ;[admin, creator, otherCreator, alice, bob] = await Promise.all([
    signIn(app, 'admin', ['admin']),
    signIn(app, 'creator', ['creator']),
    signIn(app, 'othercreator', ['creator']),
    signIn(app, 'alice'),
    signIn(app, 'bob'),
  ])
  const catalog = await alice.ok<{ gifts: { id: string; name: string; coinCost: number }[] }>(CATALOG)
  gifts = Object.fromEntries(catalog.gifts.map((g) => [g.name, g]))
})
afterAll(() => app?.stop())

let keyCounter = 0
const key = () => `k-${++keyCounter}`

async function grant(to: Actor, coins: number, idempotencyKey = key()) {
  return admin.ok(GRANT_COINS, { userId: to.userId, coins, reason: 'welcome bonus', idempotencyKey })
}
async function send(who: Actor, vars: Record<string, unknown>) {
  return (await who.ok(SEND_GIFT, { idempotencyKey: key(), ...vars })).sendGift
}
async function coinsOf(who: Actor): Promise<number> {
  return (await who.ok(ME)).me.wallet.coins
}
async function giftEventCount(): Promise<number> {
  const rows = rowsOf<{ n: string }>(
    await app.database.db.execute(sql`select count(*)::text as n from gift_events`),
  )
  return Number(rows[0]?.n)
}

describe('wallets and grants', () => {
  it('shows a new user their profile and an empty wallet', async () => {
    const { me } = await alice.ok(ME)
    expect(me.user).toMatchObject({
      id: alice.userId,
      handle: 'alice',
      displayName: 'Alice',
      isCreator: false,
    })
    expect(me.wallet).toEqual({ coins: 0, updatedAt: null })
    expect(me.earnings).toBeNull()
    const creatorMe = (await creator.ok(ME)).me
    expect(creatorMe.user.isCreator).toBe(true)
    expect(creatorMe.earnings).toEqual({ coins: 0, pendingPayoutCoins: 0 })
  })

  it('lets an admin grant coins, once per key', async () => {
    const first = (await grant(alice, 1000, 'welcome-alice')).grantCoins
    expect(first.userErrors).toEqual([])
    expect(first.wallet.coins).toBe(1000)
    expect(first.ledgerTransaction.kind).toBe('grant')
    const again = (await grant(alice, 1000, 'welcome-alice')).grantCoins
    expect(again.ledgerTransaction.id).toBe(first.ledgerTransaction.id)
    expect(await coinsOf(alice)).toBe(1000)
    const other = (await grant(alice, 999, 'welcome-alice')).grantCoins
    expect(other.userErrors).toMatchObject([
      { code: 'IDEMPOTENCY_KEY_REUSED', field: 'input.idempotencyKey' },
    ])
    expect(await coinsOf(alice)).toBe(1000)
    await grant(bob, 500)
  })

  it('refuses bad grants with user errors and changes nothing', async () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ coins: 0 }, 'INVALID_INPUT', 'input.coins'],
      [{ coins: -5 }, 'INVALID_INPUT', 'input.coins'],
      [{ coins: 10_000_001 }, 'INVALID_INPUT', 'input.coins'],
      [{ reason: '   ' }, 'INVALID_INPUT', 'input.reason'],
      [{ reason: 'x'.repeat(201) }, 'INVALID_INPUT', 'input.reason'],
      [{ idempotencyKey: '' }, 'INVALID_INPUT', 'input.idempotencyKey'],
      [{ idempotencyKey: 'x'.repeat(201) }, 'INVALID_INPUT', 'input.idempotencyKey'],
      [{ userId: '00000000-0000-4000-8000-000000000000' }, 'USER_NOT_FOUND', 'input.userId'],
      [{ userId: 'not-a-uuid' }, 'USER_NOT_FOUND', 'input.userId'],
    ]
    for (const [change, code, field] of cases) {
      const { grantCoins } = await admin.ok(GRANT_COINS, {
        userId: alice.userId,
        coins: 10,
        reason: 'test',
        idempotencyKey: key(),
        ...change,
      })
      expect(grantCoins.userErrors, JSON.stringify(change)).toMatchObject([{ code, field }])
      expect(grantCoins.wallet).toBeNull()
    }
    expect(await coinsOf(alice)).toBe(1000)
  })

  it('lets only admins grant', async () => {
    const vars = { userId: alice.userId, coins: 10, reason: 'x', idempotencyKey: key() }
    expect((await anonymous(app).raw(GRANT_COINS, vars)).errors?.[0]?.extensions?.code).toBe(
      'UNAUTHENTICATED',
    )
    for (const who of [alice, creator]) {
      expect((await who.raw(GRANT_COINS, vars)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    }
    expect(await coinsOf(alice)).toBe(1000)
  })
})

describe('live streams and gifts', () => {
  it('lets a creator go live once at a time', async () => {
    const { startLiveStream } = await creator.ok(START_LIVE, { title: 'Friday night' })
    expect(startLiveStream.userErrors).toEqual([])
    expect(startLiveStream.liveStream.status).toBe('LIVE')
    streamId = startLiveStream.liveStream.id
    const again = (await creator.ok(START_LIVE, { title: 'Second' })).startLiveStream
    expect(again.userErrors).toMatchObject([{ code: 'ALREADY_LIVE' }])
    expect((await creator.ok(START_LIVE, { title: '  ' })).startLiveStream.userErrors).toMatchObject([
      { code: 'INVALID_INPUT', field: 'input.title' },
    ])
    expect((await alice.raw(START_LIVE, { title: 'me too' })).errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    const { liveStreams } = await anonymous(app)
      .raw(LIVE_NOW)
      .then((r) => r.data as Record<string, any>)
    expect(liveStreams.edges.map((e: any) => e.node.id)).toContain(streamId)
  })

  it('sends a gift: wallet debited, creator and platform credited, event sequenced', async () => {
    const platformBefore = (await app.services.ledger.balance(platform.commission)).balance
    const sent = await send(alice, { giftId: gifts.Rose?.id, liveStreamId: streamId, quantity: 3 })
    expect(sent.userErrors).toEqual([])
    expect(sent.giftEvent).toMatchObject({ sequence: 1, quantity: 3, coins: 3, combo: 3 })
    expect(sent.giftEvent.gift.name).toBe('Rose')
    expect(sent.giftEvent.creator.id).toBe(creator.userId)
    expect(sent.wallet.coins).toBe(997)
    // 50% of 3 coins, rounded down for the creator; the remainder to the platform.
    expect((await creator.ok(ME)).me.earnings.coins).toBe(1)
    expect((await app.services.ledger.balance(platform.commission)).balance - platformBefore).toBe(2n)
  })

  it('continues a streak with the same gift and starts one with another', async () => {
    const second = await send(alice, { giftId: gifts.Rose?.id, liveStreamId: streamId })
    expect(second.giftEvent).toMatchObject({ sequence: 2, combo: 4 })
    const other = await send(alice, {
      giftId: gifts['Finger Heart']?.id,
      liveStreamId: streamId,
      quantity: 2,
    })
    expect(other.giftEvent).toMatchObject({ sequence: 3, combo: 2, coins: 10 })
    const bobs = await send(bob, { giftId: gifts.Rose?.id, liveStreamId: streamId })
    expect(bobs.giftEvent).toMatchObject({ sequence: 4, combo: 1 })
  })

  it('answers a retry with the same event and debits nothing more', async () => {
    const idempotencyKey = key()
    const vars = { giftId: gifts['Hand Hearts']?.id, liveStreamId: streamId, idempotencyKey }
    const first = (await bob.ok(SEND_GIFT, vars)).sendGift
    const again = (await bob.ok(SEND_GIFT, vars)).sendGift
    expect(again.giftEvent.id).toBe(first.giftEvent.id)
    expect(again.wallet.coins).toBe(first.wallet.coins)
    expect(await coinsOf(bob)).toBe(500 - 1 - 100)
    const changed = (await bob.ok(SEND_GIFT, { ...vars, quantity: 2 })).sendGift
    expect(changed.userErrors).toMatchObject([{ code: 'IDEMPOTENCY_KEY_REUSED' }])
  })

  it('refuses bad input with clear user errors and changes nothing', async () => {
    const before = { alice: await coinsOf(alice), events: await giftEventCount() }
    const cases: [Record<string, unknown>, string][] = [
      [{ giftId: '00000000-0000-4000-8000-000000000000' }, 'GIFT_NOT_FOUND'],
      [{ giftId: 'rose' }, 'GIFT_NOT_FOUND'],
      [{ quantity: 0 }, 'QUANTITY_OUT_OF_RANGE'],
      [{ quantity: -1 }, 'QUANTITY_OUT_OF_RANGE'],
      [{ quantity: 1_000_000 }, 'QUANTITY_OUT_OF_RANGE'],
      [{ idempotencyKey: '' }, 'INVALID_INPUT'],
      [{ idempotencyKey: 'k'.repeat(201) }, 'INVALID_INPUT'],
      [{ liveStreamId: null }, 'INVALID_INPUT'],
      [{ liveStreamId: '00000000-0000-4000-8000-000000000000' }, 'STREAM_NOT_FOUND'],
      [{ liveStreamId: 'nope' }, 'STREAM_NOT_FOUND'],
      [{ liveStreamId: null, creatorId: alice.userId }, 'CREATOR_NOT_FOUND'],
      [{ liveStreamId: null, creatorId: 'nope' }, 'CREATOR_NOT_FOUND'],
      [{ creatorId: otherCreator.userId }, 'INVALID_INPUT'],
      [{ giftId: gifts.Universe?.id }, 'INSUFFICIENT_COINS'],
      [{ giftId: gifts.Universe?.id, quantity: 2 }, 'SPEND_LIMIT_EXCEEDED'],
    ]
    for (const [change, code] of cases) {
      const result = (
        await alice.ok(SEND_GIFT, {
          giftId: gifts.Rose?.id,
          liveStreamId: streamId,
          idempotencyKey: key(),
          ...change,
        })
      ).sendGift
      expect(result.userErrors, JSON.stringify(change)).toMatchObject([{ code }])
      expect(result.giftEvent).toBeNull()
    }
    // Wrong types never reach the resolver.
    const typed = await alice.raw(SEND_GIFT, {
      giftId: gifts.Rose?.id,
      liveStreamId: streamId,
      quantity: 'many',
      idempotencyKey: key(),
    })
    expect(typed.errors?.length).toBeGreaterThan(0)
    await grant(creator, 10)
    const creatorSelf = await send(creator, { giftId: gifts.Rose?.id, liveStreamId: streamId })
    expect(creatorSelf.userErrors).toMatchObject([{ code: 'CANNOT_GIFT_SELF' }])
    expect(await coinsOf(alice)).toBe(before.alice)
    expect(await giftEventCount()).toBe(before.events)
  })

  it('refuses gifts past the sender’s own daily limit', async () => {
    const set = await alice.ok(
      `mutation($c: Amount) { setDailySpendLimit(input: { dailyCoins: $c }) { spendLimits { dailyCoins spentTodayCoins perGiftCoins } userErrors { code } } }`,
      { c: 20 },
    )
    expect(set.setDailySpendLimit.spendLimits).toEqual({
      dailyCoins: 20,
      spentTodayCoins: 14,
      perGiftCoins: 50000,
    })
    expect(
      (await send(alice, { giftId: gifts['Finger Heart']?.id, liveStreamId: streamId })).userErrors,
    ).toEqual([])
    const over = await send(alice, { giftId: gifts.Rose?.id, liveStreamId: streamId, quantity: 2 })
    expect(over.userErrors).toMatchObject([{ code: 'SPEND_LIMIT_EXCEEDED' }])
    expect((await send(alice, { giftId: gifts.Rose?.id, liveStreamId: streamId })).userErrors).toEqual([])
    const bad = await alice.ok(
      `mutation { setDailySpendLimit(input: { dailyCoins: 0 }) { userErrors { code field } } }`,
    )
    expect(bad.setDailySpendLimit.userErrors).toMatchObject([
      { code: 'INVALID_INPUT', field: 'input.dailyCoins' },
    ])
    await alice.ok(`mutation { setDailySpendLimit(input: { dailyCoins: null }) { userErrors { code } } }`)
    expect(
      (await send(alice, { giftId: gifts.Rose?.id, liveStreamId: streamId, quantity: 2 })).userErrors,
    ).toEqual([])
  })

  it('ranks the stream’s top gifters', async () => {
    const { liveStream } = await anonymous(app)
      .raw(STREAM, { id: streamId })
      .then((r) => r.data as Record<string, any>)
    expect(liveStream.status).toBe('LIVE')
    expect(liveStream.giftCoins).toBe(3 + 1 + 10 + 1 + 100 + 5 + 1 + 2)
    expect(liveStream.topGifters).toEqual(
      [
        { rank: 1, user: { id: alice.userId, handle: 'alice' }, coins: 22 },
        { rank: 2, user: { id: bob.userId, handle: 'bob' }, coins: 101 },
      ]
        .sort((a, b) => b.coins - a.coins)
        .map((g, i) => ({ ...g, rank: i + 1 })),
    )
  })

  it('sends gifts outside a live stream, without a sequence', async () => {
    const sent = await send(bob, { giftId: gifts.Rose?.id, creatorId: creator.userId, quantity: 2 })
    expect(sent.userErrors).toEqual([])
    expect(sent.giftEvent).toMatchObject({ sequence: null, combo: 2, coins: 2 })
  })

  it('lets an admin set a creator’s share, applied to later gifts', async () => {
    const SET = `mutation($c: ID!, $b: Int!) { setCreatorShare(input: { creatorId: $c, shareBasisPoints: $b }) { shareBasisPoints userErrors { code field } } }`
    expect((await admin.ok(SET, { c: creator.userId, b: 7000 })).setCreatorShare).toEqual({
      shareBasisPoints: 7000,
      userErrors: [],
    })
    expect((await admin.ok(SET, { c: creator.userId, b: 10_001 })).setCreatorShare.userErrors).toMatchObject([
      { code: 'INVALID_INPUT', field: 'input.shareBasisPoints' },
    ])
    expect((await admin.ok(SET, { c: alice.userId, b: 5000 })).setCreatorShare.userErrors).toMatchObject([
      { code: 'CREATOR_NOT_FOUND' },
    ])
    expect((await creator.raw(SET, { c: creator.userId, b: 10_000 })).errors?.[0]?.extensions?.code).toBe(
      'FORBIDDEN',
    )
    const before = (await creator.ok(ME)).me.earnings.coins
    await send(bob, { giftId: gifts['Finger Heart']?.id, creatorId: creator.userId, quantity: 2 })
    // 70% of 10 coins.
    expect((await creator.ok(ME)).me.earnings.coins - before).toBe(7)
  })

  it('lists a user’s own history, newest first, page by page', async () => {
    const first = (await alice.ok(MY_ACTIVITY, { first: 2 })).me.wallet
    expect(first.history.edges).toHaveLength(2)
    expect(first.history.pageInfo.hasNextPage).toBe(true)
    const all: any[] = []
    let after: string | null = null
    for (;;) {
      const page: any = (await alice.ok(MY_ACTIVITY, { first: 3, after })).me.wallet.history
      all.push(...page.edges.map((e: any) => e.node))
      if (!page.pageInfo.hasNextPage) break
      after = page.pageInfo.endCursor
    }
    expect(all[all.length - 1]).toMatchObject({ kind: 'grant', amount: 1000, balanceAfter: 1000 })
    // Each entry's balance is the one before it plus its amount.
    for (let i = 0; i < all.length - 1; i++)
      expect(all[i].balanceAfter).toBe(all[i + 1].balanceAfter + all[i].amount)
    expect(all[0].balanceAfter).toBe(await coinsOf(alice))
    expect(all.filter((e) => e.kind === 'gift').every((e) => e.amount < 0)).toBe(true)
    expect((await alice.raw(MY_ACTIVITY, { first: 101 })).errors?.length).toBeGreaterThan(0)
  })

  it('lets only the stream’s creator end it; then gifts are refused', async () => {
    const notMine = (await otherCreator.ok(END_LIVE, { liveStreamId: streamId })).endLiveStream
    expect(notMine.userErrors).toMatchObject([{ code: 'STREAM_NOT_FOUND' }])
    expect((await alice.raw(END_LIVE, { liveStreamId: streamId })).errors?.[0]?.extensions?.code).toBe(
      'FORBIDDEN',
    )
    const ended = (await creator.ok(END_LIVE, { liveStreamId: streamId })).endLiveStream
    expect(ended.liveStream).toMatchObject({ id: streamId, status: 'ENDED' })
    expect(ended.liveStream.endedAt).toEqual(expect.any(String))
    const again = (await creator.ok(END_LIVE, { liveStreamId: streamId })).endLiveStream
    expect(again.liveStream.endedAt).toBe(ended.liveStream.endedAt)
    const late = await send(alice, { giftId: gifts.Rose?.id, liveStreamId: streamId })
    expect(late.userErrors).toMatchObject([{ code: 'STREAM_NOT_LIVE' }])
    const { liveStreams } = await anonymous(app)
      .raw(LIVE_NOW)
      .then((r) => r.data as Record<string, any>)
    expect(liveStreams.edges.map((e: any) => e.node.id)).not.toContain(streamId)
  })

  it('leaves the books balanced', async () => {
    const report = await app.services.ledger.checkIntegrity()
    expect(report.problems).toEqual([])
  })
})
