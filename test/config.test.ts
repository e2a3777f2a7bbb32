import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/config.js'

describe('configuration', () => {
  it('defaults to an embedded database on port 4000', () => {
    const config = loadConfig({})
    expect(config.http).toEqual({ port: 4000, host: '0.0.0.0' })
    expect(config.database).toEqual({ kind: 'pglite', dir: './.data/pglite' })
    expect(config.ledger.batchSizeMax).toBe(500)
  })

  it('uses PostgreSQL when DATABASE_URL is set, with its pool size', () => {
    const config = loadConfig({ DATABASE_URL: 'postgres://u@db:5432/x', DATABASE_POOL_MAX: '25' })
    expect(config.database).toEqual({ kind: 'postgres', url: 'postgres://u@db:5432/x', poolMax: 25 })
  })

  it.each([
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ DATABASE_URL: 'mysql://localhost/x' }, 'DATABASE_URL'],
    [{ DATABASE_POOL_MAX: '0' }, 'DATABASE_POOL_MAX'],
    [{ REDIS_URL: 'localhost:6379' }, 'REDIS_URL'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ JWT_SECRET: 'short' }, 'JWT_SECRET'],
    [{ NODE_ENV: 'production' }, 'JWT_SECRET'],
    [{ LEDGER_BATCH_MAX: '-1' }, 'LEDGER_BATCH_MAX'],
    [{ LEDGER_LANES: '9' }, 'LEDGER_LANES'],
    [{ LEDGER_LANES: '0' }, 'LEDGER_LANES'],
    [{ LEDGER_SEAL_INTERVAL_MS: '10' }, 'LEDGER_SEAL_INTERVAL_MS'],
    [{ LEDGER_SEAL_BATCH_MAX: '0' }, 'LEDGER_SEAL_BATCH_MAX'],
    [{ SHUTDOWN_TIMEOUT_MS: '10' }, 'SHUTDOWN_TIMEOUT_MS'],
    [{ METRICS_TOKEN: 'short' }, 'METRICS_TOKEN'],
    [{ METRICS_TOKEN: 'has a space in it, 1234567890' }, 'METRICS_TOKEN'],
    [{ GRAPHQL_INTROSPECTION: 'yes' }, 'GRAPHQL_INTROSPECTION'],
    [{ RATE_LIMIT_MUTATIONS_PER_SECOND: '0' }, 'RATE_LIMIT_MUTATIONS_PER_SECOND'],
    [{ RATE_LIMIT_MUTATIONS_BURST: '1.5' }, 'RATE_LIMIT_MUTATIONS_BURST'],
  ])('refuses %o, naming %s', (env, variable) => {
    expect(() => loadConfig(env)).toThrow(ConfigError)
    expect(() => loadConfig(env)).toThrow(new RegExp(`\\b${variable}\\b`))
  })

  it('lists every bad variable at once', () => {
    expect(() => loadConfig({ PORT: 'x', LOG_LEVEL: 'y' })).toThrow(/PORT[\s\S]*LOG_LEVEL/)
  })

  it('turns introspection off in production unless GRAPHQL_INTROSPECTION=true', () => {
    const production = { NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }
    expect(loadConfig({}).graphql.introspection).toBe(true)
    expect(loadConfig(production).graphql.introspection).toBe(false)
    expect(loadConfig({ ...production, GRAPHQL_INTROSPECTION: 'true' }).graphql.introspection).toBe(true)
    expect(loadConfig({ GRAPHQL_INTROSPECTION: 'false' }).graphql.introspection).toBe(false)
  })

  it('limits mutations to 20/s, burst 40, per user unless told', () => {
    expect(loadConfig({}).rateLimit).toEqual({ mutationsPerSecond: 20, mutationsBurst: 40 })
    const tuned = loadConfig({ RATE_LIMIT_MUTATIONS_PER_SECOND: '5', RATE_LIMIT_MUTATIONS_BURST: '10' })
    expect(tuned.rateLimit).toEqual({ mutationsPerSecond: 5, mutationsBurst: 10 })
  })

  it('seals the journal every 5 s, at most 10,000 transactions a seal, unless told', () => {
    expect(loadConfig({}).seals).toEqual({ intervalMs: 5_000, batchSizeMax: 10_000 })
    const tuned = loadConfig({ LEDGER_SEAL_INTERVAL_MS: '250', LEDGER_SEAL_BATCH_MAX: '100' })
    expect(tuned.seals).toEqual({ intervalMs: 250, batchSizeMax: 100 })
  })

  it('stops within 10 s and serves /metrics without a token unless told', () => {
    expect(loadConfig({}).shutdown.timeoutMs).toBe(10_000)
    expect(loadConfig({}).metrics.token).toBeUndefined()
    const config = loadConfig({ SHUTDOWN_TIMEOUT_MS: '25000', METRICS_TOKEN: 'scrape-token-0123456789' })
    expect(config.shutdown.timeoutMs).toBe(25_000)
    expect(config.metrics.token).toBe('scrape-token-0123456789')
  })

  it('starts in production with a secret', () => {
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }).env).toBe('production')
  })
})
