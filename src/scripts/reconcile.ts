import { loadConfig } from '../config.js'
import { openDatabase } from '../db/client.js'
import { migrateDatabase } from '../db/migrate.js'
import { createServices } from '../services.js'

// `npm run reconcile [-- --older-than-minutes N]`: re-checks pending recharges
// against their providers, settles what was paid, and prints what does not
// add up (payments without credits, credits without payments, mismatches).

const arg = process.argv.indexOf('--older-than-minutes')
const minutes = arg > 0 ? Number(process.argv[arg + 1]) : 15
if (!Number.isFinite(minutes) || minutes < 0) {
  console.error('--older-than-minutes takes a number of minutes')
  process.exit(2)
}
const config = loadConfig()
const database = await openDatabase(config.database)
let services: ReturnType<typeof createServices> | undefined
try {
  await migrateDatabase(config.database, database)
  services = createServices(config, database)
  const report = await services.recharge.reconcile({ olderThanMs: minutes * 60_000 })
  await services.inbox.idle()
  console.log(JSON.stringify(report, null, 2))
  process.exitCode = report.problems.length > 0 ? 1 : 0
} finally {
  // The live bus holds Redis connections when REDIS_URL is set.
  await services?.live.stop()
  await database.close()
}
