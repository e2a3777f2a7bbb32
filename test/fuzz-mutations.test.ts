import fc from 'fast-check'
import {
  type GraphQLInputType,
  type GraphQLNamedType,
  type GraphQLObjectType,
  getNamedType,
  isEnumType,
  isInputObjectType,
  isLeafType,
  isListType,
  isNonNullType,
  isObjectType,
} from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signToken } from '../src/auth/tokens.js'
import { schema } from '../src/graphql/schema.js'
import { type FakePayPal, startFakePayPal } from './fakes/paypal.js'
import { type FakeStripe, startFakeStripe } from './fakes/stripe.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'
import { assertBooksBalance } from './support/books.js'
import {
  CATALOG,
  CREATE_RECHARGE,
  END_LIVE,
  GRANT_COINS,
  SEND_GIFT,
  START_LIVE,
} from './support/operations.js'

// Fuzzing every mutation through the real server. For each mutation of the
// schema the server builds, fast-check generates its input from the input
// types — mostly values that look valid (real ids of gifts, streams, users,
// packages, payouts and recharges; currencies; amounts near the limits) so
// that they reach the services and the database, and hostile ones (huge and
// negative numbers, numbers past 2^53, floats, unicode, right-to-left marks,
// lone surrogates, NUL, SQL and JavaScript injection, megabyte-ish strings,
// wrong types, nulls where a value is required, unknown fields, long lists) —
// sends it as a variable or as an inline literal, with the real token of a
// random role (anonymous and a forged token too), and checks the answer:
//
// - never a 5xx, never an internal (masked) error: only user errors in the
//   payload, validation or bad-input errors, or auth errors;
// - after every mutation has been fuzzed, the ledger still balances (the
//   integrity check, and the trial balance of the global after-check).

/** FUZZ_RUNS=1000 for a longer hunt; FUZZ_VERBOSE=1 prints what each mutation answered. */
const RUNS_PER_MUTATION = Number(process.env.FUZZ_RUNS ?? 150)
/**
 * The order mutations are fuzzed in: gifts first, while the stream is live and
 * the catalog whole; ending streams and catalog edits (retiring gifts and
 * packages) last, as they starve the others of valid ids.
 */
const FIRST = ['sendGift']
const LAST = [
  'endLiveStream',
  'retireGift',
  'retireCoinPackage',
  'updateGift',
  'updateCoinPackage',
  'createGift',
  'createCoinPackage',
]
const rank = (name: string) => (FIRST.includes(name) ? 0 : LAST.includes(name) ? 2 + LAST.indexOf(name) : 1)
const ALLOWED_ERROR_CODES = new Set([
  'GRAPHQL_VALIDATION_FAILED',
  'GRAPHQL_PARSE_FAILED',
  'BAD_USER_INPUT',
  'UNAUTHENTICATED',
  'FORBIDDEN',
])

let stripe: FakeStripe
let paypal: FakePayPal
let app: TestApp
const roles = {} as Record<'viewer' | 'creator' | 'creator2' | 'accountant' | 'admin' | 'adminCreator', Actor>
let forgedToken: string
/** Real ids of every kind, for inputs that look valid. */
const ids = {
  user: [] as string[],
  gift: [] as string[],
  package: [] as string[],
  stream: [] as string[],
  payout: [] as string[],
  recharge: [] as string[],
}

