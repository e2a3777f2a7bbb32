import { randomUUID } from 'node:crypto'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type AccountSpec,
  type Direction,
  Ledger,
  LedgerError,
  type PostingRequest,
  signedAmount,
} from '../../src/ledger/index.js'
import { createTestDatabase, type TestDatabase } from '../support/db.js'

// Random sequences of postings, retries, conflicting keys, reversals, holds
// and refused operations, run against the engine and against a plain
// in-memory model of a ledger. After every step the engine agrees with the
// model (balances, holds, entry counts) and the integrity check is clean.

let t: TestDatabase
let ledger: Ledger
/**
 * A second engine on the same database, as another instance would be: what
 * it posts makes the first one's expectations of the accounts stale (and the
 * other way round), so batches take both the fast and the slow path.
 */
let peer: Ledger

beforeAll(async () => {
  t = await createTestDatabase()
  // contendedAccountMs 0: an engine that finds its expectations stale plans
  // on them again at once (both paths, all the time).
  ledger = new Ledger(t.database, { concurrency: 1, contendedAccountMs: 0 })
  peer = new Ledger(t.database, { concurrency: 1, contendedAccountMs: 0 })
})
afterAll(() => t.drop())

// ---- the model --------------------------------------------------------------

const ACCOUNTS = [
  { name: 'wallet1', type: 'liability', unit: 'COIN', allowNegative: false },
  { name: 'wallet2', type: 'liability', unit: 'COIN', allowNegative: false },
  { name: 'earnings', type: 'liability', unit: 'COIN', allowNegative: false },
  { name: 'issued', type: 'asset', unit: 'COIN', allowNegative: true },
  { name: 'commission', type: 'income', unit: 'COIN', allowNegative: true },
  { name: 'clearing', type: 'asset', unit: 'USD', allowNegative: false },
  { name: 'deferred', type: 'liability', unit: 'USD', allowNegative: true },
  { name: 'debt', type: 'asset', unit: 'COIN', allowNegative: false },
] as const
type AccountName = (typeof ACCOUNTS)[number]['name']
const COIN_ACCOUNTS: readonly AccountName[] = ACCOUNTS.filter((a) => a.unit === 'COIN').map((a) => a.name)
const USD_ACCOUNTS: readonly AccountName[] = ACCOUNTS.filter((a) => a.unit === 'USD').map((a) => a.name)

interface ModelAccount {
  balance: bigint
  held: bigint
  seq: bigint
}
interface ModelEntry {
  account: AccountName
  direction: Direction
  amount: bigint
  /** A debit's shortfall goes here; a credit repays this first. */
  route?: { kind: 'shortfallTo' | 'repayFirst'; account: AccountName }
}
interface ModelHold {
  key: string
  id: bigint | null // null: refused at creation
  account: AccountName
  counter: AccountName
  amount: bigint
  expired: boolean // created already past its expiry
  status: 'pending' | 'posted' | 'voided' | 'expired'
  postedAmount?: bigint
}
interface Model {
  run: string
  accounts: Record<AccountName, ModelAccount>
  /** Every key ever accepted, with the content it was accepted with. */
  keys: Map<string, string>
  posted: { key: string; id: bigint; entries: ModelEntry[]; reversed: boolean }[]
  holds: ModelHold[]
}

const spec = (model: Model, name: AccountName): AccountSpec => {
  const a = ACCOUNTS.find((x) => x.name === name) as (typeof ACCOUNTS)[number]
  return {
    code: `test:${model.run}:${name}`,
    name,
    type: a.type,
    unit: a.unit,
    allowNegative: a.allowNegative,
  }
}
const typeOf = (name: AccountName) =>
  (ACCOUNTS.find((x) => x.name === name) as (typeof ACCOUNTS)[number]).type
const mayGoNegative = (name: AccountName) =>
  (ACCOUNTS.find((x) => x.name === name) as (typeof ACCOUNTS)[number]).allowNegative

