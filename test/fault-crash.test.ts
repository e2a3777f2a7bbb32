import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/rows.js'
import { checkIntegrity } from '../src/ledger/integrity.js'
import { type FakeStripe, type StripeEvent, startFakeStripe } from './fakes/stripe.js'
import { createTestDatabase, onPostgres, type TestDatabase } from './support/db.js'
import { CATALOG, CREATE_RECHARGE, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'
import {
  freePort,
  HOST,
  killHard,
  post,
  type ServerProcess,
  sleep,
  startServer,
  tokenFor,
  until,
} from './support/processes.js'

// A crash: the real server in a child process is killed with SIGKILL while
// 32 clients send gifts and Stripe delivers webhooks, then started again on
// the same port. Clients behave as real ones do: a request without an answer
// (refused, cut, timed out) is retried with the same idempotency key until it
// gets one; Stripe redelivers a webhook until it gets a 200.
//
// Afterwards, what clients were told is compared with the database: every
// gift a client was told about is there once, with the id it was told; no
// gift is there that no client was told about; every wallet is its grants
// and credits minus its gifts (a retry charged nothing more); the stream's
// sequence has no gap; every webhook acknowledged is processed — including
// those stored but not yet processed when the process died — and every paid
// order is credited once; the books balance.

const WEBHOOK_SECRET = 'whsec_crash_test'
const CLIENTS = 32
const ORDERS = 24
const GRANT = 1_000_000
/** Load before the crash and after the restart. */
const LOAD_BEFORE_MS = 1_500
const LOAD_AFTER_MS = 1_500
/** A short inbox lease, so that events the dead process had claimed are taken over within seconds. */
const LEASE_MS = 2_000

interface Told {
  key: string
  eventId: string
  coins: number
  quantity: number
  /** Requests without an answer before this one was answered. */
  retries: number
}

describe.skipIf(!onPostgres)('a crash: kill -9 under load, then a restart (PostgreSQL)', () => {
  let database: TestDatabase
  let fake: FakeStripe
  let server: ServerProcess
  let port: number
  let url: string
  const serverEnv = () => ({
    STRIPE_SECRET_KEY: fake.secretKey,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    WEBHOOK_LEASE_MS: String(LEASE_MS),
  })

  beforeAll(async () => {
    database = await createTestDatabase()
    fake = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
    port = await freePort(HOST)
    server = await startServer({ port, databaseUrl: database.url as string, env: serverEnv() })
    url = server.url
  }, 90_000)

  afterAll(async () => {
    await server?.stop(5_000)
    await fake?.stop()
    await database?.drop()
  })

  const db = () => database.database.db

  it('loses nothing and doubles nothing: gifts, retries, wallets, webhooks, the books', async () => {
    // ---- people, coins, a live stream, unpaid orders -----------------------------------
    const admin = await tokenFor({ sub: 'crash|admin', preferred_username: 'admin', roles: ['admin'] })
    const creator = await tokenFor({ sub: 'crash|creator', preferred_username: 'star', roles: ['creator'] })
    const senders = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) =>
        tokenFor({ sub: `crash|fan${i}`, preferred_username: `fan${i}` }),
      ),
    )
    const ok = async (query: string, variables: Record<string, unknown>, token: string) => {
      const answer = await post(url, query, variables, token)
      if (!answer.answered || answer.body.errors) throw new Error(JSON.stringify(answer))
      return answer.body.data as Record<string, any>
    }
    const senderIds = await Promise.all(
      senders.map(async (t) => (await ok('{ me { user { id } } }', {}, t)).me.user.id as string),
    )
    for (const [i, userId] of senderIds.entries()) {
      await ok(
        GRANT_COINS,
        { userId, coins: GRANT, reason: 'crash test', idempotencyKey: `grant-${i}` },
        admin,
      )
    }
    const catalog = await ok(CATALOG, { currency: 'USD' }, admin)
    const rose = catalog.gifts.find((g: { name: string }) => g.name === 'Rose').id as string
    const pkg = catalog.coinPackages[0] as { id: string; coins: number; bonusCoins: number }
    const streamId = (await ok(START_LIVE, { title: 'crash night' }, creator)).startLiveStream.liveStream.id
    const orders: { orderId: string; pi: string; buyer: number }[] = []
    for (let n = 0; n < ORDERS; n++) {
      const buyer = n % CLIENTS
      const { createRecharge } = await ok(
        CREATE_RECHARGE,
        { packageId: pkg.id, provider: 'STRIPE', idempotencyKey: `order-${n}` },
        senders[buyer] as string,
      )
      expect(createRecharge.userErrors).toEqual([])
      orders.push({
        orderId: createRecharge.recharge.id,
        pi: createRecharge.checkout.providerReference,
        buyer,
      })
    }

    // ---- the load: 32 gift clients, and Stripe's webhooks --------------------------------
    const told: Told[][] = Array.from({ length: CLIENTS }, () => [])
    const unexpected: string[] = []
    let stopSending = false
    const client = async (i: number) => {
      for (let n = 0; !stopSending; n++) {
        const key = `crash-${i}-${n}`
        const quantity = 1 + (n % 3)
        for (let retries = 0; ; retries++) {
          const answer = await post(
            url,
            SEND_GIFT,
            { giftId: rose, liveStreamId: streamId, quantity, idempotencyKey: key },
            senders[i],
          )
          if (!answer.answered) {
            await sleep(50)
            continue
          }
          const payload = answer.body.data?.sendGift
          if (answer.status !== 200 || !payload || payload.userErrors.length > 0) {
            unexpected.push(`${key}: HTTP ${answer.status} ${JSON.stringify(answer.body)}`)
          } else {
            told[i]?.push({
              key,
              eventId: payload.giftEvent.id,
              coins: payload.giftEvent.coins,
              quantity,
              retries,
            })
          }
          break
        }
      }
    }
    /** Stripe: a delivery without a 200 is delivered again, later. */
    const delivered: StripeEvent[] = []
    const deliverUntilAcknowledged = async (event: StripeEvent) => {
      for (;;) {
        const [status] = await fake.deliver(event, `${url}/webhooks/stripe`)
        if (status === 200) {
          delivered.push(event)
          return
        }
        await sleep(100)
      }
    }
    const pay = async (from: number, to: number) => {
      for (const order of orders.slice(from, to)) {
        for (const event of fake.succeed(order.pi).events) await deliverUntilAcknowledged(event)
      }
    }

    const clients = Array.from({ length: CLIENTS }, (_, i) => client(i))
    // Half the orders are paid, and their webhooks processed, under load.
    const firstHalf = pay(0, ORDERS / 2)
    await sleep(LOAD_BEFORE_MS)
    await firstHalf
    // The other half is paid while Stripe does not answer: their webhooks are
    // acknowledged and stored, but cannot be processed (processing re-reads the
    // payment from Stripe). They are in the inbox, unprocessed, when the process dies.
    fake.setOutage('timeout')
    await pay(ORDERS / 2, ORDERS)
    const pendingAtCrash = await countWebhooks("status = 'pending'")
    expect(pendingAtCrash).toBeGreaterThan(0)

    const crashedAt = Date.now()
    await killHard(server)
    const toldAtCrash = told.flat().length
    fake.setOutage(null)
    await sleep(300)
    server = await startServer({ port, databaseUrl: database.url as string, env: serverEnv() })
    const downMs = Date.now() - crashedAt
    await sleep(LOAD_AFTER_MS)
    stopSending = true
    await Promise.all(clients)

    // ---- what clients were told, against the database ------------------------------------
    const all = told.flat()
    expect(unexpected).toEqual([])
    expect(toldAtCrash).toBeGreaterThan(0)
    expect(all.length).toBeGreaterThan(toldAtCrash)
    // Requests were cut by the crash and retried with their key.
    expect(all.filter((t) => t.retries > 0).length).toBeGreaterThan(0)

    const stored = rowsOf<{ key: string; id: string; coins: string; sequence: string; sentAtMs: string }>(
      await db().execute(sql`
        select t.idempotency_key as key, e.id::text as id, e.coins::text as coins,
               e.sequence::text as sequence, (extract(epoch from e.sent_at) * 1000)::text as "sentAtMs"
          from gift_events e join ledger_transactions t on t.id = e.transaction_id
         where e.stream_id = ${streamId}`),
    )
    const storedByKey = new Map<string, (typeof stored)[number]>()
    for (const row of stored) {
      expect(storedByKey.has(row.key), `${row.key} stored twice`).toBe(false)
      storedByKey.set(row.key, row)
    }
    // Every gift told is there once, with the id told; nothing is there that no client was told about.
    for (const [i, list] of told.entries()) {
      for (const gift of list) {
        const row = storedByKey.get(`gift:${senderIds[i]}:${gift.key}`)
        expect(row?.id, gift.key).toBe(gift.eventId)
        expect(Number(row?.coins)).toBe(gift.coins)
      }
    }
    expect(stored.length).toBe(all.length)
    // The hardest case: committed before the crash, its answer lost with the process, retried.
    const committedUnanswered = told
      .flatMap((list, i) =>
        list.map((gift) => ({ gift, row: storedByKey.get(`gift:${senderIds[i]}:${gift.key}`) })),
      )
      .filter(({ gift, row }) => gift.retries > 0 && Number(row?.sentAtMs) < crashedAt).length
    console.info(
      `crash test: ${all.length} gifts told (${toldAtCrash} before the crash), ` +
        `${all.filter((t) => t.retries > 0).length} retried after no answer ` +
        `(${committedUnanswered} of them committed before the crash), down ${downMs} ms; ` +
        `${pendingAtCrash} webhook events unprocessed at the crash`,
    )
    // The stream's sequence: 1..n, no gap left by the transactions the crash cut.
    const sequences = stored.map((r) => Number(r.sequence)).sort((a, b) => a - b)
    expect(sequences).toEqual(Array.from({ length: stored.length }, (_, i) => i + 1))

    // ---- webhooks: every acknowledged event processed, every paid order credited once --------
    await until(
      async () => (await countWebhooks("status <> 'processed' and status <> 'ignored'")) === 0,
      30_000,
      'the inbox to drain after the restart',
    )
    expect(await countWebhooks('true')).toBe(new Set(delivered.map((e) => e.id)).size)
    const credits = rowsOf<{ key: string; n: string }>(
      await db().execute(sql`
        select idempotency_key as key, count(*)::text as n from ledger_transactions
         where idempotency_key like 'recharge:%:credit' group by idempotency_key`),
    )
    expect(credits.map((c) => c.key).sort()).toEqual(orders.map((o) => `recharge:${o.orderId}:credit`).sort())
    expect(credits.every((c) => c.n === '1')).toBe(true)

    // ---- wallets: grants and credits minus the gifts told, charged once --------------------------
    const perPackage = pkg.coins + pkg.bonusCoins
    for (const [i, token] of senders.entries()) {
      const bought = orders.filter((o) => o.buyer === i).length * perPackage
      const spent = (told[i] ?? []).reduce((sum, g) => sum + g.coins, 0)
      const { me } = await ok('{ me { wallet { coins } } }', {}, token)
      expect(me.wallet.coins, `fan${i}`).toBe(GRANT + bought - spent)
    }
    // A client retrying an answered gift with its key gets the same gift and pays nothing more.
    for (const i of [0, 7, 31]) {
      const gift = told[i]?.[0] as Told
      const before = (await ok('{ me { wallet { coins } } }', {}, senders[i] as string)).me.wallet.coins
      const again = await ok(
        SEND_GIFT,
        { giftId: rose, liveStreamId: streamId, quantity: gift.quantity, idempotencyKey: gift.key },
        senders[i] as string,
      )
      expect(again.sendGift.giftEvent?.id ?? again.sendGift.userErrors[0]?.code).toBe(gift.eventId)
      expect(again.sendGift.wallet.coins).toBe(before)
    }

    // ---- the books ------------------------------------------------------------------------
    expect((await checkIntegrity(db())).problems).toEqual([])
  }, 120_000)

  async function countWebhooks(where: string): Promise<number> {
    const [row] = rowsOf<{ n: string }>(
      await db().execute(sql.raw(`select count(*)::text as n from webhook_events where ${where}`)),
    )
    return Number(row?.n)
  }
})
