import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { eq, sql } from 'drizzle-orm'
import { buildSchema, type GraphQLSchema, getNamedType, isInputObjectType, isObjectType } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signToken } from '../src/auth/tokens.js'
import {
  coinPackagePrices,
  coinPackages,
  gifts,
  ledgerEntries,
  rechargeOrders,
  users,
} from '../src/db/schema.js'
import type { UserErrorCode } from '../src/graphql/errors.js'
import { schema as builtSchema } from '../src/graphql/schema.js'
import { creatorEarnings, type PostedTransaction, platform, userWallet } from '../src/ledger/index.js'
import { type Actor, signIn } from './support/actors.js'
import { type GraphQLErrorBody, graphql, startTestApp, type TestApp } from './support/app.js'
import { END_LIVE, START_LIVE } from './support/operations.js'
import { snapshot, tablesOf } from './support/snapshot.js'

// The authorization matrix: every role against every operation that reads
// money or personal data or changes anything, over HTTP against the real
// server. The rules:
//
// - anyone may read the catalog, live streams, stream totals and top gifters
//   (public profile fields only);
// - a signed-in user (every one is a viewer) reads only their own wallet,
//   history and spend limits;
// - creators start and end only their own streams and read only their own earnings;
// - accountants read the ledger (journal, accounts, statements, trial balance,
//   integrity, the reconciliation report) and change nothing as accountants;
//   admins do not read it without the accountant role (docs/AUDIT.md);
// - admins manage the catalog and grant promotional coins.
//
// No credentials: UNAUTHENTICATED. Credentials that do not check out (here a
// token signed with another key, claiming every role): UNAUTHENTICATED with
// HTTP 401, never an anonymous request. Signed in but not allowed: FORBIDDEN.
// A refusal a caller is entitled to hear about is a user error code.
//
// Every cell that is not 'ok' must change nothing at all (every table of the
// database hashed before and after), and every query cell too.
//
// Reading the accountant column: an accountant is also a viewer, so they may
// spend their own coins and set their own limit like anyone signed in; the
// accountant role itself grants nothing that writes.

type Role = 'anonymous' | 'viewer' | 'creator' | 'accountant' | 'admin'
type Column = Role | 'invalid token'
type Denied = 'UNAUTHENTICATED' | 'FORBIDDEN'
/** 'null': allowed, and the field answers null (e.g. earnings of a non-creator). */
type Outcome = 'ok' | 'null' | Denied | UserErrorCode

const COLUMNS: Column[] = ['anonymous', 'invalid token', 'viewer', 'creator', 'accountant', 'admin']

const U = 'UNAUTHENTICATED'
const F = 'FORBIDDEN'

/** A row's cells, by role; bad credentials are UNAUTHENTICATED everywhere, public operations included. */
function cells(
  anonymous: Outcome,
  viewer: Outcome,
  creator: Outcome,
  accountant: Outcome,
  admin: Outcome,
): Record<Column, Outcome> {
  return { anonymous, 'invalid token': U, viewer, creator, accountant, admin }
}
const PUBLIC = cells('ok', 'ok', 'ok', 'ok', 'ok')
const SIGNED_IN = cells(U, 'ok', 'ok', 'ok', 'ok')
const CREATORS = cells(U, F, 'ok', F, F)
const ADMINS = cells(U, F, F, F, 'ok')
const ACCOUNTANTS = cells(U, F, F, 'ok', F)

interface Cell {
  column: Column
  /** The signed-in caller; undefined for the anonymous and invalid-token columns. */
  actor: Actor | undefined
  /** From `variables` to `check` and `cleanup`. */
  memo: Record<string, any>
}

interface Row {
  name: string
  /** The schema coordinates this row answers for (root fields and Me's fields): see the guard below. */
  covers: string[]
  /** The response key of the root field. */
  root: string
  document: string
  /** The value the outcome is read from: null → 'null'; a payload with userErrors → their first code. */
  select: (data: any) => unknown
  expect: Record<Column, Outcome>
  variables?: (cell: Cell) => Promise<Record<string, unknown>> | Record<string, unknown>
  /** More assertions on an allowed cell: whose data came back, what changed. */
  check?: (value: any, cell: Cell) => Promise<void>
  cleanup?: (cell: Cell) => Promise<void>
  /** Subscriptions run over SSE, and read their first event; trigger makes one happen once subscribed. */
  trigger?: (cell: Cell) => void
  /** Known authorization holes: the cell is `it.fails` until src/ is fixed. */
  holes?: Partial<Record<Column, string>>
}

// ---- the fixture ---------------------------------------------------------------

let app: TestApp
let tables: string[]
let forgedToken: string
const actors = {} as Record<Exclude<Role, 'anonymous'>, Actor>
/** A creator who is live (the stream other people's gifts and end attempts go to), and a second viewer. */
let streamer: Actor
let bob: Actor
let streamId: string
let rose: string
const fixture = {} as Record<
  'giftEdit' | 'giftRetire' | 'giftOff' | 'packageEdit' | 'packageRetire' | 'packageOff',
  string
> & { unpaidCredit?: string }

/** Distinct balances and limits, so that someone else's data could not pass for the caller's. */
const GRANTED: Record<Exclude<Role, 'anonymous'>, number> = {
  viewer: 1_000,
  creator: 2_000,
  accountant: 3_000,
  admin: 4_000,
}
const LIMIT: Record<Exclude<Role, 'anonymous'>, number> = {
  viewer: 10_001,
  creator: 10_002,
  accountant: 10_003,
  admin: 10_004,
}
const grantReason = (handle: string) => `authz welcome ${handle}`

let keyCounter = 0
const key = () => `authz-${++keyCounter}`

const USER_ERRORS = 'userErrors { code field message }'
const PUBLIC_USER = 'id handle displayName isCreator'

async function coinsOf(userId: string): Promise<number> {
  return Number((await app.services.ledger.balance(userWallet(userId))).balance)
}
async function earningsOf(userId: string): Promise<number> {
  return Number((await app.services.ledger.balance(creatorEarnings(userId))).balance)
}
/** The id of a user's wallet account in the ledger. */
async function accountIdOf(userId: string): Promise<string> {
  return (await app.services.ledger.balance(userWallet(userId))).account.id.toString()
}
/** A recharge order the provider says is paid, with no credit: what the reconciliation report must show. */
async function paidButNotCredited(): Promise<string> {
  const [pkg] = await app.database.db.select().from(coinPackages).where(eq(coinPackages.sku, 'coins_70'))
  const [order] = await app.database.db
    .insert(rechargeOrders)
    .values({
      userId: bob.userId,
      packageId: pkg?.id ?? '',
      provider: 'stripe',
      status: 'succeeded',
      coins: 70n,
      bonusCoins: 0n,
      priceMinor: 99n,
      currency: 'USD',
      idempotencyKey: key(),
      providerReference: `pi_authz_${keyCounter}`,
    })
    .returning({ id: rechargeOrders.id })
  return order?.id ?? ''
}
async function limitOf(userId: string): Promise<number | null> {
  const [row] = await app.database.db
    .select({ limit: users.dailySpendLimitCoins })
    .from(users)
    .where(eq(users.id, userId))
  return row?.limit === null || row?.limit === undefined ? null : Number(row.limit)
}
async function publicGiftSkus(): Promise<string[]> {
  const { body } = await graphql<{ gifts: { sku: string }[] }>(app, '{ gifts { sku } }')
  return body.data?.gifts.map((g) => g.sku) ?? []
}
async function publicPackageSkus(): Promise<string[]> {
  const { body } = await graphql<{ coinPackages: { sku: string }[] }>(app, '{ coinPackages { sku } }')
  return body.data?.coinPackages.map((p) => p.sku) ?? []
}