/** Applies entries to a copy of the balances; null when a non-negative account would drop below its holds. */
function applyEntries(
  model: Model,
  entries: ModelEntry[],
  release?: { account: AccountName; amount: bigint },
) {
  const next = structuredClone(model.accounts)
  /** The entries as posted: routed entries split into their two parts. */
  const effective: ModelEntry[] = []
  if (release) next[release.account].held -= release.amount
  const post = (name: AccountName, direction: Direction, amount: bigint) => {
    effective.push({ account: name, direction, amount })
    const a = next[name]
    a.balance += signedAmount(typeOf(name), direction, amount)
    a.seq += 1n
    return mayGoNegative(name) || a.balance >= a.held
  }
  const clamp = (v: bigint, max: bigint) => (v < 0n ? 0n : v > max ? max : v)
  for (const e of entries) {
    let direct = e.amount
    if (e.route) {
      const shrinks = (name: AccountName, d: Direction) => signedAmount(typeOf(name), d, 1n) < 0n
      const routed =
        e.route.kind === 'shortfallTo'
          ? e.amount -
            (mayGoNegative(e.account) || !shrinks(e.account, 'debit')
              ? e.amount
              : clamp(next[e.account].balance - next[e.account].held, e.amount))
          : shrinks(e.route.account, 'credit')
            ? clamp(next[e.route.account].balance, e.amount)
            : 0n
      direct = e.amount - routed
      if (routed > 0n && !post(e.route.account, e.direction, routed)) return null
    }
    if (direct > 0n && !post(e.account, e.direction, direct)) return null
  }
  return { next, effective }
}

// ---- the commands -----------------------------------------------------------

const stats = new Map<string, number>()
const outcomes = new Map<string, number>()

type Real = Ledger
/** Each command acts on both, then the invariants are checked. */
abstract class Cmd implements fc.AsyncCommand<Model, Real> {
  abstract check(model: Readonly<Model>): boolean
  abstract act(model: Model, real: Real): Promise<void>
  async run(model: Model, real: Real) {
    stats.set(this.constructor.name, (stats.get(this.constructor.name) ?? 0) + 1)
    await this.act(model, real)
    await assertAgrees(model, real)
  }
}

const content = (entries: ModelEntry[]) =>
  JSON.stringify(entries, (_, v) => (typeof v === 'bigint' ? `${v}` : v))

/** Expects a LedgerError with this code. */
async function refused(promise: Promise<unknown>, code: string) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  outcomes.set(code, (outcomes.get(code) ?? 0) + 1)
  expect(error, `expected a refusal ${code}`).toBeInstanceOf(LedgerError)
  expect((error as LedgerError).code).toBe(code)
}

class PostCmd extends Cmd {
  constructor(
    readonly keyIndex: number,
    readonly entries: ModelEntry[],
    readonly viaPeer = false,
  ) {
    super()
  }
  check() {
    return true
  }
  async act(model: Model, engine: Real) {
    const real = this.viaPeer ? peer : engine
    const key = `${model.run}:post:${this.keyIndex}`
    const request: PostingRequest = {
      idempotencyKey: key,
      kind: 'adjustment',
      entries: this.entries.map((e) => ({
        account: spec(model, e.account),
        direction: e.direction,
        amount: e.amount,
        ...(e.route ? { [e.route.kind]: spec(model, e.route.account) } : {}),
      })),
    }
    const prior = model.keys.get(key)
    if (prior !== undefined && prior !== content(this.entries))
      return refused(real.post(request), 'IDEMPOTENCY_KEY_REUSED')
    if (prior !== undefined) {
      expect((await real.post(request)).replayed).toBe(true)
      return
    }
    const applied = applyEntries(model, this.entries)
    if (applied === null) return refused(real.post(request), 'INSUFFICIENT_FUNDS')
    const { transaction, replayed } = await real.post(request)
    expect(replayed).toBe(false)
    model.accounts = applied.next
    model.keys.set(key, content(this.entries))
    model.posted.push({ key, id: transaction.id, entries: applied.effective, reversed: false })
  }
  override toString = () => `post(${this.keyIndex}, ${content(this.entries)}${this.viaPeer ? ', peer' : ''})`
}

