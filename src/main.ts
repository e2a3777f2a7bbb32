import { startSealing } from './audit/seals.js'
import { seedCatalog } from './catalog/seed.js'
import { ConfigError, loadConfig } from './config.js'
import { openDatabase } from './db/client.js'
import { migrateDatabase } from './db/migrate.js'
import { buildApp } from './http/server.js'
import { startHoldExpiry, startShardSweeps } from './ledger/expiry.js'
import { configuredSecrets, createLogger } from './ops/logger.js'
import { requestGraceMs, stopInOrder } from './ops/shutdown.js'
import { startRechargeJobs } from './recharge/jobs.js'
import { createServices } from './services.js'

// Start-up only: configuration, database, server, and a clean stop.

function readConfig() {
  try {
    return loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(1)
    }
    throw err
  }
}

const config = readConfig()
// JSON lines on stdout; tokens and the configured secrets never reach them (src/ops/logger.ts).
const logger = createLogger({ level: config.logLevel, secrets: configuredSecrets(config) })

try {
  const database = await openDatabase(config.database)
  await migrateDatabase(config.database, database)
  const seeded = await seedCatalog(database.db)
  logger.info({ database: database.kind, ...seeded }, 'database ready')

  const services = createServices(config, database, {
    onBackgroundError: (err, context) =>
      logger.warn({ err, ...context }, 'background work failed; will retry'),
  })
  const stopRechargeJobs = startRechargeJobs(services, {
    onError: (err) => logger.error({ err }, 'recharge job failed'),
    onReport: (report) => {
      if (report.problems.length > 0 || report.settled > 0) logger.info({ report }, 'reconciliation')
    },
  })
  const stopHoldExpiry = startHoldExpiry(services.ledger, {
    intervalMs: 30_000,
    onError: (err) => logger.error({ err }, 'hold expiry failed'),
    onExpired: (count) => logger.info({ count }, 'holds expired'),
  })
  const stopShardSweeps = startShardSweeps(services.ledger, {
    intervalMs: 5_000,
    onError: (err) => logger.error({ err }, 'shard sweep failed; will retry'),
    onSwept: (count) => logger.debug({ count }, 'shards swept'),
  })

  const stopSealing = startSealing(services.seals, {
    intervalMs: config.seals.intervalMs,
    onError: (err) => logger.error({ err }, 'sealing failed; will retry'),
    onSealed: (run) => logger.debug({ run }, 'journal sealed'),
    onStalled: () =>
      logger.warn('sealing waits: database transactions older than the journal horizon are still open'),
  })

  const app = buildApp({
    config,
    database,
    services,
    logger,
    shutdownGraceMs: requestGraceMs(config.shutdown.timeoutMs),
  })
  const { port } = await app.start()
  const host = config.http.host === '0.0.0.0' ? 'localhost' : config.http.host
  logger.info({ url: `http://${host}:${port}/graphql` }, 'giftledger listening')
  if (config.env === 'production' && config.metrics.token === undefined) {
    logger.warn('METRICS_TOKEN is unset: GET /metrics answers anyone who reaches this port')
  }

  // SIGTERM: stop accepting, let in-flight requests finish, close WebSockets
  // with 1001 (app.stop), then the background jobs, the live bus and the
  // pool; all within SHUTDOWN_TIMEOUT_MS, else exit 1 (docs/OPERATIONS.md).
  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    logger.info({ signal, timeoutMs: config.shutdown.timeoutMs }, 'stopping')
    const clean = await stopInOrder(
      [
        { name: 'http', stop: () => app.stop() },
        { name: 'recharge jobs and webhook inbox', stop: stopRechargeJobs },
        { name: 'hold expiry', stop: stopHoldExpiry },
        { name: 'shard sweeps', stop: stopShardSweeps },
        { name: 'sealing', stop: stopSealing },
        // The live bus (Redis connections, streak timers).
        { name: 'live', stop: () => services.live.stop() },
        { name: 'database', stop: () => database.close() },
      ],
      { timeoutMs: config.shutdown.timeoutMs, logger },
    )
    if (clean) logger.info('stopped')
    // pino writes stdout synchronously: the last lines are out before exit.
    process.exit(clean ? 0 : 1)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
} catch (err) {
  logger.fatal({ err }, 'start-up failed')
  process.exit(1)
}
