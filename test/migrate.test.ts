import { sql } from 'drizzle-orm'
import postgres from 'postgres'
import { describe, expect, it } from 'vitest'
import { openDatabase } from '../src/db/client.js'
import { migrateDatabase, migrationsApplied } from '../src/db/migrate.js'
import { rowsOf } from '../src/db/rows.js'
import { onPostgres, testDatabaseUrl } from './support/db.js'

describe.skipIf(!onPostgres)('migrations (PostgreSQL)', () => {
  it('apply once when several instances start at the same time', async () => {
    const name = `gl_t_migrate_${Date.now()}`
    const admin = postgres(testDatabaseUrl as string, { max: 1, onnotice: () => {} })
    await admin.unsafe(`create database ${name}`)
    const url = new URL(testDatabaseUrl as string)
    url.pathname = `/${name}`
    const config = { kind: 'postgres', url: url.toString(), poolMax: 2 } as const
    const instances = await Promise.all(Array.from({ length: 4 }, () => openDatabase(config)))
    try {
      await Promise.all(instances.map((database) => migrateDatabase(config, database)))
      const first = instances[0] as (typeof instances)[number]
      expect(await migrationsApplied(first)).toBe(true)
      const applied = rowsOf<{ n: string }>(
        await first.db.execute(sql`select count(*)::text as n from drizzle.__drizzle_migrations`),
      )
      const accounts = rowsOf<{ n: string }>(
        await first.db.execute(
          sql`select count(*)::text as n from ledger_accounts where code like 'platform:%'`,
        ),
      )
      expect(Number(applied[0]?.n)).toBeGreaterThanOrEqual(3)
      expect(accounts[0]?.n).toBe('18') // 4 coin accounts + 7 per currency × 2 currencies
    } finally {
      await Promise.all(instances.map((d) => d.close()))
      await admin.unsafe(`drop database if exists ${name} with (force)`)
      await admin.end()
    }
  })
})
