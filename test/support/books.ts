import { trialBalanceIn } from '../../src/audit/trial-balance.js'
import type { Db } from '../../src/db/client.js'
import { checkIntegrity } from '../../src/ledger/integrity.js'

// The global after-check: every test database, when its suite is done with
// it, must hold books that balance — the trial balance per unit (debits equal
// credits) and the engine's integrity check (every cached balance against its
// entries, every transaction balanced, the balance-after chains). One
// repeatable-read snapshot, a handful of set-based scans of a small database.
//
// A suite that leaves its books broken on purpose opts out with
// `booksCheck: false` (createTestDatabase, startTestApp).

export class BooksDoNotBalanceError extends Error {
  override readonly name = 'BooksDoNotBalanceError'
}

export async function assertBooksBalance(db: Db): Promise<void> {
  const problems = await db.transaction(
    async (tx) => {
      const found: string[] = []
      const { totals } = await trialBalanceIn(tx, null, { lines: false })
      for (const t of totals) {
        if (t.debits !== t.credits) {
          found.push(`trial balance: in ${t.currency}, debits ${t.debits} and credits ${t.credits}`)
        }
      }
      const integrity = await checkIntegrity(tx)
      for (const p of integrity.problems) found.push(`integrity: ${p.kind}: ${p.message}`)
      return found
    },
    { isolationLevel: 'repeatable read', accessMode: 'read only' },
  )
  if (problems.length > 0) {
    throw new BooksDoNotBalanceError(
      `the books do not balance after this suite (global after-check):\n  ${problems.slice(0, 20).join('\n  ')}`,
    )
  }
}
