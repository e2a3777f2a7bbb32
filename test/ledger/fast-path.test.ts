import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase } from '../../src/db/client.js'
import { rowsOf } from '../../src/db/rows.js'
import { creatorEarnings, Ledger, platform, userWallet } from '../../src/ledger/index.js'
import { createTestDatabase, onPostgres, type TestDatabase } from '../support/db.js'

// The engine plans a batch on what it expects its accounts' rows to hold and
// writes it in the statement that locks them, if and only if the rows are as
// expected (src/ledger/posting.ts, state-cache.ts). These tests make the
// expectations go stale on purpose and check that nothing wrong is written.

let t: TestDatabase
let first: Ledger
let second: Ledger

beforeAll(async () => {
  t = await createTestDatabase()
  first = new Ledger(t.database, { concurrency: 1, contendedAccountMs: 200 })
  second = new Ledger(t.database, { concurrency: 1, contendedAccountMs: 200 })
})
afterAll(() => t.drop())

const wallet = userWallet('00000000-0000-4000-8000-0000000000a1')
const creator = creatorEarnings('00000000-0000-4000-8000-0000000000a2')
let keys = 0

const fund = (ledger: Ledger, amount: bigint) =>
  ledger.post({
    idempotencyKey: `fund-${keys++}`,
    kind: 'recharge',
    entries: [
      { account: platform.coinsIssued, direction: 'debit', amount },
      { account: wallet, direction: 'credit', amount },
    ],
  })

const gift = (ledger: Ledger, amount: bigint) =>
  ledger.post({
    idempotencyKey: `gift-${keys++}`,
    kind: 'gift',
    entries: [
      { account: wallet, direction: 'debit', amount },
      { account: creator, direction: 'credit', amount: amount / 2n },
      { account: platform.commission, direction: 'credit', amount: amount - amount / 2n },
    ],
  })

describe('batches planned on expectations', () => {
  it('writes a batch in one statement when the rows are as expected', async () => {
    await fund(first, 1_000n)
    const before = { ...first.expectations }
    const { transaction } = await gift(first, 100n)
    expect(first.expectations.held - before.held).toBe(1)
    expect(first.expectations.stale - before.stale).toBe(0)
    expect(transaction.entries.map((e) => e.balanceAfter)).toEqual([
      900n,
      50n,
      (await first.balance(platform.commission)).balance,
    ])
    expect(transaction.entries.every((e) => e.id > 0n)).toBe(true)
  })

  it('plans again under the locks when another engine moved the accounts', async () => {
    await gift(second, 100n) // second's expectations: fresh; first's: stale now
    const before = { ...first.expectations }
    const { transaction } = await gift(first, 300n)
    expect(first.expectations.stale - before.stale).toBe(1)
    expect(transaction.entries[0]?.balanceAfter).toBe(500n) // 1,000 − 100 − 100 − 300
    expect(transaction.entries[0]?.accountSeq).toBe(4n)
    // The accounts the other engine moved are planned under the locks for a
    // while (contendedAccountMs), then on the expectations again.
    const after = { ...first.expectations }
    await gift(first, 50n)
    expect(first.expectations).toEqual(after)
    await new Promise((resolve) => setTimeout(resolve, 250))
    await gift(first, 50n)
    expect(first.expectations.held - after.held).toBe(1)
    expect(first.expectations.stale - after.stale).toBe(0)
    expect((await first.balance(wallet)).balance).toBe(400n)
  })

  it('refuses an overdraft that only the locked rows reveal', async () => {
    // first expects 400 coins; second spends 300 of them meanwhile.
    await gift(second, 300n)
    const attempt = gift(first, 200n)
    await expect(attempt).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' })
    expect((await first.balance(wallet)).balance).toBe(100n)
    const report = await first.checkIntegrity()
    expect(report.problems).toEqual([])
  })

  it('reads afresh an account a hold moved, rather than finding it stale', async () => {
    const ledger = new Ledger(t.database, { concurrency: 1 })
    await fund(ledger, 1_000n)
    await gift(ledger, 10n)
    const before = { ...ledger.expectations }
    const { hold } = await ledger.hold({
      idempotencyKey: `hold-${keys++}`,
      kind: 'payout',
      account: wallet,
      counterAccount: platform.coinsIssued,
      amount: 100n,
      expiresAt: new Date(Date.now() + 60_000),
    })
    await gift(ledger, 10n)
    await ledger.voidHold(hold.id)
    await gift(ledger, 10n)
    expect(ledger.expectations.stale - before.stale).toBe(0)
    expect(ledger.expectations.held - before.held).toBe(2)
  })

  it('expects what an earlier batch in flight will leave (two at once)', async () => {
    const ledger = new Ledger(t.database, { concurrency: 2, batchSizeMax: 1 })
    await fund(ledger, 10_000n)
    const before = { ...ledger.expectations }
    const results = await Promise.all(Array.from({ length: 20 }, () => gift(ledger, 10n)))
    const balances = results
      .map((r) => r.transaction.entries[0]?.balanceAfter as bigint)
      .sort((a, b) => Number(b - a))
    const start = (await ledger.balance(wallet)).balance + 200n
    expect(balances).toEqual(Array.from({ length: 20 }, (_, i) => start - 10n * BigInt(i + 1)))
    expect(ledger.expectations.stale - before.stale).toBe(0)
  })
})