beforeAll(async () => {
  stripe = await startFakeStripe({ webhookSecret: 'whsec_fuzz' })
  const paypalCredentials = { clientId: 'fuzz', clientSecret: 'fuzz-secret', webhookId: 'WH-FUZZ' }
  paypal = await startFakePayPal(paypalCredentials)
  app = await startTestApp({
    env: {
      STRIPE_SECRET_KEY: stripe.secretKey,
      STRIPE_WEBHOOK_SECRET: 'whsec_fuzz',
      STRIPE_API_BASE: stripe.url,
      PAYPAL_CLIENT_ID: paypalCredentials.clientId,
      PAYPAL_CLIENT_SECRET: paypalCredentials.clientSecret,
      PAYPAL_WEBHOOK_ID: paypalCredentials.webhookId,
      PAYPAL_API_BASE: paypal.url,
      PAYOUT_MIN_COINS: '10',
      RATE_LIMIT_MUTATIONS_PER_SECOND: '100000',
      RATE_LIMIT_MUTATIONS_BURST: '100000',
    },
  })
  ;[roles.viewer, roles.creator, roles.creator2, roles.accountant, roles.admin, roles.adminCreator] =
    await Promise.all([
      signIn(app, 'viewer'),
      signIn(app, 'creator', ['creator']),
      signIn(app, 'creator2', ['creator']),
      signIn(app, 'accountant', ['accountant']),
      signIn(app, 'admin', ['admin']),
      signIn(app, 'admincreator', ['admin', 'creator']),
    ])
  forgedToken = await signToken(
    new TextEncoder().encode('not-the-server-key-0123456789abcdef0123'),
    { sub: 'test|fuzz-forger', roles: ['admin', 'accountant', 'creator'] },
    { expiresIn: '1h' },
  )
  const { admin, viewer, creator, creator2, adminCreator } = roles
  for (const who of Object.values(roles)) {
    await admin.ok(GRANT_COINS, {
      userId: who.userId,
      coins: 100_000,
      reason: 'fuzz',
      idempotencyKey: `g-${who.userId}`,
    })
    ids.user.push(who.userId)
  }
  const catalog = await viewer.ok(CATALOG, { currency: 'USD' })
  ids.gift.push(...catalog.gifts.map((g: { id: string }) => g.id))
  ids.package.push(...catalog.coinPackages.map((p: { id: string }) => p.id))
  const live = (await creator.ok(START_LIVE, { title: 'fuzz live' })).startLiveStream.liveStream.id
  const ended = (await creator2.ok(START_LIVE, { title: 'fuzz ended' })).startLiveStream.liveStream.id
  await creator2.ok(END_LIVE, { liveStreamId: ended })
  ids.stream.push(live, ended)
  // Earnings and a pending payout for two creators (one of them an admin).
  for (const [i, who] of [creator2, adminCreator].entries()) {
    await viewer.ok(SEND_GIFT, {
      giftId: catalog.gifts[0].id,
      creatorId: who.userId,
      quantity: 200,
      idempotencyKey: `e${i}`,
    })
    const payout = await who.ok(
      'mutation($k: String!) { requestPayout(input: { coins: 20, idempotencyKey: $k }) { payout { id } userErrors { code } } }',
      { k: `p${i}` },
    )
    ids.payout.push(payout.requestPayout.payout.id)
  }
  for (const provider of ['STRIPE', 'PAYPAL']) {
    const recharge = await viewer.ok(CREATE_RECHARGE, {
      packageId: catalog.coinPackages[0].id,
      provider,
      idempotencyKey: `r-${provider}`,
    })
    ids.recharge.push(recharge.createRecharge.recharge.id)
  }
}, 90_000)

afterAll(async () => {
  await app?.stop()
  await stripe?.stop()
  await paypal?.stop()
})

// ---- values -----------------------------------------------------------------------------

const HOSTILE_STRINGS = [
  '',
  ' ',
  '\t\n',
  "' OR '1'='1",
  "'; drop table ledger_entries; --",
  '%',
  '_',
  '\\',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: an injection attempt, not a template
  '${process.exit(1)}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '__proto__',
  'constructor',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\u202eevil',
  '😀'.repeat(70),
  'é'.normalize('NFD'),
  'x'.repeat(201),
  'y'.repeat(5_000),
  'NaN',
  '-0',
  '1e309',
]
const hostileString = fc.constantFrom(...HOSTILE_STRINGS)
const wrongType = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.boolean(),
  fc.constant({}),
  fc.constant([]),
  fc.constant({ nested: { deeper: [1, 'x'] } }),
)

