import { builder } from '../graphql/builder.js'
import type { PostedTransaction } from '../ledger/index.js'

/**
 * A journal transaction, as returned to whoever posted it (an admin's grant).
 * The accountants' view of the journal (entries, reversals, filters) is the
 * audit issue's.
 */
export const LedgerTransaction = builder.objectRef<PostedTransaction>('LedgerTransaction').implement({
  description: 'A balanced set of ledger entries, posted at once.',
  fields: (t) => ({
    id: t.id({ resolve: (tr) => tr.id.toString() }),
    kind: t.exposeString('kind'),
    description: t.exposeString('description'),
    postedAt: t.field({ type: 'DateTime', resolve: (tr) => tr.postedAt }),
  }),
})
