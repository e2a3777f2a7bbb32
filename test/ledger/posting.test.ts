import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  creatorEarnings,
  Ledger,
  LedgerError,
  platform,
  userCoinDebt,
  userWallet,
} from '../../src/ledger/index.js'
import { createTestDatabase, type TestDatabase } from '../support/db.js'

let t: TestDatabase
let ledger: Ledger

beforeAll(async () => {
  t = await createTestDatabase()
  ledger = new Ledger(t.database, { concurrency: 1 })
})
afterAll(() => t.drop())

const alice = userWallet('00000000-0000-4000-8000-000000000001')
const bob = creatorEarnings('00000000-0000-4000-8000-000000000002')

describe('posting', () => {
  it('credits a wallet from coins issued and reads the balance back', async () => {
    const { transaction, replayed } = await ledger.post({
      idempotencyKey: 'recharge-1',
      kind: 'recharge',
      entries: [
        { account: platform.coinsIssued, direction: 'debit', amount: 1000n },
        { account: alice, direction: 'credit', amount: 1000n },
      ],
    })
    expect(replayed).toBe(false)
    expect(transaction.entries.map((e) => [e.accountCode, e.balanceAfter, e.accountSeq])).toEqual([
      [platform.coinsIssued, 1000n, 1n],
      [alice.code, 1000n, 1n],
    ])
    expect((await ledger.balance(alice)).balance).toBe(1000n)
  })

  it('posts a gift: wallet debited, creator and platform credited', async () => {
    const { transaction } = await ledger.post({
      idempotencyKey: 'gift-1',
      kind: 'gift',
      entries: [
        { account: alice, direction: 'debit', amount: 100n },
        { account: bob, direction: 'credit', amount: 50n },
        { account: platform.commission, direction: 'credit', amount: 50n },
      ],
    })
    expect(transaction.entries[0]?.balanceAfter).toBe(900n)
    expect((await ledger.balance(bob)).balance).toBe(50n)
  })

  it('returns the original for a retry and refuses the key with other content', async () => {
    const req = {
      idempotencyKey: 'gift-1',
      kind: 'gift' as const,
      entries: [
        { account: alice, direction: 'debit' as const, amount: 100n },
        { account: bob, direction: 'credit' as const, amount: 50n },
        { account: platform.commission, direction: 'credit' as const, amount: 50n },
      ],
    }
    const again = await ledger.post(req)
    expect(again.replayed).toBe(true)
    expect((await ledger.balance(alice)).balance).toBe(900n)
    const changed = { ...req, entries: req.entries.map((e, i) => (i === 0 ? { ...e, amount: 101n } : e)) }
    changed.entries[1] = { ...req.entries[1], amount: 51n } as (typeof req.entries)[number]
    await expect(ledger.post(changed)).rejects.toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' })
  })

  it('refuses an overdraft and changes nothing', async () => {
    await expect(
      ledger.post({
        idempotencyKey: 'gift-too-big',
        kind: 'gift',
        entries: [
          { account: alice, direction: 'debit', amount: 901n },
          { account: bob, direction: 'credit', amount: 901n },
        ],
      }),
    ).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' })
    expect((await ledger.balance(alice)).balance).toBe(900n)
  })

  it('refuses unbalanced, non-positive, unknown-account and unit-mismatched postings', async () => {
    const cases = [
      [
        { account: alice, direction: 'debit', amount: 5n },
        { account: bob, direction: 'credit', amount: 4n },
      ],
      [
        { account: alice, direction: 'debit', amount: 0n },
        { account: bob, direction: 'credit', amount: 0n },
      ],
      [
        { account: 'user:nobody:wallet', direction: 'debit', amount: 1n },
        { account: bob, direction: 'credit', amount: 1n },
      ],
      [
        { account: platform.stripeClearing('USD'), direction: 'debit', amount: 1n },
        { account: alice, direction: 'credit', amount: 1n },
      ],
    ] as const
    for (const entries of cases) {
      const error = await ledger
        .post({ idempotencyKey: `bad-${Math.random()}`, kind: 'adjustment', entries: [...entries] })
        .catch((e) => e)
      expect(error).toBeInstanceOf(LedgerError)
    }
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('reverses once', async () => {
    const { transaction } = await ledger.post({
      idempotencyKey: 'grant-1',
      kind: 'grant',
      entries: [
        { account: platform.promotions, direction: 'debit', amount: 10n },
        { account: alice, direction: 'credit', amount: 10n },
      ],
    })
    const reversal = await ledger.reverse(transaction.id, { idempotencyKey: 'grant-1-reversal' })
    expect(reversal.transaction.reversesId).toBe(transaction.id)
    expect((await ledger.balance(alice)).balance).toBe(900n)
    expect((await ledger.reverse(transaction.id, { idempotencyKey: 'grant-1-reversal' })).replayed).toBe(true)
    await expect(
      ledger.reverse(transaction.id, { idempotencyKey: 'grant-1-reversal-2' }),
    ).rejects.toMatchObject({
      code: 'ALREADY_REVERSED',
    })
  })

  it('holds, posts, voids and expires', async () => {
    const { hold } = await ledger.hold({
      idempotencyKey: 'hold-1',
      kind: 'payout',
      account: alice,
      counterAccount: platform.coinsIssued,
      amount: 300n,
      expiresAt: new Date(Date.now() + 60_000),
    })
    expect((await ledger.balance(alice)).available).toBe(600n)
    await expect(
      ledger.post({
        idempotencyKey: 'gift-over-hold',
        kind: 'gift',
        entries: [
          { account: alice, direction: 'debit', amount: 601n },
          { account: bob, direction: 'credit', amount: 601n },
        ],
      }),
    ).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' })
    const posted = await ledger.postHold(hold.id, 200n)
    expect(posted.transaction.entries[0]?.balanceAfter).toBe(700n)
    expect(await ledger.balance(alice)).toMatchObject({ balance: 700n, held: 0n, available: 700n })
    expect((await ledger.postHold(hold.id)).replayed).toBe(true)
    await expect(ledger.voidHold(hold.id)).rejects.toMatchObject({ code: 'HOLD_NOT_PENDING' })

    const second = await ledger.hold({
      idempotencyKey: 'hold-2',
      kind: 'payout',
      account: alice,
      counterAccount: platform.coinsIssued,
      amount: 100n,
      expiresAt: new Date(Date.now() + 60_000),
    })
    expect((await ledger.voidHold(second.hold.id)).status).toBe('voided')
    const third = await ledger.hold({
      idempotencyKey: 'hold-3',
      kind: 'payout',
      account: alice,
      counterAccount: platform.coinsIssued,
      amount: 100n,
      expiresAt: new Date(Date.now() - 1),
    })
    await expect(ledger.postHold(third.hold.id)).rejects.toMatchObject({ code: 'HOLD_NOT_PENDING' })
    expect(await ledger.expireHolds()).toBe(1)
    expect(await ledger.balance(alice)).toMatchObject({ balance: 700n, held: 0n })
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('answers balances at past instants from the history', async () => {
    const before = (await ledger.balance(alice)).balance
    const mid = new Date()
    await new Promise((r) => setTimeout(r, 5))
    await ledger.post({
      idempotencyKey: 'grant-2',
      kind: 'grant',
      entries: [
        { account: platform.promotions, direction: 'debit', amount: 7n },
        { account: alice, direction: 'credit', amount: 7n },
      ],
    })
    expect(await ledger.balanceAt(alice, mid)).toBe(before)
    expect(await ledger.balanceAt(alice, new Date())).toBe(before + 7n)
    expect(await ledger.balanceAt(alice, new Date(0))).toBe(0n)
  })
})

describe('routed entries', () => {
  const carol = userWallet('00000000-0000-4000-8000-0000000000c1')
  const debt = userCoinDebt('00000000-0000-4000-8000-0000000000c1')

  it('sends the part of a debit a wallet cannot cover to a debt account, and repays it first on the next credit', async () => {
    await ledger.post({
      idempotencyKey: 'carol-fund',
      kind: 'recharge',
      entries: [
        { account: platform.coinsIssued, direction: 'debit', amount: 30n },
        { account: carol, direction: 'credit', amount: 30n },
      ],
    })
    const clawback = await ledger.post({
      idempotencyKey: 'carol-clawback',
      kind: 'refund',
      entries: [
        { account: carol, direction: 'debit', amount: 100n, shortfallTo: debt },
        { account: platform.coinsIssued, direction: 'credit', amount: 100n },
      ],
    })
    expect(clawback.transaction.entries.map((e) => [e.accountCode, e.direction, e.amount])).toEqual([
      [debt.code, 'debit', 70n],
      [carol.code, 'debit', 30n],
      [platform.coinsIssued, 'credit', 100n],
    ])
    expect((await ledger.balance(carol)).balance).toBe(0n)
    expect((await ledger.balance(debt)).balance).toBe(70n)

    const recharge = await ledger.post({
      idempotencyKey: 'carol-recharge',
      kind: 'recharge',
      entries: [
        { account: platform.coinsIssued, direction: 'debit', amount: 100n },
        { account: carol, direction: 'credit', amount: 100n, repayFirst: debt },
      ],
    })
    expect(recharge.transaction.entries.map((e) => [e.accountCode, e.amount])).toEqual([
      [platform.coinsIssued, 100n],
      [debt.code, 70n],
      [carol.code, 30n],
    ])
    expect((await ledger.balance(debt)).balance).toBe(0n)
    expect((await ledger.balance(carol)).balance).toBe(30n)
    // A retry replays; the same key with the route removed is another request.
    expect(
      (
        await ledger.post({
          idempotencyKey: 'carol-recharge',
          kind: 'recharge',
          entries: [
            { account: platform.coinsIssued, direction: 'debit', amount: 100n },
            { account: carol, direction: 'credit', amount: 100n, repayFirst: debt },
          ],
        })
      ).replayed,
    ).toBe(true)
    await expect(
      ledger.post({
        idempotencyKey: 'carol-recharge',
        kind: 'recharge',
        entries: [
          { account: platform.coinsIssued, direction: 'debit', amount: 100n },
          { account: carol, direction: 'credit', amount: 100n },
        ],
      }),
    ).rejects.toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' })
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('refuses routes on the wrong side or in another unit', async () => {
    await expect(
      ledger.post({
        idempotencyKey: 'bad-route-1',
        kind: 'refund',
        entries: [
          { account: carol, direction: 'credit', amount: 1n, shortfallTo: debt },
          { account: platform.coinsIssued, direction: 'debit', amount: 1n },
        ],
      }),
    ).rejects.toMatchObject({ code: 'INVALID_POSTING' })
    await expect(
      ledger.post({
        idempotencyKey: 'bad-route-2',
        kind: 'refund',
        entries: [
          { account: carol, direction: 'debit', amount: 1n, shortfallTo: platform.stripeClearing('USD') },
          { account: platform.coinsIssued, direction: 'credit', amount: 1n },
        ],
      }),
    ).rejects.toMatchObject({ code: 'UNIT_MISMATCH' })
  })
})

describe('committed postings', () => {
  it('are announced after commit, once, never for refusals or replays', async () => {
    const seen: string[] = []
    const stop = ledger.onCommitted((txs) => seen.push(...txs.map((t) => t.idempotencyKey)))
    const grant = {
      idempotencyKey: 'announce-1',
      kind: 'grant' as const,
      entries: [
        { account: platform.promotions, direction: 'debit' as const, amount: 1n },
        { account: alice, direction: 'credit' as const, amount: 1n },
      ],
    }
    await ledger.post(grant)
    await ledger.post(grant)
    await ledger
      .post({
        idempotencyKey: 'announce-2',
        kind: 'gift',
        entries: [
          { account: alice, direction: 'debit', amount: 10n ** 12n },
          { account: bob, direction: 'credit', amount: 10n ** 12n },
        ],
      })
      .catch(() => undefined)
    stop()
    expect(seen).toEqual(['announce-1'])
  })
})