function plausibleString(field: string): fc.Arbitrary<unknown> {
  if (/currency/i.test(field)) return fc.constantFrom('USD', 'EUR', 'usd', 'GBP', 'XXX', 'JPY', 'US', 'USDD')
  if (/sku/i.test(field)) return fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,70}$/)
  if (/imageUrl/i.test(field))
    return fc.constantFrom(
      '/static/gifts/fuzz.png',
      'https://cdn.example.test/gift.png',
      'javascript:alert(1)',
      'http://insecure.test/x.png',
      '/static/../../etc/passwd',
      'data:image/png;base64,AAAA',
      '//evil.test/x.png',
    )
  if (/idempotencyKey/i.test(field)) return fc.oneof(fc.uuid(), fc.string({ minLength: 1, maxLength: 40 }))
  return fc.oneof(fc.string({ maxLength: 60 }), fc.string({ unit: 'grapheme', maxLength: 30 }))
}

/** An id for a field: mostly a real one of the kind its name says, else any real one, a random uuid, or worse. */
function idValue(field: string): fc.Arbitrary<unknown> {
  const kind = (Object.keys(ids) as (keyof typeof ids)[]).find((k) =>
    new RegExp(k === 'user' ? 'user|creator' : k, 'i').test(field),
  )
  const all = Object.values(ids).flat()
  return fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...(kind ? ids[kind] : all)) },
    { weight: 2, arbitrary: fc.constantFrom(...all) },
    { weight: 1, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: hostileString },
    { weight: 1, arbitrary: fc.integer() },
  )
}

const amountValue = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 3_000 }) },
  fc.constantFrom(
    0,
    -1,
    -100,
    10,
    19,
    20,
    21,
    999,
    1000,
    10_000_000,
    10_000_001,
    2 ** 31,
    2 ** 53 - 1,
    2 ** 53,
    1e20,
    1.5,
    -0.5,
  ),
  fc.constantFrom('100', '1e3', '0x10', '', true, null),
)
/** Ints whose field name says what is plausible: a quantity, a share in basis points, a display order. */
function intValue(field: string): fc.Arbitrary<unknown> {
  const plausible = /quantity/i.test(field)
    ? fc.integer({ min: 1, max: 5 })
    : /basisPoints/i.test(field)
      ? fc.integer({ min: 0, max: 10_000 })
      : fc.integer({ min: 0, max: 1_000 })
  return fc.oneof({ weight: 4, arbitrary: plausible }, { weight: 2, arbitrary: anyInt })
}
const anyInt = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: -2, max: 12_000 }) },
  fc.constantFrom(0, 5000, 10_000, 10_001, 999, 1000, 2 ** 31 - 1, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, 1.5),
  fc.constantFrom('3', true, null),
)
const dateTimeValue = fc.oneof(
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.constantFrom('2026-13-45T99:99:99Z', 'yesterday', '0000-00-00', 'infinity', '', 1_700_000_000),
)

/** A value for a position of `type` (named `field`), valid-looking most of the time. */
function valueFor(type: GraphQLInputType, field: string, depth = 0): fc.Arbitrary<unknown> {
  if (isNonNullType(type)) {
    return fc.oneof({ weight: 25, arbitrary: valueFor(type.ofType, field, depth) }, fc.constant(null))
  }
  const hostile = fc.oneof(wrongType, hostileString)
  if (isListType(type)) {
    const item = valueFor(type.ofType, field, depth + 1)
    return fc.oneof(
      { weight: 10, arbitrary: fc.array(item, { maxLength: 4 }) },
      { weight: 1, arbitrary: fc.array(item, { minLength: 150, maxLength: 300 }) },
      { weight: 1, arbitrary: hostile },
    )
  }
  if (isInputObjectType(type)) {
    if (depth > 4) return fc.constant({})
    const fields = type.getFields()
    const shape: Record<string, fc.Arbitrary<unknown>> = {}
    for (const [name, f] of Object.entries(fields)) shape[name] = valueFor(f.type, name, depth + 1)
    const required = Object.values(fields)
      .filter((f) => isNonNullType(f.type))
      .map((f) => f.name)
    const record = fc.record(shape, { requiredKeys: required })
    return fc.oneof(
      { weight: 20, arbitrary: record },
      // An unknown field, or a required one missing.
      record.map((r) => ({ ...r, unknownField: 'x' })),
      record.map((r) => {
        const copy = { ...r }
        if (required[0]) delete copy[required[0]]
        return copy
      }),
      hostile,
    )
  }
  const named = getNamedType(type) as GraphQLNamedType
  let plausible: fc.Arbitrary<unknown>
  if (isEnumType(named)) plausible = fc.constantFrom(...named.getValues().map((v) => v.name))
  else if (named.name === 'ID') plausible = idValue(field)
  else if (named.name === 'Amount') plausible = amountValue
  else if (named.name === 'Int') plausible = intValue(field)
  else if (named.name === 'Float') plausible = fc.double({ noNaN: true })
  else if (named.name === 'Boolean') plausible = fc.boolean()
  else if (named.name === 'DateTime') plausible = dateTimeValue
  else plausible = plausibleString(field)
  return fc.oneof({ weight: 6, arbitrary: plausible }, { weight: 1, arbitrary: hostile })
}