beforeAll(async () => {
  app = await startTestApp({
    env: { RATE_LIMIT_MUTATIONS_PER_SECOND: '10000', RATE_LIMIT_MUTATIONS_BURST: '10000' },
  })
  const db = app.database.db
  ;[actors.viewer, actors.creator, actors.accountant, actors.admin, streamer, bob] = await Promise.all([
    signIn(app, 'viewer'),
    signIn(app, 'creator', ['creator']),
    signIn(app, 'accountant', ['accountant']),
    signIn(app, 'admin', ['admin']),
    signIn(app, 'streamer', ['creator']),
    signIn(app, 'bob'),
  ])
  // A token for a user who claims every role, signed with a key the server does not know.
  forgedToken = await signToken(
    new TextEncoder().encode('a-key-the-server-has-never-seen-0123456789abcdef'),
    { sub: 'test|forger', preferred_username: 'forger', roles: ['creator', 'accountant', 'admin'] },
    { expiresIn: '1h', issuer: app.config.jwt.issuer, audience: app.config.jwt.audience },
  )

  // Catalog items of this test's own, so that the admin cells never touch what the others use.
  const giftRows = await db
    .insert(gifts)
    .values([
      { sku: 'authz_gift_edit', name: 'Authz Edit', coinCost: 50n, imageUrl: '/static/gifts/a.png' },
      { sku: 'authz_gift_retire', name: 'Authz Retire', coinCost: 50n, imageUrl: '/static/gifts/b.png' },
      {
        sku: 'authz_gift_off',
        name: 'Authz Off',
        coinCost: 50n,
        imageUrl: '/static/gifts/c.png',
        active: false,
      },
    ])
    .returning({ id: gifts.id, sku: gifts.sku })
  const packageRows = await db
    .insert(coinPackages)
    .values([
      { sku: 'authz_pkg_edit', coins: 100n },
      { sku: 'authz_pkg_retire', coins: 100n },
      { sku: 'authz_pkg_off', coins: 100n, active: false },
    ])
    .returning({ id: coinPackages.id, sku: coinPackages.sku })
  await db
    .insert(coinPackagePrices)
    .values(packageRows.map((p) => ({ packageId: p.id, currency: 'USD', amountMinor: 100n })))
  const id = (rows: { id: string; sku: string }[], sku: string) => rows.find((r) => r.sku === sku)?.id ?? ''
  fixture.giftEdit = id(giftRows, 'authz_gift_edit')
  fixture.giftRetire = id(giftRows, 'authz_gift_retire')
  fixture.giftOff = id(giftRows, 'authz_gift_off')
  fixture.packageEdit = id(packageRows, 'authz_pkg_edit')
  fixture.packageRetire = id(packageRows, 'authz_pkg_retire')
  fixture.packageOff = id(packageRows, 'authz_pkg_off')
  const [roseRow] = await db.select({ id: gifts.id }).from(gifts).where(eq(gifts.sku, 'rose'))
  rose = roseRow?.id ?? ''

  // Coins and limits of their own for everyone, a live stream with a gifter, earnings for the creator.
  const GRANT = `mutation($input: GrantCoinsInput!) { grantCoins(input: $input) { ${USER_ERRORS} } }`
  for (const [role, coins] of Object.entries(GRANTED) as [keyof typeof GRANTED, number][]) {
    const input = { userId: actors[role].userId, coins, reason: grantReason(role), idempotencyKey: key() }
    expect((await actors.admin.ok(GRANT, { input })).grantCoins.userErrors).toEqual([])
    const SET = `mutation($c: Amount) { setDailySpendLimit(input: { dailyCoins: $c }) { ${USER_ERRORS} } }`
    expect((await actors[role].ok(SET, { c: LIMIT[role] })).setDailySpendLimit.userErrors).toEqual([])
  }
  const bobGrant = { userId: bob.userId, coins: 500, reason: grantReason('bob'), idempotencyKey: key() }
  await actors.admin.ok(GRANT, { input: bobGrant })
  const started = (await streamer.ok(START_LIVE, { title: 'Authorization matrix' })).startLiveStream
  expect(started.userErrors).toEqual([])
  streamId = started.liveStream.id
  const SEND = `mutation($input: SendGiftInput!) { sendGift(input: $input) { ${USER_ERRORS} } }`
  for (const input of [
    { giftId: rose, liveStreamId: streamId, quantity: 3, idempotencyKey: key() },
    { giftId: rose, creatorId: actors.creator.userId, quantity: 4, idempotencyKey: key() },
  ]) {
    expect((await bob.ok(SEND, { input })).sendGift.userErrors).toEqual([])
  }
  tables = await tablesOf(db)
})
afterAll(() => app?.stop())

// ---- the matrix ----------------------------------------------------------------

