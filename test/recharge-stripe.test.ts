import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { platform, userCoinDebt } from '../src/ledger/index.js'
import { type FakeStripe, startFakeStripe } from './fakes/stripe.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import {
  CATALOG,
  CONFIRM_RECHARGE,
  CREATE_RECHARGE,
  RECHARGE,
  SEND_GIFT,
  START_LIVE,
} from './support/operations.js'

// Recharge through the real Stripe library against a local fake that speaks
// Stripe's wire format, with signed webhooks to the server's real route.
// Every scenario is asserted on the wallet and the ledger.

const WEBHOOK_SECRET = 'whsec_test_giftledger'

let fake: FakeStripe
let app: TestApp
let packages: { id: string; coins: number; bonusCoins: number; price: { amount: number } }[]
let keyN = 0
const key = () => `rk-${++keyN}`

beforeAll(async () => {
  fake = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
  app = await startTestApp({
    env: {
      STRIPE_SECRET_KEY: fake.secretKey,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      STRIPE_API_BASE: fake.url,
      RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
      RATE_LIMIT_MUTATIONS_BURST: '10000',
    },
  })
  const viewer = await signIn(app, 'shopper')
  packages = (await viewer.ok(CATALOG, { currency: 'USD' })).coinPackages
})
afterAll(async () => {
  await app?.stop()
  await fake?.stop()
})

const hook = () => `${app.url}/webhooks/stripe`

async function buy(who: Actor, pkg = packages[0]) {
  const { createRecharge } = await who.ok(CREATE_RECHARGE, {
    packageId: pkg?.id,
    provider: 'STRIPE',
    idempotencyKey: key(),
  })
  expect(createRecharge.userErrors).toEqual([])
  return createRecharge as {
    recharge: { id: string }
    checkout: { providerReference: string; clientSecret: string }
  }
}
const coinsOf = async (who: Actor) => (await who.ok('{ me { wallet { coins } } }')).me.wallet.coins as number
const status = async (who: Actor, id: string) => (await who.ok(RECHARGE, { id })).recharge.status as string
const settled = () => app.services.inbox.idle()
const total = (pkg = packages[0]) => (pkg?.coins ?? 0) + (pkg?.bonusCoins ?? 0)

async function rechargeCredits(orderId: string): Promise<number> {
  const rows = rowsOf<{ n: string }>(
    await app.database.db.execute(
      sql`select count(*)::text as n from ledger_transactions where idempotency_key = ${`recharge:${orderId}:credit`}`,
    ),
  )
  return Number(rows[0]?.n)
}

