import type { GraphQLSchema } from 'graphql'
import pino, { type Logger } from 'pino'
import { type SignOptions, signToken, type TokenInput } from '../../src/auth/tokens.js'
import { seedCatalog } from '../../src/catalog/seed.js'
import { type Config, loadConfig } from '../../src/config.js'
import type { Database } from '../../src/db/client.js'
import { buildApp } from '../../src/http/server.js'
import { createServices, type Services } from '../../src/services.js'
import { createTestDatabase } from './db.js'
import { QueryLog } from './query-log.js'

/** The test servers' JWT_SECRET, unless a test sets its own. */
export const TEST_JWT_SECRET = 'test-secret-for-giftledger-tests-only-0123456789'

export interface TestApp {
  /** http://127.0.0.1:<port>, no trailing slash. */
  url: string
  database: Database
  /** The PostgreSQL URL of its database (PostgreSQL only). */
  databaseUrl?: string
  queries: QueryLog
  config: Config
  services: Services
  /** A token this server accepts (its key, issuer and audience), valid for an hour unless told. */
  token(claims: TokenInput, options?: Partial<SignOptions>): Promise<string>
  stop(): Promise<void>
}

export interface TestAppOptions {
  seed?: boolean
  /** Environment variables on top of the test defaults (NODE_ENV=test, JWT_SECRET=TEST_JWT_SECRET). */
  env?: Record<string, string>
  /** Serve this schema instead of the application's (server-level tests). */
  schema?: GraphQLSchema
  /** WebSocket keep-alive ping interval (live tests shorten it). */
  websocketKeepAliveMs?: number
  /** The server's logger (tests that read the logs); default: silent unless LOG_LEVEL is set. */
  logger?: Logger
  /** The global after-check when the app stops (see books.ts); false only for books broken on purpose. */
  booksCheck?: boolean
}

/**
 * The real server on a free port over a fresh, migrated and seeded database:
 * PGlite in memory, or a new database on TEST_DATABASE_URL (see db.ts).
 * One per test file: PGlite takes seconds to start.
 */
export async function startTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const queries = new QueryLog()
  const {
    database,
    config: databaseConfig,
    url: databaseUrl,
    drop,
  } = await createTestDatabase({
    logger: queries,
    booksCheck: options.booksCheck,
  })
  try {
    if (options.seed ?? true) await seedCatalog(database.db)
    const config = {
      ...loadConfig({
        NODE_ENV: 'test',
        HOST: '127.0.0.1',
        PORT: '0',
        PGLITE_DIR: 'memory://',
        JWT_SECRET: TEST_JWT_SECRET,
        ...options.env,
      }),
      database: databaseConfig,
    }
    const logger = options.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'silent' })
    const services = createServices(config, database)
    const app = buildApp({
      config,
      database,
      services,
      logger,
      shutdownGraceMs: 500,
      schema: options.schema,
      websocketKeepAliveMs: options.websocketKeepAliveMs,
    })
    const { port } = await app.start()
    const key = new TextEncoder().encode(config.jwt.secret ?? TEST_JWT_SECRET)
    return {
      url: `http://127.0.0.1:${port}`,
      database,
      databaseUrl,
      queries,
      config,
      services,
      token: (claims, signOptions) =>
        signToken(key, claims, {
          expiresIn: '1h',
          issuer: config.jwt.issuer,
          audience: config.jwt.audience,
          ...signOptions,
        }),
      stop: async () => {
        try {
          await app.stop()
        } finally {
          await drop()
        }
      },
    }
  } catch (err) {
    await drop().catch(() => {})
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