const ROWS: Row[] = [
  // ---- public reads
  {
    name: 'coinPackages',
    covers: ['Query.coinPackages'],
    root: 'coinPackages',
    document: `query { coinPackages(currency: "USD") {
      id sku coins bonusCoins active sortOrder price { amount currency formatted } prices { amount currency } } }`,
    select: (d) => d.coinPackages,
    expect: PUBLIC,
    check: async (list) => {
      const skus = list.map((p: any) => p.sku)
      expect(skus).toContain('coins_70')
      expect(skus).not.toContain('authz_pkg_off')
      expect(list.every((p: any) => p.active)).toBe(true)
    },
  },
  {
    name: 'gifts',
    covers: ['Query.gifts'],
    root: 'gifts',
    document: 'query { gifts { id sku name coinCost imageUrl active sortOrder } }',
    select: (d) => d.gifts,
    expect: PUBLIC,
    check: async (list) => {
      const skus = list.map((g: any) => g.sku)
      expect(skus).toContain('rose')
      expect(skus).not.toContain('authz_gift_off')
      expect(list.every((g: any) => g.active)).toBe(true)
    },
  },
  {
    name: 'gifts(includeRetired: true)',
    covers: ['Query.gifts'],
    root: 'gifts',
    document: 'query { gifts(includeRetired: true) { id sku active } }',
    select: (d) => d.gifts,
    expect: ADMINS,
    check: async (list) => {
      expect(list).toContainEqual({ id: fixture.giftOff, sku: 'authz_gift_off', active: false })
    },
  },
  {
    name: 'liveStreams',
    covers: ['Query.liveStreams'],
    root: 'liveStreams',
    document: `query { liveStreams(first: 20) {
      edges { cursor node { id title status startedAt giftCoins creator { ${PUBLIC_USER} } } } } }`,
    select: (d) => d.liveStreams,
    expect: PUBLIC,
    check: async (connection) => {
      const node = connection.edges.map((e: any) => e.node).find((n: any) => n.id === streamId)
      expect(node).toMatchObject({
        status: 'LIVE',
        creator: { id: streamer.userId, handle: 'streamer', displayName: 'Streamer', isCreator: true },
      })
    },
  },
  {
    name: 'liveStream(id) with topGifters',
    covers: ['Query.liveStream'],
    root: 'liveStream',
    document: `query($id: ID!) { liveStream(id: $id) {
      id status giftCoins creator { ${PUBLIC_USER} } topGifters(first: 10) { rank coins user { ${PUBLIC_USER} } } } }`,
    variables: () => ({ id: streamId }),
    select: (d) => d.liveStream,
    expect: PUBLIC,
    check: async (stream) => {
      expect(stream.giftCoins).toBeGreaterThanOrEqual(3)
      const gifter = stream.topGifters.find((g: any) => g.user.id === bob.userId)
      expect(gifter?.user).toEqual({ id: bob.userId, handle: 'bob', displayName: 'Bob', isCreator: false })
      expect(gifter?.coins).toBeGreaterThanOrEqual(3)
    },
  },

  // ---- the caller's own data
  {
    name: 'me { user }',
    covers: ['Query.me', 'Me.user'],
    root: 'me',
    document: `query { me { user { ${PUBLIC_USER} } } }`,
    select: (d) => d.me?.user,
    expect: SIGNED_IN,
    check: async (user, { column, actor }) => {
      expect(user).toEqual({
        id: actor?.userId,
        handle: column,
        displayName: column[0]?.toUpperCase() + column.slice(1),
        isCreator: column === 'creator',
      })
    },
  },
  {
    name: 'me { wallet { coins updatedAt } }',
    covers: ['Query.me', 'Me.wallet'],
    root: 'me',
    document: 'query { me { wallet { coins updatedAt } } }',
    select: (d) => d.me?.wallet,
    expect: SIGNED_IN,
    check: async (wallet, { actor }) => {
      expect(wallet.coins).toBe(await coinsOf(actor?.userId ?? ''))
      expect(wallet.updatedAt).toEqual(expect.any(String))
    },
  },
  {
    name: 'me { wallet { history } }',
    covers: ['Query.me', 'Me.wallet'],
    root: 'me',
    document: `query { me { wallet { coins history(first: 20) {
      edges { node { id kind amount balanceAfter postedAt description } } pageInfo { hasNextPage } } } } }`,
    select: (d) => d.me?.wallet,
    expect: SIGNED_IN,
    check: async (wallet, { column }) => {
      const entries = wallet.history.edges.map((e: any) => e.node)
      expect(entries[0].balanceAfter).toBe(wallet.coins)
      const descriptions = entries.map((e: any) => e.description).join('\n')
      expect(descriptions).toContain(grantReason(column))
      for (const other of [...Object.keys(GRANTED), 'bob'].filter((h) => h !== column)) {
        expect(descriptions).not.toContain(grantReason(other))
      }
    },
  },
  {
    name: 'me { earnings }',
    covers: ['Query.me', 'Me.earnings'],
    root: 'me',
    document: 'query { me { earnings { coins pendingPayoutCoins } } }',
    select: (d) => d.me?.earnings,
    expect: cells(U, 'null', 'ok', 'null', 'null'),
    check: async (earnings, { actor }) => {
      expect(earnings.coins).toBeGreaterThan(0)
      expect(earnings.coins).toBe(await earningsOf(actor?.userId ?? ''))
    },
  },
  {
    name: 'me { spendLimits }',
    covers: ['Query.me', 'Me.spendLimits'],
    root: 'me',
    document: 'query { me { spendLimits { dailyCoins perGiftCoins spentTodayCoins } } }',
    select: (d) => d.me?.spendLimits,
    expect: SIGNED_IN,
    check: async (limits, { actor }) => {
      expect(limits.dailyCoins).toBe(await limitOf(actor?.userId ?? ''))
    },
  },

  // ---- viewers' mutations
  {
    name: 'sendGift (in another creator’s live stream)',
    covers: ['Mutation.sendGift'],
    root: 'sendGift',
    document: `mutation($input: SendGiftInput!) { sendGift(input: $input) {
      giftEvent { id coins sender { id } creator { id } liveStream { id } } wallet { coins } ${USER_ERRORS} } }`,
    variables: async ({ actor, memo }) => {
      memo.before = actor ? await coinsOf(actor.userId) : null
      return { input: { giftId: rose, liveStreamId: streamId, idempotencyKey: key() } }
    },
    select: (d) => d.sendGift,
    expect: SIGNED_IN,
    check: async (payload, { actor, memo }) => {
      expect(payload.giftEvent).toMatchObject({
        coins: 1,
        sender: { id: actor?.userId },
        creator: { id: streamer.userId },
        liveStream: { id: streamId },
      })
      expect(payload.wallet.coins).toBe(memo.before - 1)
      expect(await coinsOf(actor?.userId ?? '')).toBe(memo.before - 1)
    },
  },
  {
    name: 'sendGift (to yourself)',
    covers: ['Mutation.sendGift'],
    root: 'sendGift',
    document: `mutation($input: SendGiftInput!) { sendGift(input: $input) { giftEvent { id } ${USER_ERRORS} } }`,
    variables: ({ actor }) => ({
      input: { giftId: rose, creatorId: actor?.userId ?? actors.creator.userId, idempotencyKey: key() },
    }),
    select: (d) => d.sendGift,
    // Only creators can be gifted; one cannot gift oneself.
    expect: cells(U, 'CREATOR_NOT_FOUND', 'CANNOT_GIFT_SELF', 'CREATOR_NOT_FOUND', 'CREATOR_NOT_FOUND'),
  },
  {
    name: 'setDailySpendLimit',
    covers: ['Mutation.setDailySpendLimit'],
    root: 'setDailySpendLimit',
    document: `mutation($input: SetDailySpendLimitInput!) {
      setDailySpendLimit(input: $input) { spendLimits { dailyCoins } ${USER_ERRORS} } }`,
    variables: async ({ column, memo }) => {
      memo.others = await Promise.all(
        [...Object.values(actors), streamer, bob].map(async (a) => [a.userId, await limitOf(a.userId)]),
      )
      memo.value = 20_000 + COLUMNS.indexOf(column)
      return { input: { dailyCoins: memo.value } }
    },
    select: (d) => d.setDailySpendLimit,
    expect: SIGNED_IN,
    check: async (payload, { actor, memo }) => {
      expect(payload.spendLimits.dailyCoins).toBe(memo.value)
      for (const [userId, before] of memo.others as [string, number | null][]) {
        expect(await limitOf(userId)).toBe(userId === actor?.userId ? memo.value : before)
      }
    },
  },

  // ---- recharge (no provider is configured on this server: nothing reaches one)
  {
    name: 'recharge(id) (an id that is not yours)',
    covers: ['Query.recharge'],
    root: 'recharge',
    document: `query($id: ID!) { recharge(id: $id) { id status coins } }`,
    variables: () => ({ id: '00000000-0000-4000-8000-00000000beef' }),
    select: (d) => d.recharge,
    expect: cells(U, 'null', 'null', 'null', 'null'),
  },
  {
    name: 'createRecharge',
    covers: ['Mutation.createRecharge'],
    root: 'createRecharge',
    document: `mutation($input: CreateRechargeInput!) {
      createRecharge(input: $input) { recharge { id } checkout { providerReference } ${USER_ERRORS} } }`,
    variables: () => ({
      input: { packageId: '00000000-0000-4000-8000-000000000001', provider: 'STRIPE', idempotencyKey: key() },
    }),
    select: (d) => d.createRecharge,
    expect: cells(
      U,
      'PROVIDER_NOT_CONFIGURED',
      'PROVIDER_NOT_CONFIGURED',
      'PROVIDER_NOT_CONFIGURED',
      'PROVIDER_NOT_CONFIGURED',
    ),
  },
  {
    name: 'confirmRecharge (an id that is not yours)',
    covers: ['Mutation.confirmRecharge'],
    root: 'confirmRecharge',
    document: `mutation($input: ConfirmRechargeInput!) {
      confirmRecharge(input: $input) { recharge { id } wallet { coins } ${USER_ERRORS} } }`,
    variables: () => ({ input: { rechargeId: '00000000-0000-4000-8000-00000000beef' } }),
    select: (d) => d.confirmRecharge,
    expect: cells(U, 'RECHARGE_NOT_FOUND', 'RECHARGE_NOT_FOUND', 'RECHARGE_NOT_FOUND', 'RECHARGE_NOT_FOUND'),
  },

  // ---- creators' mutations
  {
    name: 'startLiveStream',
    covers: ['Mutation.startLiveStream'],
    root: 'startLiveStream',
    document: `mutation($input: StartLiveStreamInput!) {
      startLiveStream(input: $input) { liveStream { id status creator { id } } ${USER_ERRORS} } }`,
    variables: () => ({ input: { title: 'Matrix cell' } }),
    select: (d) => d.startLiveStream,
    expect: CREATORS,
    check: async (payload, { actor, memo }) => {
      memo.started = payload.liveStream.id
      expect(payload.liveStream).toMatchObject({ status: 'LIVE', creator: { id: actor?.userId } })
    },
    cleanup: async ({ actor, memo }) => {
      if (actor && memo.started) await actor.ok(END_LIVE, { liveStreamId: memo.started })
    },
  },
  {
    name: 'endLiveStream (your own stream)',
    covers: ['Mutation.endLiveStream'],
    root: 'endLiveStream',
    document: `mutation($input: EndLiveStreamInput!) {
      endLiveStream(input: $input) { liveStream { id status endedAt creator { id } } ${USER_ERRORS} } }`,
    variables: async ({ column, actor, memo }) => {
      // Only a creator has a stream of their own; the others aim at a live stream that is there.
      memo.streamId = streamId
      if (column === 'creator' && actor) {
        const started = (await actor.ok(START_LIVE, { title: 'Mine to end' })).startLiveStream
        expect(started.userErrors).toEqual([])
        memo.streamId = started.liveStream.id
      }
      return { input: { liveStreamId: memo.streamId } }
    },
    select: (d) => d.endLiveStream,
    expect: CREATORS,
    check: async (payload, { actor, memo }) => {
      expect(payload.liveStream).toMatchObject({
        id: memo.streamId,
        status: 'ENDED',
        endedAt: expect.any(String),
        creator: { id: actor?.userId },
      })
    },
  },
  {
    name: 'endLiveStream (another creator’s stream)',
    covers: ['Mutation.endLiveStream'],
    root: 'endLiveStream',
    document: `mutation($input: EndLiveStreamInput!) {
      endLiveStream(input: $input) { liveStream { id status } ${USER_ERRORS} } }`,
    variables: () => ({ input: { liveStreamId: streamId } }),
    select: (d) => d.endLiveStream,
    // Someone else's stream is "not found" to a creator: ids are not probed.
    expect: cells(U, F, 'STREAM_NOT_FOUND', F, F),
  },

  // ---- admins' mutations
  {
    name: 'grantCoins',
    covers: ['Mutation.grantCoins'],
    root: 'grantCoins',
    document: `mutation($input: GrantCoinsInput!) {
      grantCoins(input: $input) { wallet { coins } ledgerTransaction { id kind } ${USER_ERRORS} } }`,
    variables: async ({ memo }) => {
      memo.before = await coinsOf(bob.userId)
      return { input: { userId: bob.userId, coins: 7, reason: 'authz matrix', idempotencyKey: key() } }
    },
    select: (d) => d.grantCoins,
    expect: ADMINS,
    check: async (payload, { memo }) => {
      expect(payload.ledgerTransaction.kind).toBe('grant')
      expect(payload.wallet.coins).toBe(memo.before + 7)
      expect(await coinsOf(bob.userId)).toBe(memo.before + 7)
    },
  },
  {
    name: 'setCreatorShare',
    covers: ['Mutation.setCreatorShare'],
    root: 'setCreatorShare',
    document: `mutation($input: SetCreatorShareInput!) {
      setCreatorShare(input: $input) { creator { ${PUBLIC_USER} } shareBasisPoints ${USER_ERRORS} } }`,
    variables: ({ column }) => ({
      input: { creatorId: streamer.userId, shareBasisPoints: column === 'admin' ? 6_000 : 10_000 },
    }),
    select: (d) => d.setCreatorShare,
    expect: ADMINS,
    check: async (payload) => {
      expect(payload.creator.id).toBe(streamer.userId)
      expect(payload.shareBasisPoints).toBe(6_000)
      const [row] = await app.database.db
        .select({ bps: users.creatorShareBps })
        .from(users)
        .where(eq(users.id, streamer.userId))
      expect(row?.bps).toBe(6_000)
    },
  },
  {
    name: 'createGift',
    covers: ['Mutation.createGift'],
    root: 'createGift',
    document: `mutation($input: CreateGiftInput!) { createGift(input: $input) { gift { id sku active } ${USER_ERRORS} } }`,
    variables: ({ memo }) => {
      memo.sku = `authz_new_gift_${++keyCounter}`
      return { input: { sku: memo.sku, name: 'Authz New', coinCost: 3, imageUrl: '/static/gifts/new.png' } }
    },
    select: (d) => d.createGift,
    expect: ADMINS,
    check: async (payload, { memo }) => {
      expect(payload.gift).toMatchObject({ sku: memo.sku, active: true })
      expect(await publicGiftSkus()).toContain(memo.sku)
    },
  },
  {
    name: 'updateGift',
    covers: ['Mutation.updateGift'],
    root: 'updateGift',
    document: `mutation($input: UpdateGiftInput!) { updateGift(input: $input) { gift { id coinCost } ${USER_ERRORS} } }`,
    variables: ({ column }) => ({
      input: { giftId: fixture.giftEdit, coinCost: column === 'admin' ? 77 : 1 },
    }),
    select: (d) => d.updateGift,
    expect: ADMINS,
    check: async (payload) => {
      expect(payload.gift).toEqual({ id: fixture.giftEdit, coinCost: 77 })
    },
  },
  {
    name: 'retireGift',
    covers: ['Mutation.retireGift'],
    root: 'retireGift',
    document: `mutation($input: RetireGiftInput!) { retireGift(input: $input) { gift { id active } ${USER_ERRORS} } }`,
    variables: () => ({ input: { giftId: fixture.giftRetire } }),
    select: (d) => d.retireGift,
    expect: ADMINS,
    check: async (payload) => {
      expect(payload.gift).toEqual({ id: fixture.giftRetire, active: false })
      expect(await publicGiftSkus()).not.toContain('authz_gift_retire')
    },
  },
  {
    name: 'createCoinPackage',
    covers: ['Mutation.createCoinPackage'],
    root: 'createCoinPackage',
    document: `mutation($input: CreateCoinPackageInput!) {
      createCoinPackage(input: $input) { coinPackage { id sku active } ${USER_ERRORS} } }`,
    variables: ({ memo }) => {
      memo.sku = `authz_new_pkg_${++keyCounter}`
      return { input: { sku: memo.sku, coins: 100, prices: [{ currency: 'USD', amount: 199 }] } }
    },
    select: (d) => d.createCoinPackage,
    expect: ADMINS,
    check: async (payload, { memo }) => {
      expect(payload.coinPackage).toMatchObject({ sku: memo.sku, active: true })
      expect(await publicPackageSkus()).toContain(memo.sku)
    },
  },
  {
    name: 'updateCoinPackage',
    covers: ['Mutation.updateCoinPackage'],
    root: 'updateCoinPackage',
    document: `mutation($input: UpdateCoinPackageInput!) {
      updateCoinPackage(input: $input) { coinPackage { id coins prices { amount currency } } ${USER_ERRORS} } }`,
    variables: ({ column }) => ({
      input:
        column === 'admin'
          ? { packageId: fixture.packageEdit, coins: 123 }
          : { packageId: fixture.packageEdit, coins: 1, prices: [{ currency: 'USD', amount: 1 }] },
    }),
    select: (d) => d.updateCoinPackage,
    expect: ADMINS,
    check: async (payload) => {
      expect(payload.coinPackage).toEqual({
        id: fixture.packageEdit,
        coins: 123,
        prices: [{ amount: 100, currency: 'USD' }],
      })
    },
  },
  {
    name: 'retireCoinPackage',
    covers: ['Mutation.retireCoinPackage'],
    root: 'retireCoinPackage',
    document: `mutation($input: RetireCoinPackageInput!) {
      retireCoinPackage(input: $input) { coinPackage { id active } ${USER_ERRORS} } }`,
    variables: () => ({ input: { packageId: fixture.packageRetire } }),
    select: (d) => d.retireCoinPackage,
    expect: ADMINS,
    check: async (payload) => {
      expect(payload.coinPackage).toEqual({ id: fixture.packageRetire, active: false })
      expect(await publicPackageSkus()).not.toContain('authz_pkg_retire')
    },
  },
  // ---- payouts: creators cash out their earnings, admins review (test/payouts.test.ts has the rest)
  {
    name: 'me { earnings { payouts payoutTerms } }',
    covers: ['Query.me', 'Me.earnings'],
    root: 'me',
    document: `query { me { earnings { pendingPayoutCoins payoutTerms { currency minimumCoins requestableCoins }
      payouts(first: 20) { edges { node { id status coins creator { id } decidedBy { id } } } } } } }`,
    variables: async () => {
      await pendingPayoutOf(actors.creator)
      await pendingPayoutOf(streamer)
      return {}
    },
    select: (d) => d.me?.earnings,
    expect: cells(U, 'null', 'ok', 'null', 'null'),
    check: async (earnings, { actor }) => {
      const nodes = earnings.payouts.edges.map((e: any) => e.node)
      expect(nodes.map((p: any) => p.id)).toContain(await pendingPayoutOf(actors.creator))
      // Only the caller's own requests; the reviewer's identity is for admins.
      expect(nodes.every((p: any) => p.creator.id === actor?.userId && p.decidedBy === null)).toBe(true)
      const held = (await app.services.ledger.balance(creatorEarnings(actor?.userId ?? ''))).held
      expect(earnings.pendingPayoutCoins).toBe(Number(held))
    },
  },
  {
    name: 'requestPayout',
    covers: ['Mutation.requestPayout'],
    root: 'requestPayout',
    document: `mutation($input: RequestPayoutInput!) {
      requestPayout(input: $input) { payout { id status coins creator { id } } ${USER_ERRORS} } }`,
    variables: async () => {
      await fundEarnings(actors.creator)
      return { input: { coins: PAYOUT_COINS, idempotencyKey: key() } }
    },
    select: (d) => d.requestPayout,
    // Signed-in non-creators are told why (NOT_A_CREATOR), and nothing is held.
    expect: cells(U, 'NOT_A_CREATOR', 'ok', 'NOT_A_CREATOR', 'NOT_A_CREATOR'),
    check: async (payload, { actor, memo }) => {
      memo.payoutId = payload.payout.id
      expect(payload.payout).toMatchObject({
        status: 'PENDING',
        coins: PAYOUT_COINS,
        creator: { id: actor?.userId },
      })
    },
    cleanup: ({ memo }) => rejectIfPending(memo.payoutId),
  },
  {
    name: 'payoutRequests',
    covers: ['Query.payoutRequests'],
    root: 'payoutRequests',
    document: `query { payoutRequests(status: PENDING, first: 100) {
      edges { node { id status coins creator { id } } } } }`,
    variables: async ({ memo }) => {
      memo.payoutId = await pendingPayoutOf(streamer)
      return {}
    },
    select: (d) => d.payoutRequests,
    expect: ADMINS,
    check: async (connection, { memo }) => {
      const nodes = connection.edges.map((e: any) => e.node)
      expect(nodes).toContainEqual({
        id: memo.payoutId,
        status: 'PENDING',
        coins: PAYOUT_COINS,
        creator: { id: streamer.userId },
      })
    },
  },
  {
    name: 'approvePayout (another creator’s request)',
    covers: ['Mutation.approvePayout'],
    root: 'approvePayout',
    document: `mutation($input: ApprovePayoutInput!) {
      approvePayout(input: $input) { payout { id status decidedBy { id } } ${USER_ERRORS} } }`,
    variables: async ({ memo }) => {
      memo.payoutId = await newPayoutOf(streamer)
      return { input: { payoutId: memo.payoutId, note: 'matrix' } }
    },
    select: (d) => d.approvePayout,
    expect: ADMINS,
    check: async (payload, { actor, memo }) => {
      expect(payload.payout).toEqual({
        id: memo.payoutId,
        status: 'APPROVED',
        decidedBy: { id: actor?.userId },
      })
      const payable = await app.services.ledger.balance(platform.payoutsPayable('USD'))
      expect(payable.balance).toBeGreaterThan(0n)
    },
    cleanup: ({ memo }) => rejectIfPending(memo.payoutId),
  },
  {
    name: 'rejectPayout (another creator’s request)',
    covers: ['Mutation.rejectPayout'],
    root: 'rejectPayout',
    document: `mutation($input: RejectPayoutInput!) {
      rejectPayout(input: $input) { payout { id status decisionNote } ${USER_ERRORS} } }`,
    variables: async ({ memo }) => {
      memo.payoutId = await newPayoutOf(streamer)
      return { input: { payoutId: memo.payoutId, reason: 'matrix' } }
    },
    select: (d) => d.rejectPayout,
    expect: ADMINS,
    check: async (payload, { memo }) => {
      expect(payload.payout).toEqual({ id: memo.payoutId, status: 'REJECTED', decisionNote: 'matrix' })
    },
    cleanup: ({ memo }) => rejectIfPending(memo.payoutId),
  },
  // ---- audit: the integrity check (names accounts and balances): accountants only
  {
    name: 'ledgerIntegrity',
    covers: ['Query.ledgerIntegrity'],
    root: 'ledgerIntegrity',
    document: `query { ledgerIntegrity { ok checkedTransactions checkedAccounts checkedSeals sealedThroughTransactionId
      problems { kind message transactionId accountId } } }`,
    select: (d) => d.ledgerIntegrity,
    expect: cells(U, F, F, 'ok', F),
    check: async (report) => {
      expect(report).toMatchObject({ ok: true, problems: [] })
      expect(report.checkedTransactions).toBeGreaterThan(0)
      expect(report.checkedAccounts).toBeGreaterThan(0)
    },
  },
  // ---- audit: the journal, accounts, statements, trial balance, reconciliation: accountants only
  {
    name: 'ledgerTransactions (grants to the accountant’s wallet)',
    covers: ['Query.ledgerTransactions'],
    root: 'ledgerTransactions',
    document: `query($filter: LedgerTransactionFilter) { ledgerTransactions(filter: $filter, first: 10) {
      edges { cursor node { id kind idempotencyKey description reverses { id }
        entries { account { code } direction amount currency balanceAfter } } }
      pageInfo { hasNextPage } } }`,
    variables: async () => ({
      filter: { kind: 'grant', accountId: await accountIdOf(actors.accountant.userId) },
    }),
    select: (d) => d.ledgerTransactions,
    expect: ACCOUNTANTS,
    check: async (connection) => {
      // The accountant's wallet had one grant: the welcome one.
      expect(connection.edges.map((e: any) => e.node)).toEqual([
        {
          id: expect.any(String),
          kind: 'grant',
          idempotencyKey: expect.stringMatching(/^grant:authz-/),
          description: `Promotional coins: ${grantReason('accountant')}`,
          reverses: null,
          entries: [
            {
              account: { code: platform.promotions },
              direction: 'DEBIT',
              amount: 3_000,
              currency: 'COIN',
              balanceAfter: expect.any(Number),
            },
            {
              account: { code: userWallet(actors.accountant.userId).code },
              direction: 'CREDIT',
              amount: 3_000,
              currency: 'COIN',
              balanceAfter: 3_000,
            },
          ],
        },
      ])
      expect(connection.pageInfo.hasNextPage).toBe(false)
    },
  },
  {
    name: 'ledgerTransaction(id) (the viewer’s welcome grant)',
    covers: ['Query.ledgerTransaction'],
    root: 'ledgerTransaction',
    document: `query($id: ID!) { ledgerTransaction(id: $id) { id kind metadata reversedBy { id }
      entries { account { code } direction amount } } }`,
    variables: async ({ memo }) => {
      const wallet = await accountIdOf(actors.viewer.userId)
      const [first] = await app.database.db
        .select({ transactionId: ledgerEntries.transactionId })
        .from(ledgerEntries)
        .where(sql`${ledgerEntries.accountId} = ${wallet} and ${ledgerEntries.accountSeq} = 1`)
      memo.id = first?.transactionId.toString()
      return { id: memo.id }
    },
    select: (d) => d.ledgerTransaction,
    expect: ACCOUNTANTS,
    check: async (transaction, { memo }) => {
      expect(transaction).toMatchObject({ id: memo.id, kind: 'grant', reversedBy: null })
      expect(JSON.parse(transaction.metadata)).toMatchObject({
        reason: grantReason('viewer'),
        userId: actors.viewer.userId,
      })
      expect(transaction.entries).toContainEqual({
        account: { code: userWallet(actors.viewer.userId).code },
        direction: 'CREDIT',
        amount: 1_000,
      })
    },
  },
  {
    name: 'ledgerAccounts (one creator’s accounts)',
    covers: ['Query.ledgerAccounts'],
    root: 'ledgerAccounts',
    document: `query($filter: LedgerAccountFilter) { ledgerAccounts(filter: $filter, first: 10) {
      edges { node { id code type currency balance } } pageInfo { hasNextPage } } }`,
    variables: () => ({ filter: { codePrefix: `user:${actors.creator.userId}:` } }),
    select: (d) => d.ledgerAccounts,
    expect: ACCOUNTANTS,
    check: async (connection) => {
      const accounts = connection.edges.map((e: any) => e.node)
      const earnings = accounts.find((a: any) => a.code === creatorEarnings(actors.creator.userId).code)
      expect(earnings).toMatchObject({
        type: 'LIABILITY',
        currency: 'COIN',
        balance: await earningsOf(actors.creator.userId),
      })
      expect(earnings.balance).toBeGreaterThan(0)
      const wallet = accounts.find((a: any) => a.code === userWallet(actors.creator.userId).code)
      expect(wallet.balance).toBe(await coinsOf(actors.creator.userId))
      expect(accounts.every((a: any) => a.code.startsWith(`user:${actors.creator.userId}:`))).toBe(true)
    },
  },
  {
    name: 'ledgerAccount(id) (bob’s wallet: statement and balanceAt)',
    covers: ['Query.ledgerAccount'],
    root: 'ledgerAccount',
    document: `query($id: ID!, $at: DateTime) { ledgerAccount(id: $id) { id code balance balanceAt(at: $at)
      entries(first: 100) { edges { node { direction amount balanceAfter } } pageInfo { hasNextPage } } } }`,
    variables: async () => ({ id: await accountIdOf(bob.userId), at: '2000-01-01T00:00:00Z' }),
    select: (d) => d.ledgerAccount,
    expect: ACCOUNTANTS,
    check: async (account) => {
      expect(account.code).toBe(userWallet(bob.userId).code)
      expect(account.balance).toBe(await coinsOf(bob.userId))
      expect(account.balanceAt).toBe(0)
      const entries = account.entries.edges.map((e: any) => e.node)
      expect(entries[0]).toEqual({ direction: 'CREDIT', amount: 500, balanceAfter: 500 })
      let running = 0
      for (const e of entries) {
        running += e.direction === 'CREDIT' ? e.amount : -e.amount
        expect(e.balanceAfter).toBe(running)
      }
      expect(running).toBe(account.balance)
      expect(account.entries.pageInfo.hasNextPage).toBe(false)
    },
  },
  {
    name: 'trialBalance',
    covers: ['Query.trialBalance'],
    root: 'trialBalance',
    document: `query { trialBalance { asOf balanced lines { account { code currency } debits credits balance }
      totals { currency debits credits balanced } } }`,
    select: (d) => d.trialBalance,
    expect: ACCOUNTANTS,
    check: async (tb) => {
      expect(tb.balanced).toBe(true)
      const coin = tb.totals.find((t: any) => t.currency === 'COIN')
      expect(coin).toMatchObject({ balanced: true })
      expect(coin.debits).toBe(coin.credits)
      expect(coin.debits).toBeGreaterThan(10_000)
      const wallet = tb.lines.find((l: any) => l.account.code === userWallet(actors.accountant.userId).code)
      expect(wallet.balance).toBe(await coinsOf(actors.accountant.userId))
      expect(wallet.credits).toBeGreaterThanOrEqual(3_000)
    },
  },
  {
    name: 'rechargeReconciliation',
    covers: ['Query.rechargeReconciliation'],
    root: 'rechargeReconciliation',
    document: `query { rechargeReconciliation { checkedAt limitReached
      discrepancies { kind message creditTransactionId recharge { id status coins price { amount currency } } } } }`,
    // A paid order that was never credited, made once, before the first cell reads.
    variables: async () => {
      fixture.unpaidCredit ??= await paidButNotCredited()
      return {}
    },
    select: (d) => d.rechargeReconciliation,
    expect: ACCOUNTANTS,
    check: async (report) => {
      expect(report.limitReached).toBe(false)
      expect(report.discrepancies).toContainEqual({
        kind: 'PAYMENT_WITHOUT_CREDIT',
        message: 'succeeded but not credited',
        creditTransactionId: null,
        recharge: {
          id: fixture.unpaidCredit,
          status: 'SUCCEEDED',
          coins: 70,
          price: { amount: 99, currency: 'USD' },
        },
      })
    },
  },
  // ---- subscriptions (over SSE here; WebSocket authorization in test/live.test.ts)
  {
    name: 'liveGifts (from the start)',
    covers: ['Subscription.liveGifts'],
    root: 'liveGifts',
    document: `subscription($id: ID!) { liveGifts(streamId: $id, afterSequence: 0) {
      id sequence quantity coins combo sender { ${PUBLIC_USER} } gift { id name } } }`,
    variables: () => ({ id: streamId }),
    select: (d) => d.liveGifts,
    expect: PUBLIC,
    check: async (event) => {
      expect(event).toMatchObject({ sequence: 1, quantity: 3, sender: { id: bob.userId } })
    },
  },
  {
    name: 'liveStreakEnds',
    covers: ['Subscription.liveStreakEnds'],
    root: 'liveStreakEnds',
    document: `subscription($id: ID!) { liveStreakEnds(streamId: $id) { streamId senderId combo lastSequence } }`,
    variables: () => ({ id: streamId }),
    select: (d) => d.liveStreakEnds,
    expect: PUBLIC,
    // Published straight onto the bus, as the streak tracker would.
    trigger: () =>
      app.services.live.bus.publish(`streaks:${streamId}`, {
        kind: 'streakEnded',
        streamId,
        senderId: bob.userId,
        giftId: rose,
        combo: 3,
        lastSequence: 1,
        lastGiftEventId: streamId,
        endedAt: new Date().toISOString(),
      }),
    check: async (end) => expect(end).toEqual({ streamId, senderId: bob.userId, combo: 3, lastSequence: 1 }),
  },
  {
    name: 'walletUpdated',
    covers: ['Subscription.walletUpdated'],
    root: 'walletUpdated',
    document: 'subscription { walletUpdated { coins updatedAt } }',
    select: (d) => d.walletUpdated,
    expect: SIGNED_IN,
    // Balances published straight onto the bus (a real posting would change the database):
    // someone else's first, which must not arrive, then the caller's own.
    trigger: ({ actor }) => {
      const wallets = app.services.live.wallets
      wallets.publishCommitted([fakeWalletPosting(bob.userId, 999_999n)])
      if (actor) wallets.publishCommitted([fakeWalletPosting(actor.userId, 424_242n)])
    },
    check: async (update) => expect(update.coins).toBe(424_242),
  },
]