describe('recharge with Stripe', () => {
  it('credits once when the webhook comes first, then the client confirms', async () => {
    const alice = await signIn(app, 'alice')
    const { recharge, checkout } = await buy(alice)
    expect(checkout.providerReference).toMatch(/^pi_/)
    expect(checkout.clientSecret).toMatch(/^pi_.*_secret_/)
    const { events } = fake.succeed(checkout.providerReference, { feeMinor: 59 })
    for (const event of events) expect(await fake.deliver(event, hook())).toEqual([200])
    await settled()
    expect(await coinsOf(alice)).toBe(total())
    expect(await status(alice, recharge.id)).toBe('SUCCEEDED')
    const { confirmRecharge } = await alice.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id })
    expect(confirmRecharge.wallet.coins).toBe(total())
    expect(await rechargeCredits(recharge.id)).toBe(1)
    const fees = await app.services.ledger.balance(platform.providerFees('USD'))
    expect(fees.balance).toBeGreaterThanOrEqual(59n)
  })

  it('credits once when the client confirms first, then the webhook comes', async () => {
    const bob = await signIn(app, 'bob')
    const { recharge, checkout } = await buy(bob)
    const { events } = fake.succeed(checkout.providerReference)
    const { confirmRecharge } = await bob.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id })
    expect(confirmRecharge.recharge.status).toBe('SUCCEEDED')
    expect(confirmRecharge.wallet.coins).toBe(total())
    for (const event of events) await fake.deliver(event, hook())
    await settled()
    expect(await coinsOf(bob)).toBe(total())
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('stores an event delivered five times at once once, and credits once; order does not matter', async () => {
    const carol = await signIn(app, 'carol')
    const { recharge, checkout } = await buy(carol)
    const { events } = fake.succeed(checkout.providerReference)
    for (const event of [...events].reverse()) {
      expect(await fake.deliver(event, hook(), { times: 5, concurrently: true })).toEqual([
        200, 200, 200, 200, 200,
      ])
    }
    await settled()
    expect(await coinsOf(carol)).toBe(total())
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('credits a payment whose webhook never came, through reconciliation', async () => {
    const dan = await signIn(app, 'dan')
    const { recharge, checkout } = await buy(dan)
    fake.succeed(checkout.providerReference)
    expect(await coinsOf(dan)).toBe(0)
    const report = await app.services.recharge.reconcile({ olderThanMs: 0 })
    expect(report.settled).toBeGreaterThanOrEqual(1)
    expect(await coinsOf(dan)).toBe(total())
    expect(await status(dan, recharge.id)).toBe('SUCCEEDED')
  })

  it('refuses forged, stale and re-serialized webhooks, storing nothing', async () => {
    const erin = await signIn(app, 'erin')
    const { checkout } = await buy(erin)
    const [event] = fake.succeed(checkout.providerReference).events
    const count = async () =>
      Number(
        rowsOf<{ n: string }>(
          await app.database.db.execute(sql`select count(*)::text as n from webhook_events`),
        )[0]?.n,
      )
    const before = await count()
    expect(await fake.deliver(event as never, hook(), { signature: 'forged' })).toEqual([400])
    expect(
      await fake.deliver(event as never, hook(), { timestamp: Math.floor(Date.now() / 1000) - 3600 }),
    ).toEqual([400])
    expect(await fake.deliver(event as never, hook(), { mutateBody: true })).toEqual([400])
    expect(await count()).toBe(before)
    expect(await coinsOf(erin)).toBe(0)
    // An unknown event type is acknowledged and stored as ignored.
    const unknown = fake.event('customer.created', { id: 'cus_1', object: 'customer' })
    expect(await fake.deliver(unknown, hook())).toEqual([200])
    expect(await count()).toBe(before + 1)
  })

  it('flags an amount or currency mismatch and credits nothing', async () => {
    const fay = await signIn(app, 'fay')
    const { recharge, checkout } = await buy(fay)
    const { events } = fake.succeed(checkout.providerReference, { amountReceived: 1 })
    for (const event of events) await fake.deliver(event, hook())
    await settled()
    expect(await coinsOf(fay)).toBe(0)
    const problems = await app.services.recharge.discrepancies()
    expect(problems).toContainEqual(
      expect.objectContaining({ kind: 'AMOUNT_MISMATCH', orderId: recharge.id }),
    )
  })

  it('claws back partial and full refunds, each once', async () => {
    const gus = await signIn(app, 'gus')
    const pkg = packages.find((p) => p.bonusCoins === 0 && p.coins >= 300) ?? packages[1]
    const { recharge, checkout } = await buy(gus, pkg)
    for (const e of fake.succeed(checkout.providerReference).events) await fake.deliver(e, hook())
    await settled()
    const price = pkg?.price.amount ?? 0
    const half = Math.floor(price / 2)
    const partial = fake.refund(checkout.providerReference, half)
    for (const e of partial.events) await fake.deliver(e, hook(), { times: 3, concurrently: true })
    await settled()
    const expectedClawed = Math.floor((total(pkg) * half) / price)
    expect(await coinsOf(gus)).toBe(total(pkg) - expectedClawed)
    expect(await status(gus, recharge.id)).toBe('PARTIALLY_REFUNDED')
    const full = fake.refund(checkout.providerReference, price - half)
    for (const e of full.events) await fake.deliver(e, hook())
    await settled()
    expect(await coinsOf(gus)).toBe(0)
    expect(await status(gus, recharge.id)).toBe('REFUNDED')
  })

  it('turns a refund after the coins were spent into a debt that blocks gifts until a recharge repays it', async () => {
    const hal = await signIn(app, 'hal')
    const star = await signIn(app, 'star-stripe', ['creator'])
    const streamId = (await star.ok(START_LIVE, { title: 'live' })).startLiveStream.liveStream.id
    const pkg = packages[0]
    const { checkout } = await buy(hal, pkg)
    for (const e of fake.succeed(checkout.providerReference).events) await fake.deliver(e, hook())
    await settled()
    const { gifts } = await hal.ok(CATALOG)
    const rose = gifts.find((g: { name: string }) => g.name === 'Rose')
    const spent = 20
    const gift = await hal.ok(SEND_GIFT, {
      giftId: rose.id,
      liveStreamId: streamId,
      quantity: spent,
      idempotencyKey: key(),
    })
    expect(gift.sendGift.userErrors).toEqual([])
    for (const e of fake.refund(checkout.providerReference, pkg?.price.amount ?? 0).events)
      await fake.deliver(e, hook())
    await settled()
    expect(await coinsOf(hal)).toBe(0)
    expect((await app.services.ledger.balance(userCoinDebt(hal.userId))).balance).toBe(BigInt(spent))
    const blocked = await hal.ok(SEND_GIFT, {
      giftId: rose.id,
      liveStreamId: streamId,
      idempotencyKey: key(),
    })
    expect(blocked.sendGift.userErrors).toMatchObject([{ code: 'WALLET_IN_DEBT' }])
    // The next recharge repays the debt first.
    const again = await buy(hal, pkg)
    for (const e of fake.succeed(again.checkout.providerReference).events) await fake.deliver(e, hook())
    await settled()
    expect((await app.services.ledger.balance(userCoinDebt(hal.userId))).balance).toBe(0n)
    expect(await coinsOf(hal)).toBe(total(pkg) - spent)
  })

  it('holds the coins during a dispute; won releases them, lost takes them back', async () => {
    const ivy = await signIn(app, 'ivy')
    const won = await buy(ivy)
    for (const e of fake.succeed(won.checkout.providerReference).events) await fake.deliver(e, hook())
    const lost = await buy(ivy)
    for (const e of fake.succeed(lost.checkout.providerReference).events) await fake.deliver(e, hook())
    await settled()
    expect(await coinsOf(ivy)).toBe(2 * total())
    const price = packages[0]?.price.amount ?? 0
    const d1 = fake.openDispute(won.checkout.providerReference, price)
    for (const e of d1.events) await fake.deliver(e, hook())
    await settled()
    expect(await status(ivy, won.recharge.id)).toBe('DISPUTED')
    const wallet = await app.services.ledger.balance({
      code: `user:${ivy.userId}:wallet`,
      name: 'Coin wallet',
      type: 'liability',
      unit: 'COIN',
      ownerId: ivy.userId,
    })
    expect(wallet.held).toBe(BigInt(total()))
    for (const e of fake.closeDispute(d1.dispute.id, 'won').events) await fake.deliver(e, hook())
    await settled()
    expect(await status(ivy, won.recharge.id)).toBe('SUCCEEDED')
    expect(await coinsOf(ivy)).toBe(2 * total())

    const d2 = fake.openDispute(lost.checkout.providerReference, price)
    for (const e of d2.events) await fake.deliver(e, hook())
    await settled()
    for (const e of fake.closeDispute(d2.dispute.id, 'lost').events)
      await fake.deliver(e, hook(), { times: 2 })
    await settled()
    expect(await status(ivy, lost.recharge.id)).toBe('REFUNDED')
    expect(await coinsOf(ivy)).toBe(total())
  })

  it('refuses a provider that is not configured, and reports an outage as a user error', async () => {
    const jo = await signIn(app, 'jo')
    const paypal = await jo.ok(CREATE_RECHARGE, {
      packageId: packages[0]?.id,
      provider: 'PAYPAL',
      idempotencyKey: key(),
    })
    expect(paypal.createRecharge.userErrors).toMatchObject([{ code: 'PROVIDER_NOT_CONFIGURED' }])
    fake.setOutage('5xx')
    try {
      const k = key()
      const down = await jo.ok(CREATE_RECHARGE, {
        packageId: packages[0]?.id,
        provider: 'STRIPE',
        idempotencyKey: k,
      })
      expect(down.createRecharge.userErrors).toMatchObject([{ code: 'PROVIDER_UNAVAILABLE' }])
      fake.setOutage(null)
      const up = await jo.ok(CREATE_RECHARGE, {
        packageId: packages[0]?.id,
        provider: 'STRIPE',
        idempotencyKey: k,
      })
      expect(up.createRecharge.userErrors).toEqual([])
      expect(up.createRecharge.checkout.providerReference).toMatch(/^pi_/)
    } finally {
      fake.setOutage(null)
    }
  })

  it('leaves the books balanced', async () => {
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })
})