class UnbalancedCmd extends Cmd {
  constructor(readonly amount: bigint) {
    super()
  }
  check() {
    return true
  }
  async act(model: Model, real: Real) {
    await refused(
      real.post({
        idempotencyKey: `${model.run}:unbalanced:${randomUUID()}`,
        kind: 'adjustment',
        entries: [
          { account: spec(model, 'wallet1'), direction: 'debit', amount: this.amount },
          { account: spec(model, 'commission'), direction: 'credit', amount: this.amount + 1n },
        ],
      }),
      'UNBALANCED',
    )
  }
  override toString = () => `unbalanced(${this.amount})`
}

class ReverseCmd extends Cmd {
  constructor(
    readonly pick: number,
    readonly keyIndex: number,
    readonly viaPeer = false,
  ) {
    super()
  }
  check(model: Readonly<Model>) {
    return model.posted.length > 0
  }
  async act(model: Model, engine: Real) {
    const real = this.viaPeer ? peer : engine
    const original = model.posted[this.pick % model.posted.length] as Model['posted'][number]
    const key = `${model.run}:reverse:${this.keyIndex}`
    const mirror = original.entries.map((e) => ({
      ...e,
      direction: (e.direction === 'debit' ? 'credit' : 'debit') as Direction,
    }))
    const identity = `reverse:${original.id}:${content(mirror)}`
    const prior = model.keys.get(key)
    const attempt = () => real.reverse(original.id, { idempotencyKey: key, description: 'model reversal' })
    if (prior !== undefined && prior !== identity) return refused(attempt(), 'IDEMPOTENCY_KEY_REUSED')
    if (prior !== undefined) {
      expect((await attempt()).replayed).toBe(true)
      return
    }
    if (original.reversed) return refused(attempt(), 'ALREADY_REVERSED')
    const applied = applyEntries(model, mirror)
    if (applied === null) return refused(attempt(), 'INSUFFICIENT_FUNDS')
    const { transaction } = await attempt()
    expect(transaction.reversesId).toBe(original.id)
    model.accounts = applied.next
    model.keys.set(key, identity)
    original.reversed = true
    model.posted.push({ key, id: transaction.id, entries: mirror, reversed: false })
  }
  override toString = () => `reverse(${this.pick}, ${this.keyIndex}${this.viaPeer ? ', peer' : ''})`
}

const FUTURE = new Date(Date.now() + 3_600_000)
const PAST = new Date(1_000_000)

class HoldCmd extends Cmd {
  constructor(
    readonly keyIndex: number,
    readonly account: AccountName,
    readonly counterPick: number,
    readonly amount: bigint,
    readonly expired: boolean,
  ) {
    super()
  }
  check() {
    return true
  }
  async act(model: Model, real: Real) {
    const unitAccounts = USD_ACCOUNTS.includes(this.account) ? USD_ACCOUNTS : COIN_ACCOUNTS
    const others = unitAccounts.filter((a) => a !== this.account)
    const counter = others[this.counterPick % others.length] as AccountName
    const key = `${model.run}:hold:${this.keyIndex}`
    const attempt = () =>
      real.hold({
        idempotencyKey: key,
        kind: 'payout',
        account: spec(model, this.account),
        counterAccount: spec(model, counter),
        amount: this.amount,
        expiresAt: this.expired ? PAST : FUTURE,
      })
    const identity = `hold:${this.account}:${counter}:${this.amount}:${this.expired}`
    const prior = model.keys.get(key)
    if (prior !== undefined && prior !== identity) return refused(attempt(), 'IDEMPOTENCY_KEY_REUSED')
    if (prior !== undefined) {
      expect((await attempt()).replayed).toBe(true)
      return
    }
    const a = model.accounts[this.account]
    if (!mayGoNegative(this.account) && a.balance - a.held < this.amount)
      return refused(attempt(), 'INSUFFICIENT_FUNDS')
    const { hold } = await attempt()
    a.held += this.amount
    model.keys.set(key, identity)
    model.holds.push({
      key,
      id: hold.id,
      account: this.account,
      counter,
      amount: this.amount,
      expired: this.expired,
      status: 'pending',
    })
  }
  override toString = () => `hold(${this.keyIndex}, ${this.account}, ${this.amount}, expired=${this.expired})`
}

