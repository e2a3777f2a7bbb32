import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase } from '../../src/db/client.js'
import { rowsOf } from '../../src/db/rows.js'
import {
  creatorEarnings,
  isShardedAccount,
  Ledger,
  LedgerError,
  type PostingRequest,
  type PostingResult,
  platform,
  shardParent,
  signedAmount,
  userWallet,
} from '../../src/ledger/index.js'
import { createTestDatabase, onPostgres, type TestDatabase } from '../support/db.js'

// Many concurrent writers on real PostgreSQL (PGlite has one connection and
// cannot race): two engine instances, each with its own pool and coalescer,
// as two servers would be. Most gifts go to one hot creator, and every gift
// credits the platform commission. Workers overdraw wallets, resend keys
// (sometimes through the other instance, at the same time), and race to
// reverse the same transaction. Afterwards the books match exactly what the
// callers were told. Once with one writer per instance, once with two lanes
// per instance (src/ledger/lanes.ts): the hot creator and the commission are
// then credited on shards too, swept back by the reversals' debits.

const WORKERS = 32
const POSTINGS = 20_000
const WALLETS = 300
const CREATORS = 20

let t: TestDatabase
let second: Awaited<ReturnType<typeof openDatabase>>
let ledgers: Ledger[]

const setups = [
  { name: 'one writer per instance', options: {} },
  { name: 'two lanes per instance, hot accounts sharded', options: { lanes: 2, sharded: isShardedAccount } },
]

