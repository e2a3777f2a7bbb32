import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { buildSchema, type GraphQLSchema, getNamedType, isInputObjectType, isObjectType } from 'graphql'
import { createClient } from 'graphql-ws'
import { SignJWT } from 'jose'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { signToken } from '../src/auth/tokens.js'
import { rowsOf } from '../src/db/rows.js'
import { schema as builtSchema } from '../src/graphql/schema.js'
import { buildApp } from '../src/http/server.js'
import { CLOSE_CODES } from '../src/http/websocket.js'
import { userWallet } from '../src/ledger/index.js'
import { type FakeStripe, startFakeStripe } from './fakes/stripe.js'
import { type Actor, signIn } from './support/actors.js'
import { type GraphQLErrorBody, graphql, startTestApp, type TestApp } from './support/app.js'
import { CATALOG, CREATE_RECHARGE, GRANT_COINS, SEND_GIFT, START_LIVE } from './support/operations.js'
import { type Snapshot, snapshot, tablesOf } from './support/snapshot.js'

// Attacks, each against the real server over HTTP (and WebSocket), each
// asserting what came back and that nothing was written. What other files
// already test is not repeated here: tokens over HTTP (auth.test.ts,
// tokens.test.ts), who may call what (authorization.test.ts), query cost,
// tokens and directives (protection.test.ts), depth, aliases, body size and
// batching (catalog.test.ts), forged, stale and tampered webhooks
// (recharge-*.test.ts). Here:
//
// - tokens that do not check out, over WebSocket and SSE;
// - every argument that takes an id — the schema is walked, so a new one
//   needs a case here — given someone else's id, an id of another kind, and
//   malformed ids;
// - GraphQL abuse the other files leave out: depth through fragments and
//   introspection, huge lists, huge strings, deeply nested JSON, several
//   operations in one document, aliased mutations;
// - injection in every string a query filters on, and in cursors and instants;
// - webhooks: a genuine delivery replayed, a correctly signed event that lies;
// - a flood of mutations from one user, against a rate limit.

const ISSUER = 'https://id.attacks.test'
const AUDIENCE = 'giftledger-attacks'
const WEBHOOK_SECRET = 'whsec_attacks'

let app: TestApp
let stripe: FakeStripe
let tables: string[]
let alice: Actor
let bob: Actor
let carol: Actor
let dave: Actor
let admin: Actor
let admin2: Actor
let accountant: Actor
const fixture = {} as {
  rose: string
  packageId: string
  stream: string
  aliceRecharge: string
  alicePi: string
  davePayout: string
  admin2Payout: string
  aliceGrantTx: string
  aliceWalletAccount: string
}
let keyN = 0
const key = () => `attack-${++keyN}`

const REQUEST_PAYOUT = `mutation($coins: Amount!, $key: String!) {
  requestPayout(input: { coins: $coins, idempotencyKey: $key }) { payout { id } userErrors { code } } }`

beforeAll(async () => {
  stripe = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
  app = await startTestApp({
    env: {
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      STRIPE_SECRET_KEY: stripe.secretKey,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      STRIPE_API_BASE: stripe.url,
      PAYOUT_MIN_COINS: '10',
      // The flood is tested on second servers with rate limits of their own.
      RATE_LIMIT_MUTATIONS_PER_SECOND: '100000',
      RATE_LIMIT_MUTATIONS_BURST: '100000',
    },
  })
  tables = await tablesOf(app.database.db)
  ;[alice, bob, carol, dave, admin, admin2, accountant] = await Promise.all([
    signIn(app, 'alice'),
    signIn(app, 'bob'),
    signIn(app, 'carol', ['creator']),
    signIn(app, 'dave', ['creator']),
    signIn(app, 'admin', ['admin']),
    signIn(app, 'admin2', ['admin', 'creator']),
    signIn(app, 'accountant', ['accountant']),
  ])
  const catalog = await alice.ok(CATALOG, { currency: 'USD' })
  fixture.rose = catalog.gifts.find((g: { name: string }) => g.name === 'Rose').id
  fixture.packageId = catalog.coinPackages[0].id
  const grant = await admin.ok(GRANT_COINS, {
    userId: alice.userId,
    coins: 10_000,
    reason: 'attacks',
    idempotencyKey: key(),
  })
  fixture.aliceGrantTx = grant.grantCoins.ledgerTransaction.id
  await admin.ok(GRANT_COINS, { userId: bob.userId, coins: 10_000, reason: 'attacks', idempotencyKey: key() })
  fixture.stream = (await carol.ok(START_LIVE, { title: 'attacks' })).startLiveStream.liveStream.id
  // Earnings for dave and admin2, and a pending payout each.
  for (const creator of [dave, admin2]) {
    const sent = await alice.ok(SEND_GIFT, {
      giftId: fixture.rose,
      creatorId: creator.userId,
      quantity: 100,
      idempotencyKey: key(),
    })
    expect(sent.sendGift.userErrors).toEqual([])
  }
  fixture.davePayout = (await dave.ok(REQUEST_PAYOUT, { coins: 20, key: key() })).requestPayout.payout.id
  fixture.admin2Payout = (await admin2.ok(REQUEST_PAYOUT, { coins: 20, key: key() })).requestPayout.payout.id
  const recharge = await alice.ok(CREATE_RECHARGE, {
    packageId: fixture.packageId,
    provider: 'STRIPE',
    idempotencyKey: key(),
  })
  fixture.aliceRecharge = recharge.createRecharge.recharge.id
  fixture.alicePi = recharge.createRecharge.checkout.providerReference
  fixture.aliceWalletAccount = (
    await app.services.ledger.balance(userWallet(alice.userId))
  ).account.id.toString()
}, 60_000)

