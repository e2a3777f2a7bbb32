import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { platform, userCoinDebt, userWallet } from '../src/ledger/index.js'
import { type FakePayPal, type PayPalWebhookEvent, startFakePayPal } from './fakes/paypal.js'
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

// Recharge through the PayPal gateway against a local fake that speaks
// PayPal's Orders v2 wire format, with RSA-signed webhooks (verified through
// the fake's verify-webhook-signature API) to the server's real route. The
// same scenarios as recharge-stripe.test.ts, asserted on the wallet, the
// recharge's status and the ledger.

const CLIENT_ID = 'paypal-client-giftledger'
const CLIENT_SECRET = 'paypal-secret-giftledger'
const WEBHOOK_ID = 'WH-GIFTLEDGER-TEST'

let paypal: FakePayPal
let app: TestApp
let packages: { id: string; coins: number; bonusCoins: number; price: { amount: number } }[]
let keyN = 0
const key = () => `pk-${++keyN}`

beforeAll(async () => {
  paypal = await startFakePayPal({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, webhookId: WEBHOOK_ID })
  app = await startTestApp({
    env: {
      PAYPAL_CLIENT_ID: CLIENT_ID,
      PAYPAL_CLIENT_SECRET: CLIENT_SECRET,
      PAYPAL_WEBHOOK_ID: WEBHOOK_ID,
      PAYPAL_API_BASE: paypal.url,
      RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
      RATE_LIMIT_MUTATIONS_BURST: '10000',
    },
  })
  const viewer = await signIn(app, 'shopper')
  packages = (await viewer.ok(CATALOG, { currency: 'USD' })).coinPackages
})
afterAll(async () => {
  await app?.stop()
  await paypal?.stop()
})

const fake = () => paypal.controls
const hook = () => `${app.url}/webhooks/paypal`

/** Delivers each event as PayPal would; returns the HTTP statuses. */
async function deliver(
  events: PayPalWebhookEvent[],
  options: Parameters<FakePayPal['controls']['deliver']>[2] = {},
): Promise<number[]> {
  const statuses: number[] = []
  for (const event of events) {
    for (const r of await fake().deliver(event, hook(), options)) statuses.push(r.status)
  }
  return statuses
}

async function buy(who: Actor, pkg = packages[0]) {
  const { createRecharge } = await who.ok(CREATE_RECHARGE, {
    packageId: pkg?.id,
    provider: 'PAYPAL',
    idempotencyKey: key(),
  })
  expect(createRecharge.userErrors).toEqual([])
  return createRecharge as {
    recharge: { id: string }
    checkout: { providerReference: string; approvalUrl: string | null; clientSecret: string | null }
  }
}

/** The buyer approves and PayPal captures (no webhook delivered yet): the capture id and its event. */
function pay(orderId: string, money?: { amountMinor?: bigint; currency?: string }) {
  const events = fake().captureDirectly(orderId, money)
  const captureId = events[0]?.resource.id as string
  return { captureId, events }
}

const coinsOf = async (who: Actor) => (await who.ok('{ me { wallet { coins } } }')).me.wallet.coins as number
const status = async (who: Actor, id: string) => (await who.ok(RECHARGE, { id })).recharge.status as string
const total = (pkg = packages[0]) => (pkg?.coins ?? 0) + (pkg?.bonusCoins ?? 0)
const debtOf = async (who: Actor) => (await app.services.ledger.balance(userCoinDebt(who.userId))).balance

async function count(query: ReturnType<typeof sql>): Promise<number> {
  return Number(rowsOf<{ n: string }>(await app.database.db.execute(query))[0]?.n)
}
const webhookRows = () => count(sql`select count(*)::text as n from webhook_events`)
const rechargeCredits = (orderId: string) =>
  count(
    sql`select count(*)::text as n from ledger_transactions where idempotency_key = ${`recharge:${orderId}:credit`}`,
  )

/**
 * Waits until the inbox has processed everything it holds: idle() waits for
 * the current drain; an event that failed (e.g. a refund that came before its
 * capture) is retried after its backoff, so drain again until none is pending.
 */