/** `value` as a GraphQL literal of `type` (inline in the document rather than as a variable). */
function toLiteral(value: unknown, type: GraphQLInputType | undefined): string {
  if (value === null || value === undefined) return 'null'
  const inner = type && isNonNullType(type) ? type.ofType : type
  if (Array.isArray(value)) {
    const item = inner && isListType(inner) ? inner.ofType : undefined
    return `[${value.map((v) => toLiteral(v, item)).join(', ')}]`
  }
  if (typeof value === 'object') {
    const fields = inner && isInputObjectType(inner) ? inner.getFields() : {}
    const entries = Object.entries(value as Record<string, unknown>).filter(([k]) =>
      /^[_A-Za-z][_0-9A-Za-z]*$/.test(k),
    )
    return `{ ${entries.map(([k, v]) => `${k}: ${toLiteral(v, fields[k]?.type)}`).join(', ')} }`
  }
  if (typeof value === 'string') {
    if (inner && isEnumType(inner) && /^[_A-Za-z][_0-9A-Za-z]*$/.test(value)) return value
    return JSON.stringify(value)
  }
  return String(value)
}

/** The payload's fields: its scalars, and the id (or __typename) of each object in it. */
function selectionOf(type: GraphQLObjectType): string {
  return Object.values(type.getFields())
    .filter((f) => f.args.every((a) => !isNonNullType(a.type)))
    .map((f) => {
      const named = getNamedType(f.type)
      if (isLeafType(named)) return f.name
      if (f.name === 'userErrors') return 'userErrors { code field message }'
      if (isObjectType(named)) return `${f.name} { __typename ${'id' in named.getFields() ? 'id' : ''} }`
      return `${f.name} { __typename }`
    })
    .join(' ')
}

// ---- the property -------------------------------------------------------------------------

const mutationType = schema.getMutationType()
if (!mutationType) throw new Error('the schema has no mutations')
const mutations = Object.values(mutationType.getFields()).sort(
  (a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name),
)
const ROLE_NAMES = [
  'anonymous',
  'forged',
  'viewer',
  'creator',
  'creator2',
  'accountant',
  'admin',
  'adminCreator',
] as const

/** What is wrong with an answer, if anything: a 5xx, an internal error, an error of another kind. */
function problemWith(status: number, body: unknown, root: string): string | null {
  if (status >= 500) return `HTTP ${status}`
  if (typeof body !== 'object' || body === null) return 'not a JSON object'
  const { data, errors } = body as {
    data?: Record<string, any> | null
    errors?: { message: string; extensions?: { code?: string } }[]
  }
  for (const error of errors ?? []) {
    // graphql-js's own refusal of a variable's value (a request error, before execution) carries no code.
    const variableRefused =
      error.extensions?.code === undefined &&
      /^(Variable "\$\w+" |Too many errors processing variables)/.test(error.message)
    if (
      error.message === 'Unexpected error.' ||
      !(variableRefused || ALLOWED_ERROR_CODES.has(error.extensions?.code ?? ''))
    ) {
      return `error ${error.extensions?.code ?? '(no code)'}: ${error.message}`
    }
  }
  const payload = data?.[root]
  if (payload && !Array.isArray(payload.userErrors)) return 'a payload without userErrors'
  if (!errors?.length && !payload) return 'neither data nor errors'
  return null
}

