import { randomBytes } from 'node:crypto'
import type { Logger as DrizzleLogger } from 'drizzle-orm/logger'
import postgres from 'postgres'
import { type Database, type DatabaseConfig, openDatabase } from '../../src/db/client.js'
import { migrateDatabase } from '../../src/db/migrate.js'
import { assertBooksBalance } from './books.js'

// One database per test file: a PGlite in memory by default, or, when
// TEST_DATABASE_URL points at a PostgreSQL server, a fresh database created
// on that server (and dropped afterwards).

export const testDatabaseUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL || undefined
export const onPostgres = testDatabaseUrl !== undefined

export interface TestDatabase {
  database: Database
  config: DatabaseConfig
  /** The PostgreSQL URL of this database (PostgreSQL only). */
  url?: string
  /** Runs the global after-check (the books balance: see books.ts), then closes and drops the database. */
  drop(): Promise<void>
}

export interface TestDatabaseOptions {
  poolMax?: number
  logger?: DrizzleLogger
  /**
   * The global after-check on drop: the trial balance balances per unit and
   * the ledger's integrity check is clean, or drop() throws (after dropping)
   * and the suite fails. Default true; false only for a suite that leaves its
   * books broken on purpose.
   */
  booksCheck?: boolean
}

/** The after-check, then the cleanup whatever it found; its failure is thrown last. */
async function checkedDrop(database: Database, booksCheck: boolean, cleanup: () => Promise<void>) {
  let failure: unknown
  if (booksCheck) {
    try {
      await assertBooksBalance(database.db)
    } catch (error) {
      failure = error
    }
  }
  await cleanup()
  if (failure !== undefined) throw failure
}

export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const booksCheck = options.booksCheck ?? true
  if (!testDatabaseUrl) {
    const config: DatabaseConfig = { kind: 'pglite', dir: 'memory://' }
    const database = await openDatabase(config, { logger: options.logger })
    await migrateDatabase(config, database)
    return { database, config, drop: () => checkedDrop(database, booksCheck, () => database.close()) }
  }
  const name = `gl_t_${randomBytes(6).toString('hex')}`
  const admin = postgres(testDatabaseUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  const url = new URL(testDatabaseUrl)
  url.pathname = `/${name}`
  const config: DatabaseConfig = { kind: 'postgres', url: url.toString(), poolMax: options.poolMax ?? 10 }
  const database = await openDatabase(config, { logger: options.logger })
  await migrateDatabase(config, database)
  return {
    database,
    config,
    url: url.toString(),
    drop: () =>
      checkedDrop(database, booksCheck, async () => {
        await database.close()
        await admin.unsafe(`drop database if exists ${name} with (force)`)
        await admin.end()
      }),
  }
}