// ---- payouts' fixtures: earnings (an adjustment, as finance would book one) and requests ----

const PAYOUT_COINS = 2_000
const funded = new Set<string>()
const pendingPayouts = new Map<string, string>()
const REQUEST_PAYOUT = `mutation($input: RequestPayoutInput!) {
  requestPayout(input: $input) { payout { id } ${USER_ERRORS} } }`

async function fundEarnings(creator: Actor): Promise<void> {
  if (funded.has(creator.userId)) return
  await app.services.ledger.post({
    idempotencyKey: `authz-earnings-${creator.userId}`,
    kind: 'adjustment',
    description: 'authorization matrix: earnings to cash out',
    entries: [
      { account: platform.adjustments, direction: 'debit', amount: 50_000n },
      { account: creatorEarnings(creator.userId), direction: 'credit', amount: 50_000n },
    ],
  })
  funded.add(creator.userId)
}

/** A new pending payout request of a creator; returns its id. */
async function newPayoutOf(creator: Actor): Promise<string> {
  await fundEarnings(creator)
  const payload = (
    await creator.ok(REQUEST_PAYOUT, { input: { coins: PAYOUT_COINS, idempotencyKey: key() } })
  ).requestPayout
  expect(payload.userErrors).toEqual([])
  return payload.payout.id
}

