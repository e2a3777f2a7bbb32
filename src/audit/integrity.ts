import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { checkIntegrity, type IntegrityProblemKind } from '../ledger/integrity.js'
import { type SealProblemKind, verifySeals } from './seals.js'

// The auditor's integrity check: the engine's recomputation of the books
// (balances, totals and sequences from the entries, balance-after chains,
// every transaction balanced per unit, units, holds, forbidden negatives,
// per-unit zero sums; set-based, a handful of scans) and the seal chain
// recomputed from the current rows (streamed, one seal's range at a time),
// all on one repeatable-read snapshot.

export type LedgerIntegrityProblemKind = IntegrityProblemKind | SealProblemKind

// Every kind, listed once: a kind added to either union and missing here (or
// listed here and gone) does not compile.
const KINDS: Record<LedgerIntegrityProblemKind, true> = {
  ACCOUNT_BALANCE_MISMATCH: true,
  ACCOUNT_TOTALS_MISMATCH: true,
  ACCOUNT_SEQUENCE_MISMATCH: true,
  BALANCE_CHAIN_BROKEN: true,
  TRANSACTION_UNBALANCED: true,
  TRANSACTION_TOO_FEW_ENTRIES: true,
  ENTRY_UNIT_MISMATCH: true,
  ENTRY_TIME_MISMATCH: true,
  HELD_AMOUNT_MISMATCH: true,
  FORBIDDEN_NEGATIVE: true,
  UNIT_DOES_NOT_SUM_TO_ZERO: true,
  SEAL_CONTENT_MISMATCH: true,
  SEAL_HASH_MISMATCH: true,
  SEAL_CHAIN_BROKEN: true,
  SEAL_RANGE_GAP: true,
}
export const LEDGER_INTEGRITY_PROBLEM_KINDS = Object.keys(KINDS) as LedgerIntegrityProblemKind[]

export interface LedgerIntegrityProblem {
  kind: LedgerIntegrityProblemKind
  message: string
  transactionId: bigint | null
  accountId: bigint | null
}

export interface LedgerIntegrityReport {
  ok: boolean
  checkedTransactions: number
  checkedAccounts: number
  checkedSeals: number
  /** The last transaction id under seal; null before the first seal. */
  sealedThroughTransactionId: bigint | null
  problems: LedgerIntegrityProblem[]
}

/**
 * A whole check takes about a minute on a million transactions (see
 * BENCHMARKS.md); no single statement of it should run past this. Sessions
 * default to 30 s (src/db/client.ts), meant for requests.
 */
const STATEMENT_TIMEOUT = '300s'

export function checkLedgerIntegrity(db: Db): Promise<LedgerIntegrityReport> {
  return db.transaction(
    async (tx) => {
      await tx.execute(sql.raw(`set local statement_timeout = '${STATEMENT_TIMEOUT}'`))
      const books = await checkIntegrity(tx)
      const seals = await verifySeals(tx)
      const problems: LedgerIntegrityProblem[] = [
        ...books.problems,
        ...seals.problems.map((p) => ({ ...p, accountId: null })),
      ]
      return {
        ok: problems.length === 0,
        checkedTransactions: books.checkedTransactions,
        checkedAccounts: books.checkedAccounts,
        checkedSeals: seals.checkedSeals,
        sealedThroughTransactionId: seals.sealedThroughTransactionId,
        problems,
      }
    },
    { isolationLevel: 'repeatable read', accessMode: 'read only' },
  )
}
