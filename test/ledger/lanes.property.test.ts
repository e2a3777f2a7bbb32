import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../../src/db/rows.js'
import {
  type AccountSpec,
  creatorEarnings,
  isShardedAccount,
  Ledger,
  LedgerError,
  type PostingRequest,
  type PostingResult,
  platform,
  userWallet,
} from '../../src/ledger/index.js'
import { createTestDatabase, onPostgres, type TestDatabase } from '../support/db.js'

// Lanes against a model (src/ledger/lanes.ts): random sequences of funding,
// bursts of concurrent gifts (written by three lanes at once, their credits
// on the creator's and the commission's shards), retries, reversals,
// payouts of the creator's whole balance or more, and sweeps. After every
// step each account reads as the model says (a sharded account as the sum of
// itself and its shards), no shard or wallet is negative, and the integrity
// check is clean. PostgreSQL only: PGlite has one connection, so one lane.

let t: TestDatabase
let ledger: Ledger

describe.skipIf(!onPostgres)('lanes against a model (PostgreSQL)', () => {
  beforeAll(async () => {
    t = await createTestDatabase({ poolMax: 10 })
    ledger = new Ledger(t.database, { lanes: 3, sharded: isShardedAccount })
  })
  afterAll(() => t?.drop())

  interface Model {
    run: string
    wallets: AccountSpec[]
    creator: AccountSpec
    balances: Map<string, bigint>
    gifts: { request: PostingRequest; result: PostingResult; reversed: boolean }[]
    keys: number
    /** The commission is shared by every run: the model counts from its balance at the run's start. */
    commissionAtStart: bigint
  }

  const balance = (m: Model, code: string) => m.balances.get(code) ?? 0n
  const add = (m: Model, code: string, delta: bigint) => m.balances.set(code, balance(m, code) + delta)

  const giftRequest = (m: Model, wallet: number, coins: bigint): PostingRequest => ({
    idempotencyKey: `${m.run}:gift:${m.keys++}`,
    kind: 'gift',
    entries: [
      { account: m.wallets[wallet] as AccountSpec, direction: 'debit', amount: coins },
      { account: m.creator, direction: 'credit', amount: coins / 2n },
      { account: platform.commission, direction: 'credit', amount: coins - coins / 2n },
    ],
  })

  type Command = fc.AsyncCommand<Model, Ledger>

  /** Commands run, by kind: the property must have exercised each. */
  const ran = new Map<string, number>()
  /** A step of the model run: after it, the engine must agree with the model. */
  abstract class Step implements Command {
    abstract readonly name: string
    check(_m: Readonly<Model>): boolean {
      return true
    }
    abstract act(m: Model, real: Ledger): Promise<void>
    async run(m: Model, real: Ledger) {
      await this.act(m, real)
      ran.set(this.name, (ran.get(this.name) ?? 0) + 1)
      await agree(m, real)
    }
  }

  /** A gift request's three entries: the wallet's debit, the creator's and the commission's credits. */
  const giftEntries = (request: PostingRequest) => {
    const [debit, toCreator, toCommission] = request.entries
    if (!debit || !toCreator || !toCommission) throw new Error('a gift has three entries')
    return { debit, toCreator, toCommission }
  }

  class Fund extends Step {
    constructor(
      readonly wallet: number,
      readonly coins: bigint,
    ) {
      super()
    }
    readonly name = 'Fund'
    async act(m: Model, real: Ledger) {
      const wallet = m.wallets[this.wallet] as AccountSpec
      await real.post({
        idempotencyKey: `${m.run}:fund:${m.keys++}`,
        kind: 'recharge',
        entries: [
          { account: platform.coinsIssued, direction: 'debit', amount: this.coins },
          { account: wallet, direction: 'credit', amount: this.coins },
        ],
      })
      add(m, wallet.code, this.coins)
    }
    override toString = () => `fund(${this.wallet}, ${this.coins})`
  }

  /**
   * Gifts sent at once, from different wallets: the lanes write them side by
   * side. (One wallet's gifts sent at once may be decided in any order: each
   * waits for its accounts first.)
   */
  class Burst extends Step {
    constructor(readonly gifts: { wallet: number; coins: bigint }[]) {
      super()
    }
    readonly name = 'Burst'
    async act(m: Model, real: Ledger) {
      const requests = this.gifts.map((g) => giftRequest(m, g.wallet, g.coins))
      const outcomes = await Promise.allSettled(requests.map((r) => real.post(r)))
      for (const [i, outcome] of outcomes.entries()) {
        const request = requests[i] as PostingRequest
        const { debit, toCreator, toCommission } = giftEntries(request)
        const code = (debit.account as AccountSpec).code
        const affordable = balance(m, code) >= debit.amount
        if (outcome.status === 'rejected') {
          expect(outcome.reason).toBeInstanceOf(LedgerError)
          expect((outcome.reason as LedgerError).code).toBe('INSUFFICIENT_FUNDS')
          expect(affordable).toBe(false)
          continue
        }
        expect(affordable).toBe(true)
        add(m, code, -debit.amount)
        add(m, m.creator.code, toCreator.amount)
        add(m, platform.commission, toCommission.amount)
        m.gifts.push({ request, result: outcome.value, reversed: false })
      }
    }
    override toString = () => `burst(${this.gifts.map((g) => `${g.wallet}:${g.coins}`).join(' ')})`
  }

  /** A step on a gift sent earlier in the run, picked by index. */
  abstract class OnGift extends Step {
    constructor(readonly pick: number) {
      super()
    }
    override check = (m: Readonly<Model>) => m.gifts.length > 0
    protected gift = (m: Model) => m.gifts[this.pick % m.gifts.length] as Model['gifts'][number]
  }

  class Retry extends OnGift {
    readonly name = 'Retry'
    async act(m: Model, real: Ledger) {
      const gift = this.gift(m)
      const again = await real.post(gift.request)
      expect(again.replayed).toBe(true)
      expect(again.transaction.id).toBe(gift.result.transaction.id)
    }
    override toString = () => `retry(${this.pick})`
  }

  class Reverse extends OnGift {
    readonly name = 'Reverse'
    async act(m: Model, real: Ledger) {
      const gift = this.gift(m)
      const { debit, toCreator, toCommission } = giftEntries(gift.request)
      const outcome = await real
        .reverse(gift.result.transaction.id, { idempotencyKey: `${m.run}:rev:${m.keys++}` })
        .then(
          (r) => ({ ok: true as const, r }),
          (error: unknown) => ({ ok: false as const, error }),
        )
      if (gift.reversed) {
        expect(outcome.ok).toBe(false)
        if (!outcome.ok) expect((outcome.error as LedgerError).code).toBe('ALREADY_REVERSED')
        return
      }
      if (balance(m, m.creator.code) < toCreator.amount) {
        // The creator cashed out since: even swept, the earnings cannot give the share back.
        expect(outcome.ok).toBe(false)
        if (!outcome.ok) expect((outcome.error as LedgerError).code).toBe('INSUFFICIENT_FUNDS')
        return
      }
      expect(outcome.ok, String(outcome.ok ? '' : outcome.error)).toBe(true)
      gift.reversed = true
      add(m, (debit.account as AccountSpec).code, debit.amount)
      add(m, m.creator.code, -toCreator.amount)
      add(m, platform.commission, -toCommission.amount)
    }
    override toString = () => `reverse(${this.pick})`
  }

  /** A payout of the creator's whole balance, or of more than it: the shards are swept into it first. */
  class Payout extends Step {
    constructor(readonly extra: bigint) {
      super()
    }
    readonly name = 'Payout'
    async act(m: Model, real: Ledger) {
      const coins = balance(m, m.creator.code) + this.extra
      if (coins <= 0n) return
      const outcome = await real
        .post({
          idempotencyKey: `${m.run}:payout:${m.keys++}`,
          kind: 'payout',
          entries: [
            { account: m.creator, direction: 'debit', amount: coins },
            { account: platform.coinsIssued, direction: 'credit', amount: coins },
          ],
        })
        .then(
          () => true,
          (error: unknown) => {
            expect((error as LedgerError).code).toBe('INSUFFICIENT_FUNDS')
            return false
          },
        )
      expect(outcome).toBe(this.extra === 0n)
      if (outcome) add(m, m.creator.code, -coins)
    }
    override toString = () => `payout(+${this.extra})`
  }

  class Sweep extends Step {
    constructor(readonly commission: boolean) {
      super()
    }
    readonly name = 'Sweep'
    async act(m: Model, real: Ledger) {
      await real.sweep(this.commission ? platform.commission : m.creator)
    }
    override toString = () => `sweep(${this.commission ? 'commission' : 'creator'})`
  }

  async function agree(m: Model, real: Ledger) {
    for (const spec of [...m.wallets, m.creator]) {
      expect((await real.balance(spec)).balance, spec.code).toBe(balance(m, spec.code))
    }
    const commission = (await real.balance(platform.commission)).balance
    expect(commission - m.commissionAtStart).toBe(balance(m, platform.commission))
    const negative = rowsOf<{ code: string }>(
      await t.database.db.execute(
        sql`select code from ledger_accounts where balance < 0 and (code like '%:shard%' or code like 'user:%')`,
      ),
    )
    expect(negative).toEqual([])
  }

  it('keeps every sharded balance equal to the model, whatever the lanes and sweeps do', async () => {
    const wallet = fc.integer({ min: 0, max: 5 })
    const coins = fc.bigInt({ min: 2n, max: 120n })
    const commands = [
      fc.tuple(wallet, fc.bigInt({ min: 1n, max: 400n })).map(([w, c]) => new Fund(w, c)),
      fc
        .uniqueArray(fc.record({ wallet, coins }), { minLength: 1, maxLength: 6, selector: (g) => g.wallet })
        .map((gifts) => new Burst(gifts)),
      fc.nat().map((n) => new Retry(n)),
      fc.nat().map((n) => new Reverse(n)),
      fc.constantFrom(0n, 1n).map((extra) => new Payout(extra)),
      fc.boolean().map((commission) => new Sweep(commission)),
    ]
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 25, size: '+1' }), async (cmds) => {
        const run = randomUUID().slice(0, 8)
        const ids = Array.from({ length: 7 }, () => randomUUID())
        const model: Model = {
          run,
          wallets: ids.slice(0, 6).map((id) => userWallet(id)),
          creator: creatorEarnings(ids[6] as string),
          balances: new Map(),
          gifts: [],
          keys: 0,
          commissionAtStart: 0n,
        }
        await ledger.accounts.resolve(t.database.db, [...model.wallets, model.creator])
        model.commissionAtStart = (await ledger.balance(platform.commission)).balance
        // Funded, so that gifts do more than get refused.
        for (const [i] of model.wallets.entries()) await new Fund(i, 150n).run(model, ledger)
        await fc.asyncModelRun(() => ({ model, real: ledger }), cmds)
        expect((await ledger.checkIntegrity()).problems).toEqual([])
      }),
      { numRuns: Number(process.env.FC_RUNS ?? 15) },
    )
    for (const name of ['Fund', 'Burst', 'Retry', 'Reverse', 'Payout', 'Sweep'])
      expect(ran.get(name) ?? 0, name).toBeGreaterThan(3)
    // The lanes wrote on shards, and sweeps moved them.
    const [counts] = rowsOf<{ shards: number; sweeps: number }>(
      await t.database.db.execute(sql`
        select (select count(*)::int from ledger_accounts where code like '%:shard%') as shards,
               (select count(*)::int from ledger_transactions where kind = 'sweep') as sweeps`),
    )
    expect(counts?.shards).toBeGreaterThan(0)
    expect(counts?.sweeps).toBeGreaterThan(0)
  }, 600_000)
})