/** The mutations whose generated inputs reached the service (an answer or a user error) at least once. */
const reached = new Set<string>()

describe('fuzzing every mutation through the real server', () => {
  it('has mutations to fuzz, each taking one input', () => {
    expect(mutations.length).toBeGreaterThanOrEqual(17)
    for (const m of mutations)
      expect(
        m.args.map((a) => a.name),
        m.name,
      ).toEqual(['input'])
  })

  describe.each(mutations.map((m) => [m.name, m] as const))('%s', (name, field) => {
    it(`answers ${RUNS_PER_MUTATION} generated inputs with user, validation or auth errors only`, async () => {
      const arg = field.args[0]
      if (!arg || !isObjectType(getNamedType(field.type))) throw new Error(`${name}: unexpected shape`)
      const inputType = arg.type
      const inputTypeName = String(inputType)
      const selection = selectionOf(getNamedType(field.type) as GraphQLObjectType)
      const seen = new Map<string, number>()
      await fc.assert(
        fc.asyncProperty(
          valueFor(inputType, 'input'),
          fc.constantFrom(...ROLE_NAMES),
          fc.boolean(),
          async (input, role, inline) => {
            const query = inline
              ? `mutation { ${name}(input: ${toLiteral(input, inputType)}) { ${selection} } }`
              : `mutation($input: ${inputTypeName}) { ${name}(input: $input) { ${selection} } }`
            const token =
              role === 'anonymous' ? undefined : role === 'forged' ? forgedToken : roles[role].token
            const response = await fetch(`${app.url}/graphql`, {
              method: 'POST',
              headers: {
                'content-type': 'application/json',
                accept: 'application/json',
                ...(token ? { authorization: `Bearer ${token}` } : {}),
              },
              body: JSON.stringify(inline ? { query } : { query, variables: { input } }),
            })
            const text = await response.text()
            let body: unknown
            try {
              body = JSON.parse(text)
            } catch {
              body = text
            }
            const problem = problemWith(response.status, body, name)
            const outcome = outcomeOf(body, name)
            seen.set(outcome, (seen.get(outcome) ?? 0) + 1)
            if (problem)
              throw new Error(
                `${problem}\nas ${role}, ${inline ? 'inline' : 'variables'}: ${query.slice(0, 2000)}\n${inline ? '' : JSON.stringify(input).slice(0, 2000)}`,
              )
          },
        ),
        { numRuns: RUNS_PER_MUTATION },
      )
      if (process.env.FUZZ_VERBOSE) {
        console.info(
          `fuzz ${name}: ${JSON.stringify(Object.fromEntries([...seen].sort((a, b) => b[1] - a[1])))}`,
        )
      }
      if ([...seen.keys()].some((o) => o === 'ok' || o.startsWith('user error'))) reached.add(name)
    })
  })

  it('got past GraphQL’s validation into the services for nearly every mutation', () => {
    // Not all: 60 random inputs may all miss a mutation that needs an admin and a valid list.
    expect(reached.size, [...reached].join(', ')).toBeGreaterThanOrEqual(mutations.length - 3)
  })

  it('leaves the ledger balanced', async () => {
    expect((await app.services.ledger.checkIntegrity()).problems).toEqual([])
    await assertBooksBalance(app.database.db)
  })
})

function outcomeOf(body: unknown, root: string): string {
  const { data, errors } = (body ?? {}) as {
    data?: Record<string, any> | null
    errors?: { extensions?: { code?: string } }[]
  }
  if (errors?.length) return `error ${errors[0]?.extensions?.code}`
  const payload = data?.[root]
  if (payload?.userErrors?.length) return `user error ${payload.userErrors[0].code}`
  return 'ok'
}
