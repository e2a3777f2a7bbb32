import { type AccountSpec, COIN, type Unit } from './types.js'

// The chart of accounts. Platform accounts are created by migration
// (migrations/*_chart_of_accounts); user-owned accounts on first use, from
// these specs. User-owned accounts never go negative.
//
// | code                            | unit | type      | meaning                                   |
// |---------------------------------|------|-----------|-------------------------------------------|
// | user:<id>:wallet                | COIN | liability | coins the platform owes the user          |
// | user:<id>:earnings              | COIN | liability | a creator's earned coins not yet paid out |
// | user:<id>:coin_debt             | COIN | asset     | coins a user owes after a clawback        |
// | platform:coins_issued           | COIN | asset     | coins put into circulation (sold)         |
// | platform:commission             | COIN | income    | the platform's share of gifts             |
// | platform:promotions             | COIN | expense   | promotional coins granted                 |
// | platform:adjustments            | COIN | equity    | manual corrections                        |
// | platform:stripe_clearing:<CUR>  | fiat | asset     | money held at Stripe                      |
// | platform:paypal_clearing:<CUR>  | fiat | asset     | money held at PayPal                      |
// | platform:deferred_revenue:<CUR> | fiat | liability | money received for coins                  |
// | platform:provider_fees:<CUR>    | fiat | expense   | payment provider fees                     |
// | platform:payouts_payable:<CUR>  | fiat | liability | creator payouts approved, not yet paid    |
// | platform:creator_payouts:<CUR>  | fiat | expense   | the cost of creators' cashed-out coins    |
// | platform:adjustments:<CUR>      | fiat | equity    | manual corrections                        |
//
// With the ledger's lanes (src/ledger/lanes.ts), the accounts that nearly
// every gift credits (creator earnings, the platform's commission) have
// shards, `<code>:shard<k>`, of the same type, unit and owner; the
// account's balance is its own plus its shards'.

export const userWallet = (userId: string): AccountSpec => ({
  code: `user:${userId}:wallet`,
  name: 'Coin wallet',
  type: 'liability',
  unit: COIN,
  ownerId: userId,
  allowNegative: false,
})

export const creatorEarnings = (userId: string): AccountSpec => ({
  code: `user:${userId}:earnings`,
  name: 'Creator earnings',
  type: 'liability',
  unit: COIN,
  ownerId: userId,
  allowNegative: false,
})

/**
 * Coins a user owes the platform: a refund or a lost dispute that found the
 * coins already spent. While it is above zero the user cannot send gifts;
 * the next recharge repays it first.
 */
export const userCoinDebt = (userId: string): AccountSpec => ({
  code: `user:${userId}:coin_debt`,
  name: 'Coin debt (clawed back after spending)',
  type: 'asset',
  unit: COIN,
  ownerId: userId,
  allowNegative: false,
})

export const platform = {
  coinsIssued: 'platform:coins_issued',
  commission: 'platform:commission',
  promotions: 'platform:promotions',
  adjustments: 'platform:adjustments',
  stripeClearing: (currency: Unit) => `platform:stripe_clearing:${currency}`,
  paypalClearing: (currency: Unit) => `platform:paypal_clearing:${currency}`,
  deferredRevenue: (currency: Unit) => `platform:deferred_revenue:${currency}`,
  providerFees: (currency: Unit) => `platform:provider_fees:${currency}`,
  payoutsPayable: (currency: Unit) => `platform:payouts_payable:${currency}`,
  creatorPayouts: (currency: Unit) => `platform:creator_payouts:${currency}`,
  adjustmentsIn: (currency: Unit) => `platform:adjustments:${currency}`,
} as const

const EARNINGS = /^user:[^:]+:earnings$/

/** The accounts that nearly every gift credits: sharded across the ledger's lanes (LedgerOptions.sharded). */
export const isShardedAccount = (code: string): boolean => code === platform.commission || EARNINGS.test(code)
