import { sql } from 'drizzle-orm'
import {
  bigint,
  boolean,
  check,
  foreignKey,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core'

// Every amount is a bigint in the smallest step of its unit (a coin, a cent).
// Timestamps keep microseconds (`mode: 'string'` where they feed cursors).

const amount = (name: string) => bigint(name, { mode: 'bigint' })
const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow()

// ---- ledger -------------------------------------------------------------

export const accountType = pgEnum('account_type', ['asset', 'liability', 'equity', 'income', 'expense'])
export const entryDirection = pgEnum('entry_direction', ['debit', 'credit'])
export const holdStatus = pgEnum('hold_status', ['pending', 'posted', 'voided', 'expired'])

export const ledgerAccounts = pgTable(
  'ledger_accounts',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    code: text('code').notNull(),
    name: text('name').notNull(),
    type: accountType('type').notNull(),
    unit: text('unit').notNull(),
    ownerId: uuid('owner_id'),
    allowNegative: boolean('allow_negative').notNull().default(false),
    // Cached, on the account's normal side (credit-normal: credits - debits).
    // The database checks it against the last entry's balance_after.
    balance: amount('balance').notNull().default(0n),
    debitsTotal: amount('debits_total').notNull().default(0n),
    creditsTotal: amount('credits_total').notNull().default(0n),
    // Sum of pending holds on this account; available = balance - held.
    heldAmount: amount('held_amount').notNull().default(0n),
    lastSeq: amount('last_seq').notNull().default(0n),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('ledger_accounts_code_key').on(t.code),
    index('ledger_accounts_owner_idx').on(t.ownerId),
    check('ledger_accounts_code_format', sql`${t.code} ~ '^[a-z0-9_]+(:[A-Za-z0-9_-]+)+$'`),
    check('ledger_accounts_unit_format', sql`${t.unit} = 'COIN' OR ${t.unit} ~ '^[A-Z]{3}$'`),
    check('ledger_accounts_totals_nonnegative', sql`${t.debitsTotal} >= 0 AND ${t.creditsTotal} >= 0`),
    check('ledger_accounts_held_nonnegative', sql`${t.heldAmount} >= 0`),
    check('ledger_accounts_no_overdraft', sql`${t.allowNegative} OR ${t.balance} >= ${t.heldAmount}`),
  ],
)

export const ledgerTransactions = pgTable(
  'ledger_transactions',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    idempotencyKey: text('idempotency_key').notNull(),
    // sha256 of the canonical request: the same key with other content is refused.
    requestHash: text('request_hash').notNull(),
    kind: text('kind').notNull(),
    description: text('description').notNull().default(''),
    metadata: jsonb('metadata').notNull().default({}),
    reversesId: bigint('reverses_id', { mode: 'bigint' }),
    postedAt: timestamp('posted_at', { withTimezone: true, mode: 'string' }).notNull(),
    // The database transaction that wrote it (set by trigger): entries may only
    // be added by that same database transaction.
    xactId: bigint('xact_id', { mode: 'bigint' }).notNull().default(sql`txid_current()`),
  },
  (t) => [
    uniqueIndex('ledger_transactions_idempotency_key').on(t.idempotencyKey),
    // Partial: most transactions reverse nothing, and their inserts skip this index.
    uniqueIndex('ledger_transactions_reverses_once').on(t.reversesId).where(sql`${t.reversesId} is not null`),
    index('ledger_transactions_posted_at_idx').on(t.postedAt),
    index('ledger_transactions_kind_idx').on(t.kind, t.id),
    check('ledger_transactions_kind_format', sql`${t.kind} ~ '^[a-z][a-z_]{1,39}$'`),
    check('ledger_transactions_key_length', sql`length(${t.idempotencyKey}) BETWEEN 1 AND 200`),
    foreignKey({ name: 'ledger_transactions_reverses_fk', columns: [t.reversesId], foreignColumns: [t.id] }),
  ],
)