describe.skipIf(!onPostgres).each(setups)(
  'ledger under concurrent load (PostgreSQL): $name',
  ({ options }) => {
    beforeAll(async () => {
      t = await createTestDatabase({ poolMax: 10 })
      second = await openDatabase(t.config)
      ledgers = [new Ledger(t.database, options), new Ledger(second, options)]
      expect(ledgers.map((l) => l.laneCount)).toEqual(ledgers.map(() => options.lanes ?? 1))
    })
    afterAll(async () => {
      await second?.close()
      await t?.drop()
    })

    it(`keeps the books exact under ${WORKERS} workers and ${POSTINGS} postings on a hot account`, async () => {
      const run = randomUUID().slice(0, 8)
      const wallets = Array.from({ length: WALLETS }, (_, i) =>
        userWallet(`00000000-0000-4000-8000-${run}${i.toString().padStart(4, '0')}`),
      )
      const creators = Array.from({ length: CREATORS }, (_, i) =>
        creatorEarnings(`00000000-0000-4000-9000-${run}${i.toString().padStart(4, '0')}`),
      )
      const hot = creators[0] as (typeof creators)[number]

      // Funding: small enough that wallets run dry and overdrafts are attempted.
      const funded = new Map<string, bigint>()
      await Promise.all(
        wallets.map((wallet, i) => {
          const coins = BigInt(200 + ((i * 37) % 400))
          funded.set(wallet.code, coins)
          return (ledgers[i % 2] as Ledger).post({
            idempotencyKey: `${run}:fund:${i}`,
            kind: 'recharge',
            entries: [
              { account: platform.coinsIssued, direction: 'debit', amount: coins },
              { account: wallet, direction: 'credit', amount: coins },
            ],
          })
        }),
      )

      const accepted = new Map<string, PostingResult>() // key -> first result
      const sent: PostingRequest[] = []
      const unexpected: unknown[] = []
      let refusedOverdraft = 0
      let replays = 0
      let reversalsWon = 0
      let reversalsRefused = 0
      let next = 0

      const originals = new Set<string>() // keys whose non-replayed result has been seen
      const record = (request: PostingRequest, result: PostingResult) => {
        const key = request.idempotencyKey
        // Results of one key all carry the same transaction, whichever arrives first.
        const first = accepted.get(key)
        if (first) expect(result.transaction.id).toBe(first.transaction.id)
        else accepted.set(key, result)
        if (result.replayed) replays++
        else {
          expect(originals.has(key), `key ${key} was posted twice`).toBe(false)
          originals.add(key)
        }
      }

      const worker = async (w: number) => {
        const rnd = mulberry32(w + 1)
        while (next < POSTINGS) {
          const n = next++
          const ledger = ledgers[Math.floor(rnd() * 2)] as Ledger
          const roll = rnd()
          try {
            if (roll < 0.1 && sent.length > 0) {
              // A retry of an earlier request, possibly through the other instance.
              const request = sent[Math.floor(rnd() * sent.length)] as PostingRequest
              // (A refused attempt stores nothing, so its twin may still succeed: settle each.)
              const outcomes = await Promise.allSettled([
                ledger.post(request),
                (ledgers[w % 2] as Ledger).post(request),
              ])
              for (const o of outcomes) {
                if (o.status === 'fulfilled') record(request, o.value)
                else if (o.reason instanceof LedgerError && o.reason.code === 'INSUFFICIENT_FUNDS')
                  refusedOverdraft++
                else unexpected.push(o.reason)
              }
            } else if (roll < 0.12 && accepted.size > 0) {
              // Two reversals of one transaction race; exactly one may win.
              const target = [...accepted.values()][Math.floor(rnd() * accepted.size)] as PostingResult
              if (target.transaction.kind !== 'gift') continue
              const outcomes = await Promise.allSettled(
                ledgers.map((l, i) =>
                  l.reverse(target.transaction.id, { idempotencyKey: `${run}:rev:${n}:${i}` }),
                ),
              )
              for (const [i, o] of outcomes.entries()) {
                if (o.status === 'fulfilled') {
                  reversalsWon++
                  record({ idempotencyKey: `${run}:rev:${n}:${i}` } as PostingRequest, o.value)
                } else if (
                  o.reason instanceof LedgerError &&
                  ['ALREADY_REVERSED', 'INSUFFICIENT_FUNDS'].includes(o.reason.code)
                ) {
                  reversalsRefused++
                } else unexpected.push(o.reason)
              }
            } else {
              const wallet = wallets[Math.floor(rnd() * WALLETS)] as (typeof wallets)[number]
              const creator = rnd() < 0.8 ? hot : (creators[Math.floor(rnd() * CREATORS)] as typeof hot)
              const coins = BigInt(1 + Math.floor(rnd() * 60))
              const share = coins / 2n
              const request: PostingRequest = {
                idempotencyKey: `${run}:gift:${n}`,
                kind: 'gift',
                entries: [
                  { account: wallet, direction: 'debit', amount: coins },
                  ...(share > 0n ? [{ account: creator, direction: 'credit' as const, amount: share }] : []),
                  { account: platform.commission, direction: 'credit', amount: coins - share },
                ],
              }
              sent.push(request)
              record(request, await ledger.post(request))
            }
          } catch (error) {
            if (error instanceof LedgerError && error.code === 'INSUFFICIENT_FUNDS') refusedOverdraft++
            else unexpected.push(error)
          }
        }
      }
      await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)))

      // Nothing but domain refusals reached a caller: no deadlock, no serialization failure.
      expect(unexpected).toEqual([])
      // The load did what it says.
      expect(refusedOverdraft).toBeGreaterThan(100)
      expect(replays).toBeGreaterThan(100)
      expect(reversalsWon).toBeGreaterThan(10)
      expect(reversalsRefused).toBeGreaterThan(10)

      // Every balance is exactly what the accepted postings make it.
      const expected = new Map<string, bigint>()
      const add = (code: string, delta: bigint) => expected.set(code, (expected.get(code) ?? 0n) + delta)
      for (const [code, coins] of funded) add(code, coins)
      const typeOf = new Map([...wallets, ...creators].map((s) => [s.code, s.type]))
      for (const { transaction } of accepted.values()) {
        for (const e of transaction.entries) {
          // A shard's entries count for its account (balance sums them).
          const code = shardParent(e.accountCode) ?? e.accountCode
          const type = typeOf.get(code)
          if (type) add(code, signedAmount(type, e.direction, e.amount))
        }
      }
      const ledger = ledgers[0] as Ledger
      for (const spec of [...wallets, ...creators]) {
        const { balance } = await ledger.balance(spec)
        expect(balance, spec.code).toBe(expected.get(spec.code) ?? 0n)
        expect(balance).toBeGreaterThanOrEqual(0n)
      }
      const report = await ledger.checkIntegrity()
      expect(report.problems).toEqual([])
      // One transaction per accepted key, plus the funding and the sweeps; every accepted key was posted once.
      const [sweeps] = rowsOf<{ n: number }>(
        await t.database.db.execute(
          sql`select count(*)::int as n from ledger_transactions where kind = 'sweep'`,
        ),
      )
      const sharded = (options.lanes ?? 1) > 1
      if (sharded) expect(Number(sweeps?.n)).toBeGreaterThan(0)
      else expect(Number(sweeps?.n)).toBe(0)
      expect(report.checkedTransactions).toBe(accepted.size + WALLETS + Number(sweeps?.n))
      expect(originals.size).toBe(accepted.size)
    }, 600_000)
  },
)

/** A small seeded PRNG, so that a failing run can be replayed. */
function mulberry32(seed: number) {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
