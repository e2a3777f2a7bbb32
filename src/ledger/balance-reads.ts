import { eq, sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { ledgerAccounts } from '../db/schema.js'

// Balance reads asked for together go to the database together: the reads of
// one turn of the event loop (the requests released in a turn, src/http/turns.ts,
// ask for their wallets at about the same moment) are one statement, each
// caller getting its own account's row.
//
// A read never joins a statement already sent: it goes in the next one, so
// that it sees every commit that finished before it was asked for (a client
// reads its balance after its gift's answer, and gets the debit).

export interface BalanceRow {
  balance: bigint
  heldAmount: bigint
  debitsTotal: bigint
  creditsTotal: bigint
  lastSeq: bigint
}

interface Waiting {
  resolve: (row: BalanceRow | undefined) => void
  reject: (error: unknown) => void
}

export class BalanceReads {
  /** The reads asked for since the last statement was sent, by account id. */
  private gathering: Map<bigint, Waiting[]> | null = null
  /** Statements sent, and accounts read (for tests and metrics). */
  readonly counts = { statements: 0, reads: 0 }

  private readonly one
  private readonly many

  constructor(db: Db) {
    const columns = {
      id: ledgerAccounts.id,
      balance: ledgerAccounts.balance,
      heldAmount: ledgerAccounts.heldAmount,
      debitsTotal: ledgerAccounts.debitsTotal,
      creditsTotal: ledgerAccounts.creditsTotal,
      lastSeq: ledgerAccounts.lastSeq,
    }
    this.one = db
      .select(columns)
      .from(ledgerAccounts)
      .where(eq(ledgerAccounts.id, sql.placeholder('id')))
      .prepare('ledger_balance_by_id')
    this.many = db
      .select(columns)
      .from(ledgerAccounts)
      .where(sql`${ledgerAccounts.id} = any(${sql.placeholder('ids')}::bigint[])`)
      .prepare('ledger_balances_by_ids')
  }

  /** The account's row as committed when the read is sent; undefined: no such account. */
  read(id: bigint): Promise<BalanceRow | undefined> {
    return new Promise((resolve, reject) => {
      if (this.gathering === null) {
        this.gathering = new Map()
        // After the running callbacks and their promise jobs: the turn's other reads join.
        process.nextTick(() => void this.send())
      }
      const waiting = this.gathering.get(id)
      if (waiting) waiting.push({ resolve, reject })
      else this.gathering.set(id, [{ resolve, reject }])
    })
  }

  private async send(): Promise<void> {
    const batch = this.gathering as Map<bigint, Waiting[]>
    this.gathering = null
    this.counts.statements++
    this.counts.reads += batch.size
    try {
      const ids = [...batch.keys()]
      const rows =
        ids.length === 1
          ? await this.one.execute({ id: ids[0] })
          : await this.many.execute({ ids: `{${ids.join(',')}}` })
      const byId = new Map(rows.map((r) => [r.id, r]))
      for (const [id, waiting] of batch) {
        const row = byId.get(id)
        for (const w of waiting) w.resolve(row)
      }
    } catch (error) {
      for (const waiting of batch.values()) for (const w of waiting) w.reject(error)
    }
  }
}