/** One pending request per creator that stays pending for the whole run. */
async function pendingPayoutOf(creator: Actor): Promise<string> {
  let id = pendingPayouts.get(creator.userId)
  if (id === undefined) {
    id = await newPayoutOf(creator)
    pendingPayouts.set(creator.userId, id)
  }
  return id
}

/** Releases a cell's payout if nobody decided it (its hold would otherwise stay). */
async function rejectIfPending(payoutId: string | undefined): Promise<void> {
  if (payoutId === undefined) return
  const REJECT = `mutation($input: RejectPayoutInput!) { rejectPayout(input: $input) { ${USER_ERRORS} } }`
  await actors.admin.ok(REJECT, { input: { payoutId, reason: 'matrix cleanup' } })
}

function fakeWalletPosting(userId: string, balanceAfter: bigint): PostedTransaction {
  return {
    id: 0n,
    idempotencyKey: 'fake',
    kind: 'grant',
    description: '',
    metadata: {},
    reversesId: null,
    postedAt: new Date().toISOString(),
    entries: [
      {
        id: 0n,
        accountId: 0n,
        accountCode: userWallet(userId).code,
        direction: 'credit',
        amount: 1n,
        unit: 'coin',
        accountSeq: 1_000_000n,
        balanceAfter,
      },
    ],
  } as PostedTransaction
}

