import { sql } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'

// Recomputes the books from the entries, the only truth, and reports every
// difference: cached balances and totals, the balance-after chain, unbalanced
// transactions, units, holds, forbidden negatives, and the per-unit zero sum.
// Read-only, set-based: a handful of scans, whatever the size of the ledger.

export type IntegrityProblemKind =
  | 'ACCOUNT_BALANCE_MISMATCH'
  | 'ACCOUNT_TOTALS_MISMATCH'
  | 'ACCOUNT_SEQUENCE_MISMATCH'
  | 'BALANCE_CHAIN_BROKEN'
  | 'TRANSACTION_UNBALANCED'
  | 'TRANSACTION_TOO_FEW_ENTRIES'
  | 'ENTRY_UNIT_MISMATCH'
  | 'ENTRY_TIME_MISMATCH'
  | 'HELD_AMOUNT_MISMATCH'
  | 'FORBIDDEN_NEGATIVE'
  | 'UNIT_DOES_NOT_SUM_TO_ZERO'

export interface IntegrityProblem {
  kind: IntegrityProblemKind
  message: string
  transactionId: bigint | null
  accountId: bigint | null
}

export interface IntegrityReport {
  ok: boolean
  checkedTransactions: number
  checkedAccounts: number
  problems: IntegrityProblem[]
}

/** Problems listed per check at most; a broken ledger is reported, not dumped. */
const PROBLEMS_PER_CHECK_MAX = 100

interface Row {
  kind: IntegrityProblemKind
  message: string
  transaction_id: string | null
  account_id: string | null
}

const checks = [
  sql`
  with sums as (
    select e.account_id,
           count(*) as n, max(e.account_seq) as max_seq,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) as debits,
           coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as credits
      from ledger_entries e group by e.account_id
  ), joined as (
    select a.*, coalesce(s.n, 0) as n, coalesce(s.max_seq, 0) as max_seq,
           coalesce(s.debits, 0) as debits, coalesce(s.credits, 0) as credits,
           case when a.type in ('asset', 'expense') then coalesce(s.debits, 0) - coalesce(s.credits, 0)
                else coalesce(s.credits, 0) - coalesce(s.debits, 0) end as expected
      from ledger_accounts a left join sums s on s.account_id = a.id
  )
  select * from (
    select 'ACCOUNT_BALANCE_MISMATCH' as kind,
           format('account %s: balance %s, its entries sum to %s', code, balance, expected) as message,
           null::text as transaction_id, id::text as account_id
      from joined where balance <> expected
    union all
    select 'ACCOUNT_TOTALS_MISMATCH',
           format('account %s: totals %s/%s, its entries %s/%s', code, debits_total, credits_total, debits, credits),
           null, id::text
      from joined where debits_total <> debits or credits_total <> credits
    union all
    select 'ACCOUNT_SEQUENCE_MISMATCH',
           format('account %s: last_seq %s, %s entries up to sequence %s', code, last_seq, n, max_seq), null, id::text
      from joined where last_seq <> n or last_seq <> max_seq
  ) p limit ${PROBLEMS_PER_CHECK_MAX}`,
  sql`
  select 'BALANCE_CHAIN_BROKEN' as kind,
         format('entry %s (account %s, sequence %s): balance_after %s, running sum %s', id, account_id, account_seq, balance_after, running) as message,
         transaction_id::text, account_id::text
    from (
      select e.id, e.transaction_id, e.account_id, e.account_seq, e.balance_after,
             row_number() over w as position,
             sum(case when (a.type in ('asset', 'expense')) = (e.direction = 'debit') then e.amount else -e.amount end) over w as running
        from ledger_entries e join ledger_accounts a on a.id = e.account_id
      window w as (partition by e.account_id order by e.account_seq)
    ) x
   where balance_after <> running or account_seq <> position
   limit ${PROBLEMS_PER_CHECK_MAX}`,
  sql`
  select * from (
    select 'TRANSACTION_UNBALANCED' as kind,
           format('transaction %s: in %s, debits %s and credits %s', transaction_id, unit, debits, credits) as message,
           transaction_id::text, null::text as account_id
      from (select transaction_id, unit,
                   coalesce(sum(amount) filter (where direction = 'debit'), 0) as debits,
                   coalesce(sum(amount) filter (where direction = 'credit'), 0) as credits
              from ledger_entries group by transaction_id, unit) s
     where debits <> credits
    union all
    select 'TRANSACTION_TOO_FEW_ENTRIES', format('transaction %s has %s entries', t.id, count(e.id)), t.id::text, null
      from ledger_transactions t left join ledger_entries e on e.transaction_id = t.id
     group by t.id having count(e.id) < 2
  ) p limit ${PROBLEMS_PER_CHECK_MAX}`,
  sql`
  select * from (
    select 'ENTRY_UNIT_MISMATCH' as kind,
           format('entry %s is in %s, its account %s in %s', e.id, e.unit, a.code, a.unit) as message,
           e.transaction_id::text, a.id::text as account_id
      from ledger_entries e join ledger_accounts a on a.id = e.account_id where e.unit <> a.unit
    union all
    select 'ENTRY_TIME_MISMATCH', format('entry %s posted at %s, its transaction at %s', e.id, e.posted_at, t.posted_at),
           t.id::text, e.account_id::text
      from ledger_entries e join ledger_transactions t on t.id = e.transaction_id where e.posted_at <> t.posted_at
  ) p limit ${PROBLEMS_PER_CHECK_MAX}`,
  sql`
  select * from (
    select 'HELD_AMOUNT_MISMATCH' as kind,
           format('account %s holds %s, its pending holds sum to %s', a.code, a.held_amount, coalesce(h.held, 0)) as message,
           null::text as transaction_id, a.id::text as account_id
      from ledger_accounts a
      left join (select account_id, sum(amount) as held from ledger_holds where status = 'pending' group by account_id) h
        on h.account_id = a.id
     where a.held_amount <> coalesce(h.held, 0)
    union all
    select 'FORBIDDEN_NEGATIVE', format('account %s may not go negative; balance %s, held %s', code, balance, held_amount),
           null, id::text
      from ledger_accounts where not allow_negative and (balance < 0 or balance < held_amount)
    union all
    select 'UNIT_DOES_NOT_SUM_TO_ZERO', format('in %s, debits exceed credits by %s', unit, sum(debits_total - credits_total)),
           null, null
      from ledger_accounts group by unit having sum(debits_total - credits_total) <> 0
  ) p limit ${PROBLEMS_PER_CHECK_MAX}`,
]

export async function checkIntegrity(db: DbOrTx): Promise<IntegrityReport> {
  const problems: IntegrityProblem[] = []
  for (const check of checks) {
    for (const row of rowsOf<Row>(await db.execute(check))) {
      problems.push({
        kind: row.kind,
        message: row.message,
        transactionId: row.transaction_id === null ? null : BigInt(row.transaction_id),
        accountId: row.account_id === null ? null : BigInt(row.account_id),
      })
    }
  }
  const counts = rowsOf<{ transactions: string | number; accounts: string | number }>(
    await db.execute(sql`select (select count(*) from ledger_transactions) as transactions,
                                (select count(*) from ledger_accounts) as accounts`),
  )[0]
  return {
    ok: problems.length === 0,
    checkedTransactions: Number(counts?.transactions ?? 0),
    checkedAccounts: Number(counts?.accounts ?? 0),
    problems,
  }
}
