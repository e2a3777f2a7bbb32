import { Authenticator } from './auth/authenticate.js'
import { loadJwtKey, TokenVerifier } from './auth/tokens.js'
import { UserService } from './auth/users.js'
import type { Config } from './config.js'
import type { Database } from './db/client.js'
import { GiftService } from './gifts/service.js'
import { Ledger } from './ledger/index.js'

/**
 * The composition root: every long-lived service, built once per process
 * from the configuration and the database, and handed to the server (and so
 * to every GraphQL request's context).
 */
export interface Services {
  config: Config
  ledger: Ledger
  /** Users from tokens: created (with a wallet) on first sight. */
  users: UserService
  /** Bearer credentials to viewers, for HTTP and WebSocket alike. */
  auth: Authenticator
  /** Gifts, group-committed with their ledger transactions. */
  gifts: GiftService
}

export function createServices(config: Config, database: Database): Services {
  const ledger = new Ledger(database.db, { batchSizeMax: config.ledger.batchSizeMax })
  const users = new UserService(database.db, ledger)
  const tokens = new TokenVerifier(loadJwtKey(config.jwt, config.env).key, {
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
  })
  const auth = new Authenticator(tokens, users)
  const gifts = new GiftService(database.db, ledger, config.gifts, {
    batchSizeMax: config.ledger.batchSizeMax,
  })
  return { config, ledger, users, auth, gifts }
}
