import { resolveCursorConnection } from '@pothos/plugin-relay'
import { GraphQLError, type GraphQLResolveInfo, Kind, type SelectionSetNode } from 'graphql'
import { builder, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX } from '../graphql/builder.js'
import type { Context } from '../graphql/context.js'
import { TRANSACTION_KINDS } from '../ledger/index.js'
import {
  type AccountHead,
  type AccountRow,
  balanceAt,
  type JournalTransaction,
  listAccounts,
  listTransactions,
  parseTransactionCursor,
  type StatementEntry,
  statement,
  transactionCursor,
} from './journal.js'
import { auditLoaders } from './loaders.js'
import {
  type TrialBalanceLine as Line,
  type TrialBalanceTotal as Total,
  type TrialBalance as TrialBalanceShape,
  trialBalance,
} from './trial-balance.js'

// The accountants' read side of the ledger (docs/AUDIT.md): the journal,
// accounts and their statements, the trial balance. Accountants only: the
// root fields say so, and so do the types, so that no other path (a grant's
// payload is one) leads from a transaction to entries or accounts.

const ACCOUNTANTS = { accountant: true } as const

function badInput(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT' } })
}

/** A bigint id from a client; null when it is not one (no such row then). */
function parseId(value: string | number): bigint | null {
  const text = String(value)
  return /^[1-9]\d{0,18}$/.test(text) ? BigInt(text) : null
}

function parseSeqCursor(cursor: string): bigint {
  if (!/^\d{1,19}$/.test(cursor)) throw badInput('bad cursor: pass an endCursor back as it came')
  return BigInt(cursor)
}

function checkRange(from: Date | null | undefined, to: Date | null | undefined, path: string): void {
  if (from && to && from.getTime() > to.getTime()) throw badInput(`${path}: from is after to`)
}

/** Pages go forward only (first/after), like a statement is read. */
function forwardOnly(args: { last?: number | null; before?: string | null }): void {
  if (args.last != null || args.before != null) throw badInput('pages go forward only: use first and after')
}

/** The account's balances and totals: on the row already, or loaded (a trial balance line carries only the head). */
async function stateOf(a: AccountHead | AccountRow, ctx: Context): Promise<AccountRow> {
  if ('balance' in a) return a
  const row = await auditLoaders(ctx).account.load(a.id)
  if (!row) throw new Error(`no account ${a.id}`)
  return row
}

/** Whether the field being resolved selects `name` (through fragments too). */
function selects(info: GraphQLResolveInfo, name: string): boolean {
  const seen = (set: SelectionSetNode | undefined): boolean =>
    (set?.selections ?? []).some((s) => {
      if (s.kind === Kind.FIELD) return s.name.value === name
      if (s.kind === Kind.INLINE_FRAGMENT) return seen(s.selectionSet)
      return seen(info.fragments[s.name.value]?.selectionSet)
    })
  return info.fieldNodes.some((node) => seen(node.selectionSet))
}

// ---- enums ------------------------------------------------------------------------

export const EntryDirection = builder.enumType('EntryDirection', {
  values: { DEBIT: { value: 'debit' }, CREDIT: { value: 'credit' } } as const,
})

const LedgerAccountType = builder.enumType('LedgerAccountType', {
  description: 'The account’s class; assets and expenses grow with debits, the others with credits.',
  values: {
    ASSET: { value: 'asset' },
    LIABILITY: { value: 'liability' },
    EQUITY: { value: 'equity' },
    INCOME: { value: 'income' },
    EXPENSE: { value: 'expense' },
  } as const,
})

// ---- types --------------------------------------------------------------------------

export const LedgerAccount = builder.objectRef<AccountHead | AccountRow>('LedgerAccount')
const LedgerEntry = builder.objectRef<StatementEntry>('LedgerEntry')
export const LedgerTransaction = builder.objectRef<JournalTransaction>('LedgerTransaction')

/**
 * A journal transaction. The header (id, kind, description, posting time) is
 * shown to whoever is given the transaction (an admin sees their own grant's);
 * the rest is accountants'.
 */
