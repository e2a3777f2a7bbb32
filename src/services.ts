import type { Config } from './config.js'
import type { Database } from './db/client.js'
import { Ledger } from './ledger/index.js'

/**
 * The composition root: every long-lived service, built once per process
 * from the configuration and the database, and handed to the server (and so
 * to every GraphQL request's context).
 */
export interface Services {
  config: Config
  ledger: Ledger
}

export function createServices(config: Config, database: Database): Services {
  const ledger = new Ledger(database.db, { batchSizeMax: config.ledger.batchSizeMax })
  return { config, ledger }
}
