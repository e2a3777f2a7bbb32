import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { CATALOG, END_LIVE, GRANT_COINS, ME, SEND_GIFT, START_LIVE } from './support/operations.js'

// What a gift is priced and checked against (src/gifts/facts.ts, batch.ts):
// remembered facts spare each gift its own statements, and the batch catches
// facts that changed behind the cache's back (another server instance, an
// admin) before any coin moves.

let app: TestApp
let admin: Actor
let creator: Actor
let alice: Actor
let streamId: string
let gifts: Record<string, { id: string; coinCost: number }>

const UPDATE_GIFT = `mutation($input: UpdateGiftInput!) { updateGift(input: $input) { gift { coinCost } userErrors { code } } }`

beforeAll(async () => {
  // No streak ends during the file: the streak tracker's reads would mix with the counted statements.
  app = await startTestApp({ env: { GIFT_COMBO_WINDOW_MS: '600000' } })
  ;[admin, creator, alice] = await Promise.all([
    signIn(app, 'admin', ['admin']),
    signIn(app, 'creator', ['creator']),
    signIn(app, 'alice'),
  ])
  const catalog = await alice.ok<{ gifts: { id: string; name: string; coinCost: number }[] }>(CATALOG)
  gifts = Object.fromEntries(catalog.gifts.map((g) => [g.name, g]))
  streamId = (await creator.ok(START_LIVE, { title: 'Facts' })).startLiveStream.liveStream.id
  await admin.ok(GRANT_COINS, {
    userId: alice.userId,
    coins: 100_000,
    reason: 'test',
    idempotencyKey: 'facts-grant',
  })
})
afterAll(() => app?.stop())

let keyCounter = 0
const key = () => `facts-${++keyCounter}`

async function send(vars: Record<string, unknown>) {
  return (await alice.ok(SEND_GIFT, { idempotencyKey: key(), liveStreamId: streamId, ...vars })).sendGift
}

/** Sends one gift and returns the SQL statements it cost. */
async function statementsOf(vars: Record<string, unknown>): Promise<string[]> {
  app.queries.reset()
  const sent = await send(vars)
  expect(sent.userErrors).toEqual([])
  return app.queries.statements.map((s) => s.replace(/\s+/g, ' ').trim())
}

async function coinsOf(who: Actor): Promise<number> {
  return (await who.ok(ME)).me.wallet.coins
}

