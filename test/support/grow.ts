import postgres from 'postgres'

// Shows the planner large tables, cheaply: rows inserted by a statement
// that fails on its last row stay in the table's pages and indexes (dead,
// until a vacuum). With no statistics (no ANALYZE yet: autovacuum off or
// behind, or PGlite, which has none), the planner sizes a table by its pages
// and guesses the rest, as it did on the benchmark's grown ledger
// (test/ledger/plans.test.ts).

export interface Growth {
  /** An INSERT … SELECT … FROM generate_series(1, n) g whose last row breaks a constraint. */
  insert: string
  /** The error the last row raises (nothing else may fail it). */
  error: RegExp
}

export async function growForPlanner(url: string, growths: Growth[]): Promise<void> {
  const client = postgres(url, { max: 1, onnotice: () => {} })
  try {
    for (const { insert, error } of growths) {
      const failed = await client.unsafe(insert).then(
        () => undefined,
        (e: Error) => e,
      )
      if (!failed || !error.test(failed.message))
        throw new Error(
          `growForPlanner: expected ${error} from ${insert.trim().split('\n')[0]}, got ${failed}`,
        )
    }
  } finally {
    await client.end()
  }
}

/** The database URL of the server's database `name` (on the server of `url`). */
export function databaseUrl(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}
