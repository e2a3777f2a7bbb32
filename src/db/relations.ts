import { defineRelations } from 'drizzle-orm'
import * as schema from './schema.js'

export const relations = defineRelations(schema, (r) => ({
  coinPackages: {
    prices: r.many.coinPackagePrices({ from: r.coinPackages.id, to: r.coinPackagePrices.packageId }),
  },
  ledgerTransactions: {
    entries: r.many.ledgerEntries({ from: r.ledgerTransactions.id, to: r.ledgerEntries.transactionId }),
  },
  ledgerEntries: {
    account: r.one.ledgerAccounts({
      from: r.ledgerEntries.accountId,
      to: r.ledgerAccounts.id,
      optional: false,
    }),
  },
}))

export type Relations = typeof relations