describe.skipIf(!onPostgres)('the one-round-trip transaction (PostgreSQL)', () => {
  it('is not used with a pool of one connection (it would keep the only one)', async () => {
    const single = await openDatabase({ ...t.config, poolMax: 1 } as typeof t.config)
    try {
      expect(single.oneTrip).toBeUndefined()
      const ledger = new Ledger(single, { concurrency: 2 })
      const results = await Promise.all([fund(ledger, 30n), gift(ledger, 10n), gift(ledger, 10n)])
      expect(results.every((r) => !r.replayed)).toBe(true)
    } finally {
      await single.close()
    }
  })

  it('falls back to the usual way when the trip fails, and leaves no transaction open', async () => {
    const db = t.database.db
    const ledger = new Ledger(t.database, { concurrency: 1 })
    await fund(ledger, 500n) // expectations for the wallet and the creator's accounts
    await gift(ledger, 10n)
    const balance = (await ledger.balance(wallet)).balance
    // Fails the next INSERT of entries once, as a serialization failure
    // would; a sequence counts the attempts, whatever rolls back.
    await db.execute(sql`create sequence fast_path_attempts`)
    await db.execute(sql`
      create function fast_path_fail_once() returns trigger language plpgsql as $$
      begin
        if nextval('fast_path_attempts') = 1 then
          raise exception 'injected failure' using errcode = '40001';
        end if;
        return null;
      end $$`)
    await db.execute(sql`
      create trigger fast_path_fail_once before insert on ledger_entries
        for each statement execute function fast_path_fail_once()`)
    try {
      const before = { ...ledger.expectations }
      const { transaction, replayed } = await gift(ledger, 100n)
      expect(replayed).toBe(false)
      expect(transaction.entries[0]?.balanceAfter).toBe(balance - 100n)
      // The trip failed (attempt 1); the usual way, planned under the locks, wrote the batch.
      const [attempts] = rowsOf<{ n: string }>(
        await db.execute(sql`select last_value::text as n from fast_path_attempts`),
      )
      expect(Number(attempts?.n)).toBeGreaterThanOrEqual(2)
      expect(ledger.expectations).toEqual(before)
      // No pooled connection was left inside a transaction.
      const [open] = rowsOf<{ n: number }>(
        await db.execute(sql`
          select count(*)::int as n from pg_stat_activity
           where datname = current_database() and state like 'idle in transaction%'`),
      )
      expect(open?.n).toBe(0)
      // The accounts are read afresh: the next batch is written on expectations again.
      await gift(ledger, 100n)
      expect(ledger.expectations.held - before.held).toBe(1)
      expect((await ledger.balance(wallet)).balance).toBe(balance - 200n)
    } finally {
      await db.execute(sql`drop trigger fast_path_fail_once on ledger_entries`)
      await db.execute(sql`drop function fast_path_fail_once()`)
      await db.execute(sql`drop sequence fast_path_attempts`)
    }
  })
})