export const ledgerEntries = pgTable(
  'ledger_entries',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    // No foreign keys: the entries' insert trigger checks that the transaction
    // and the account exist, once per statement instead of twice per row
    // (migrations/*_ledger_fast_path); nothing can delete either.
    transactionId: bigint('transaction_id', { mode: 'bigint' }).notNull(),
    accountId: bigint('account_id', { mode: 'bigint' }).notNull(),
    direction: entryDirection('direction').notNull(),
    amount: amount('amount').notNull(),
    unit: text('unit').notNull(),
    // 1, 2, 3... per account, in posting order; balance_after chains along it.
    accountSeq: amount('account_seq').notNull(),
    balanceAfter: amount('balance_after').notNull(),
    postedAt: timestamp('posted_at', { withTimezone: true, mode: 'string' }).notNull(),
  },
  (t) => [
    uniqueIndex('ledger_entries_account_seq_key').on(t.accountId, t.accountSeq),
    index('ledger_entries_transaction_idx').on(t.transactionId),
    index('ledger_entries_account_posted_idx').on(t.accountId, t.postedAt),
    // Time ranges over all accounts (a trial balance as of a past instant):
    // entries arrive in posting-time order and are never updated, so a BRIN
    // index (a few kilobytes, nearly free to maintain) skips the other side.
    index('ledger_entries_posted_at_brin').using('brin', t.postedAt),
    check('ledger_entries_amount_positive', sql`${t.amount} > 0`),
    check('ledger_entries_seq_positive', sql`${t.accountSeq} > 0`),
  ],
)

export const ledgerHolds = pgTable(
  'ledger_holds',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    idempotencyKey: text('idempotency_key').notNull(),
    requestHash: text('request_hash').notNull(),
    kind: text('kind').notNull(),
    description: text('description').notNull().default(''),
    metadata: jsonb('metadata').notNull().default({}),
    // The held account is debited when the hold is posted; the counter account credited.
    accountId: bigint('account_id', { mode: 'bigint' })
      .notNull()
      .references(() => ledgerAccounts.id),
    counterAccountId: bigint('counter_account_id', { mode: 'bigint' })
      .notNull()
      .references(() => ledgerAccounts.id),
    unit: text('unit').notNull(),
    amount: amount('amount').notNull(),
    status: holdStatus('status').notNull().default('pending'),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'string' }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    resolvedAt: timestamp('resolved_at', { withTimezone: true, mode: 'string' }),
    // The posting that settled it (status = posted).
    transactionId: bigint('transaction_id', { mode: 'bigint' }).references(() => ledgerTransactions.id),
    // Who posted, voided or expired it and why (a payout's reviewer and reason).
    // Set in the one move out of pending: the guard refuses any later change.
    resolution: jsonb('resolution'),
  },
  (t) => [
    uniqueIndex('ledger_holds_idempotency_key').on(t.idempotencyKey),
    index('ledger_holds_pending_expiry_idx').on(t.expiresAt).where(sql`${t.status} = 'pending'`),
    index('ledger_holds_account_idx').on(t.accountId),
    check('ledger_holds_amount_positive', sql`${t.amount} > 0`),
    check('ledger_holds_distinct_accounts', sql`${t.accountId} <> ${t.counterAccountId}`),
  ],
)

// ---- catalog --------------------------------------------------------------

export const coinPackages = pgTable(
  'coin_packages',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    sku: text('sku').notNull(),
    coins: amount('coins').notNull(),
    bonusCoins: amount('bonus_coins').notNull().default(0n),
    active: boolean('active').notNull().default(true),
    sortOrder: integer('sort_order').notNull().default(0),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('coin_packages_sku_key').on(t.sku),
    check('coin_packages_coins_positive', sql`${t.coins} > 0 AND ${t.bonusCoins} >= 0`),
  ],
)

export const coinPackagePrices = pgTable(
  'coin_package_prices',
  {
    packageId: uuid('package_id')
      .notNull()
      .references(() => coinPackages.id),
    currency: text('currency').notNull(),
    amountMinor: amount('amount_minor').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.packageId, t.currency] }),
    check('coin_package_prices_currency_format', sql`${t.currency} ~ '^[A-Z]{3}$'`),
    check('coin_package_prices_amount_positive', sql`${t.amountMinor} > 0`),
  ],
)

export const gifts = pgTable(
  'gifts',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    sku: text('sku').notNull(),
    name: text('name').notNull(),
    coinCost: amount('coin_cost').notNull(),
    imageUrl: text('image_url').notNull(),
    active: boolean('active').notNull().default(true),
    sortOrder: integer('sort_order').notNull().default(0),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('gifts_sku_key').on(t.sku), check('gifts_coin_cost_positive', sql`${t.coinCost} > 0`)],
)

