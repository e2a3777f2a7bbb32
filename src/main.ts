import pino from 'pino'
import { startSealing } from './audit/seals.js'
import { seedCatalog } from './catalog/seed.js'
import { ConfigError, loadConfig } from './config.js'
import { openDatabase } from './db/client.js'
import { migrateDatabase } from './db/migrate.js'
import { buildApp } from './http/server.js'
import { startHoldExpiry } from './ledger/expiry.js'
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
const logger = pino({ level: config.logLevel })

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

  const stopSealing = startSealing(services.seals, {
    intervalMs: config.seals.intervalMs,
    onError: (err) => logger.error({ err }, 'sealing failed; will retry'),
    onSealed: (run) => logger.debug({ run }, 'journal sealed'),
  })

  const app = buildApp({ config, database, services, logger })
  const { port } = await app.start()
  const host = config.http.host === '0.0.0.0' ? 'localhost' : config.http.host
  logger.info({ url: `http://${host}:${port}/graphql` }, 'giftledger listening')

  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'stopping')
    try {
      await app.stop()
      // The live bus (Redis connections, streak timers).
      await services.live.stop()
      await stopHoldExpiry()
      await stopSealing()
      await stopRechargeJobs()
      await database.close()
      logger.info('stopped')
      process.exit(0)
    } catch (err) {
      logger.error({ err }, 'unclean stop')
      process.exit(1)
    }
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
} catch (err) {
  logger.fatal({ err }, 'start-up failed')
  process.exit(1)
}
