import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { type FakePayPal, startFakePayPal } from './fakes/paypal.js'
import { type FakeStripe, startFakeStripe } from './fakes/stripe.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { CATALOG, CONFIRM_RECHARGE, CREATE_RECHARGE, RECHARGE } from './support/operations.js'

// Stripe or PayPal down: answering 5xx, not answering at all, or carrying a
// request out and answering after our timeout (the object exists at the
// provider, we never heard of it). recharge-stripe.test.ts and
// recharge-paypal.test.ts try a 5xx once on createRecharge; here every kind of
// outage, for both providers, on each path that calls the provider:
//
// - createRecharge: a user error (PROVIDER_UNAVAILABLE), promptly; nothing
//   half-created — no provider object we would not find again, no posting, no
//   discrepancy for the accountants; the retry with the same key completes it
//   with exactly one provider object, even when the first try had made one;
// - a payment made while the provider is down: confirmRecharge is a user
//   error, webhooks are retried, and once the provider is back
//   reconciliation settles it — credited once, whatever else arrives later.

const STRIPE_WEBHOOK_SECRET = 'whsec_outage'
const PAYPAL = { clientId: 'outage-client', clientSecret: 'outage-secret', webhookId: 'WH-OUTAGE' }
/** Our side's timeout per provider request (Stripe retries twice more). */
const TIMEOUT_MS = 400
/** The slowest acceptable refusal: three timed-out attempts and Stripe's backoff between them. */
const REFUSAL_MS_MAX = 6_000
const MODES = ['5xx', 'timeout', 'late'] as const

let stripe: FakeStripe
let paypal: FakePayPal
let app: TestApp
let accountant: Actor
let packageId: string
let coinsPerPackage: number
let keyN = 0
const key = () => `outage-${++keyN}`

beforeAll(async () => {
  stripe = await startFakeStripe({ webhookSecret: STRIPE_WEBHOOK_SECRET })
  paypal = await startFakePayPal(PAYPAL)
  app = await startTestApp({
    env: {
      STRIPE_SECRET_KEY: stripe.secretKey,
      STRIPE_WEBHOOK_SECRET,
      STRIPE_API_BASE: stripe.url,
      PAYPAL_CLIENT_ID: PAYPAL.clientId,
      PAYPAL_CLIENT_SECRET: PAYPAL.clientSecret,
      PAYPAL_WEBHOOK_ID: PAYPAL.webhookId,
      PAYPAL_API_BASE: paypal.url,
      PAYMENT_PROVIDER_TIMEOUT_MS: String(TIMEOUT_MS),
      RATE_LIMIT_MUTATIONS_PER_SECOND: '10000',
      RATE_LIMIT_MUTATIONS_BURST: '10000',
    },
  })
  accountant = await signIn(app, 'auditor', ['accountant'])
  const [pkg] = (await accountant.ok(CATALOG, { currency: 'USD' })).coinPackages
  packageId = pkg.id
  coinsPerPackage = pkg.coins + pkg.bonusCoins
}, 60_000)

afterAll(async () => {
  stripe?.setOutage(null)
  paypal?.controls.setOutage(null)
  await app?.stop()
  await stripe?.stop()
  await paypal?.stop()
})

/** One provider as the tests drive it. */
interface Provider {
  name: 'STRIPE' | 'PAYPAL'
  setOutage(mode: (typeof MODES)[number] | null): void
  /** The provider's objects made for our order. */
  objectsFor(orderId: string): string[]
  /** The buyer pays at the provider; its webhooks are delivered until acknowledged, later. */
  pay(reference: string): { deliver(): Promise<number[]> }
}

const providers: Provider[] = [
  {
    name: 'STRIPE',
    setOutage: (mode) => stripe.setOutage(mode),
    objectsFor: (orderId) =>
      stripe
        .paymentIntents()
        .filter((pi) => pi.metadata?.order_id === orderId)
        .map((pi) => pi.id as string),
    pay: (reference) => {
      const { events } = stripe.succeed(reference)
      return {
        deliver: async () => {
          const statuses: number[] = []
          for (const event of events)
            statuses.push(...(await stripe.deliver(event, `${app.url}/webhooks/stripe`)))
          return statuses
        },
      }
    },
  },
  {
    name: 'PAYPAL',
    setOutage: (mode) => paypal.controls.setOutage(mode),
    objectsFor: (orderId) =>
      paypal.controls
        .listOrders()
        .filter((o) => o.customId === orderId)
        .map((o) => o.id),
    pay: (reference) => {
      const events = paypal.controls.captureDirectly(reference)
      return {
        deliver: async () => {
          const statuses: number[] = []
          for (const event of events) {
            for (const r of await paypal.controls.deliver(event, `${app.url}/webhooks/paypal`))
              statuses.push(r.status)
          }
          return statuses
        },
      }
    },
  },
]