// ---- people -------------------------------------------------------------------

export const users = pgTable(
  'users',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    // The identity provider's stable id (the token's `sub`).
    subject: text('subject').notNull(),
    handle: text('handle').notNull(),
    displayName: text('display_name').notNull(),
    // Roles as last seen in a token; the token itself is what authorizes.
    roles: text('roles').array().notNull().default(sql`'{}'::text[]`),
    // A creator's share of the coins gifted to them, in basis points (5000 = 50%).
    creatorShareBps: integer('creator_share_bps').notNull().default(5000),
    // A limit the user sets for themselves; null: no limit of their own.
    dailySpendLimitCoins: amount('daily_spend_limit_coins'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('users_subject_key').on(t.subject),
    index('users_handle_idx').on(t.handle),
    check('users_creator_share_range', sql`${t.creatorShareBps} BETWEEN 0 AND 10000`),
    check('users_daily_spend_limit_positive', sql`${t.dailySpendLimitCoins} > 0`),
    check('users_subject_length', sql`length(${t.subject}) BETWEEN 1 AND 255`),
  ],
)

// ---- live streams and gifts ---------------------------------------------------

export const liveStreamStatus = pgEnum('live_stream_status', ['live', 'ended'])

export const liveStreams = pgTable(
  'live_streams',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    creatorId: uuid('creator_id')
      .notNull()
      .references(() => users.id),
    title: text('title').notNull(),
    status: liveStreamStatus('status').notNull().default('live'),
    startedAt: timestamp('started_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    endedAt: timestamp('ended_at', { withTimezone: true, mode: 'string' }),
    // Running totals, updated with each batch of gifts.
    giftCoins: amount('gift_coins').notNull().default(0n),
    lastSequence: amount('last_sequence').notNull().default(0n),
  },
  (t) => [
    // A creator is live at most once at a time.
    uniqueIndex('live_streams_one_live_per_creator').on(t.creatorId).where(sql`${t.status} = 'live'`),
    index('live_streams_listing_idx').on(t.status, t.startedAt, t.id),
    index('live_streams_creator_idx').on(t.creatorId, t.startedAt),
    check('live_streams_title_length', sql`length(${t.title}) BETWEEN 1 AND 200`),
  ],
)

export const giftEvents = pgTable(
  'gift_events',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    // Null for a gift on a video, outside any live stream.
    streamId: uuid('stream_id').references(() => liveStreams.id),
    // 1, 2, 3... per live stream, in commit order.
    sequence: amount('sequence'),
    senderId: uuid('sender_id')
      .notNull()
      .references(() => users.id),
    creatorId: uuid('creator_id')
      .notNull()
      .references(() => users.id),
    giftId: uuid('gift_id')
      .notNull()
      .references(() => gifts.id),
    quantity: integer('quantity').notNull(),
    // Snapshot of the gift's price when sent.
    coinCost: amount('coin_cost').notNull(),
    coins: amount('coins').notNull(),
    creatorCoins: amount('creator_coins').notNull(),
    platformCoins: amount('platform_coins').notNull(),
    // Gifts of this streak so far, this one included.
    combo: integer('combo').notNull(),
    transactionId: bigint('transaction_id', { mode: 'bigint' })
      .notNull()
      .references(() => ledgerTransactions.id),
    sentAt: timestamp('sent_at', { withTimezone: true, mode: 'string' }).notNull(),
  },
  (t) => [
    uniqueIndex('gift_events_transaction_key').on(t.transactionId),
    uniqueIndex('gift_events_stream_sequence_key').on(t.streamId, t.sequence),
    index('gift_events_combo_idx').on(t.streamId, t.senderId, t.giftId, t.sentAt),
    index('gift_events_creator_idx').on(t.creatorId, t.sentAt),
    index('gift_events_sender_idx').on(t.senderId, t.sentAt),
    check('gift_events_quantity_positive', sql`${t.quantity} > 0`),
    check('gift_events_split', sql`${t.coins} = ${t.creatorCoins} + ${t.platformCoins}`),
    check('gift_events_coins', sql`${t.coins} = ${t.coinCost} * ${t.quantity}`),
    check('gift_events_sequence_with_stream', sql`(${t.streamId} IS NULL) = (${t.sequence} IS NULL)`),
  ],
)