async function settled(timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    await app.services.inbox.idle()
    await app.services.inbox.drain()
    const pending = await count(
      sql`select count(*)::text as n from webhook_events where provider = 'paypal' and status = 'pending'`,
    )
    if (pending === 0) return
    if (Date.now() > deadline) {
      const stuck = rowsOf<{ type: string; attempts: number; last_error: string | null }>(
        await app.database.db.execute(
          sql`select type, attempts, last_error from webhook_events where provider = 'paypal' and status = 'pending'`,
        ),
      )
      throw new Error(`PayPal webhook events still pending: ${JSON.stringify(stuck)}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

describe('recharge with PayPal', () => {
  it('credits once when the webhooks come first (APPROVED captures), then the client confirms', async () => {
    const alice = await signIn(app, 'alice')
    fake().drainEvents()
    const { recharge, checkout } = await buy(alice)
    expect(checkout.providerReference).toMatch(/^[A-Z0-9]{17}$/)
    expect(checkout.approvalUrl).toContain(`token=${checkout.providerReference}`)
    expect(await status(alice, recharge.id)).toBe('PENDING')
    // The buyer approves and never comes back: the APPROVED webhook captures the order.
    expect(await deliver(fake().approve(checkout.providerReference))).toEqual([200])
    await settled()
    expect(await coinsOf(alice)).toBe(total())
    expect(await status(alice, recharge.id)).toBe('SUCCEEDED')
    // The capture's own webhook follows, and then the client's confirmation: nothing more.
    const captured = fake().drainEvents()
    expect(captured.map((e) => e.event_type)).toEqual(['PAYMENT.CAPTURE.COMPLETED'])
    expect(await deliver(captured)).toEqual([200])
    await settled()
    const { confirmRecharge } = await alice.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id })
    expect(confirmRecharge.userErrors).toEqual([])
    expect(confirmRecharge.recharge.status).toBe('SUCCEEDED')
    expect(confirmRecharge.wallet.coins).toBe(total())
    expect(await coinsOf(alice)).toBe(total())
    expect(await rechargeCredits(recharge.id)).toBe(1)
    const fees = await app.services.ledger.balance(platform.providerFees('USD'))
    expect(fees.balance).toBeGreaterThan(0n)
  })

  it('credits once when PayPal captured it before any webhook (captureDirectly), then the client confirms', async () => {
    const abe = await signIn(app, 'abe')
    const { recharge, checkout } = await buy(abe)
    const { events } = pay(checkout.providerReference)
    expect(await deliver(events)).toEqual([200])
    await settled()
    expect(await coinsOf(abe)).toBe(total())
    expect(await status(abe, recharge.id)).toBe('SUCCEEDED')
    const { confirmRecharge } = await abe.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id })
    expect(confirmRecharge.wallet.coins).toBe(total())
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('credits once when the client confirms first (capturing the approved order), then the webhooks come', async () => {
    const bob = await signIn(app, 'bob')
    fake().drainEvents()
    const { recharge, checkout } = await buy(bob)
    const approved = fake().approve(checkout.providerReference)
    const [first, second] = await Promise.all([
      bob.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id }),
      bob.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id }),
    ])
    for (const c of [first, second]) {
      expect(c.confirmRecharge.userErrors).toEqual([])
      expect(c.confirmRecharge.recharge.status).toBe('SUCCEEDED')
      expect(c.confirmRecharge.wallet.coins).toBe(total())
    }
    const again = await bob.ok(CONFIRM_RECHARGE, { rechargeId: recharge.id })
    expect(again.confirmRecharge.wallet.coins).toBe(total())
    // One capture at PayPal, whose event comes after the confirmation, with the late APPROVED.
    const captured = fake().drainEvents()
    expect(captured.map((e) => e.event_type)).toEqual(['PAYMENT.CAPTURE.COMPLETED'])
    expect(await deliver([...approved, ...captured])).toEqual([200, 200])
    await settled()
    expect(fake().drainEvents()).toEqual([])
    expect(await coinsOf(bob)).toBe(total())
    expect(await status(bob, recharge.id)).toBe('SUCCEEDED')
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('stores an event delivered five times at once once, and credits once', async () => {
    const carol = await signIn(app, 'carol')
    const { recharge, checkout } = await buy(carol)
    const { events } = pay(checkout.providerReference)
    const before = await webhookRows()
    const results = await fake().deliver(events[0] as PayPalWebhookEvent, hook(), {
      times: 5,
      concurrently: true,
    })
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
    expect(results.filter((r) => JSON.parse(r.body).duplicate === false)).toHaveLength(1)
    expect(await webhookRows()).toBe(before + 1)
    await settled()
    expect(await coinsOf(carol)).toBe(total())
    expect(await status(carol, recharge.id)).toBe('SUCCEEDED')
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('ends in the same place whatever order the events come in', async () => {
    const cyd = await signIn(app, 'cyd')
    const pkg = packages.find((p) => p.bonusCoins === 0 && p.coins >= 300) ?? packages[1]
    const { recharge, checkout } = await buy(cyd, pkg)
    const approved = fake().approve(checkout.providerReference)
    const { captureId, events: captured } = pay(checkout.providerReference)
    const price = pkg?.price.amount ?? 0
    const half = Math.floor(price / 2)
    const refunded = fake().refund(captureId, BigInt(half))
    // Newest first: the refund, then the capture, then the approval.
    expect(await deliver([...refunded, ...captured, ...approved])).toEqual([200, 200, 200])
    await settled()
    const expectedClawed = Math.floor((total(pkg) * half) / price)
    expect(await coinsOf(cyd)).toBe(total(pkg) - expectedClawed)
    expect(await status(cyd, recharge.id)).toBe('PARTIALLY_REFUNDED')
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('credits a payment whose webhook never came, through reconciliation', async () => {
    const dan = await signIn(app, 'dan')
    const captured = await buy(dan)
    pay(captured.checkout.providerReference)
    // Approved, never confirmed, no webhook: reconciliation captures it.
    const approved = await buy(dan)
    fake().approve(approved.checkout.providerReference)
    expect(await coinsOf(dan)).toBe(0)
    const report = await app.services.recharge.reconcile({ olderThanMs: 0 })
    expect(report.settled).toBeGreaterThanOrEqual(2)
    expect(await coinsOf(dan)).toBe(2 * total())
    expect(await status(dan, captured.recharge.id)).toBe('SUCCEEDED')
    expect(await status(dan, approved.recharge.id)).toBe('SUCCEEDED')
    expect(await rechargeCredits(captured.recharge.id)).toBe(1)
    expect(await rechargeCredits(approved.recharge.id)).toBe(1)
    // Again: nothing more.
    await app.services.recharge.reconcile({ olderThanMs: 0 })
    expect(await coinsOf(dan)).toBe(2 * total())
    fake().drainEvents()
  })

  it('refuses forged, stale and tampered webhooks, storing nothing', async () => {
    const erin = await signIn(app, 'erin')
    const { recharge, checkout } = await buy(erin)
    const event = pay(checkout.providerReference).events[0] as PayPalWebhookEvent
    const before = await webhookRows()
    expect(await deliver([event], { signature: 'forged' })).toEqual([400])
    expect(await deliver([event], { transmissionTime: new Date(Date.now() - 60 * 60_000) })).toEqual([400])
    expect(await deliver([event], { transmissionTime: new Date(Date.now() + 60 * 60_000) })).toEqual([400])
    const tamper = (raw: string) => {
      const body = JSON.parse(raw)
      body.resource.amount.value = '0.01'
      return JSON.stringify(body)
    }
    expect(await deliver([event], { mutateBody: tamper })).toEqual([400])
    expect(await deliver([event], { mutateBody: (raw) => raw.replace(/}$/, ',"x":1}') })).toEqual([400])
    expect(await webhookRows()).toBe(before)
    await settled()
    expect(await coinsOf(erin)).toBe(0)
    expect(await status(erin, recharge.id)).toBe('PENDING')
    // The same event, re-serialized (key order, whitespace) but equal, is PayPal's own and verifies.
    expect(await deliver([event], { mutateBody: (raw) => JSON.stringify(JSON.parse(raw), null, 2) })).toEqual(
      [200],
    )
    expect(await webhookRows()).toBe(before + 1)
    // An unknown event type is acknowledged and stored as ignored.
    const unknown: PayPalWebhookEvent = {
      ...event,
      id: `WH-UNKNOWN-${Date.now()}`,
      event_type: 'BILLING.SUBSCRIPTION.CREATED',
      resource_type: 'subscription',
      resource: { id: 'I-SUBSCRIPTION' },
    }
    expect(await deliver([unknown])).toEqual([200])
    expect(await webhookRows()).toBe(before + 2)
    const ignored = rowsOf<{ status: string }>(
      await app.database.db.execute(sql`select status from webhook_events where event_id = ${unknown.id}`),
    )
    expect(ignored).toEqual([{ status: 'ignored' }])
    await settled()
    expect(await coinsOf(erin)).toBe(total())
  })

  it('flags an amount or currency mismatch and credits nothing', async () => {
    const fay = await signIn(app, 'fay')
    const short = await buy(fay)
    const other = await buy(fay)
    await deliver(pay(short.checkout.providerReference, { amountMinor: 1n }).events)
    await deliver(pay(other.checkout.providerReference, { currency: 'EUR' }).events)
    await settled()
    expect(await coinsOf(fay)).toBe(0)
    expect(await status(fay, short.recharge.id)).toBe('PENDING')
    expect(await status(fay, other.recharge.id)).toBe('PENDING')
    expect(await rechargeCredits(short.recharge.id)).toBe(0)
    expect(await rechargeCredits(other.recharge.id)).toBe(0)
    // The client's confirmation does not credit it either.
    const { confirmRecharge } = await fay.ok(CONFIRM_RECHARGE, { rechargeId: short.recharge.id })
    expect(confirmRecharge.wallet.coins).toBe(0)
    const problems = await app.services.recharge.discrepancies()
    expect(problems).toContainEqual(
      expect.objectContaining({ kind: 'AMOUNT_MISMATCH', orderId: short.recharge.id }),
    )
    expect(problems).toContainEqual(
      expect.objectContaining({
        kind: 'AMOUNT_MISMATCH',
        orderId: other.recharge.id,
        message: expect.stringContaining('EUR'),
      }),
    )
  })

  it('claws back partial and full refunds, each once', async () => {
    const gus = await signIn(app, 'gus')
    const pkg = packages.find((p) => p.bonusCoins === 0 && p.coins >= 300) ?? packages[1]
    const { recharge, checkout } = await buy(gus, pkg)
    const { captureId, events } = pay(checkout.providerReference)
    await deliver(events)
    await settled()
    expect(await coinsOf(gus)).toBe(total(pkg))
    const price = pkg?.price.amount ?? 0
    const half = Math.floor(price / 2)
    const partial = fake().refund(captureId, BigInt(half))
    expect(await deliver(partial, { times: 3, concurrently: true })).toEqual([200, 200, 200])
    await settled()
    const expectedClawed = Math.floor((total(pkg) * half) / price)
    expect(await coinsOf(gus)).toBe(total(pkg) - expectedClawed)
    expect(await status(gus, recharge.id)).toBe('PARTIALLY_REFUNDED')
    const full = fake().refund(captureId, BigInt(price - half))
    await deliver(full)
    // The partial refund's event again, late: changes nothing.
    await deliver(partial)
    await settled()
    expect(await coinsOf(gus)).toBe(0)
    expect(await status(gus, recharge.id)).toBe('REFUNDED')
    expect(await debtOf(gus)).toBe(0n)
    expect(await rechargeCredits(recharge.id)).toBe(1)
  })

  it('turns a refund after the coins were spent into a debt that blocks gifts until a recharge repays it', async () => {
    const hal = await signIn(app, 'hal')
    const star = await signIn(app, 'star-paypal', ['creator'])
    const streamId = (await star.ok(START_LIVE, { title: 'live' })).startLiveStream.liveStream.id
    const pkg = packages[0]
    const { checkout } = await buy(hal, pkg)
    const { captureId, events } = pay(checkout.providerReference)
    await deliver(events)
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
    await deliver(fake().refund(captureId, BigInt(pkg?.price.amount ?? 0)))
    await settled()
    expect(await coinsOf(hal)).toBe(0)
    expect(await debtOf(hal)).toBe(BigInt(spent))
    const blocked = await hal.ok(SEND_GIFT, {
      giftId: rose.id,
      liveStreamId: streamId,
      idempotencyKey: key(),
    })
    expect(blocked.sendGift.userErrors).toMatchObject([{ code: 'WALLET_IN_DEBT' }])
    // The next recharge repays the debt first.
    const again = await buy(hal, pkg)
    await deliver(pay(again.checkout.providerReference).events)
    await settled()
    expect(await debtOf(hal)).toBe(0n)
    expect(await coinsOf(hal)).toBe(total(pkg) - spent)
  })

  it('holds the coins during a dispute; won releases them', async () => {
    const ivy = await signIn(app, 'ivy')
    const won = await buy(ivy)
    const paid = pay(won.checkout.providerReference)
    await deliver(paid.events)
    await settled()
    expect(await coinsOf(ivy)).toBe(total())
    const price = BigInt(packages[0]?.price.amount ?? 0)
    const opened = fake().openDispute(paid.captureId, price)
    const disputeId = opened[0]?.resource.dispute_id as string
    await deliver(opened)
    await settled()
    expect(await status(ivy, won.recharge.id)).toBe('DISPUTED')
    expect((await app.services.ledger.balance(userWallet(ivy.userId))).held).toBe(BigInt(total()))
    await deliver(fake().escalateDispute(disputeId))
    await settled()
    expect(await status(ivy, won.recharge.id)).toBe('DISPUTED')
    await deliver(fake().resolveDispute(disputeId, 'won'), { times: 2 })
    await settled()
    expect(await status(ivy, won.recharge.id)).toBe('SUCCEEDED')
    expect(await coinsOf(ivy)).toBe(total())
    expect((await app.services.ledger.balance(userWallet(ivy.userId))).held).toBe(0n)
    expect(await debtOf(ivy)).toBe(0n)
  })

  // A lost PayPal dispute also reverses the capture, which the order then
  // lists as a refund: the coins must be taken back once (the dispute's hold),
  // not once by the refund and again by the dispute.
  it('holds the coins during a dispute; lost takes them back once', async () => {
    const ivo = await signIn(app, 'ivo')
    const kept = await buy(ivo)
    await deliver(pay(kept.checkout.providerReference).events)
    const lost = await buy(ivo)
    const paid = pay(lost.checkout.providerReference)
    await deliver(paid.events)
    await settled()
    expect(await coinsOf(ivo)).toBe(2 * total())
    const price = BigInt(packages[0]?.price.amount ?? 0)
    const opened = fake().openDispute(paid.captureId, price)
    const disputeId = opened[0]?.resource.dispute_id as string
    await deliver(opened)
    await settled()
    expect(await status(ivo, lost.recharge.id)).toBe('DISPUTED')
    expect((await app.services.ledger.balance(userWallet(ivo.userId))).held).toBe(BigInt(total()))
    const resolved = fake().resolveDispute(disputeId, 'lost')
    expect(resolved.map((e) => e.event_type)).toEqual([
      'CUSTOMER.DISPUTE.RESOLVED',
      'PAYMENT.CAPTURE.REVERSED',
    ])
    try {
      await deliver(resolved, { times: 2 })
      await settled(5_000)
    } finally {
      const evidence = {
        lost: await status(ivo, lost.recharge.id),
        kept: await status(ivo, kept.recharge.id),
        coins: await coinsOf(ivo),
        debt: String(await debtOf(ivo)),
        held: String((await app.services.ledger.balance(userWallet(ivo.userId))).held),
        total: total(),
        postings: rowsOf(
          await app.database.db.execute(
            sql`select kind, idempotency_key from ledger_transactions where metadata->>'orderId' = ${lost.recharge.id} order by id`,
          ),
        ),
        events: rowsOf(
          await app.database.db.execute(
            sql`select type, status, attempts, last_error from webhook_events where provider = 'paypal' and status = 'pending'`,
          ),
        ),
      }
      console.info('lost PayPal dispute:', JSON.stringify(evidence))
      // Park what keeps failing, so that the next tests' settled() does not wait for it.
      await app.database.db.execute(
        sql`update webhook_events set status = 'parked' where provider = 'paypal' and status = 'pending'`,
      )
    }
    expect(await status(ivo, lost.recharge.id)).toBe('REFUNDED')
    expect(await status(ivo, kept.recharge.id)).toBe('SUCCEEDED')
    expect((await app.services.ledger.balance(userWallet(ivo.userId))).held).toBe(0n)
    expect(await debtOf(ivo)).toBe(0n)
    expect(await coinsOf(ivo)).toBe(total())
  })

  it('reports an outage as a user error, and the retry with the same key succeeds', async () => {
    const jo = await signIn(app, 'jo')
    const stripe = await jo.ok(CREATE_RECHARGE, {
      packageId: packages[0]?.id,
      provider: 'STRIPE',
      idempotencyKey: key(),
    })
    expect(stripe.createRecharge.userErrors).toMatchObject([{ code: 'PROVIDER_NOT_CONFIGURED' }])
    fake().setOutage('5xx')
    try {
      const k = key()
      const down = await jo.ok(CREATE_RECHARGE, {
        packageId: packages[0]?.id,
        provider: 'PAYPAL',
        idempotencyKey: k,
      })
      expect(down.createRecharge.userErrors).toMatchObject([{ code: 'PROVIDER_UNAVAILABLE' }])
      fake().setOutage(null)
      const up = await jo.ok(CREATE_RECHARGE, {
        packageId: packages[0]?.id,
        provider: 'PAYPAL',
        idempotencyKey: k,
      })
      expect(up.createRecharge.userErrors).toEqual([])
      expect(up.createRecharge.checkout.providerReference).toMatch(/^[A-Z0-9]{17}$/)
      // And that order is paid and credited like any other.
      await deliver(pay(up.createRecharge.checkout.providerReference).events)
      await settled()
      expect(await coinsOf(jo)).toBe(total())
      expect(await status(jo, up.createRecharge.recharge.id)).toBe('SUCCEEDED')
    } finally {
      fake().setOutage(null)
    }
  })

  it('leaves the books balanced', async () => {
    await settled()
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })
})