class PostHoldCmd extends Cmd {
  constructor(
    readonly pick: number,
    readonly amount: bigint | undefined,
  ) {
    super()
  }
  check(model: Readonly<Model>) {
    return model.holds.length > 0
  }
  async act(model: Model, real: Real) {
    const hold = model.holds[this.pick % model.holds.length] as ModelHold
    const id = hold.id as bigint
    if (hold.status === 'posted') {
      expect((await real.postHold(id, this.amount)).replayed).toBe(true)
      return
    }
    if (hold.status !== 'pending' || hold.expired)
      return refused(real.postHold(id, this.amount), 'HOLD_NOT_PENDING')
    const amount = this.amount ?? hold.amount
    if (amount > hold.amount) return refused(real.postHold(id, this.amount), 'HOLD_AMOUNT_EXCEEDED')
    const entries: ModelEntry[] = [
      { account: hold.account, direction: 'debit', amount },
      { account: hold.counter, direction: 'credit', amount },
    ]
    const applied = applyEntries(model, entries, { account: hold.account, amount: hold.amount })
    if (applied === null) return refused(real.postHold(id, this.amount), 'INSUFFICIENT_FUNDS')
    const { transaction } = await real.postHold(id, this.amount)
    model.accounts = applied.next
    hold.status = 'posted'
    model.posted.push({ key: `hold:${id}:post`, id: transaction.id, entries, reversed: false })
  }
  override toString = () => `postHold(${this.pick}, ${this.amount})`
}

class VoidHoldCmd extends Cmd {
  constructor(readonly pick: number) {
    super()
  }
  check(model: Readonly<Model>) {
    return model.holds.length > 0
  }
  async act(model: Model, real: Real) {
    const hold = model.holds[this.pick % model.holds.length] as ModelHold
    const id = hold.id as bigint
    if (hold.status === 'posted' || hold.status === 'expired')
      return refused(real.voidHold(id), 'HOLD_NOT_PENDING')
    expect((await real.voidHold(id)).status).toBe('voided')
    if (hold.status === 'pending') model.accounts[hold.account].held -= hold.amount
    hold.status = 'voided'
  }
  override toString = () => `voidHold(${this.pick})`
}

class ExpireCmd extends Cmd {
  check() {
    return true
  }
  async act(model: Model, real: Real) {
    await real.expireHolds()
    for (const hold of model.holds) {
      if (hold.status === 'pending' && hold.expired) {
        hold.status = 'expired'
        model.accounts[hold.account].held -= hold.amount
      }
    }
  }
  override toString = () => 'expireHolds()'
}

// ---- generators -------------------------------------------------------------

const amountArb = fc.bigInt({ min: 1n, max: 60n })
const transferArb = (accounts: readonly AccountName[]) =>
  fc
    .tuple(fc.constantFrom(...accounts), fc.constantFrom(...accounts), amountArb)
    .map(([from, to, amount]): ModelEntry[] => [
      { account: from, direction: 'debit', amount },
      { account: to, direction: 'credit', amount },
    ])
const entriesArb = fc
  .array(fc.oneof(transferArb(COIN_ACCOUNTS), transferArb(USD_ACCOUNTS)), { minLength: 1, maxLength: 3 })
  .map((transfers) => transfers.flat())

/** A clawback: debit a user account with its shortfall to the debt account. */
const clawbackArb = fc
  .tuple(fc.constantFrom<AccountName>('wallet1', 'wallet2', 'earnings'), fc.bigInt({ min: 1n, max: 200n }))
  .map(([account, amount]): ModelEntry[] => [
    { account, direction: 'debit', amount, route: { kind: 'shortfallTo', account: 'debt' } },
    { account: 'issued', direction: 'credit', amount },
  ])
/** A recharge that repays the debt first. */
const repayArb = fc
  .tuple(fc.constantFrom<AccountName>('wallet1', 'wallet2'), fc.bigInt({ min: 1n, max: 200n }))
  .map(([account, amount]): ModelEntry[] => [
    { account: 'issued', direction: 'debit', amount },
    { account, direction: 'credit', amount, route: { kind: 'repayFirst', account: 'debt' } },
  ])