/** Coins each sender has gifted in a live stream: the top-gifters ranking. */
export const streamGifters = pgTable(
  'stream_gifters',
  {
    streamId: uuid('stream_id')
      .notNull()
      .references(() => liveStreams.id),
    senderId: uuid('sender_id')
      .notNull()
      .references(() => users.id),
    coins: amount('coins').notNull(),
    lastGiftAt: timestamp('last_gift_at', { withTimezone: true, mode: 'string' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.streamId, t.senderId] }),
    // The ranking order: most coins first, then who got there first.
    index('stream_gifters_ranking_idx').on(t.streamId, t.coins.desc(), t.lastGiftAt, t.senderId),
  ],
)

// ---- recharge -------------------------------------------------------------------

export const paymentProvider = pgEnum('payment_provider', ['stripe', 'paypal'])
export const rechargeStatus = pgEnum('recharge_status', [
  'pending',
  'succeeded',
  'failed',
  'canceled',
  'expired',
  'partially_refunded',
  'refunded',
  'disputed',
])

/** A purchase of a coin package: a snapshot of what was bought, and where the payment stands. */
export const rechargeOrders = pgTable(
  'recharge_orders',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    packageId: uuid('package_id')
      .notNull()
      .references(() => coinPackages.id),
    provider: paymentProvider('provider').notNull(),
    status: rechargeStatus('status').notNull().default('pending'),
    // The snapshot: what this order credits and costs, whatever the catalog says later.
    coins: amount('coins').notNull(),
    bonusCoins: amount('bonus_coins').notNull(),
    priceMinor: amount('price_minor').notNull(),
    currency: text('currency').notNull(),
    // The client's key: one order per (user, key).
    idempotencyKey: text('idempotency_key').notNull(),
    // The provider's object: Stripe PaymentIntent id, PayPal order id.
    providerReference: text('provider_reference'),
    clientSecret: text('client_secret'),
    approvalUrl: text('approval_url'),
    captureId: text('capture_id'),
    feeMinor: amount('fee_minor'),
    // Refunds and chargebacks applied so far (money), and the coins they clawed back.
    refundedMinor: amount('refunded_minor').notNull().default(0n),
    clawedBackCoins: amount('clawed_back_coins').notNull().default(0n),
    disputeId: text('dispute_id'),
    disputeStatus: text('dispute_status'),
    disputeHoldId: bigint('dispute_hold_id', { mode: 'bigint' }).references(() => ledgerHolds.id),
    // Set when the provider's amount or currency differs from the snapshot: never credited then.
    mismatch: text('mismatch'),
    creditTransactionId: bigint('credit_transaction_id', { mode: 'bigint' }).references(
      () => ledgerTransactions.id,
    ),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    completedAt: timestamp('completed_at', { withTimezone: true, mode: 'string' }),
  },
  (t) => [
    uniqueIndex('recharge_orders_user_key').on(t.userId, t.idempotencyKey),
    uniqueIndex('recharge_orders_provider_reference').on(t.provider, t.providerReference),
    index('recharge_orders_status_idx').on(t.status, t.createdAt),
    index('recharge_orders_user_idx').on(t.userId, t.createdAt),
    check('recharge_orders_amounts', sql`${t.coins} > 0 AND ${t.bonusCoins} >= 0 AND ${t.priceMinor} > 0`),
    check('recharge_orders_refunded', sql`${t.refundedMinor} >= 0 AND ${t.refundedMinor} <= ${t.priceMinor}`),
    check('recharge_orders_currency_format', sql`${t.currency} ~ '^[A-Z]{3}$'`),
  ],
)

export const inboxStatus = pgEnum('inbox_status', ['pending', 'processed', 'ignored', 'parked'])

/**
 * Verified provider webhooks, stored before they are acknowledged and
 * processed after, with retries. (provider, event id) is unique: a
 * redelivered event is stored once.
 */