/** A subscription over SSE: its first result (or the refusal), then the stream is closed. */
async function firstOverSse(
  document: string,
  variables: Record<string, unknown>,
  headers: Record<string, string>,
  trigger: () => void,
): Promise<{ status: number; body: { data?: any; errors?: GraphQLErrorBody[] } }> {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 10_000)
  try {
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
      body: JSON.stringify({ query: document, variables }),
      signal: abort.signal,
    })
    if (!response.headers.get('content-type')?.includes('text/event-stream')) {
      return { status: response.status, body: await response.json() }
    }
    trigger()
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true })
      const data = /event: next\ndata: (.*)\n\n/.exec(buffer)?.[1]
      if (data) return { status: response.status, body: JSON.parse(data) }
    }
    throw new Error('the subscription ended without a result')
  } finally {
    clearTimeout(timer)
    abort.abort()
  }
}

// ---- running a cell --------------------------------------------------------------

function headersOf(column: Column): Record<string, string> {
  if (column === 'anonymous') return {}
  if (column === 'invalid token') return { authorization: `Bearer ${forgedToken}` }
  return { authorization: `Bearer ${actors[column].token}` }
}

function outcomeOf(row: Row, body: { data?: any; errors?: GraphQLErrorBody[] }): string {
  const [error] = body.errors ?? []
  if (error) return String(error.extensions?.code ?? `error without a code: ${error.message}`)
  const value = row.select(body.data)
  if (value === null || value === undefined) return 'null'
  const userErrors = (value as { userErrors?: { code: string }[] }).userErrors
  return userErrors?.[0]?.code ?? 'ok'
}