afterAll(async () => {
  await app?.stop()
  await stripe?.stop()
})

const bearer = (actor: Actor) => ({ authorization: `Bearer ${actor.token}` })

/** What a response amounts to: an error code, 'null', a user error code, or 'ok'. */
function outcomeOf(
  body: { data?: any; errors?: GraphQLErrorBody[] },
  select: (data: any) => unknown,
): string {
  const [error] = body.errors ?? []
  if (error) return String(error.extensions?.code ?? `error without a code: ${error.message}`)
  const value = select(body.data)
  if (value === null || value === undefined) return 'null'
  const userErrors = (value as { userErrors?: { code: string }[] }).userErrors
  return userErrors?.[0]?.code ?? 'ok'
}

/** A subscription over SSE: its first result (an error or an event), or the JSON answer when it is refused outright. */
async function firstOfSubscription(
  query: string,
  variables: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: { data?: any; errors?: GraphQLErrorBody[] } }> {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 10_000)
  try {
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
      body: JSON.stringify({ query, variables }),
      signal: abort.signal,
    })
    if (!response.headers.get('content-type')?.includes('text/event-stream')) {
      return { status: response.status, body: await response.json() }
    }
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

async function unchanged<T>(work: () => Promise<T>): Promise<T> {
  const before: Snapshot = await snapshot(app.database.db, tables)
  const result = await work()
  expect(await snapshot(app.database.db, tables)).toEqual(before)
  return result
}

// ---- tokens over WebSocket and SSE -------------------------------------------------------