LedgerTransaction.implement({
  description: 'A balanced set of ledger entries, posted at once.',
  authScopes: ACCOUNTANTS,
  fields: (t) => ({
    id: t.id({ skipTypeScopes: true, resolve: (tr) => tr.id.toString() }),
    kind: t.exposeString('kind', {
      skipTypeScopes: true,
      description: `One of: ${TRANSACTION_KINDS.join(', ')}.`,
    }),
    description: t.exposeString('description', { skipTypeScopes: true }),
    postedAt: t.field({ type: 'DateTime', skipTypeScopes: true, resolve: (tr) => tr.postedAt }),
    idempotencyKey: t.exposeString('idempotencyKey', {
      description: 'The key it was posted under: a retry with the same key returned this transaction.',
    }),
    metadata: t.string({
      description: 'What the posting capability recorded with it (order, gift, reason…), as JSON text.',
      resolve: (tr) => JSON.stringify(tr.metadata),
    }),
    reverses: t.field({
      type: LedgerTransaction,
      nullable: true,
      description: 'The transaction this one reverses, if it is a reversal.',
      resolve: (tr, _args, ctx) =>
        tr.reversesId === null ? null : auditLoaders(ctx).transaction.load(tr.reversesId),
    }),
    reversedBy: t.field({
      type: LedgerTransaction,
      nullable: true,
      description: 'The reversal of this transaction, if it was reversed (at most once).',
      resolve: (tr, _args, ctx) => auditLoaders(ctx).reversal.load(tr.id),
    }),
    entries: t.field({
      type: [LedgerEntry],
      description: 'Its entries, in the order they were posted; in each unit, debits equal credits.',
      resolve: (tr, _args, ctx) =>
        tr.entries
          ? tr.entries.map((e) => ({ ...e, transactionId: tr.id, postedAt: tr.postedAt }))
          : auditLoaders(ctx).entries.load(tr.id),
    }),
  }),
})

LedgerEntry.implement({
  description: 'One side of a transaction on one account.',
  authScopes: ACCOUNTANTS,
  fields: (t) => ({
    id: t.id({ resolve: (e) => e.id.toString() }),
    account: t.field({
      type: LedgerAccount,
      resolve: async (e, _args, ctx) => {
        const account = await auditLoaders(ctx).account.load(e.accountId)
        if (!account) throw new Error(`entry ${e.id} names no account`)
        return account
      },
    }),
    direction: t.field({ type: EntryDirection, resolve: (e) => e.direction }),
    amount: t.field({
      type: 'Amount',
      description: 'Positive; the direction says which side.',
      resolve: (e) => e.amount,
    }),
    currency: t.exposeString('unit', {
      description: 'The unit: COIN, or an ISO 4217 code (amounts in minor units).',
    }),
    balanceAfter: t.field({
      type: 'Amount',
      description: 'The account’s balance (on its normal side) right after this entry.',
      resolve: (e) => e.balanceAfter,
    }),
    postedAt: t.field({ type: 'DateTime', resolve: (e) => e.postedAt }),
    transaction: t.field({
      type: LedgerTransaction,
      resolve: async (e, _args, ctx) => {
        const transaction = await auditLoaders(ctx).transaction.load(e.transactionId)
        if (!transaction) throw new Error(`entry ${e.id} names no transaction`)
        return transaction
      },
    }),
  }),
})

