import pino from 'pino'
import { seedCatalog } from '../../src/catalog/seed.js'
import { loadConfig } from '../../src/config.js'
import type { Database } from '../../src/db/client.js'
import { buildApp } from '../../src/http/server.js'
import { createServices } from '../../src/services.js'
import { createTestDatabase } from './db.js'
import { QueryLog } from './query-log.js'

export interface TestApp {
  /** http://127.0.0.1:<port>, no trailing slash. */
  url: string
  database: Database
  queries: QueryLog
  stop(): Promise<void>
}

/**
 * The real server on a free port over a fresh, migrated and seeded database:
 * PGlite in memory, or a new database on TEST_DATABASE_URL (see db.ts).
 * One per test file: PGlite takes seconds to start.
 */
export async function startTestApp(options: { seed?: boolean } = {}): Promise<TestApp> {
  const queries = new QueryLog()
  const { database, config: databaseConfig, drop } = await createTestDatabase({ logger: queries })
  try {
    if (options.seed ?? true) await seedCatalog(database.db)
    const config = {
      ...loadConfig({ NODE_ENV: 'test', HOST: '127.0.0.1', PORT: '0', PGLITE_DIR: 'memory://' }),
      database: databaseConfig,
    }
    const logger = pino({ level: process.env.LOG_LEVEL ?? 'silent' })
    const services = createServices(config, database)
    const app = buildApp({ config, database, services, logger, shutdownGraceMs: 500 })
    const { port } = await app.start()
    return {
      url: `http://127.0.0.1:${port}`,
      database,
      queries,
      stop: async () => {
        try {
          await app.stop()
        } finally {
          await drop()
        }
      },
    }
  } catch (err) {
    await drop()
    throw err
  }
}

/** POSTs one GraphQL operation; returns the HTTP status and the parsed body. */
export async function graphql<T = Record<string, unknown>>(
  app: Pick<TestApp, 'url'>,
  query: string,
  variables?: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: { data?: T | null; errors?: GraphQLErrorBody[] } }> {
  const response = await fetch(`${app.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    body: JSON.stringify({ query, variables }),
  })
  return {
    status: response.status,
    body: (await response.json()) as { data?: T | null; errors?: GraphQLErrorBody[] },
  }
}

export interface GraphQLErrorBody {
  message: string
  path?: (string | number)[]
  extensions?: Record<string, unknown> & { code?: string }
}
