import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { type FakeStripe, type StripeEvent, startFakeStripe } from './fakes/stripe.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { onPostgres } from './support/db.js'
import { CATALOG } from './support/operations.js'

// Many payments at once on a real PostgreSQL: 1,000 Stripe payments by 50
// buyers, each payment's payment_intent.succeeded delivered three times at
// once, all deliveries in flight together (capped). Every payment is
// credited once, each event stored once, and the books balance.

const WEBHOOK_SECRET = 'whsec_test_giftledger_load'
const PAYMENTS = 1_000
const USERS = 50
const CREATE_CONCURRENCY = 32
const DELIVERY_COPIES = 3
const DELIVERY_CONCURRENCY = 64

const CREATE = `mutation CreateRecharge($packageId: ID!, $provider: PaymentProvider!, $idempotencyKey: String!) {
  createRecharge(input: { packageId: $packageId, provider: $provider, idempotencyKey: $idempotencyKey }) {
    recharge { id }
    checkout { providerReference }
    userErrors { code message field }
  }
}`

/** Runs the tasks with at most `limit` in flight; results in the tasks' order. */
async function pool<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length)
  let next = 0
  const worker = async () => {
    for (;;) {
      const i = next++
      if (i >= tasks.length) return
      results[i] = await (tasks[i] as () => Promise<T>)()
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker))
  return results
}

describe.skipIf(!onPostgres)('recharge under load (PostgreSQL)', () => {
  let fake: FakeStripe
  let app: TestApp

  beforeAll(async () => {
    fake = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
    app = await startTestApp({
      env: {
        STRIPE_SECRET_KEY: fake.secretKey,
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        STRIPE_API_BASE: fake.url,
        RATE_LIMIT_MUTATIONS_PER_SECOND: '100000',
        RATE_LIMIT_MUTATIONS_BURST: '100000',
      },
    })
  })
  afterAll(async () => {
    await app?.stop()
    await fake?.stop()
  })

  const count = async (query: ReturnType<typeof sql>) =>
    Number(rowsOf<{ n: string }>(await app.database.db.execute(query))[0]?.n)

  it('credits 1,000 payments once each, whatever the duplicate deliveries, and balances the books', async () => {
    const timings: Record<string, number> = {}
    let started = performance.now()
    const lap = (name: string) => {
      const now = performance.now()
      timings[name] = Math.round(now - started)
      started = now
    }

    const buyers: Actor[] = await pool(
      Array.from({ length: USERS }, (_, i) => () => signIn(app, `buyer${i}`)),
      CREATE_CONCURRENCY,
    )
    const { coinPackages } = (await (buyers[0] as Actor).ok(CATALOG, { currency: 'USD' })) as {
      coinPackages: { id: string; coins: number; bonusCoins: number }[]
    }
    expect(coinPackages.length).toBeGreaterThan(0)
    lap('signIn')

    // 1,000 recharges through the API, spread over the buyers and the packages.
    const orders = await pool(
      Array.from({ length: PAYMENTS }, (_, i) => async () => {
        const buyer = buyers[i % USERS] as Actor
        const pkg = coinPackages[i % coinPackages.length] as (typeof coinPackages)[number]
        const { createRecharge } = await buyer.ok(CREATE, {
          packageId: pkg.id,
          provider: 'STRIPE',
          idempotencyKey: `load-${i}`,
        })
        expect(createRecharge.userErrors).toEqual([])
        return {
          buyer,
          coins: pkg.coins + pkg.bonusCoins,
          orderId: createRecharge.recharge.id as string,
          pi: createRecharge.checkout.providerReference as string,
        }
      }),
      CREATE_CONCURRENCY,
    )
    expect(new Set(orders.map((o) => o.pi)).size).toBe(PAYMENTS)
    lap('create')

    // Each buyer pays at Stripe; no webhook yet.
    const events: StripeEvent[] = orders.map((o) => {
      const succeeded = fake.succeed(o.pi).events.find((e) => e.type === 'payment_intent.succeeded')
      if (!succeeded) throw new Error(`no payment_intent.succeeded for ${o.pi}`)
      return succeeded
    })

    // Each event three times, the copies side by side so they race each other.
    const hook = `${app.url}/webhooks/stripe`
    const deliveries = events.flatMap((event) =>
      Array.from({ length: DELIVERY_COPIES }, () => async () => (await fake.deliver(event, hook))[0]),
    )
    const statuses = await pool(deliveries, DELIVERY_CONCURRENCY)
    expect(statuses.filter((s) => s !== 200)).toEqual([])
    expect(statuses).toHaveLength(PAYMENTS * DELIVERY_COPIES)
    lap('deliver')

    // Let the inbox finish; drain again until nothing is pending (a retried event waits its backoff).
    const deadline = Date.now() + 120_000
    for (;;) {
      await app.services.inbox.idle()
      await app.services.inbox.drain()
      const pending = await count(
        sql`select count(*)::text as n from webhook_events where status = 'pending'`,
      )
      if (pending === 0) break
      if (Date.now() > deadline) throw new Error(`${pending} webhook events still pending`)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    lap('process')

    expect(
      await count(
        sql`select count(*)::text as n from ledger_transactions where idempotency_key like 'recharge:%:credit'`,
      ),
    ).toBe(PAYMENTS)
    expect(
      rowsOf<{ status: string; n: string; events: string }>(
        await app.database.db.execute(
          sql`select status::text, count(*)::text as n, count(distinct event_id)::text as events
                from webhook_events group by status`,
        ),
      ),
    ).toEqual([{ status: 'processed', n: String(PAYMENTS), events: String(PAYMENTS) }])
    expect(await count(sql`select count(*)::text as n from recharge_orders where status = 'succeeded'`)).toBe(
      PAYMENTS,
    )
    // The inbox settles claimed events together: many credits per database transaction.
    const commits = await count(
      sql`select count(distinct xact_id)::text as n from ledger_transactions where idempotency_key like 'recharge:%:credit'`,
    )
    expect(commits).toBeLessThan(PAYMENTS / 4)

    // Every wallet holds the coins of its buyer's packages.
    const expected = new Map<Actor, number>()
    for (const o of orders) expected.set(o.buyer, (expected.get(o.buyer) ?? 0) + o.coins)
    const wallets = await pool(
      buyers.map((buyer) => async () => {
        const { me } = await buyer.ok('{ me { wallet { coins } } }')
        return { coins: me.wallet.coins as number, expected: expected.get(buyer) }
      }),
      16,
    )
    for (const wallet of wallets) expect(wallet.coins).toBe(wallet.expected)

    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
    // The trial balance: in each unit, all debits equal all credits.
    const trial = rowsOf<{ unit: string; debits: string; credits: string }>(
      await app.database.db.execute(
        sql`select unit, sum(debits_total)::text as debits, sum(credits_total)::text as credits
              from ledger_accounts group by unit order by unit`,
      ),
    )
    expect(trial.map((t) => t.unit)).toEqual(expect.arrayContaining(['COIN', 'USD']))
    for (const row of trial) expect(row.debits, row.unit).toBe(row.credits)
    lap('check')
    console.info('recharge load timings (ms):', JSON.stringify(timings))
  }, 180_000)
})