describe('tokens that do not check out, over WebSocket and SSE', () => {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const tokens = async (): Promise<Record<string, string>> => {
    const claims = { sub: 'test|intruder', roles: ['admin', 'accountant', 'creator'] }
    const now = Math.floor(Date.now() / 1000)
    return {
      forged: await signToken(new TextEncoder().encode('a-key-nobody-here-knows-0123456789abcdef'), claims, {
        expiresIn: '1h',
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      expired: await app.token(claims, { expiresIn: -60 }),
      'alg none': `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ ...claims, iss: ISSUER, aud: AUDIENCE, exp: now + 600 })}.`,
      'another audience': await app.token(claims, { audience: 'another-api' }),
      'another issuer': await app.token(claims, { issuer: 'https://elsewhere.test' }),
      'HS512 with our own secret': await new SignJWT({ ...claims })
        .setProtectedHeader({ alg: 'HS512' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime('1h')
        .sign(new TextEncoder().encode(app.config.jwt.secret as string)),
    }
  }

  /** Opens a graphql-ws connection with `token` and subscribes; how it ended. */
  function wsSubscribe(token: string, query: string): Promise<{ closeCode?: number; data?: unknown }> {
    return new Promise((resolve) => {
      const client = createClient({
        url: `${app.url.replace('http', 'ws')}/graphql`,
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${token}` },
        retryAttempts: 0,
        lazy: true,
      })
      const done = (result: { closeCode?: number; data?: unknown }) => {
        void client.dispose()
        resolve(result)
      }
      client.subscribe(
        { query },
        {
          next: (result) => done({ data: result.data ?? result.errors }),
          error: (error) => done({ closeCode: (error as { code?: number }).code }),
          complete: () => done({}),
        },
      )
    })
  }

  it('close the WebSocket with 4403 (forged, expired, alg none, another audience or issuer, HS512)', async () => {
    const closed: Record<string, number | undefined> = {}
    for (const [name, token] of Object.entries(await tokens())) {
      closed[name] = (await wsSubscribe(token, 'subscription { walletUpdated { coins } }')).closeCode
    }
    expect(closed).toEqual(
      Object.fromEntries(Object.keys(await tokens()).map((name) => [name, CLOSE_CODES.invalidToken])),
    )
    // The same subscription with a genuine token is accepted (its first event is the next balance change).
    const accepted = wsSubscribe(alice.token, 'subscription { walletUpdated { coins } }')
    await new Promise((resolve) => setTimeout(resolve, 300))
    await admin.ok(GRANT_COINS, { userId: alice.userId, coins: 1, reason: 'ws', idempotencyKey: key() })
    expect(await accepted).toMatchObject({ data: { walletUpdated: { coins: expect.any(Number) } } })
  })

  it('are refused with 401 on SSE subscriptions, never served as anonymous', async () => {
    for (const [name, token] of Object.entries(await tokens())) {
      const { status, body } = await firstOfSubscription(
        'subscription($id: ID!) { liveGifts(streamId: $id) { id } }',
        { id: fixture.stream },
        { authorization: `Bearer ${token}` },
      )
      expect(status, name).toBe(401)
      expect(body.errors?.[0]?.extensions?.code, name).toBe('UNAUTHENTICATED')
    }
  })
})

// ---- ids ------------------------------------------------------------------------------

const NIL_UUID = '00000000-0000-4000-8000-000000000000'
/** Malformed or hostile ids: none may get past a user error, a null or a validation error. */
const MALFORMED_IDS = [
  '',
  ' ',
  'not-an-id',
  "1' OR '1'='1",
  '1; drop table users; --',
  '-1',
  '0',
  '1e400',
  '99999999999999999999999999999',
  '0x10',
  '../../etc/passwd',
  '%',
  '_',
  '*',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '😀',
  `${NIL_UUID}'`,
  NIL_UUID.toUpperCase(),
  'x'.repeat(10_000),
]

type Outcome = string
type IdKind = 'recharge' | 'package' | 'stream' | 'payout' | 'user' | 'gift' | 'account' | 'transaction'

interface IdCase {
  /** The schema coordinate: `Type.field(arg)` or `Input.field`. */
  coordinate: string
  /** What the id names: ids of every other kind are tried in its place. */
  kind: IdKind
  /** Who calls, a role allowed to; the document takes the id as $id. */
  caller: () => Actor
  document: string
  variables?: () => Record<string, unknown>
  select: (data: any) => unknown
  /** Subscriptions are read over SSE. */
  subscription?: true
  /** Someone else's id (or one the caller may not act on), who sends it, and what must come back. */
  foreign?: () => { id: string; caller?: Actor; expect: Outcome }
  /** An id nobody has, of another kind, or malformed: the outcomes allowed. */
  unknown: Outcome[]
}

const ID_CASES: IdCase[] = [
  {
    coordinate: 'Query.recharge(id)',
    kind: 'recharge',
    caller: () => bob,
    document: 'query($id: ID!) { recharge(id: $id) { id coins } }',
    select: (d) => d.recharge,
    foreign: () => ({ id: fixture.aliceRecharge, expect: 'null' }),
    unknown: ['null'],
  },
  {
    coordinate: 'ConfirmRechargeInput.rechargeId',
    kind: 'recharge',
    caller: () => bob,
    document:
      'mutation($id: ID!) { confirmRecharge(input: { rechargeId: $id }) { recharge { id } wallet { coins } userErrors { code } } }',
    select: (d) => d.confirmRecharge,
    foreign: () => ({ id: fixture.aliceRecharge, expect: 'RECHARGE_NOT_FOUND' }),
    unknown: ['RECHARGE_NOT_FOUND'],
  },
  {
    coordinate: 'CreateRechargeInput.packageId',
    kind: 'package',
    caller: () => bob,
    document: `mutation($id: ID!, $key: String!) { createRecharge(input: { packageId: $id, provider: STRIPE, idempotencyKey: $key }) {
      recharge { id } userErrors { code } } }`,
    variables: () => ({ key: key() }),
    select: (d) => d.createRecharge,
    unknown: ['PACKAGE_NOT_FOUND'],
  },
  {
    coordinate: 'EndLiveStreamInput.liveStreamId',
    kind: 'stream',
    caller: () => dave,
    document:
      'mutation($id: ID!) { endLiveStream(input: { liveStreamId: $id }) { liveStream { id status } userErrors { code } } }',
    select: (d) => d.endLiveStream,
    foreign: () => ({ id: fixture.stream, expect: 'STREAM_NOT_FOUND' }),
    unknown: ['STREAM_NOT_FOUND'],
  },
  {
    coordinate: 'ApprovePayoutInput.payoutId',
    kind: 'payout',
    caller: () => admin,
    document:
      'mutation($id: ID!) { approvePayout(input: { payoutId: $id, note: "attack" }) { payout { id status } userErrors { code } } }',
    select: (d) => d.approvePayout,
    // An admin who is also a creator, on their own request.
    foreign: () => ({ id: fixture.admin2Payout, caller: admin2, expect: 'CANNOT_DECIDE_OWN_PAYOUT' }),
    unknown: ['PAYOUT_NOT_FOUND'],
  },
  {
    coordinate: 'RejectPayoutInput.payoutId',
    kind: 'payout',
    caller: () => admin,
    document:
      'mutation($id: ID!) { rejectPayout(input: { payoutId: $id, reason: "attack" }) { payout { id status } userErrors { code } } }',
    select: (d) => d.rejectPayout,
    foreign: () => ({ id: fixture.admin2Payout, caller: admin2, expect: 'CANNOT_DECIDE_OWN_PAYOUT' }),
    unknown: ['PAYOUT_NOT_FOUND'],
  },
  {
    coordinate: 'SendGiftInput.creatorId',
    kind: 'user',
    caller: () => carol,
    document: `mutation($id: ID!, $gift: ID!, $key: String!) { sendGift(input: { giftId: $gift, creatorId: $id, idempotencyKey: $key }) {
      giftEvent { id } userErrors { code } } }`,
    variables: () => ({ gift: fixture.rose, key: key() }),
    select: (d) => d.sendGift,
    foreign: () => ({ id: carol.userId, expect: 'CANNOT_GIFT_SELF' }),
    unknown: ['CREATOR_NOT_FOUND'],
  },
  {
    coordinate: 'SendGiftInput.liveStreamId',
    kind: 'stream',
    caller: () => carol,
    document: `mutation($id: ID!, $gift: ID!, $key: String!) { sendGift(input: { giftId: $gift, liveStreamId: $id, idempotencyKey: $key }) {
      giftEvent { id } userErrors { code } } }`,
    variables: () => ({ gift: fixture.rose, key: key() }),
    select: (d) => d.sendGift,
    foreign: () => ({ id: fixture.stream, expect: 'CANNOT_GIFT_SELF' }),
    unknown: ['STREAM_NOT_FOUND'],
  },
  {
    coordinate: 'SendGiftInput.giftId',
    kind: 'gift',
    caller: () => bob,
    document: `mutation($id: ID!, $stream: ID!, $key: String!) { sendGift(input: { giftId: $id, liveStreamId: $stream, idempotencyKey: $key }) {
      giftEvent { id } userErrors { code } } }`,
    variables: () => ({ stream: fixture.stream, key: key() }),
    select: (d) => d.sendGift,
    unknown: ['GIFT_NOT_FOUND'],
  },
  {
    coordinate: 'GrantCoinsInput.userId',
    kind: 'user',
    caller: () => admin,
    document: `mutation($id: ID!, $key: String!) { grantCoins(input: { userId: $id, coins: 5, reason: "attack", idempotencyKey: $key }) {
      wallet { coins } userErrors { code } } }`,
    variables: () => ({ key: key() }),
    select: (d) => d.grantCoins,
    foreign: () => ({ id: alice.userId, caller: alice, expect: 'FORBIDDEN' }),
    unknown: ['USER_NOT_FOUND'],
  },
  {
    coordinate: 'SetCreatorShareInput.creatorId',
    kind: 'user',
    caller: () => admin,
    document:
      'mutation($id: ID!) { setCreatorShare(input: { creatorId: $id, shareBasisPoints: 9000 }) { shareBasisPoints userErrors { code } } }',
    select: (d) => d.setCreatorShare,
    foreign: () => ({ id: carol.userId, caller: carol, expect: 'FORBIDDEN' }),
    unknown: ['CREATOR_NOT_FOUND'],
  },
  {
    coordinate: 'RetireGiftInput.giftId',
    kind: 'gift',
    caller: () => admin,
    document: 'mutation($id: ID!) { retireGift(input: { giftId: $id }) { gift { id } userErrors { code } } }',
    select: (d) => d.retireGift,
    unknown: ['NOT_FOUND'],
  },
  {
    coordinate: 'UpdateGiftInput.giftId',
    kind: 'gift',
    caller: () => admin,
    document:
      'mutation($id: ID!) { updateGift(input: { giftId: $id, name: "Pwned" }) { gift { id } userErrors { code } } }',
    select: (d) => d.updateGift,
    unknown: ['NOT_FOUND'],
  },
  {
    coordinate: 'RetireCoinPackageInput.packageId',
    kind: 'package',
    caller: () => admin,
    document:
      'mutation($id: ID!) { retireCoinPackage(input: { packageId: $id }) { coinPackage { id } userErrors { code } } }',
    select: (d) => d.retireCoinPackage,
    unknown: ['NOT_FOUND'],
  },
  {
    coordinate: 'UpdateCoinPackageInput.packageId',
    kind: 'package',
    caller: () => admin,
    document:
      'mutation($id: ID!) { updateCoinPackage(input: { packageId: $id, coins: 1 }) { coinPackage { id } userErrors { code } } }',
    select: (d) => d.updateCoinPackage,
    unknown: ['NOT_FOUND'],
  },
  {
    coordinate: 'Query.liveStream(id)',
    kind: 'stream',
    caller: () => bob,
    document: 'query($id: ID!) { liveStream(id: $id) { id giftCoins } }',
    select: (d) => d.liveStream,
    unknown: ['null'],
  },
  {
    coordinate: 'Query.ledgerAccount(id)',
    kind: 'account',
    caller: () => accountant,
    document: 'query($id: ID!) { ledgerAccount(id: $id) { id code balance } }',
    select: (d) => d.ledgerAccount,
    // A viewer naming their own wallet's account: the books are the accountants'.
    foreign: () => ({ id: fixture.aliceWalletAccount, caller: alice, expect: 'FORBIDDEN' }),
    unknown: ['null'],
  },
  {
    coordinate: 'Query.ledgerTransaction(id)',
    kind: 'transaction',
    caller: () => accountant,
    document: 'query($id: ID!) { ledgerTransaction(id: $id) { id kind } }',
    select: (d) => d.ledgerTransaction,
    foreign: () => ({ id: fixture.aliceGrantTx, caller: alice, expect: 'FORBIDDEN' }),
    unknown: ['null'],
  },
  {
    coordinate: 'LedgerTransactionFilter.accountId',
    kind: 'account',
    caller: () => accountant,
    document:
      'query($id: ID!) { ledgerTransactions(filter: { accountId: $id }, first: 5) { edges { node { id } } } }',
    select: (d) => (d.ledgerTransactions.edges.length === 0 ? null : d.ledgerTransactions),
    foreign: () => ({ id: fixture.aliceWalletAccount, caller: alice, expect: 'FORBIDDEN' }),
    unknown: ['null', 'BAD_USER_INPUT'],
  },
  {
    coordinate: 'Subscription.liveGifts(streamId)',
    kind: 'stream',
    caller: () => bob,
    document: 'subscription($id: ID!) { liveGifts(streamId: $id) { id } }',
    subscription: true,
    select: (d) => d.liveGifts,
    unknown: ['STREAM_NOT_FOUND'],
  },
  {
    coordinate: 'Subscription.liveStreakEnds(streamId)',
    kind: 'stream',
    caller: () => bob,
    document: 'subscription($id: ID!) { liveStreakEnds(streamId: $id) { streamId } }',
    subscription: true,
    select: (d) => d.liveStreakEnds,
    unknown: ['STREAM_NOT_FOUND'],
  },
]

/** Every argument and input field of type ID in `schema`, as coordinates. */
function idCoordinates(schema: GraphQLSchema): string[] {
  const found: string[] = []
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__')) continue
    if (isInputObjectType(type)) {
      for (const field of Object.values(type.getFields())) {
        if (getNamedType(field.type).name === 'ID') found.push(`${type.name}.${field.name}`)
      }
    }
    if (isObjectType(type)) {
      for (const field of Object.values(type.getFields())) {
        for (const arg of field.args) {
          if (getNamedType(arg.type).name === 'ID') found.push(`${type.name}.${field.name}(${arg.name})`)
        }
      }
    }
  }
  return found.sort()
}

/** One real id of each kind but `kind`; the ledger's ids are numbers from separate sequences, so one of them may name a row of the other. */
function idsOfOtherKinds(kind: IdKind): string[] {
  const samples: Record<IdKind, string> = {
    recharge: fixture.aliceRecharge,
    package: fixture.packageId,
    stream: fixture.stream,
    payout: fixture.davePayout,
    user: alice.userId,
    gift: fixture.rose,
    account: fixture.aliceWalletAccount,
    transaction: fixture.aliceGrantTx,
  }
  const numeric = (k: IdKind) => k === 'account' || k === 'transaction'
  return Object.entries(samples)
    .filter(([k]) => k !== kind && !(numeric(kind) && numeric(k as IdKind)))
    .map(([, id]) => id)
}

async function runIdCase(c: IdCase, id: string, caller: Actor) {
  const variables = { ...c.variables?.(), id }
  const { status, body } = c.subscription
    ? await firstOfSubscription(c.document, variables, bearer(caller))
    : await graphql(app, c.document, variables, bearer(caller))
  return { status, outcome: outcomeOf(body, c.select), body }
}

describe('ids: someone else’s, of another kind, malformed', () => {
  it.each([
    [
      'schema.graphql',
      buildSchema(readFileSync(fileURLToPath(new URL('../schema.graphql', import.meta.url)), 'utf8')),
    ],
    ['the schema the server builds', builtSchema],
  ])('every argument that takes an id has a case here (%s)', (_name, schema) => {
    expect(idCoordinates(schema)).toEqual(ID_CASES.map((c) => c.coordinate).sort())
  })

  describe.each(ID_CASES)('$coordinate', (c) => {
    if (c.foreign) {
      it('someone else’s id (or one the caller may not act on) is refused, changing nothing', async () => {
        const foreign = c.foreign?.() as ReturnType<NonNullable<IdCase['foreign']>>
        const { outcome } = await unchanged(() => runIdCase(c, foreign.id, foreign.caller ?? c.caller()))
        expect(outcome).toBe(foreign.expect)
      })
    }

    it('an id of another kind, an unknown one and malformed ones: a refusal, never an internal error', async () => {
      const outcomes = new Map<string, string>()
      await unchanged(async () => {
        for (const id of [NIL_UUID, ...idsOfOtherKinds(c.kind), ...MALFORMED_IDS]) {
          const { status, outcome } = await runIdCase(c, id, c.caller())
          expect(status, `${JSON.stringify(id.slice(0, 40))}: HTTP ${status}`).toBeLessThan(500)
          // BAD_USER_INPUT: GraphQL refused the value itself (an ID must be a string or an integer).
          if (!c.unknown.includes(outcome) && outcome !== 'BAD_USER_INPUT')
            outcomes.set(id.slice(0, 40), outcome)
        }
      })
      expect(Object.fromEntries(outcomes)).toEqual({})
    })
  })
})

// ---- GraphQL abuse ----------------------------------------------------------------------------

describe('GraphQL abuse', () => {
  const post = (body: string, headers: Record<string, string> = {}) =>
    fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
      body,
    })

  it('counts depth through fragments: twelve levels spread over fragments are refused', async () => {
    // LedgerEntry.transaction and LedgerTransaction.entries make a cycle; each fragment is one level.
    const fragments = Array.from({ length: 12 }, (_, i) =>
      i % 2 === 0
        ? `fragment F${i} on LedgerTransaction { entries { ${i < 11 ? `...F${i + 1}` : 'id'} } }`
        : `fragment F${i} on LedgerEntry { transaction { ${i < 11 ? `...F${i + 1}` : 'id'} } }`,
    )
    const { body } = await graphql(
      app,
      `query($id: ID!) { ledgerTransaction(id: $id) { ...F0 } } ${fragments.join(' ')}`,
      { id: fixture.aliceGrantTx },
      bearer(accountant),
    )
    expect(body.data ?? null).toBeNull()
    // Depth, or the cost of the lists on the way: either refuses it before anything runs.
    expect(body.errors?.[0]?.message).toMatch(/depth limit of 10 exceeded|Cost limit of 5000 exceeded/)
  })

  it('refuses introspection that loops through types (fields → type → fields …)', async () => {
    let inner = 'name'
    for (let i = 0; i < 5; i++) inner = `name fields { name type { ${inner} } }`
    const { body } = await graphql(app, `{ __schema { types { ${inner} } } }`)
    expect(body.data ?? null).toBeNull()
    expect(body.errors?.[0]?.message).toBe('Maximum introspection depth exceeded')
  })

  it('refuses a huge list in an input (30,000 prices) as bad input, promptly, changing nothing', async () => {
    const prices = Array.from({ length: 30_000 }, (_, i) => ({
      amount: 100 + i,
      currency: String.fromCharCode(
        65 + (i % 26),
        65 + (Math.floor(i / 26) % 26),
        65 + (Math.floor(i / 676) % 26),
      ),
    }))
    const started = Date.now()
    const result = await unchanged(() =>
      graphql(
        app,
        `mutation($prices: [CoinPackagePriceInput!]!) { createCoinPackage(input: { sku: "flood_pkg", coins: 10, prices: $prices }) {
          coinPackage { id } userErrors { code field } } }`,
        { prices },
        bearer(admin),
      ),
    )
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(result.status).toBeLessThan(500)
    expect(outcomeOf(result.body, (d) => d.createCoinPackage)).toBe('INVALID_INPUT')
  })

  it('refuses page sizes and rankings past their maximum', async () => {
    const pages = await graphql(app, '{ liveStreams(first: 1000000) { edges { node { id } } } }')
    expect(pages.body.errors?.[0]?.message).toMatch(/at most 100|Cost limit of 5000 exceeded/)
    const ranking = await graphql(
      app,
      `query($id: ID!) { liveStream(id: $id) { topGifters(first: 1000000) { rank } } }`,
      {
        id: fixture.stream,
      },
    )
    expect(ranking.status).toBeLessThan(500)
    expect(ranking.body.errors?.length).toBeGreaterThan(0)
    expect(ranking.body.errors?.[0]?.message).not.toBe('Unexpected error.')
  })

  it('refuses strings of nearly a megabyte with INVALID_INPUT, changing nothing', async () => {
    const huge = 'x'.repeat(900_000)
    const attempts: [string, string, Record<string, unknown>, Actor, (d: any) => unknown][] = [
      [
        'a title',
        'mutation($t: String!) { startLiveStream(input: { title: $t }) { liveStream { id } userErrors { code } } }',
        { t: huge },
        dave,
        (d) => d.startLiveStream,
      ],
      [
        'an idempotency key',
        `mutation($k: String!, $g: ID!, $s: ID!) { sendGift(input: { giftId: $g, liveStreamId: $s, idempotencyKey: $k }) {
          giftEvent { id } userErrors { code } } }`,
        { k: huge, g: fixture.rose, s: fixture.stream },
        bob,
        (d) => d.sendGift,
      ],
      [
        'a reason',
        `mutation($r: String!, $u: ID!) { grantCoins(input: { userId: $u, coins: 1, reason: $r, idempotencyKey: "huge-reason" }) {
          wallet { coins } userErrors { code } } }`,
        { r: huge, u: bob.userId },
        admin,
        (d) => d.grantCoins,
      ],
    ]
    await unchanged(async () => {
      for (const [what, document, variables, caller, select] of attempts) {
        const { status, body } = await graphql(app, document, variables, bearer(caller))
        expect(status, what).toBe(200)
        expect(outcomeOf(body, select), what).toBe('INVALID_INPUT')
      }
    })
  })

  it('survives JSON nested 100,000 deep, and answers the next request', async () => {
    const deep = `{"query":"{ gifts { id } }","variables":{"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`
    const response = await post(deep)
    expect(response.status).toBeLessThan(500)
    await response.arrayBuffer()
    const next = await graphql(app, '{ gifts { id } }')
    expect(next.status).toBe(200)
    expect(next.body.errors).toBeUndefined()
  })

  it('runs one operation of a document: none without operationName, the named one only with it', async () => {
    const document = `query A { gifts { id } }
      mutation B { grantCoins(input: { userId: "${bob.userId}", coins: 1, reason: "two ops", idempotencyKey: "two-ops" }) { userErrors { code } } }`
    const unnamed = await unchanged(() => graphql(app, document, undefined, bearer(admin)))
    expect(unnamed.body.errors?.[0]?.message).toMatch(/operation/i)
    expect(unnamed.body.data ?? null).toBeNull()
    const named = await unchanged(async () => {
      const response = await post(JSON.stringify({ query: document, operationName: 'A' }), bearer(admin))
      return (await response.json()) as { data?: Record<string, unknown> }
    })
    expect(Object.keys(named.data ?? {})).toEqual(['gifts'])
  })
})

// ---- injection ------------------------------------------------------------------------------------

const INJECTIONS = [
  "' OR '1'='1",
  "'; drop table ledger_entries; --",
  "') or ('1'='1",
  '" OR ""="',
  '%',
  '_%',
  '\\',
  '\\x00',
  '$1',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: an injection attempt, not a template
  '${process.exit()}',
  '__proto__',
  '{"$gt": ""}',
  "1' union select code from ledger_accounts --",
  '\u0000',
  '\udfff',
  'platform:%',
  '😀'.repeat(1000),
]

describe('injection in filters, cursors and instants', () => {
  const reads: [string, string, () => Actor, (value: string) => Record<string, unknown>][] = [
    [
      'coinPackages(currency)',
      'query($v: String) { coinPackages(currency: $v) { id } }',
      () => bob,
      (v) => ({ v }),
    ],
    [
      'ledgerAccounts(filter.codePrefix)',
      'query($v: String) { ledgerAccounts(filter: { codePrefix: $v }, first: 100) { edges { node { code } } } }',
      () => accountant,
      (v) => ({ v }),
    ],
    [
      'ledgerAccounts(filter.currency)',
      'query($v: String) { ledgerAccounts(filter: { currency: $v }, first: 100) { edges { node { code } } } }',
      () => accountant,
      (v) => ({ v }),
    ],
    [
      'ledgerTransactions(filter.kind)',
      'query($v: String) { ledgerTransactions(filter: { kind: $v }, first: 100) { edges { node { id } } } }',
      () => accountant,
      (v) => ({ v }),
    ],
    [
      'ledgerTransactions(after)',
      'query($v: String) { ledgerTransactions(after: $v, first: 5) { edges { node { id } } } }',
      () => accountant,
      (v) => ({ v }),
    ],
    [
      'ledgerAccounts(after)',
      'query($v: String) { ledgerAccounts(after: $v, first: 5) { edges { node { id } } } }',
      () => accountant,
      (v) => ({ v }),
    ],
    [
      'liveStreams(after)',
      'query($v: String) { liveStreams(after: $v, first: 5) { edges { node { id } } } }',
      () => bob,
      (v) => ({ v }),
    ],
    [
      'wallet.history(after)',
      'query($v: String) { me { wallet { history(after: $v, first: 5) { edges { node { id } } } } } }',
      () => alice,
      (v) => ({ v }),
    ],
    [
      'payoutRequests(after)',
      'query($v: String) { payoutRequests(after: $v, first: 5) { edges { node { id } } } }',
      () => admin,
      (v) => ({ v }),
    ],
    [
      'earnings.payouts(after)',
      'query($v: String) { me { earnings { payouts(after: $v, first: 5) { edges { node { id } } } } } }',
      () => dave,
      (v) => ({ v }),
    ],
    [
      'trialBalance(asOf)',
      'query($v: DateTime) { trialBalance(asOf: $v) { balanced } }',
      () => accountant,
      (v) => ({ v }),
    ],
    [
      'ledgerAccount.balanceAt(at) and entries(from, to, after)',
      `query($id: ID!, $v: DateTime, $c: String) { ledgerAccount(id: $id) { balanceAt(at: $v)
        entries(from: $v, to: $v, after: $c, first: 5) { edges { node { id } } } } }`,
      () => accountant,
      (v) => ({ id: fixture.aliceWalletAccount, v, c: v }),
    ],
  ]

  it.each(reads)(
    '%s: injection strings are data, never SQL; refused or matching nothing',
    async (_name, document, who, variables) => {
      const internal: string[] = []
      await unchanged(async () => {
        for (const value of [
          ...INJECTIONS,
          Buffer.from("' OR 1=1 --").toString('base64'),
          'W10=',
          'eyJpZCI6IjEgT1IgMT0xIn0=',
        ]) {
          const { status, body } = await graphql(app, document, variables(value), bearer(who()))
          if (status >= 500 || body.errors?.some((e) => e.message === 'Unexpected error.'))
            internal.push(
              `${JSON.stringify(value.slice(0, 30))}: HTTP ${status} ${JSON.stringify(body.errors)}`,
            )
          // Whatever came back matched nothing that an injection could have widened to.
          const text = JSON.stringify(body.data ?? {})
          if (value.includes('%') || value.includes("'"))
            expect(text.includes('"code":"user:'), JSON.stringify(value)).toBe(false)
        }
      })
      expect(internal).toEqual([])
    },
  )

  it('codePrefix is a prefix, not a pattern', async () => {
    const codes = async (prefix: string) =>
      (
        await accountant.ok(
          'query($p: String) { ledgerAccounts(filter: { codePrefix: $p }, first: 100) { edges { node { code } } } }',
          { p: prefix },
        )
      ).ledgerAccounts.edges.map((e: { node: { code: string } }) => e.node.code) as string[]
    expect(await codes('%')).toEqual([])
    expect(await codes('_latform:')).toEqual([])
    const platform = await codes('platform:')
    expect(platform.length).toBeGreaterThan(5)
    expect(platform.every((c) => c.startsWith('platform:'))).toBe(true)
  })
})

// ---- webhooks --------------------------------------------------------------------------------------

describe('webhooks', () => {
  const hook = () => `${app.url}/webhooks/stripe`
  const credits = async (orderId: string) =>
    Number(
      rowsOf<{ n: string }>(
        await app.database.db.execute(
          sql`select count(*)::text as n from ledger_transactions where idempotency_key = ${`recharge:${orderId}:credit`}`,
        ),
      )[0]?.n,
    )
  const coinsOf = async (who: Actor) =>
    (await who.ok('{ me { wallet { coins } } }')).me.wallet.coins as number

  it('a genuine delivery replayed, byte for byte, is acknowledged as a duplicate and credits nothing more', async () => {
    const before = await coinsOf(alice)
    const [succeeded] = stripe.succeed(fixture.alicePi).events
    const delivery = stripe.sign(succeeded as never)
    const send = () => fetch(hook(), { method: 'POST', headers: delivery.headers, body: delivery.body })
    const first = await send()
    expect(first.status).toBe(200)
    await app.services.inbox.idle()
    const credited = await coinsOf(alice)
    expect(credited).toBeGreaterThan(before)
    const replays = await Promise.all(Array.from({ length: 5 }, send))
    for (const r of replays) {
      expect(r.status).toBe(200)
      expect(await r.json()).toEqual({ received: true, duplicate: true })
    }
    await app.services.inbox.idle()
    expect(await coinsOf(alice)).toBe(credited)
    expect(await credits(fixture.aliceRecharge)).toBe(1)
    // Replayed to another provider's route: refused, stored nowhere.
    const elsewhere = await unchanged(() =>
      fetch(`${app.url}/webhooks/paypal`, { method: 'POST', headers: delivery.headers, body: delivery.body }),
    )
    expect(elsewhere.status).toBeGreaterThanOrEqual(400)
    expect(elsewhere.status).toBeLessThan(500)
  })

  it('an event signed correctly that lies about a payment credits nothing: the payment is read from Stripe', async () => {
    const { createRecharge } = await bob.ok(CREATE_RECHARGE, {
      packageId: fixture.packageId,
      provider: 'STRIPE',
      idempotencyKey: key(),
    })
    const pi = stripe.object(createRecharge.checkout.providerReference) as Record<string, unknown>
    // As if the webhook secret had leaked: a well-signed claim that bob's unpaid intent succeeded.
    const lie = stripe.event('payment_intent.succeeded', {
      ...pi,
      status: 'succeeded',
      amount_received: pi.amount,
    })
    const before = await coinsOf(bob)
    expect(await stripe.deliver(lie, hook())).toEqual([200])
    await app.services.inbox.idle()
    expect(await coinsOf(bob)).toBe(before)
    expect(await credits(createRecharge.recharge.id)).toBe(0)
    expect(
      (await bob.ok('query($id: ID!) { recharge(id: $id) { status } }', { id: createRecharge.recharge.id }))
        .recharge.status,
    ).toBe('PENDING')
  })
})

// ---- a flood of mutations from one user -------------------------------------------------------------

describe('a flood of mutations from one user', () => {
  let flood: { url: string; stop(): Promise<void> }
  let strict: { url: string; stop(): Promise<void> }

  /** The real schema and services, over the same database, with a rate limit of its own. */
  async function serveWithRateLimit(mutationsPerSecond: number, mutationsBurst: number) {
    const built = buildApp({
      config: { ...app.config, rateLimit: { mutationsPerSecond, mutationsBurst } },
      database: app.database,
      services: app.services,
      logger: pino({ level: 'silent' }),
      shutdownGraceMs: 500,
    })
    const { port } = await built.start()
    return { url: `http://127.0.0.1:${port}`, stop: () => built.stop() }
  }

  beforeAll(async () => {
    // The default burst; a slow refill, so that a loaded machine answering the 100 slowly still refuses some.
    flood = await serveWithRateLimit(2, 40)
    strict = await serveWithRateLimit(1, 20)
  })
  afterAll(async () => {
    await flood?.stop()
    await strict?.stop()
  })

  /** `aliases` gifts in one mutation, each under its own alias and key. */
  const giftDocument = (aliases: number, prefix: string) =>
    `mutation($g: ID!, $s: ID!) { ${Array.from(
      { length: aliases },
      (_, i) =>
        `g${i}: sendGift(input: { giftId: $g, liveStreamId: $s, idempotencyKey: "${prefix}-${i}" }) { userErrors { code } }`,
    ).join(' ')} }`
  const coinsOf = async (who: Actor) =>
    (await who.ok('{ me { wallet { coins } } }')).me.wallet.coins as number

  it('100 gifts at once (bursts of 40, 2 a second): the burst and the refill pass, the rest is 429 RATE_LIMITED; only what passed is debited', async () => {
    const flooder = await signIn(app, 'flooder')
    await admin.ok(GRANT_COINS, {
      userId: flooder.userId,
      coins: 1_000,
      reason: 'flood',
      idempotencyKey: key(),
    })
    const started = Date.now()
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        graphql(
          flood,
          SEND_GIFT,
          { giftId: fixture.rose, liveStreamId: fixture.stream, idempotencyKey: `flood-${i}` },
          bearer(flooder),
        ),
      ),
    )
    const elapsedSeconds = (Date.now() - started) / 1000
    const passed = results.filter((r) => r.status === 200)
    const refused = results.filter((r) => r.status !== 200)
    expect(passed.length).toBeGreaterThanOrEqual(40)
    // The burst, and what flowed in while the 100 were being answered.
    expect(passed.length).toBeLessThanOrEqual(40 + Math.ceil(2 * elapsedSeconds) + 1)
    expect(refused.length).toBeGreaterThan(0)
    for (const r of refused) {
      expect(r.status).toBe(429)
      expect(r.body.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED')
    }
    for (const r of passed) expect((r.body.data as any)?.sendGift.userErrors).toEqual([])
    expect(await coinsOf(flooder)).toBe(1_000 - passed.length)
    // Meanwhile another user's mutation passes, and the flooder may still read.
    const other = await graphql(
      flood,
      SEND_GIFT,
      { giftId: fixture.rose, liveStreamId: fixture.stream, idempotencyKey: key() },
      bearer(bob),
    )
    expect(other.status).toBe(200)
    expect((await graphql(flood, '{ me { wallet { coins } } }', undefined, bearer(flooder))).status).toBe(200)
  })

  it('counts each aliased mutation: a request of 15 gifts takes 15 tokens, not one', async () => {
    const aliaser = await signIn(app, 'aliaser')
    await admin.ok(GRANT_COINS, {
      userId: aliaser.userId,
      coins: 1_000,
      reason: 'flood',
      idempotencyKey: key(),
    })
    const statuses: number[] = []
    for (let round = 0; round < 3; round++) {
      const response = await graphql(
        strict,
        giftDocument(15, `alias-${round}`),
        { g: fixture.rose, s: fixture.stream },
        bearer(aliaser),
      )
      statuses.push(response.status)
    }
    // A burst of 20 holds one request of 15; the next finds 5 and a token or two refilled.
    expect(statuses).toEqual([200, 429, 429])
    expect(await coinsOf(aliaser)).toBe(1_000 - 15)
  })
})