LedgerAccount.implement({
  description: 'A named bucket of value in one unit. Its balance is kept on its normal side.',
  authScopes: ACCOUNTANTS,
  fields: (t) => ({
    id: t.id({ resolve: (a) => a.id.toString() }),
    code: t.exposeString('code', {
      description: 'Stable and unique: platform:commission, user:<id>:wallet, platform:stripe_clearing:USD…',
    }),
    name: t.exposeString('name'),
    type: t.field({ type: LedgerAccountType, resolve: (a) => a.type }),
    currency: t.exposeString('unit', {
      description: 'The unit: COIN, or an ISO 4217 code (amounts in minor units).',
    }),
    normalSide: t.field({
      type: EntryDirection,
      description: 'The side that grows the balance: DEBIT for assets and expenses, CREDIT otherwise.',
      resolve: (a) => (a.type === 'asset' || a.type === 'expense' ? 'debit' : 'credit'),
    }),
    allowNegative: t.boolean({
      description: 'Platform accounts may go negative; user-owned accounts never.',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).allowNegative,
    }),
    balance: t.field({
      type: 'Amount',
      description: 'Now, on the normal side.',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).balance,
    }),
    held: t.field({
      type: 'Amount',
      description: 'Reserved by pending holds.',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).heldAmount,
    }),
    available: t.field({
      type: 'Amount',
      resolve: async (a, _args, ctx) => {
        const state = await stateOf(a, ctx)
        return state.balance - state.heldAmount
      },
    }),
    debits: t.field({
      type: 'Amount',
      description: 'Every debit so far, summed.',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).debitsTotal,
    }),
    credits: t.field({
      type: 'Amount',
      description: 'Every credit so far, summed.',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).creditsTotal,
    }),
    entryCount: t.field({
      type: 'Amount',
      description: 'How many entries it has.',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).lastSeq,
    }),
    createdAt: t.field({
      type: 'DateTime',
      resolve: async (a, _args, ctx) => (await stateOf(a, ctx)).createdAt,
    }),
    balanceAt: t.field({
      type: 'Amount',
      description:
        'The balance right after the last entry posted at or before `at` (to the millisecond); 0 before the first. Now when `at` is null.',
      args: { at: t.arg({ type: 'DateTime', required: false }) },
      resolve: async (a, args, ctx) =>
        args.at ? balanceAt(ctx.db, a.id, args.at) : (await stateOf(a, ctx)).balance,
    }),
    entries: t.connection(
      {
        type: LedgerEntry,
        description:
          'A statement: the account’s entries posted between `from` and `to` (both inclusive, to the millisecond), oldest first, each with the balance after it.',
        args: {
          from: t.arg({ type: 'DateTime', required: false }),
          to: t.arg({ type: 'DateTime', required: false }),
        },
        resolve: (a, args, ctx) => {
          forwardOnly(args)
          checkRange(args.from, args.to, 'entries')
          return resolveCursorConnection<Promise<StatementEntry[]>>(
            {
              args,
              defaultSize: PAGE_SIZE_DEFAULT,
              maxSize: PAGE_SIZE_MAX,
              toCursor: (e: StatementEntry) => e.accountSeq.toString(),
            },
            ({ after, limit }) =>
              statement(ctx.db, a.id, {
                from: args.from,
                to: args.to,
                afterSeq: after === undefined ? null : parseSeqCursor(after),
                limit,
              }),
          )
        },
      },
      { name: 'LedgerStatementConnection' },
      { name: 'LedgerStatementEdge' },
    ),
  }),
})

// ---- the trial balance -----------------------------------------------------------------

const TrialBalanceLine = builder.objectRef<Line>('TrialBalanceLine').implement({
  description: 'One account’s debits, credits and balance as of the trial balance’s instant.',
  fields: (t) => ({
    account: t.field({ type: LedgerAccount, resolve: (l) => l.account }),
    debits: t.field({ type: 'Amount', resolve: (l) => l.debits }),
    credits: t.field({ type: 'Amount', resolve: (l) => l.credits }),
    balance: t.field({
      type: 'Amount',
      description: 'On the account’s normal side.',
      resolve: (l) => l.balance,
    }),
  }),
})

const TrialBalanceTotal = builder.objectRef<Total>('TrialBalanceTotal').implement({
  description: 'One unit’s totals: its debits equal its credits.',
  fields: (t) => ({
    currency: t.exposeString('currency', { description: 'The unit: COIN, or an ISO 4217 code.' }),
    debits: t.field({ type: 'Amount', resolve: (s) => s.debits }),
    credits: t.field({ type: 'Amount', resolve: (s) => s.credits }),
    balanced: t.boolean({ resolve: (s) => s.debits === s.credits }),
  }),
})

const TrialBalance = builder.objectRef<TrialBalanceShape>('TrialBalance').implement({
  description: 'Every account with entries, as of an instant, and the totals per unit.',
  fields: (t) => ({
    asOf: t.field({ type: 'DateTime', resolve: (b) => b.asOf }),
    lines: t.field({
      type: [TrialBalanceLine],
      description: 'In account code order.',
      resolve: (b) => b.lines,
    }),
    totals: t.field({ type: [TrialBalanceTotal], resolve: (b) => b.totals }),
    balanced: t.boolean({
      description: 'True when, in every unit, debits equal credits.',
      resolve: (b) => b.totals.every((s) => s.debits === s.credits),
    }),
  }),
})

// ---- filters -------------------------------------------------------------------------

const LedgerTransactionFilter = builder.inputType('LedgerTransactionFilter', {
  fields: (t) => ({
    kind: t.string({ required: false, description: `One of: ${TRANSACTION_KINDS.join(', ')}.` }),
    accountId: t.id({ required: false, description: 'Only transactions with an entry on this account.' }),
    from: t.field({ type: 'DateTime', required: false, description: 'Posted at or after (inclusive).' }),
    to: t.field({
      type: 'DateTime',
      required: false,
      description: 'Posted at or before (inclusive, to the millisecond).',
    }),
  }),
})