async function runCell(row: Row, column: Column): Promise<void> {
  const cell: Cell = {
    column,
    actor: column === 'anonymous' || column === 'invalid token' ? undefined : actors[column],
    memo: {},
  }
  try {
    const variables = (await row.variables?.(cell)) ?? {}
    const before = await snapshot(app.database.db, tables)
    const { status, body } = row.document.trimStart().startsWith('subscription')
      ? await firstOverSse(row.document, variables, headersOf(column), () => row.trigger?.(cell))
      : await graphql(app, row.document, variables, headersOf(column))
    const expected = row.expect[column]
    expect(outcomeOf(row, body), JSON.stringify(body)).toBe(expected)
    if (expected === U || expected === F) {
      // Nothing of the answer comes back with a denial.
      expect(body.data?.[row.root] ?? null).toBeNull()
    }
    if (column === 'invalid token') expect(status).toBe(401)
    const isMutation = row.document.trimStart().startsWith('mutation')
    if (!isMutation || expected !== 'ok') {
      expect(
        await snapshot(app.database.db, tables),
        'a refused or read-only cell must change nothing',
      ).toEqual(before)
    }
    if (expected === 'ok') await row.check?.(row.select(body.data), cell)
  } finally {
    await row.cleanup?.(cell)
  }
}

describe.each(ROWS)('$name', (row) => {
  for (const column of COLUMNS) {
    const hole = row.holes?.[column]
    const title = `${column} → ${row.expect[column]}`
    if (hole) it.fails(`${title} (${hole})`, () => runCell(row, column))
    else it(title, () => runCell(row, column))
  }
})

// ---- the matrix stays complete ------------------------------------------------------

const committedSchema = buildSchema(
  readFileSync(fileURLToPath(new URL('../schema.graphql', import.meta.url)), 'utf8'),
)

/** Root fields (Query, Mutation, Subscription) and Me's fields: each needs a row. */
function coordinatesOf(schema: GraphQLSchema): string[] {
  const out: string[] = []
  for (const type of [
    schema.getQueryType(),
    schema.getMutationType(),
    schema.getSubscriptionType(),
    schema.getType('Me'),
  ]) {
    if (isObjectType(type))
      for (const field of Object.keys(type.getFields())) out.push(`${type.name}.${field}`)
  }
  return out.sort()
}

