import { defineRelations } from 'drizzle-orm'
import * as schema from './schema.js'

export const relations = defineRelations(schema, (r) => ({
  coinPackages: {
    prices: r.many.coinPackagePrices({ from: r.coinPackages.id, to: r.coinPackagePrices.packageId }),
  },
  ledgerTransactions: {
    entries: r.many.ledgerEntries({ from: r.ledgerTransactions.id, to: r.ledgerEntries.transactionId }),
  },
  users: {
    liveStreams: r.many.liveStreams({ from: r.users.id, to: r.liveStreams.creatorId }),
  },
  liveStreams: {
    creator: r.one.users({ from: r.liveStreams.creatorId, to: r.users.id, optional: false }),
    gifters: r.many.streamGifters({ from: r.liveStreams.id, to: r.streamGifters.streamId }),
  },
  streamGifters: {
    sender: r.one.users({ from: r.streamGifters.senderId, to: r.users.id, optional: false }),
    stream: r.one.liveStreams({ from: r.streamGifters.streamId, to: r.liveStreams.id, optional: false }),
  },
  giftEvents: {
    sender: r.one.users({ from: r.giftEvents.senderId, to: r.users.id, optional: false }),
    creator: r.one.users({ from: r.giftEvents.creatorId, to: r.users.id, optional: false }),
    gift: r.one.gifts({ from: r.giftEvents.giftId, to: r.gifts.id, optional: false }),
    stream: r.one.liveStreams({ from: r.giftEvents.streamId, to: r.liveStreams.id }),
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
