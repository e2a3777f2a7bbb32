import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Database, openDatabase } from '../src/db/client.js'
import { rowsOf } from '../src/db/rows.js'
import { checkIntegrity } from '../src/ledger/integrity.js'
import { assertBooksBalance } from './support/books.js'
import { CATALOG, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'
import { type PrivatePostgres, postgresBinaries, startPrivatePostgres } from './support/private-services.js'
import {
  freePort,
  HOST,
  post,
  probe,
  type ServerProcess,
  sleep,
  startServer,
  tokenFor,
  until,
} from './support/processes.js'

// PostgreSQL goes away under load and comes back: the real server (a child
// process) on a private PostgreSQL cluster of this test's own (initdb into a
// temporary directory, a free port), stopped with `pg_ctl stop -m fast` (every
// session cut, a clean shutdown) and, in a second round, `-m immediate` (a
// crash: recovery at the next start), then started again.
//
// While the database is away the server says it is not ready (/ready 503),
// answers every request promptly with an error (no request hangs), and
// posts nothing half-way; once PostgreSQL is back it recovers by itself —
// /ready is 200 again and gifts go through — without a restart. Every gift a
// client was refused is retried with its key afterwards, and the database
// must then hold exactly the gifts the clients were told about, the wallets
// their grants minus those gifts, and books that balance.

const bin = postgresBinaries()
if (!bin) console.warn('database restart test skipped: no PostgreSQL server binaries (initdb, pg_ctl)')

const CLIENTS = 16
const GRANT = 1_000_000
/** An answer slower than this counts as a hung request. */
const ANSWER_MS_MAX = 12_000
const DOWN_MS = 3_000

interface Outcome {
  key: string
  quantity: number
  /** The gift event id, when the client was told it was sent. */
  eventId?: string
  coins?: number
  /** The refusal: an error code or message, with its HTTP status. */
  refused?: string
  ms: number
}

describe.skipIf(!bin)('a database restart under load (private PostgreSQL server)', () => {
  let pg: PrivatePostgres
  let server: ServerProcess
  let database: Database
  let url: string

  beforeAll(async () => {
    pg = await startPrivatePostgres(bin as string)
    const port = await freePort(HOST)
    server = await startServer({ port, databaseUrl: pg.url, env: { DATABASE_POOL_MAX: '8' } })
    url = server.url
    database = await openDatabase({ kind: 'postgres', url: pg.url, poolMax: 2 })
  }, 90_000)

  afterAll(async () => {
    try {
      await server?.stop(5_000)
      await database?.close()
    } finally {
      await pg?.close()
    }
  })

  it('reports not-ready, refuses promptly, posts nothing half-way, and recovers by itself (fast, then immediate)', async () => {
    const admin = await tokenFor({ sub: 'dbr|admin', roles: ['admin'] })
    const creator = await tokenFor({ sub: 'dbr|creator', roles: ['creator'] })
    const senders = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => tokenFor({ sub: `dbr|fan${i}` })),
    )
    const ok = async (query: string, variables: Record<string, unknown>, token: string) => {
      const answer = await post(url, query, variables, token)
      if (!answer.answered || answer.body.errors) throw new Error(JSON.stringify(answer))
      return answer.body.data as Record<string, any>
    }
    const senderIds: string[] = []
    for (const [i, token] of senders.entries()) {
      const userId = (await ok('{ me { user { id } } }', {}, token)).me.user.id as string
      senderIds.push(userId)
      await ok(GRANT_COINS, { userId, coins: GRANT, reason: 'restart test', idempotencyKey: `g${i}` }, admin)
    }
    const rose = (await ok(CATALOG, {}, admin)).gifts.find((g: { name: string }) => g.name === 'Rose').id
    const streamId = (await ok(START_LIVE, { title: 'outage night' }, creator)).startLiveStream.liveStream.id

    // ---- load, and a probe of /ready every 100 ms ------------------------------------------
    const outcomes: Outcome[][] = Array.from({ length: CLIENTS }, () => [])
    const hung: string[] = []
    let sending = true
    const client = async (i: number) => {
      for (let n = 0; sending; n++) {
        const key = `dbr-${i}-${n}`
        const quantity = 1 + (n % 3)
        const answer = await post(
          url,
          SEND_GIFT,
          { giftId: rose, liveStreamId: streamId, quantity, idempotencyKey: key },
          senders[i],
          ANSWER_MS_MAX,
        )
        if (!answer.answered) {
          hung.push(`${key}: no answer (${answer.error}) after ${answer.ms} ms`)
          continue
        }
        const payload = answer.body.data?.sendGift
        if (payload?.giftEvent) {
          outcomes[i]?.push({
            key,
            quantity,
            eventId: payload.giftEvent.id,
            coins: payload.giftEvent.coins,
            ms: answer.ms,
          })
        } else {
          const error =
            payload?.userErrors?.[0]?.code ??
            answer.body.errors?.[0]?.extensions?.code ??
            answer.body.errors?.[0]?.message
          outcomes[i]?.push({ key, quantity, refused: `${answer.status} ${error}`, ms: answer.ms })
          // A client backs off a little after a refusal.
          await sleep(100)
        }
      }
    }
    const readiness: { at: number; doneAt: number; status: number }[] = []
    const prober = (async () => {
      while (sending) {
        const at = Date.now()
        const status = await probe(url, '/ready', 5_000)
        readiness.push({ at, doneAt: Date.now(), status })
        await sleep(100)
      }
    })()
    const clients = Array.from({ length: CLIENTS }, (_, i) => client(i))
    const sentNow = () => outcomes.flat().filter((o) => o.eventId).length

    const rounds: {
      mode: 'fast' | 'immediate'
      downAt: number
      stoppedAt: number
      upAt: number
      readyAt: number
    }[] = []
    for (const mode of ['fast', 'immediate'] as const) {
      const before = sentNow()
      await until(() => sentNow() >= before + 50, 20_000, 'gifts flowing')
      const downAt = Date.now()
      await pg.stop(mode)
      // pg_ctl has confirmed the server is down (a fast stop can take a while on a loaded machine).
      const stoppedAt = Date.now()
      // Not ready while PostgreSQL is away, answered promptly.
      await until(
        () => readiness.some((r) => r.at > downAt && r.status === 503),
        10_000,
        () => `/ready to say 503 (server output: ${server.logs().slice(-10).join('\n')})`,
      )
      await sleep(DOWN_MS)
      const upAt = Date.now()
      await pg.start()
      // Ready again, and gifts go through again, without restarting the server.
      await until(
        () => readiness.some((r) => r.at > upAt && r.status === 200),
        30_000,
        '/ready to say 200 again',
      )
      const readyAt = Date.now()
      const resumed = sentNow()
      await until(() => sentNow() >= resumed + 50, 30_000, 'gifts flowing again')
      rounds.push({ mode, downAt, stoppedAt, upAt, readyAt })
    }
    sending = false
    await Promise.all(clients)
    await prober

    // ---- what happened -----------------------------------------------------------------------
    const all = outcomes.flat()
    const refused = all.filter((o) => o.refused)
    const reasons = new Map<string, number>()
    for (const o of refused) reasons.set(o.refused as string, (reasons.get(o.refused as string) ?? 0) + 1)
    console.info(
      `database restart: ${all.length - refused.length} gifts sent, ${refused.length} refused ` +
        `(${JSON.stringify(Object.fromEntries(reasons))}); slowest answer ${Math.max(...all.map((o) => o.ms))} ms; ` +
        rounds.map((r) => `${r.mode}: ready ${r.readyAt - r.upAt} ms after the start`).join(', '),
    )
    expect(hung).toEqual([])
    expect(refused.length).toBeGreaterThan(0)
    // Refusals are errors the server chose to send, never a 2xx answer pretending success or a 5xx page without GraphQL.
    for (const o of refused) expect(o.refused).toBe('503 SERVICE_UNAVAILABLE')
    // /ready said 503 in each outage and 200 between them; the probe itself never hung.
    for (const round of rounds) {
      // Probes wholly inside the outage: started once PostgreSQL was confirmed
      // down, answered before it was started again.
      const during = readiness.filter((r) => r.at > round.stoppedAt && r.doneAt < round.upAt)
      expect(during.length).toBeGreaterThan(0)
      expect(during.every((r) => r.status === 503)).toBe(true)
    }
    expect(readiness.every((r) => r.status === 200 || r.status === 503)).toBe(true)

    // ---- nothing half-way: every refused gift, retried with its key, is sent once ----------------
    for (const [i, list] of outcomes.entries()) {
      for (const o of list.filter((x) => x.refused)) {
        const again = await ok(
          SEND_GIFT,
          { giftId: rose, liveStreamId: streamId, quantity: o.quantity, idempotencyKey: o.key },
          senders[i] as string,
        )
        expect(again.sendGift.userErrors, o.key).toEqual([])
        o.eventId = again.sendGift.giftEvent.id
        o.coins = again.sendGift.giftEvent.coins
      }
    }
    const stored = rowsOf<{ key: string; id: string; sequence: string }>(
      await database.db.execute(sql`
        select t.idempotency_key as key, e.id::text as id, e.sequence::text as sequence
          from gift_events e join ledger_transactions t on t.id = e.transaction_id
         where e.stream_id = ${streamId}`),
    )
    const byKey = new Map(stored.map((r) => [r.key, r]))
    expect(byKey.size).toBe(stored.length)
    for (const [i, list] of outcomes.entries()) {
      for (const o of list) expect(byKey.get(`gift:${senderIds[i]}:${o.key}`)?.id, o.key).toBe(o.eventId)
    }
    expect(stored.length).toBe(all.length)
    const sequences = stored.map((r) => Number(r.sequence)).sort((a, b) => a - b)
    expect(sequences).toEqual(Array.from({ length: stored.length }, (_, i) => i + 1))
    for (const [i, token] of senders.entries()) {
      const spent = (outcomes[i] ?? []).reduce((sum, o) => sum + (o.coins ?? 0), 0)
      expect((await ok('{ me { wallet { coins } } }', {}, token)).me.wallet.coins).toBe(GRANT - spent)
    }
    expect((await checkIntegrity(database.db)).problems).toEqual([])
    await assertBooksBalance(database.db)
  }, 120_000)
})