async function orderOf(who: Actor, idempotencyKey: string) {
  const [row] = rowsOf<{ id: string; status: string; provider_reference: string | null }>(
    await app.database.db.execute(sql`
      select id::text, status::text, provider_reference from recharge_orders
       where user_id = ${who.userId} and idempotency_key = ${idempotencyKey}`),
  )
  return row
}
async function postingsOf(orderId: string): Promise<number> {
  const [row] = rowsOf<{ n: string }>(
    await app.database.db.execute(
      sql`select count(*)::text as n from ledger_transactions where metadata->>'orderId' = ${orderId} or idempotency_key like ${`recharge:${orderId}:%`}`,
    ),
  )
  return Number(row?.n)
}
const coinsOf = async (who: Actor) => (await who.ok('{ me { wallet { coins } } }')).me.wallet.coins as number
async function discrepanciesFor(orderId: string): Promise<unknown[]> {
  const { rechargeReconciliation } = await accountant.ok(
    '{ rechargeReconciliation { discrepancies { kind recharge { id } } } }',
  )
  return rechargeReconciliation.discrepancies.filter(
    (d: { recharge: { id: string } }) => d.recharge.id === orderId,
  )
}
/** Waits until the inbox has tried the last `count` events and failed: each has an error and waits for its retry. */
async function failedOnce(count: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const [row] = rowsOf<{ n: string }>(
      await app.database.db.execute(sql`
        select count(*)::text as n from (select * from webhook_events order by id desc limit ${count}) e
         where e.status = 'pending' and e.last_error is not null`),
    )
    if (Number(row?.n) === count) return
    if (Date.now() > deadline) throw new Error('the inbox did not try the events')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Drains the inbox until nothing is pending (failed events come back after their backoff). */
async function inboxSettled(timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    await app.services.inbox.idle()
    await app.services.inbox.drain()
    const [row] = rowsOf<{ n: string }>(
      await app.database.db.execute(
        sql`select count(*)::text as n from webhook_events where status = 'pending'`,
      ),
    )
    if (row?.n === '0') return
    if (Date.now() > deadline) throw new Error(`${row?.n} webhook events still pending`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

describe.each(providers)('$name down', (provider) => {
  it.each(MODES)(
    'createRecharge during a %s outage: PROVIDER_UNAVAILABLE promptly, nothing half-created; the retry completes it once',
    async (mode) => {
      const buyer = await signIn(app, `buyer-${provider.name}-${mode}`)
      const k = key()
      const create = () =>
        buyer.raw(CREATE_RECHARGE, { packageId, provider: provider.name, idempotencyKey: k })
      provider.setOutage(mode)
      let down: Awaited<ReturnType<typeof create>>
      const started = Date.now()
      try {
        down = await create()
      } finally {
        provider.setOutage(null)
      }
      const tookMs = Date.now() - started
      expect(down.errors).toBeUndefined()
      expect(down.data?.createRecharge).toMatchObject({
        recharge: null,
        checkout: null,
        userErrors: [{ code: 'PROVIDER_UNAVAILABLE' }],
      })
      expect(tookMs).toBeLessThan(REFUSAL_MS_MAX)

      // The order is the key's anchor and nothing more: no provider object on it, no posting,
      // nothing for the accountants to chase, no coins.
      const order = await orderOf(buyer, k)
      expect(order).toMatchObject({ status: 'pending', provider_reference: null })
      const id = order?.id as string
      expect(await postingsOf(id)).toBe(0)
      expect(await discrepanciesFor(id)).toEqual([])
      expect(await coinsOf(buyer)).toBe(0)
      // 'late': the provider made its object; we never heard of it, and the retry must find it, not make another.
      const madeDuringOutage = provider.objectsFor(id)
      expect(madeDuringOutage.length).toBe(mode === 'late' ? 1 : 0)

      const up = await create()
      expect(up.errors).toBeUndefined()
      expect(up.data?.createRecharge.userErrors).toEqual([])
      expect(up.data?.createRecharge.recharge.id).toBe(id)
      const reference = up.data?.createRecharge.checkout.providerReference as string
      expect(provider.objectsFor(id)).toEqual([reference])
      if (mode === 'late') expect(reference).toBe(madeDuringOutage[0])

      // And it is an order like any other: paid, confirmed, credited once.
      provider.pay(reference)
      const { confirmRecharge } = await buyer.ok(CONFIRM_RECHARGE, { rechargeId: id })
      expect(confirmRecharge.recharge.status).toBe('SUCCEEDED')
      expect(await coinsOf(buyer)).toBe(coinsPerPackage)
    },
  )

  it.each(MODES)(
    'a payment made during a %s outage is settled by reconciliation once the provider is back',
    async (mode) => {
      const buyer = await signIn(app, `payer-${provider.name}-${mode}`)
      const { createRecharge } = await buyer.ok(CREATE_RECHARGE, {
        packageId,
        provider: provider.name,
        idempotencyKey: key(),
      })
      const id = createRecharge.recharge.id as string
      const reference = createRecharge.checkout.providerReference as string

      provider.setOutage(mode)
      try {
        // The buyer pays; the client's confirmation and the webhooks meet a provider that does not answer.
        const payment = provider.pay(reference)
        const statuses = await payment.deliver()
        // Stripe's signature is checked locally: stored (and its processing fails, to be retried).
        // PayPal's is checked with PayPal: 5xx, so that PayPal delivers it again later.
        for (const status of statuses)
          expect(provider.name === 'STRIPE' ? status === 200 : status >= 500).toBe(true)
        const confirm = await buyer.raw(CONFIRM_RECHARGE, { rechargeId: id })
        expect(confirm.errors).toBeUndefined()
        expect(confirm.data?.confirmRecharge.userErrors).toMatchObject([{ code: 'PROVIDER_UNAVAILABLE' }])
        // Reconciliation during the outage: a problem reported, nothing credited, nothing thrown.
        const during = await app.services.recharge.reconcile({ olderThanMs: 0 })
        expect(during.problems).toContainEqual(
          expect.objectContaining({ kind: 'PROVIDER_ERROR', orderId: id }),
        )
        expect(await coinsOf(buyer)).toBe(0)
        expect(await postingsOf(id)).toBe(0)
        if (provider.name === 'STRIPE') await failedOnce(statuses.length)
        provider.setOutage(null)
        const after = await app.services.recharge.reconcile({ olderThanMs: 0 })
        expect(after.problems.filter((p) => p.orderId === id)).toEqual([])
        expect(await coinsOf(buyer)).toBe(coinsPerPackage)
        expect((await buyer.ok(RECHARGE, { id })).recharge.status).toBe('SUCCEEDED')

        // What arrives later changes nothing: the webhooks (retried by our inbox, or redelivered
        // by PayPal), the client's confirmation, another reconciliation.
        const again = await payment.deliver()
        expect(again.every((s) => s === 200)).toBe(true)
        await inboxSettled()
        expect((await buyer.ok(CONFIRM_RECHARGE, { rechargeId: id })).confirmRecharge.wallet.coins).toBe(
          coinsPerPackage,
        )
        await app.services.recharge.reconcile({ olderThanMs: 0 })
        expect(await coinsOf(buyer)).toBe(coinsPerPackage)
        const [credits] = rowsOf<{ n: string }>(
          await app.database.db.execute(
            sql`select count(*)::text as n from ledger_transactions where idempotency_key = ${`recharge:${id}:credit`}`,
          ),
        )
        expect(credits?.n).toBe('1')
        expect(await discrepanciesFor(id)).toEqual([])
      } finally {
        provider.setOutage(null)
      }
    },
  )
})

describe('after every outage', () => {
  it('leaves no event parked and the books balanced', async () => {
    await inboxSettled()
    const [parked] = rowsOf<{ n: string }>(
      await app.database.db.execute(
        sql`select count(*)::text as n from webhook_events where status = 'parked'`,
      ),
    )
    expect(parked?.n).toBe('0')
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })
})