describe('the matrix', () => {
  const covered = [...new Set(ROWS.flatMap((r) => r.covers))].sort()

  it.each([
    ['schema.graphql', committedSchema],
    ['the schema the server builds', builtSchema],
  ])(
    'has a row for every root field and every field of Me in %s, and none for fields that are gone',
    (_name, schema) => {
      const fields = coordinatesOf(schema)
      expect(
        fields.filter((f) => !covered.includes(f)),
        'fields without a row in ROWS: add one (with every role) to test/authorization.test.ts',
      ).toEqual([])
      expect(
        covered.filter((f) => !fields.includes(f)),
        'rows for fields the schema no longer has',
      ).toEqual([])
    },
  )

  it('has a cell for every role in every row', () => {
    for (const row of ROWS) expect(Object.keys(row.expect).sort(), row.name).toEqual([...COLUMNS].sort())
  })
})

// ---- what the schema lets anyone name or see ---------------------------------------

describe('the schema', () => {
  it('shows public profile fields only on User', () => {
    const user = committedSchema.getType('User')
    if (!isObjectType(user)) throw new Error('no User type')
    const fields = Object.keys(user.getFields()).sort()
    expect(fields).toEqual(['displayName', 'handle', 'id', 'isCreator'])
    const privateName =
      /email|subject|sub$|role|wallet|coin|balance|earning|limit|spend|share|phone|address|birth|payout|token/i
    expect(fields.filter((f) => privateName.test(f))).toEqual([])
    const gifter = committedSchema.getType('TopGifter')
    if (!isObjectType(gifter)) throw new Error('no TopGifter type')
    expect(Object.keys(gifter.getFields()).sort()).toEqual(['coins', 'rank', 'user'])
  })

  it('reaches wallets, earnings and spend limits only through `me` and the payloads of one’s own mutations', () => {
    const PRIVATE = new Set([
      'Me',
      'Wallet',
      'WalletEntry',
      'WalletHistoryConnection',
      'WalletHistoryConnectionEdge',
      'Earnings',
      'SpendLimits',
    ])
    const ways: string[] = []
    for (const type of Object.values(committedSchema.getTypeMap())) {
      if (!isObjectType(type) || PRIVATE.has(type.name) || type.name.startsWith('__')) continue
      for (const field of Object.values(type.getFields())) {
        if (PRIVATE.has(getNamedType(field.type).name)) ways.push(`${type.name}.${field.name}`)
      }
    }
    // An admin's grant reads back only the recipient's new balance (GrantedWallet { coins }).
    expect(ways.sort()).toEqual([
      'ConfirmRechargePayload.wallet',
      'Query.me',
      'SendGiftPayload.wallet',
      'SetDailySpendLimitPayload.spendLimits',
    ])
    const me = committedSchema.getQueryType()?.getFields().me
    expect(me?.args).toEqual([])
  })

  it('takes a user’s id only where an admin acts on them or a gift names its recipient', () => {
    const namesAUser = /user|creator|sender|owner|member|account|subject|viewer/i
    const found: string[] = []
    for (const type of Object.values(committedSchema.getTypeMap())) {
      if (type.name.startsWith('__')) continue
      if (isInputObjectType(type)) {
        for (const field of Object.values(type.getFields())) {
          if (getNamedType(field.type).name === 'ID' && namesAUser.test(field.name))
            found.push(`${type.name}.${field.name}`)
        }
      }
      if (isObjectType(type)) {
        for (const field of Object.values(type.getFields())) {
          for (const arg of field.args) {
            if (getNamedType(arg.type).name === 'ID' && namesAUser.test(arg.name))
              found.push(`${type.name}.${field.name}(${arg.name})`)
          }
        }
      }
    }
    // LedgerTransactionFilter.accountId names a ledger account (accountants' filter), not a user.
    expect(found.sort()).toEqual([
      'GrantCoinsInput.userId',
      'LedgerTransactionFilter.accountId',
      'SendGiftInput.creatorId',
      'SetCreatorShareInput.creatorId',
    ])
  })

  it('refuses a user id on `me`', async () => {
    const { body } = await graphql(
      app,
      `query($id: ID!) { me(userId: $id) { wallet { coins } } }`,
      { id: bob.userId },
      headersOf('viewer'),
    )
    expect(body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED')
    expect(body.data ?? null).toBeNull()
  })
})

// ---- everyone gets their own ----------------------------------------------------------

describe('isolation', () => {
  const ME = `query { me { user { id } wallet { coins } spendLimits { dailyCoins }
    history: wallet { history(first: 1) { edges { node { balanceAfter } } } } } }`

  it('answers `me` with the caller’s own data, even for callers asking at the same time', async () => {
    const callers = [...Object.values(actors), streamer, bob]
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => callers).flatMap((round) =>
        round.map(async (caller) => ({ caller, me: (await caller.ok(ME)).me })),
      ),
    )
    for (const { caller, me } of answers) {
      expect(me.user.id).toBe(caller.userId)
      expect(me.wallet.coins).toBe(await coinsOf(caller.userId))
      expect(me.history.history.edges[0]?.node.balanceAfter ?? 0).toBe(me.wallet.coins)
      expect(me.spendLimits.dailyCoins).toBe(await limitOf(caller.userId))
    }
    // Two viewers, two different wallets.
    const [viewerMe, bobMe] = await Promise.all([actors.viewer.ok(ME), bob.ok(ME)])
    expect(viewerMe.me.user.id).not.toBe(bobMe.me.user.id)
    expect(viewerMe.me.wallet.coins).not.toBe(bobMe.me.wallet.coins)
  })

  it('keeps idempotency keys per sender: the same key from two viewers is two gifts, each from its own wallet', async () => {
    const SEND = `mutation($input: SendGiftInput!) { sendGift(input: $input) {
      giftEvent { id sender { id } } wallet { coins } ${USER_ERRORS} } }`
    const input = { giftId: rose, liveStreamId: streamId, idempotencyKey: 'authz-shared-key' }
    const before = { viewer: await coinsOf(actors.viewer.userId), bob: await coinsOf(bob.userId) }
    const mine = (await actors.viewer.ok(SEND, { input })).sendGift
    const bobs = (await bob.ok(SEND, { input })).sendGift
    expect(mine.userErrors).toEqual([])
    expect(bobs.userErrors).toEqual([])
    expect(bobs.giftEvent.id).not.toBe(mine.giftEvent.id)
    expect(bobs.giftEvent.sender.id).toBe(bob.userId)
    expect(mine.wallet.coins).toBe(before.viewer - 1)
    expect(bobs.wallet.coins).toBe(before.bob - 1)
    expect(await coinsOf(actors.viewer.userId)).toBe(before.viewer - 1)
    expect(await coinsOf(bob.userId)).toBe(before.bob - 1)
  })

  it('leaves the books balanced', async () => {
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
  })
})

// Every cell above reached the database through the same server; this one keeps
// the snapshot helper honest: a write shows.
describe('the snapshot', () => {
  it('sees a change', async () => {
    const before = await snapshot(app.database.db, tables)
    await app.database.db.execute(
      sql`update gifts set sort_order = sort_order + 1 where sku = 'authz_gift_off'`,
    )
    expect(await snapshot(app.database.db, tables)).not.toEqual(before)
  })
})

describe('what an admin learns from a grant', () => {
  it('is the recipient’s new balance only', () => {
    const type = committedSchema.getType('GrantedWallet')
    expect(type && isObjectType(type) ? Object.keys(type.getFields()) : []).toEqual(['coins'])
    const payload = committedSchema.getType('GrantCoinsPayload')
    const wallet = payload && isObjectType(payload) ? payload.getFields().wallet : undefined
    expect(wallet ? getNamedType(wallet.type).name : '').toBe('GrantedWallet')
  })
})
