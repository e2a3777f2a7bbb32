import { Sealer } from './audit/seals.js'
import { Authenticator } from './auth/authenticate.js'
import { loadJwtKey, TokenVerifier } from './auth/tokens.js'
import { UserService } from './auth/users.js'
import type { Config } from './config.js'
import type { Database } from './db/client.js'
import { GiftService } from './gifts/service.js'
import { isShardedAccount, Ledger } from './ledger/index.js'
import { createLive, type Live } from './live/index.js'
import { RedisBus } from './live/redis-bus.js'
import { PayPalGateway } from './payments/paypal.js'
import { StripeGateway } from './payments/stripe.js'
import type { PaymentGateway, ProviderName } from './payments/types.js'
import { PayoutService } from './payouts/service.js'
import { WebhookInbox } from './recharge/inbox.js'
import { RechargeService } from './recharge/service.js'

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
  /** Buying coins: orders, settlement, refunds, disputes. */
  recharge: RechargeService
  /** Verified provider webhooks, stored, then processed with retries. */
  inbox: WebhookInbox
  /** Live feeds (gifts per stream, wallet balances per user) over a publish/subscribe bus. */
  live: Live
  /** Tamper evidence: seals closed journal ranges into a hash chain (started by main.ts). */
  seals: Sealer
  /** Creators cashing out earned coins, held while admins review. */
  payouts: PayoutService
}

/** Each provider is enabled only when it is configured. */
export function paymentGateways(config: Config): Map<ProviderName, PaymentGateway> {
  const gateways = new Map<ProviderName, PaymentGateway>()
  const { stripe } = config
  if (stripe.secretKey && stripe.webhookSecret) {
    gateways.set(
      'stripe',
      new StripeGateway({
        secretKey: stripe.secretKey,
        webhookSecret: stripe.webhookSecret,
        apiBase: stripe.apiBase,
        timeoutMs: config.payments.timeoutMs,
      }),
    )
  }
  const { paypal } = config
  if (paypal.clientId && paypal.clientSecret && paypal.webhookId) {
    gateways.set(
      'paypal',
      new PayPalGateway({
        clientId: paypal.clientId,
        clientSecret: paypal.clientSecret,
        webhookId: paypal.webhookId,
        apiBase: paypal.apiBase,
        timeoutMs: config.payments.timeoutMs,
      }),
    )
  }
  return gateways
}

/** Where background failures (a webhook event that failed to process) are reported. */
export interface ServiceHooks {
  onBackgroundError?: (error: unknown, context: Record<string, unknown>) => void
}

export function createServices(config: Config, database: Database, hooks: ServiceHooks = {}): Services {
  const ledger = new Ledger(database, {
    batchSizeMax: config.ledger.batchSizeMax,
    lanes: config.ledger.lanes,
    sharded: isShardedAccount,
  })
  const users = new UserService(database.db, ledger)
  const tokens = new TokenVerifier(loadJwtKey(config.jwt, config.env).key, {
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
  })
  const auth = new Authenticator(tokens, users)
  const gifts = new GiftService(database.db, ledger, config.gifts, {
    batchSizeMax: config.ledger.batchSizeMax,
    pipelined: database.pipelined,
  })
  const recharge = new RechargeService(database.db, ledger, paymentGateways(config))
  const inbox = new WebhookInbox(
    database.db,
    recharge,
    (error, event) => hooks.onBackgroundError?.(error, { ...event, component: 'webhook-inbox' }),
    config.inbox.leaseMs,
  )
  const onLiveError = (error: unknown) => hooks.onBackgroundError?.(error, { component: 'live' })
  // With REDIS_URL, live events travel through Redis (several instances); in-process otherwise.
  const bus = config.redisUrl ? new RedisBus(config.redisUrl, { onError: onLiveError }) : undefined
  const live = createLive(database.db, ledger, gifts, {
    bus,
    comboWindowMs: config.gifts.comboWindowMs,
    onError: onLiveError,
  })
  const seals = new Sealer(database.db, { batchSizeMax: config.seals.batchSizeMax })
  const payouts = new PayoutService(database.db, ledger, config.payouts)
  return { config, ledger, users, auth, gifts, recharge, inbox, live, seals, payouts }
}