const commands = [
  fc.tuple(fc.nat(5), fc.oneof(clawbackArb, repayArb), fc.boolean()).map(([k, e, p]) => new PostCmd(k, e, p)),
  fc.tuple(fc.nat(5), entriesArb, fc.boolean()).map(([k, e, p]) => new PostCmd(k, e, p)),
  fc.tuple(fc.nat(5), entriesArb, fc.boolean()).map(([k, e, p]) => new PostCmd(k, e, p)),
  amountArb.map((a) => new UnbalancedCmd(a)),
  fc.tuple(fc.nat(), fc.nat(3), fc.boolean()).map(([p, k, v]) => new ReverseCmd(p, k, v)),
  fc
    .tuple(fc.nat(3), fc.constantFrom(...ACCOUNTS.map((a) => a.name)), fc.nat(), amountArb, fc.boolean())
    .map(([k, a, c, amount, expired]) => new HoldCmd(k, a, c, amount, expired)),
  fc.tuple(fc.nat(), fc.option(amountArb, { nil: undefined })).map(([p, a]) => new PostHoldCmd(p, a)),
  fc.nat().map((p) => new VoidHoldCmd(p)),
  fc.constant(new ExpireCmd()),
]

// ---- the invariants ---------------------------------------------------------

async function assertAgrees(model: Model, real: Real) {
  const sums = new Map<string, bigint>()
  for (const a of ACCOUNTS) {
    const b = await real.balance(spec(model, a.name))
    const m = model.accounts[a.name]
    expect({ account: a.name, balance: b.balance, held: b.held, seq: b.lastSeq }).toEqual({
      account: a.name,
      balance: m.balance,
      held: m.held,
      seq: m.seq,
    })
    if (!a.allowNegative) expect(b.balance).toBeGreaterThanOrEqual(b.held)
    sums.set(a.unit, (sums.get(a.unit) ?? 0n) + b.debitsTotal - b.creditsTotal)
  }
  for (const [, sum] of sums) expect(sum).toBe(0n)
  const report = await real.checkIntegrity()
  expect(report.problems).toEqual([])
}

describe('ledger against an in-memory model', () => {
  it('agrees after every step of random operation sequences', async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 40, size: '+1' }), async (cmds) => {
        const model: Model = {
          run: randomUUID().slice(0, 8),
          accounts: Object.fromEntries(
            ACCOUNTS.map((a) => [a.name, { balance: 0n, held: 0n, seq: 0n }]),
          ) as Model['accounts'],
          keys: new Map(),
          posted: [],
          holds: [],
        }
        // Fund the run so that postings do more than get refused.
        await new PostCmd(99, [
          { account: 'issued', direction: 'debit', amount: 100n },
          { account: 'wallet1', direction: 'credit', amount: 100n },
          { account: 'clearing', direction: 'debit', amount: 100n },
          { account: 'deferred', direction: 'credit', amount: 100n },
        ]).run(model, ledger)
        await fc.asyncModelRun(() => ({ model, real: ledger }), cmds)
      }),
      { numRuns: Number(process.env.FC_RUNS ?? 60) },
    )
    // The property exercised every kind of operation, not just a few.
    for (const name of [
      'PostCmd',
      'UnbalancedCmd',
      'ReverseCmd',
      'HoldCmd',
      'PostHoldCmd',
      'VoidHoldCmd',
      'ExpireCmd',
    ]) {
      expect(stats.get(name) ?? 0, name).toBeGreaterThan(0)
    }
    // Both engines wrote batches on their expectations and, when the other
    // had moved the accounts, planned them again under the locks.
    for (const engine of [ledger, peer]) {
      expect(engine.expectations.held).toBeGreaterThan(0)
      expect(engine.expectations.stale).toBeGreaterThan(0)
    }
    if (process.env.FC_VERBOSE)
      console.log(
        Object.fromEntries(stats),
        Object.fromEntries(outcomes),
        ledger.expectations,
        peer.expectations,
      )
  }, 300_000)
})