describe('a gift priced from remembered facts', () => {
  it('sends no statement of its own: only its batch’s, and none to build the answer', async () => {
    const rose = gifts.Rose?.id
    // The first gift reads the facts (and creates the creator's earnings account).
    await send({ giftId: rose, quantity: 2 })
    const statements = await statementsOf({ giftId: rose, quantity: 2 })
    // Nothing before the batch: no facts read for this gift.
    expect(statements.filter((s) => s.startsWith('with s as (select creator_id, status'))).toEqual([])
    // In its first round trip, the batch locks the stream, then the senders, then reads the streaks.
    const at = (pattern: RegExp) => statements.findIndex((s) => pattern.test(s))
    expect(at(/from live_streams .* for no key update$/)).toBeGreaterThanOrEqual(0)
    expect(at(/^with limited as materialized/)).toBeGreaterThan(at(/from live_streams .* for no key update$/))
    expect(at(/cross join lateral/)).toBeGreaterThan(at(/^with limited as materialized/))
    // Nothing after it: the answer (gift, creator, wallet) comes from what the batch read;
    // its last statement writes the events, the stream's totals and its ranking.
    expect(statements.at(-1)).toMatch(
      /^with v as \( select \* from unnest\(.* insert into gift_events .* insert into stream_gifters/,
    )
    // No row read again by the GraphQL layer (the drizzle plugin's reloads alias tables "d0").
    expect(statements.filter((s) => s.includes('"d0"'))).toEqual([])
    // The same statements for the next gift: none depends on the request.
    expect(await statementsOf({ giftId: rose, quantity: 3 })).toEqual(statements)
  })

  it('answers with the gift, the creator and the balance the batch wrote', async () => {
    const before = await coinsOf(alice)
    const sent = await send({ giftId: gifts['Finger Heart']?.id, quantity: 2 })
    expect(sent.giftEvent).toMatchObject({ quantity: 2, coins: 10 })
    expect(sent.giftEvent.gift).toEqual({ id: gifts['Finger Heart']?.id, name: 'Finger Heart' })
    expect(sent.giftEvent.creator).toEqual({ id: creator.userId, handle: 'creator' })
    expect(sent.wallet.coins).toBe(before - 10)
    // The other relations, loaded when asked for.
    const full = await alice.ok(
      `mutation($g: ID!, $s: ID!, $k: String!) { sendGift(input: { giftId: $g, liveStreamId: $s, idempotencyKey: $k }) {
        giftEvent { sender { id handle displayName isCreator } liveStream { id status creator { id } } gift { sku coinCost active } }
      } }`,
      { g: gifts.Rose?.id, s: streamId, k: key() },
    )
    expect(full.sendGift.giftEvent).toEqual({
      sender: { id: alice.userId, handle: 'alice', displayName: 'Alice', isCreator: false },
      liveStream: { id: streamId, status: 'LIVE', creator: { id: creator.userId } },
      gift: { sku: 'rose', coinCost: 1, active: true },
    })
  })
})

describe('facts that changed behind the cache', () => {
  it('charges a price changed in the database by another instance, not the remembered one', async () => {
    const heart = gifts['Finger Heart']?.id as string
    await send({ giftId: heart }) // remembered at 5 coins
    await app.database.db.execute(sql`update gifts set coin_cost = 7 where id = ${heart}::uuid`)
    const before = await coinsOf(alice)
    const sent = await send({ giftId: heart, quantity: 2 })
    expect(sent.userErrors).toEqual([])
    expect(sent.giftEvent.coins).toBe(14)
    expect(await coinsOf(alice)).toBe(before - 14)
    const [row] = rowsOf<{ coin_cost: string; coins: string }>(
      await app.database.db.execute(
        sql`select coin_cost::text, coins::text from gift_events where id = ${sent.giftEvent.id}::uuid`,
      ),
    )
    expect(row).toEqual({ coin_cost: '7', coins: '14' })
    await app.database.db.execute(sql`update gifts set coin_cost = 5 where id = ${heart}::uuid`)
  })

  it('charges the price an admin just set', async () => {
    const heart = gifts['Finger Heart']?.id as string
    await send({ giftId: heart })
    expect(
      (await admin.ok(UPDATE_GIFT, { input: { giftId: heart, coinCost: 6 } })).updateGift.userErrors,
    ).toEqual([])
    expect((await send({ giftId: heart })).giftEvent.coins).toBe(6)
    await admin.ok(UPDATE_GIFT, { input: { giftId: heart, coinCost: 5 } })
    expect((await send({ giftId: heart })).giftEvent.coins).toBe(5)
  })

  it('refuses a gift retired meanwhile, and moves no coin', async () => {
    const doughnut = gifts.Doughnut?.id as string
    await send({ giftId: gifts.Rose?.id })
    const sent = await send({ giftId: doughnut })
    expect(sent.userErrors).toEqual([])
    await app.database.db.execute(sql`update gifts set active = false where id = ${doughnut}::uuid`)
    const before = await coinsOf(alice)
    expect((await send({ giftId: doughnut })).userErrors).toMatchObject([{ code: 'GIFT_UNAVAILABLE' }])
    expect(await coinsOf(alice)).toBe(before)
    await app.database.db.execute(sql`update gifts set active = true where id = ${doughnut}::uuid`)
  })

  it('splits with the creator’s share as it is now', async () => {
    await send({ giftId: gifts.Rose?.id })
    await app.database.db.execute(
      sql`update users set creator_share_bps = 9000 where id = ${creator.userId}::uuid`,
    )
    const earnings = async () => (await creator.ok(ME)).me.earnings.coins as number
    const before = await earnings()
    const sent = await send({ giftId: gifts['Finger Heart']?.id, quantity: 2 })
    expect(sent.userErrors).toEqual([])
    expect((await earnings()) - before).toBe(9)
    await app.database.db.execute(
      sql`update users set creator_share_bps = 5000 where id = ${creator.userId}::uuid`,
    )
  })
})

describe('retries', () => {
  it('answers a retry with the original event, before and after the stream ended', async () => {
    const vars = { giftId: gifts.Rose?.id, liveStreamId: streamId, idempotencyKey: key(), quantity: 3 }
    const first = (await alice.ok(SEND_GIFT, vars)).sendGift
    const again = (await alice.ok(SEND_GIFT, vars)).sendGift
    expect(again.userErrors).toEqual([])
    expect(again.giftEvent.id).toBe(first.giftEvent.id)
    expect(again.giftEvent.gift).toEqual({ id: gifts.Rose?.id, name: 'Rose' })
    const other = (await alice.ok(SEND_GIFT, { ...vars, quantity: 4 })).sendGift
    expect(other.userErrors).toMatchObject([{ code: 'IDEMPOTENCY_KEY_REUSED' }])

    await creator.ok(END_LIVE, { liveStreamId: streamId })
    const late = (await alice.ok(SEND_GIFT, vars)).sendGift
    expect(late.userErrors).toEqual([])
    expect(late.giftEvent.id).toBe(first.giftEvent.id)
    expect((await send({ giftId: gifts.Rose?.id })).userErrors).toMatchObject([{ code: 'STREAM_NOT_LIVE' }])
  })

  it('leaves the books balanced', async () => {
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })
})