const LedgerAccountFilter = builder.inputType('LedgerAccountFilter', {
  fields: (t) => ({
    currency: t.string({ required: false, description: 'COIN or an ISO 4217 code.' }),
    type: t.field({ type: LedgerAccountType, required: false }),
    codePrefix: t.string({
      required: false,
      description: '"platform:" for the platform’s accounts, "user:<id>:" for one user’s.',
    }),
  }),
})

const KINDS = new Set<string>(TRANSACTION_KINDS)

// ---- root fields ------------------------------------------------------------------------

builder.queryFields((t) => ({
  ledgerTransactions: t.connection(
    {
      type: LedgerTransaction,
      description: 'The journal, oldest first (by posting time, then id). Accountants only.',
      authScopes: ACCOUNTANTS,
      args: { filter: t.arg({ type: LedgerTransactionFilter, required: false }) },
      resolve: (_root, args, ctx) => {
        forwardOnly(args)
        const filter = args.filter ?? {}
        if (filter.kind != null && !KINDS.has(filter.kind)) {
          throw badInput(
            `filter.kind: unknown kind ${JSON.stringify(filter.kind)}; one of ${TRANSACTION_KINDS.join(', ')}`,
          )
        }
        const accountId = filter.accountId == null ? null : parseId(filter.accountId)
        if (filter.accountId != null && accountId === null)
          throw badInput('filter.accountId: not an account id')
        checkRange(filter.from, filter.to, 'filter')
        return resolveCursorConnection<Promise<JournalTransaction[]>>(
          { args, defaultSize: PAGE_SIZE_DEFAULT, maxSize: PAGE_SIZE_MAX, toCursor: transactionCursor },
          ({ after, limit }) => {
            const cursor = after === undefined ? null : parseTransactionCursor(after)
            if (after !== undefined && cursor === null)
              throw badInput('bad cursor: pass an endCursor back as it came')
            return listTransactions(
              ctx.db,
              { kind: filter.kind, accountId, from: filter.from, to: filter.to },
              { after: cursor, limit },
            )
          },
        )
      },
    },
    { name: 'LedgerTransactionConnection' },
    { name: 'LedgerTransactionEdge' },
  ),
  ledgerTransaction: t.field({
    type: LedgerTransaction,
    nullable: true,
    description: 'One journal transaction. Accountants only.',
    authScopes: ACCOUNTANTS,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => {
      const id = parseId(args.id)
      return id === null ? null : auditLoaders(ctx).transaction.load(id)
    },
  }),
  ledgerAccounts: t.connection(
    {
      type: LedgerAccount,
      description: 'The chart of accounts, in creation order. Accountants only.',
      authScopes: ACCOUNTANTS,
      args: { filter: t.arg({ type: LedgerAccountFilter, required: false }) },
      resolve: (_root, args, ctx) => {
        forwardOnly(args)
        const filter = args.filter ?? {}
        return resolveCursorConnection<Promise<AccountRow[]>>(
          {
            args,
            defaultSize: PAGE_SIZE_DEFAULT,
            maxSize: PAGE_SIZE_MAX,
            toCursor: (a: AccountRow) => a.id.toString(),
          },
          ({ after, limit }) =>
            listAccounts(
              ctx.db,
              { currency: filter.currency, type: filter.type, codePrefix: filter.codePrefix },
              { afterId: after === undefined ? null : parseSeqCursor(after), limit },
            ),
        )
      },
    },
    { name: 'LedgerAccountConnection' },
    { name: 'LedgerAccountEdge' },
  ),
  ledgerAccount: t.field({
    type: LedgerAccount,
    nullable: true,
    description: 'One account, with its balance at any instant and its statement. Accountants only.',
    authScopes: ACCOUNTANTS,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => {
      const id = parseId(args.id)
      return id === null ? null : auditLoaders(ctx).account.load(id)
    },
  }),
  trialBalance: t.field({
    type: TrialBalance,
    description:
      'Every account’s debits, credits and balance as of `asOf` (now when omitted), with per-unit totals. Accountants only.',
    authScopes: ACCOUNTANTS,
    args: { asOf: t.arg({ type: 'DateTime', required: false }) },
    // Lines cost per account: read only when the query asks for them.
    resolve: (_root, args, ctx, info) =>
      trialBalance(ctx.db, args.asOf ?? null, { lines: selects(info, 'lines') }),
  }),
}))