export const webhookEvents = pgTable(
  'webhook_events',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    provider: paymentProvider('provider').notNull(),
    eventId: text('event_id').notNull(),
    type: text('type').notNull(),
    payload: jsonb('payload').notNull(),
    status: inboxStatus('status').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true, mode: 'string' })
      .notNull()
      .defaultNow(),
    // A worker's claim on the event while it processes it.
    leaseUntil: timestamp('lease_until', { withTimezone: true, mode: 'string' }),
    lastError: text('last_error'),
    receivedAt: timestamp('received_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    processedAt: timestamp('processed_at', { withTimezone: true, mode: 'string' }),
  },
  (t) => [
    uniqueIndex('webhook_events_provider_event').on(t.provider, t.eventId),
    index('webhook_events_due_idx').on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    // The parked events (GET /metrics counts them at every scrape): tiny, where a scan would read every event.
    index('webhook_events_parked_idx').on(t.receivedAt).where(sql`${t.status} = 'parked'`),
  ],
)

// ---- audit: tamper evidence ---------------------------------------------------

/**
 * Seals: closed ranges of journal transactions, in id order, chained by hash.
 * Each seal's hash covers the canonical content of its transactions (with
 * their entries) and the previous seal's hash; the first seal's previous hash
 * is the empty string. Sealing runs in the background; nothing waits on it.
 */
export const ledgerSeals = pgTable(
  'ledger_seals',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    // The range [first, last] of ledger_transactions ids this seal covers.
    firstTransactionId: bigint('first_transaction_id', { mode: 'bigint' }).notNull(),
    lastTransactionId: bigint('last_transaction_id', { mode: 'bigint' }).notNull(),
    transactionCount: integer('transaction_count').notNull(),
    entryCount: integer('entry_count').notNull(),
    // sha256 (hex) of the range's canonical content; then of previous hash + content hash.
    contentHash: text('content_hash').notNull(),
    previousHash: text('previous_hash').notNull(),
    hash: text('hash').notNull(),
    sealedAt: timestamp('sealed_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('ledger_seals_first_key').on(t.firstTransactionId),
    uniqueIndex('ledger_seals_last_key').on(t.lastTransactionId),
    check('ledger_seals_range', sql`${t.firstTransactionId} <= ${t.lastTransactionId}`),
    check('ledger_seals_counts', sql`${t.transactionCount} >= 0 AND ${t.entryCount} >= 0`),
  ],
)

// ---- payouts --------------------------------------------------------------------

export const payoutStatus = pgEnum('payout_status', ['pending', 'approved', 'rejected', 'expired'])

/**
 * A creator's request to turn earned coins into money. The coins are held
 * (ledger_holds) while an admin reviews; approval posts the hold and the
 * money side, rejection voids it, and an unreviewed hold expires.
 */
export const payoutRequests = pgTable(
  'payout_requests',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    creatorId: uuid('creator_id')
      .notNull()
      .references(() => users.id),
    // The creator's key: one request per (creator, key).
    idempotencyKey: text('idempotency_key').notNull(),
    coins: amount('coins').notNull(),
    // The money the coins convert to, at the rate in force when requested.
    amountMinor: amount('amount_minor').notNull(),
    currency: text('currency').notNull(),
    // The rate as a fraction: amount_minor = coins * rate_numerator / rate_denominator (rounded down).
    rateNumerator: amount('rate_numerator').notNull(),
    rateDenominator: amount('rate_denominator').notNull(),
    status: payoutStatus('status').notNull().default('pending'),
    holdId: bigint('hold_id', { mode: 'bigint' })
      .notNull()
      .references(() => ledgerHolds.id),
    requestedAt: timestamp('requested_at', { withTimezone: true, mode: 'string' }).notNull().defaultNow(),
    decidedAt: timestamp('decided_at', { withTimezone: true, mode: 'string' }),
    decidedBy: uuid('decided_by').references(() => users.id),
    decisionReason: text('decision_reason'),
    // The posting that paid it (status = approved).
    transactionId: bigint('transaction_id', { mode: 'bigint' }).references(() => ledgerTransactions.id),
  },
  (t) => [
    uniqueIndex('payout_requests_creator_key').on(t.creatorId, t.idempotencyKey),
    uniqueIndex('payout_requests_hold_key').on(t.holdId),
    index('payout_requests_status_idx').on(t.status, t.requestedAt),
    index('payout_requests_creator_idx').on(t.creatorId, t.requestedAt),
    check('payout_requests_amounts', sql`${t.coins} > 0 AND ${t.amountMinor} > 0`),
    check('payout_requests_rate', sql`${t.rateNumerator} > 0 AND ${t.rateDenominator} > 0`),
    check('payout_requests_currency_format', sql`${t.currency} ~ '^[A-Z]{3}$'`),
  ],
)
