import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../../src/db/rows.js'
import { creatorEarnings, Ledger, platform, userWallet } from '../../src/ledger/index.js'
import { sqlState } from '../../src/ledger/tx.js'
import { createTestDatabase, type TestDatabase } from '../support/db.js'

// The guarantees hold in the database itself: each test tries to break the
// books with raw SQL, as a buggy migration or a psql session could, and
// asserts that the database refuses and that nothing changed.

let t: TestDatabase
let ledger: Ledger
let walletId: bigint
let earningsId: bigint
let commissionId: bigint
let giftId: bigint

const alice = userWallet('00000000-0000-4000-8000-0000000000a1')
const bob = creatorEarnings('00000000-0000-4000-8000-0000000000b1')

beforeAll(async () => {
  t = await createTestDatabase()
  ledger = new Ledger(t.database, { concurrency: 1 })
  await ledger.post({
    idempotencyKey: 'fund',
    kind: 'recharge',
    entries: [
      { account: platform.coinsIssued, direction: 'debit', amount: 100n },
      { account: alice, direction: 'credit', amount: 100n },
    ],
  })
  const gift = await ledger.post({
    idempotencyKey: 'gift',
    kind: 'gift',
    entries: [
      { account: alice, direction: 'debit', amount: 10n },
      { account: bob, direction: 'credit', amount: 5n },
      { account: platform.commission, direction: 'credit', amount: 5n },
    ],
  })
  giftId = gift.transaction.id
  walletId = (await ledger.balance(alice)).account.id
  earningsId = (await ledger.balance(bob)).account.id
  commissionId = (await ledger.balance(platform.commission)).account.id
})
afterAll(() => t.drop())

/** Runs raw SQL statements in one database transaction; resolves to the SQLSTATE it failed with. */
async function refusal(...statements: string[]): Promise<string | undefined> {
  try {
    await t.database.db.transaction(async (tx) => {
      for (const statement of statements) await tx.execute(sql.raw(statement))
    })
    return undefined
  } catch (error) {
    return sqlState(error)
  }
}

async function snapshot() {
  const rows = await t.database.db.execute(
    sql`select (select count(*) from ledger_transactions)::text as transactions,
               (select count(*) from ledger_entries)::text as entries,
               (select string_agg(code || '=' || balance || '/' || last_seq || '/' || held_amount, ',' order by id)
                  from ledger_accounts) as accounts,
               (select string_agg(id || ':' || amount || ':' || balance_after, ',' order by id) from ledger_entries) as lines`,
  )
  return rowsOf<Record<string, string>>(rows)[0]
}

/**
 * A raw posting of `amount` from the wallet to the creator, chained correctly,
 * at the next sequences. The database brings the accounts' cached balances up
 * to date itself; `writeAccounts` also updates them by hand, as a session
 * that does not know that would (counting the entries twice in the totals).
 */
function rawGift(
  amount: number,
  opts: { creditAmount?: number; balanceAfterDelta?: number; writeAccounts?: boolean } = {},
): string[] {
  const credit = opts.creditAmount ?? amount
  const statements = [
    `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at)
       values ('raw-${Math.random()}', 'x', 'gift', now())`,
    `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
       select currval('ledger_transactions_id_seq'), a.id, 'debit'::entry_direction, ${amount}, 'COIN', a.last_seq + 1,
              a.balance - ${amount} + ${opts.balanceAfterDelta ?? 0}, now()
         from ledger_accounts a where a.id = ${walletId}
       union all
       select currval('ledger_transactions_id_seq'), a.id, 'credit'::entry_direction, ${credit}, 'COIN', a.last_seq + 1, a.balance + ${credit}, now()
         from ledger_accounts a where a.id = ${earningsId}`,
  ]
  if (opts.writeAccounts) {
    statements.push(`update ledger_accounts a set balance = e.balance_after, last_seq = e.account_seq,
            debits_total = a.debits_total + case when e.direction = 'debit' then e.amount else 0 end,
            credits_total = a.credits_total + case when e.direction = 'credit' then e.amount else 0 end
       from ledger_entries e
      where e.transaction_id = currval('ledger_transactions_id_seq') and e.account_id = a.id`)
  }
  return statements
}

