import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import postgres from 'postgres'
import type { Database, DatabaseConfig } from './client.js'
import { rowsOf } from './rows.js'

export const migrationsFolder = fileURLToPath(new URL('../../migrations', import.meta.url))

// Drizzle runs pending migrations in one transaction but takes no lock, so
// instances starting together would race. A session-level advisory lock on a
// dedicated connection makes them take turns; the later ones find nothing to do.
const MIGRATION_LOCK_KEY = 0x6769_6674 // "gift"

export async function migrateDatabase(config: DatabaseConfig, database: Database): Promise<void> {
  if (config.kind === 'pglite') {
    // One process owns a PGlite directory; nothing to race with.
    // biome-ignore lint/suspicious/noExplicitAny: the PGlite migrator wants its own driver's type
    await migratePglite(database.db as any, { migrationsFolder })
    return
  }
  const client = postgres(config.url, { max: 1, onnotice: () => {}, connect_timeout: 10 })
  try {
    const db = drizzlePostgres({ client })
    await db.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`)
    try {
      await migratePostgres(db, { migrationsFolder })
    } finally {
      await db.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`)
    }
  } finally {
    await client.end({ timeout: 5 })
  }
}

/** Readiness: the database answers and every migration in migrations/ is applied. */
export async function migrationsApplied(database: Database): Promise<boolean> {
  try {
    const { readMigrationFiles } = await import('drizzle-orm/migrator')
    const expected = readMigrationFiles({ migrationsFolder }).length
    const result = await database.db.execute(sql`select count(*) as n from drizzle.__drizzle_migrations`)
    return Number(rowsOf<{ n: string | number }>(result)[0]?.n ?? 0) >= expected
  } catch {
    return false
  }
}
