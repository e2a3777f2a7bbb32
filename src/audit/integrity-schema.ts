import { builder } from '../graphql/builder.js'
import {
  checkLedgerIntegrity,
  LEDGER_INTEGRITY_PROBLEM_KINDS,
  type LedgerIntegrityProblem,
  type LedgerIntegrityReport,
} from './integrity.js'

// ledgerIntegrity: the auditor's recomputation of the books and of the seal
// chain (src/audit/integrity.ts). Accountants only: its messages name
// accounts (users' wallets and earnings) and balances.

const IntegrityProblemKind = builder.enumType('IntegrityProblemKind', {
  description: 'What an integrity problem is about (docs/AUDIT.md lists them).',
  values: LEDGER_INTEGRITY_PROBLEM_KINDS,
})

const IntegrityProblem = builder.objectRef<LedgerIntegrityProblem>('IntegrityProblem').implement({
  description: 'One difference between the books as stored and as recomputed.',
  fields: (t) => ({
    kind: t.field({ type: IntegrityProblemKind, resolve: (p) => p.kind }),
    message: t.exposeString('message'),
    transactionId: t.id({
      nullable: true,
      description: 'The transaction at fault; for a seal problem, the first transaction of the seal.',
      resolve: (p) => p.transactionId?.toString() ?? null,
    }),
    accountId: t.id({ nullable: true, resolve: (p) => p.accountId?.toString() ?? null }),
  }),
})

const LedgerIntegrity = builder.objectRef<LedgerIntegrityReport>('LedgerIntegrity').implement({
  description: 'The books and the tamper-evidence chain, recomputed on one snapshot.',
  fields: (t) => ({
    ok: t.exposeBoolean('ok', { description: 'True when no problem was found.' }),
    checkedTransactions: t.exposeInt('checkedTransactions'),
    checkedAccounts: t.exposeInt('checkedAccounts'),
    checkedSeals: t.exposeInt('checkedSeals'),
    sealedThroughTransactionId: t.id({
      nullable: true,
      description: 'The last transaction under seal; later ones are sealed in the background.',
      resolve: (r) => r.sealedThroughTransactionId?.toString() ?? null,
    }),
    problems: t.field({
      type: [IntegrityProblem],
      description: 'Every problem found, at most 100 of each check.',
      resolve: (r) => r.problems,
    }),
  }),
})

builder.queryField('ledgerIntegrity', (t) =>
  t.field({
    type: LedgerIntegrity,
    description:
      'Recomputes every balance from its entries, checks that every transaction balances per unit, and verifies the seal chain.',
    authScopes: { accountant: true },
    resolve: (_root, _args, ctx) => checkLedgerIntegrity(ctx.db),
  }),
)