describe('database guards', () => {
  it('accepts a correct raw posting, and brings the accounts up to date itself', async () => {
    const before = await ledger.balance(alice)
    expect(await refusal(...rawGift(1))).toBeUndefined()
    const after = await ledger.balance(alice)
    expect(after.balance).toBe(before.balance - 1n)
    expect(after.account.id).toBe(walletId)
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('refuses to update or delete posted entries and transactions', async () => {
    const before = await snapshot()
    expect(
      await refusal(`update ledger_entries set amount = amount + 1 where transaction_id = ${giftId}`),
    ).toBe('LG001')
    expect(await refusal(`delete from ledger_entries where transaction_id = ${giftId}`)).toBe('LG001')
    expect(await refusal(`update ledger_transactions set description = 'edited' where id = ${giftId}`)).toBe(
      'LG001',
    )
    expect(await refusal(`delete from ledger_transactions where id = ${giftId}`)).toBe('LG001')
    expect(await refusal('truncate ledger_entries, ledger_transactions cascade')).toBe('LG001')
    expect(await refusal(`delete from ledger_accounts where id = ${walletId}`)).toBe('LG001')
    expect(await refusal(`update ledger_accounts set unit = 'USD' where id = ${walletId}`)).toBe('LG001')
    expect(await refusal(`update ledger_accounts set allow_negative = true where id = ${walletId}`)).toBe(
      'LG001',
    )
    expect(await snapshot()).toEqual(before)
  })

  it('refuses a transaction that does not balance, or has a single entry', async () => {
    const before = await snapshot()
    expect(await refusal(...rawGift(3, { creditAmount: 2 }))).toBe('LG002')
    expect(
      await refusal(
        `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at) values ('lonely', 'x', 'gift', now())`,
      ),
    ).toBe('LG002')
    expect(await snapshot()).toEqual(before)
  })

  it('refuses a statement whose entries of a transaction do not balance, whatever the constraint mode', async () => {
    const before = await snapshot()
    const transaction = `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at)
       values ('halves-${Math.random()}', 'x', 'gift', now())`
    const entry = (direction: 'debit' | 'credit', amount: number) =>
      `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
       select currval('ledger_transactions_id_seq'), a.id, '${direction}', ${amount}, 'COIN', a.last_seq + 1,
              a.balance ${direction === 'debit' ? '-' : '+'} ${amount}, now()
         from ledger_accounts a where a.id = ${direction === 'debit' ? walletId : earningsId}`
    // Two halves that would balance together: each statement must balance on its own.
    expect(await refusal(transaction, entry('debit', 2), entry('credit', 2))).toBe('LG002')
    // Checked at the end of each statement once constraints are immediate: a
    // balanced posting, then an entry added to it by a later statement. The
    // check at commit ran for that transaction already and never runs again;
    // before the entries' trigger refused this, the transaction committed
    // unbalanced.
    expect(
      await refusal(
        'set constraints all immediate',
        ...rawGift(1).slice(0, 1),
        rawGift(1)[1] as string,
        entry('credit', 1),
      ),
    ).toBe('LG002')
    expect(await snapshot()).toEqual(before)
    // A transaction's entries may come in several statements, each balanced.
    expect(await refusal(transaction, rawGift(1)[1] as string, rawGift(2)[1] as string)).toBeUndefined()
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })

  it('refuses a transaction without entries, wherever it sits among postings of its database transaction', async () => {
    const before = await snapshot()
    const lonely = (key: string) =>
      `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at) values ('${key}-${Math.random()}', 'x', 'gift', now())`
    // After a posting: the check at commit reads on from the first transaction it has not seen.
    expect(await refusal(...rawGift(1), lonely('after'))).toBe('LG002')
    // Before one.
    expect(await refusal(lonely('before'), ...rawGift(1))).toBe('LG002')
    // Between two postings of one database transaction.
    expect(await refusal(...rawGift(1), lonely('between'), ...rawGift(1))).toBe('LG002')
    // After a posting rolled back to a savepoint.
    expect(
      await refusal('savepoint s', ...rawGift(1), 'rollback to savepoint s', lonely('after-rollback')),
    ).toBe('LG002')
    expect(await snapshot()).toEqual(before)
  })

  it('refuses transaction ids not drawn from the sequence, which the check at commit relies on', async () => {
    const before = await snapshot()
    // The check at commit starts from the first transaction that fires it and
    // covers the ids after it. A balanced transaction under an explicit high
    // id, then one drawn from the sequence (a lower id) with no entries: were
    // explicit ids allowed, the second would never be checked. (The nextval
    // only makes currval defined in this session, whichever connection it is.)
    expect(
      await refusal(
        `select nextval('ledger_transactions_id_seq')`,
        `insert into ledger_transactions (id, idempotency_key, request_hash, kind, posted_at) overriding system value
           values (currval('ledger_transactions_id_seq') + 1000, 'explicit-high', 'x', 'gift', now())`,
        `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
         select t.id, a.id, case when a.id = ${walletId} then 'debit' else 'credit' end::entry_direction, 1, 'COIN',
                a.last_seq + 1, a.balance + case when a.id = ${walletId} then -1 else 1 end, t.posted_at
           from ledger_transactions t, ledger_accounts a
          where t.idempotency_key = 'explicit-high' and a.id in (${walletId}, ${earningsId})`,
        `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at) values ('lonely-low', 'x', 'gift', now())`,
      ),
    ).toBe('LG001')
    expect(await snapshot()).toEqual(before)
  })

  it('refuses to take a non-negative account below zero', async () => {
    const before = await snapshot()
    const { balance } = await ledger.balance(alice)
    expect(await refusal(...rawGift(Number(balance) + 1))).toBe('LG004')
    expect(
      await refusal(`update ledger_accounts set held_amount = balance + 1 where id = ${walletId}`),
    ).not.toBeUndefined()
    expect(await snapshot()).toEqual(before)
  })

  it('refuses balances that do not follow the entries', async () => {
    const before = await snapshot()
    // A cached balance edited by hand.
    expect(await refusal(`update ledger_accounts set balance = balance + 1000 where id = ${walletId}`)).toBe(
      'LG003',
    )
    expect(
      await refusal(`update ledger_accounts set debits_total = debits_total + 1 where id = ${commissionId}`),
    ).toBe('LG003')
    // An entry whose balance_after does not continue the chain.
    expect(await refusal(...rawGift(1, { balanceAfterDelta: 1 }))).toBe('LG003')
    // A correct posting whose session also writes the cached balances and totals.
    expect(await refusal(...rawGift(1, { writeAccounts: true }))).toBe('LG003')
    // Entries on an account or in a transaction that does not exist (no foreign keys: the trigger checks).
    expect(
      await refusal(
        `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at) values ('ghost', 'x', 'gift', now())`,
        `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
         select currval('ledger_transactions_id_seq'), 999999, 'debit'::entry_direction, 1, 'COIN', 1, -1, t.posted_at
           from ledger_transactions t where t.id = currval('ledger_transactions_id_seq')
         union all
         select currval('ledger_transactions_id_seq'), a.id, 'credit'::entry_direction, 1, 'COIN', a.last_seq + 1, a.balance + 1, t.posted_at
           from ledger_accounts a, ledger_transactions t
          where a.id = ${earningsId} and t.id = currval('ledger_transactions_id_seq')`,
      ),
    ).toBe('LG003')
    expect(
      await refusal(
        `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
         select 999999, a.id, 'credit', 1, 'COIN', a.last_seq + 1, a.balance + 1, now()
           from ledger_accounts a where a.id = ${earningsId}`,
      ),
    ).toBe('LG003')
    // Entries that skip a sequence number.
    expect(
      await refusal(
        `insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at) values ('gap', 'x', 'gift', now())`,
        `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
         select currval('ledger_transactions_id_seq'), a.id,
                case when a.id = ${walletId} then 'debit' else 'credit' end::entry_direction, 1, 'COIN',
                a.last_seq + case when a.id = ${walletId} then 1 else 2 end,
                a.balance + case when a.id = ${walletId} then -1 else 1 end, t.posted_at
           from ledger_accounts a, ledger_transactions t
          where a.id in (${walletId}, ${earningsId}) and t.id = currval('ledger_transactions_id_seq')`,
      ),
    ).toBe('LG003')
    expect(await snapshot()).toEqual(before)
  })

  it('refuses entries added later to a posted transaction', async () => {
    const before = await snapshot()
    expect(
      await refusal(
        `insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
         select ${giftId}, a.id, 'credit', 1, 'COIN', a.last_seq + 1, a.balance + 1,
                (select posted_at from ledger_transactions where id = ${giftId})
           from ledger_accounts a where a.id = ${earningsId}`,
      ),
    ).toBe('LG005')
    expect(await snapshot()).toEqual(before)
  })

  it('lets a hold move only once, and only from pending', async () => {
    const { hold } = await ledger.hold({
      idempotencyKey: 'guard-hold',
      kind: 'payout',
      account: alice,
      counterAccount: platform.coinsIssued,
      amount: 5n,
      expiresAt: new Date(Date.now() + 60_000),
    })
    await ledger.voidHold(hold.id)
    const before = await snapshot()
    expect(await refusal(`update ledger_holds set status = 'pending' where id = ${hold.id}`)).toBe('LG001')
    expect(await refusal(`update ledger_holds set amount = 1 where id = ${hold.id}`)).toBe('LG001')
    expect(await refusal(`delete from ledger_holds where id = ${hold.id}`)).toBe('LG001')
    expect(await snapshot()).toEqual(before)
    expect((await ledger.checkIntegrity()).problems).toEqual([])
  })
})
