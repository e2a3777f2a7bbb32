import { randomBytes } from 'node:crypto'
import type { Logger as DrizzleLogger } from 'drizzle-orm/logger'
import postgres from 'postgres'
import { type Database, type DatabaseConfig, openDatabase } from '../../src/db/client.js'
import { migrateDatabase } from '../../src/db/migrate.js'

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
  drop(): Promise<void>
}

export async function createTestDatabase(
  options: { poolMax?: number; logger?: DrizzleLogger } = {},
): Promise<TestDatabase> {
  if (!testDatabaseUrl) {
    const config: DatabaseConfig = { kind: 'pglite', dir: 'memory://' }
    const database = await openDatabase(config, { logger: options.logger })
    await migrateDatabase(config, database)
    return { database, config, drop: () => database.close() }
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
    async drop() {
      await database.close()
      await admin.unsafe(`drop database if exists ${name} with (force)`)
      await admin.end()
    },
  }
}
