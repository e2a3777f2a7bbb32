import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { type ExecutionResult, execute, parse } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedCatalog } from '../src/catalog/seed.js'
import { loadConfig } from '../src/config.js'
import { rowsOf } from '../src/db/rows.js'
import type { Context, Viewer } from '../src/graphql/context.js'
import { schema } from '../src/graphql/schema.js'
import { createServices, type Services } from '../src/services.js'
import { createTestDatabase, type TestDatabase } from './support/db.js'

// The catalog's admin mutations, run on the GraphQL schema itself with a
// context built here: the viewer is whatever a test says, whatever the state
// of authentication over HTTP.

let testDb: TestDatabase
let services: Services

beforeAll(async () => {
  testDb = await createTestDatabase()
  await seedCatalog(testDb.database.db)
  const config = {
    ...loadConfig({
      NODE_ENV: 'test',
      PGLITE_DIR: 'memory://',
      JWT_SECRET: 'catalog-admin-test-secret-0123456789abcdef',
    }),
    database: testDb.config,
  }
  services = createServices(config, testDb.database)
}, 120_000)

afterAll(async () => {
  await testDb?.drop()
})

const ADMIN: Viewer = { userId: randomUUID(), roles: ['admin'] }
const NO_ROLES: Viewer = { userId: randomUUID(), roles: [] }
const CREATOR_ACCOUNTANT: Viewer = { userId: randomUUID(), roles: ['creator', 'accountant'] }

type Variables = Record<string, unknown>

async function run<T = Record<string, unknown>>(
  source: string,
  variables: Variables = {},
  viewer: Viewer | null = ADMIN,
): Promise<ExecutionResult<T>> {
  const contextValue: Context = { db: testDb.database.db, viewer, requestId: 'test', services }
  return (await execute({
    schema,
    document: parse(source),
    variableValues: variables,
    contextValue,
  })) as ExecutionResult<T>
}

// ---- operations ----------------------------------------------------------------

const GIFT_FIELDS = 'id sku name coinCost imageUrl active sortOrder'
const PACKAGE_FIELDS =
  'id sku coins bonusCoins active sortOrder price { amount currency formatted } prices { amount currency formatted }'
const USER_ERRORS = 'userErrors { code field message }'

const MUTATIONS = {
  createGift: `mutation($input: CreateGiftInput!) { createGift(input: $input) { gift { ${GIFT_FIELDS} } ${USER_ERRORS} } }`,
  updateGift: `mutation($input: UpdateGiftInput!) { updateGift(input: $input) { gift { ${GIFT_FIELDS} } ${USER_ERRORS} } }`,
  retireGift: `mutation($input: RetireGiftInput!) { retireGift(input: $input) { gift { ${GIFT_FIELDS} } ${USER_ERRORS} } }`,
  createCoinPackage: `mutation($input: CreateCoinPackageInput!) {
    createCoinPackage(input: $input) { coinPackage { ${PACKAGE_FIELDS} } ${USER_ERRORS} } }`,
  updateCoinPackage: `mutation($input: UpdateCoinPackageInput!) {
    updateCoinPackage(input: $input) { coinPackage { ${PACKAGE_FIELDS} } ${USER_ERRORS} } }`,
  retireCoinPackage: `mutation($input: RetireCoinPackageInput!) {
    retireCoinPackage(input: $input) { coinPackage { ${PACKAGE_FIELDS} } ${USER_ERRORS} } }`,
} as const
type MutationName = keyof typeof MUTATIONS

interface UserErrorData {
  code: string
  field: string | null
  message: string
}
interface GiftData {
  id: string
  sku: string
  name: string
  coinCost: number
  imageUrl: string
  active: boolean
  sortOrder: number
}
interface MoneyData {
  amount: number
  currency: string
  formatted: string
}
interface PackageData {
  id: string
  sku: string
  coins: number
  bonusCoins: number
  active: boolean
  sortOrder: number
  price: MoneyData
  prices: MoneyData[]
}
interface Payload {
  gift?: GiftData | null
  coinPackage?: PackageData | null
  userErrors: UserErrorData[]
}

/** Runs a mutation; fails the test on GraphQL errors; returns its payload. */
async function mutate(name: MutationName, input: Variables, viewer: Viewer | null = ADMIN): Promise<Payload> {
  const result = await run<Record<string, Payload>>(MUTATIONS[name], { input }, viewer)
  expect(result.errors, JSON.stringify(result.errors)).toBeUndefined()
  const payload = result.data?.[name]
  if (!payload) throw new Error(`no payload for ${name}`)
  return payload
}

/** A mutation that must succeed: its payload, with no userErrors. */
async function succeed(name: MutationName, input: Variables): Promise<Payload> {
  const payload = await mutate(name, input)
  expect(payload.userErrors).toEqual([])
  return payload
}

/** The gifts anyone sees (the contract's Catalog operation's selection). */
async function publicGifts(): Promise<GiftData[]> {
  const result = await run<{ gifts: GiftData[] }>(`{ gifts { ${GIFT_FIELDS} } }`, {}, null)
  expect(result.errors).toBeUndefined()
  return result.data?.gifts ?? []
}

async function publicPackages(currency = 'USD'): Promise<PackageData[]> {
  const result = await run<{ coinPackages: PackageData[] }>(
    `query($currency: String) { coinPackages(currency: $currency) { ${PACKAGE_FIELDS} } }`,
    { currency },
    null,
  )
  expect(result.errors).toBeUndefined()
  return result.data?.coinPackages ?? []
}

/** Every row of the catalog's tables, exactly (to the microsecond). */
async function catalogTables(): Promise<string[]> {
  const db = testDb.database.db
  const rows = await db.execute(sql`
    select 'gift ' || to_jsonb(g)::text as row from gifts g
    union all select 'package ' || to_jsonb(p)::text from coin_packages p
    union all select 'price ' || to_jsonb(pp)::text from coin_package_prices pp
    order by 1`)
  return rowsOf<{ row: string }>(rows).map((r) => r.row)
}

async function updatedAt(table: 'gifts' | 'coin_packages', id: string): Promise<string> {
  const rows = await testDb.database.db.execute(
    sql`select updated_at::text as "updatedAt" from ${sql.identifier(table)} where id = ${id}`,
  )
  const row = rowsOf<{ updatedAt: string }>(rows)[0]
  if (!row) throw new Error(`no ${table} row ${id}`)
  return row.updatedAt
}

/** Moves a row's updated_at a day back, so that a bump shows whatever the clock's resolution. */
async function ageRow(table: 'gifts' | 'coin_packages', id: string): Promise<string> {
  await testDb.database.db.execute(
    sql`update ${sql.identifier(table)} set updated_at = now() - interval '1 day' where id = ${id}`,
  )
  return updatedAt(table, id)
}

async function isRecent(table: 'gifts' | 'coin_packages', id: string): Promise<boolean> {
  const rows = await testDb.database.db.execute(
    sql`select updated_at > now() - interval '1 hour' as recent from ${sql.identifier(table)} where id = ${id}`,
  )
  return rowsOf<{ recent: boolean }>(rows)[0]?.recent === true
}

let skuCounter = 0
const freshSku = (prefix: string) => `${prefix}_${++skuCounter}`

const giftInput = (overrides: Variables = {}): Variables => ({
  sku: freshSku('gift'),
  name: 'Star',
  coinCost: 10,
  imageUrl: '/static/gifts/star.png',
  ...overrides,
})

const packageInput = (overrides: Variables = {}): Variables => ({
  sku: freshSku('coins'),
  coins: 1_000,
  bonusCoins: 50,
  prices: [
    { currency: 'USD', amount: 1_299 },
    { currency: 'EUR', amount: 1_199 },
  ],
  ...overrides,
})

async function newGift(overrides: Variables = {}): Promise<GiftData> {
  const { gift } = await succeed('createGift', giftInput(overrides))
  if (!gift) throw new Error('no gift')
  return gift
}

async function newPackage(overrides: Variables = {}): Promise<PackageData> {
  const { coinPackage } = await succeed('createCoinPackage', packageInput(overrides))
  if (!coinPackage) throw new Error('no package')
  return coinPackage
}

// ---- gifts -------------------------------------------------------------------

describe('createGift', () => {
  it('adds an active gift at the end of the list, with the name trimmed', async () => {
    const before = await publicGifts()
    const gift = await newGift({
      sku: 'shooting-star',
      name: '  Shooting Star ',
      coinCost: 4_999,
      imageUrl: 'https://cdn.example.com/gifts/shooting-star.png',
    })
    expect(gift).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      sku: 'shooting-star',
      name: 'Shooting Star',
      coinCost: 4_999,
      imageUrl: 'https://cdn.example.com/gifts/shooting-star.png',
      active: true,
      sortOrder: Math.max(...before.map((g) => g.sortOrder)) + 10,
    })
    const after = await publicGifts()
    expect(after).toHaveLength(before.length + 1)
    expect(after.at(-1)).toEqual(gift)
  })

  it('puts a gift where sortOrder says', async () => {
    const gift = await newGift({ name: 'Pebble', coinCost: 2, sortOrder: 15 })
    const names = (await publicGifts()).map((g) => g.name)
    expect(names.indexOf('Pebble')).toBe(names.indexOf('Rose') + 1)
    expect(gift.sortOrder).toBe(15)
    await succeed('retireGift', { giftId: gift.id })
  })

  it('accepts the limits: 1 and 10,000,000 coins, 60 characters, sortOrder 0', async () => {
    const longest = 'é'.repeat(30) + '🎁'.repeat(30)
    const a = await newGift({ coinCost: 1, name: longest, sortOrder: 0 })
    const b = await newGift({ coinCost: 10_000_000, name: 'x' })
    expect([a.coinCost, a.name, a.sortOrder, b.coinCost]).toEqual([1, longest, 0, 10_000_000])
    await succeed('retireGift', { giftId: a.id })
    await succeed('retireGift', { giftId: b.id })
  })
})

describe('updateGift', () => {
  it('changes the fields given, keeps the others, bumps updated_at', async () => {
    const gift = await newGift({ name: 'Comet', coinCost: 50 })
    const aged = await ageRow('gifts', gift.id)
    const { gift: updated } = await succeed('updateGift', {
      giftId: gift.id,
      name: 'Great Comet',
      coinCost: 75,
      imageUrl: '/static/gifts/great-comet.png',
      sortOrder: 5,
    })
    expect(updated).toEqual({
      ...gift,
      name: 'Great Comet',
      coinCost: 75,
      imageUrl: '/static/gifts/great-comet.png',
      sortOrder: 5,
    })
    expect(await updatedAt('gifts', gift.id)).not.toBe(aged)
    expect(await isRecent('gifts', gift.id)).toBe(true)
    // First in the public list now.
    expect((await publicGifts())[0]).toEqual(updated)

    // Left out or null: unchanged.
    const { gift: renamed } = await succeed('updateGift', { giftId: gift.id, name: 'Comet', coinCost: null })
    expect(renamed).toEqual({ ...updated, name: 'Comet' })
  })

  it('edits a retired gift without putting it back on sale', async () => {
    const gift = await newGift()
    await succeed('retireGift', { giftId: gift.id })
    const { gift: updated } = await succeed('updateGift', { giftId: gift.id, coinCost: 11 })
    expect(updated).toMatchObject({ coinCost: 11, active: false })
    expect((await publicGifts()).map((g) => g.id)).not.toContain(gift.id)
  })
})

describe('retireGift', () => {
  it('takes a gift out of `gifts` but keeps it in the table; twice is harmless', async () => {
    const gift = await newGift({ name: 'Meteor' })
    await ageRow('gifts', gift.id)
    const { gift: retired } = await succeed('retireGift', { giftId: gift.id })
    expect(retired).toEqual({ ...gift, active: false })
    expect(await isRecent('gifts', gift.id)).toBe(true)
    expect((await publicGifts()).map((g) => g.id)).not.toContain(gift.id)

    const tables = await catalogTables()
    const again = await succeed('retireGift', { giftId: gift.id })
    expect(again.gift).toEqual(retired)
    expect(await catalogTables()).toEqual(tables)

    const rows = rowsOf<{ active: boolean }>(
      await testDb.database.db.execute(sql`select active from gifts where id = ${gift.id}`),
    )
    expect(rows).toEqual([{ active: false }])
  })
})

describe('gifts(includeRetired)', () => {
  const LIST = `query($includeRetired: Boolean) { gifts(includeRetired: $includeRetired) { id active } }`

  it('lists retired gifts too for an admin, in the same order', async () => {
    const gift = await newGift()
    await succeed('retireGift', { giftId: gift.id })
    const all = await run<{ gifts: { id: string; active: boolean }[] }>(LIST, { includeRetired: true }, ADMIN)
    expect(all.errors).toBeUndefined()
    const listed = all.data?.gifts ?? []
    expect(listed).toContainEqual({ id: gift.id, active: false })
    const active = listed.filter((g) => g.active).map((g) => g.id)
    expect(active).toEqual((await publicGifts()).map((g) => g.id))
  })

  it('lists what is on sale only, for anyone, when false or left out', async () => {
    const onSale = (await publicGifts()).map((g) => ({ id: g.id, active: true }))
    for (const viewer of [null, NO_ROLES, ADMIN]) {
      for (const variables of [{}, { includeRetired: false }, { includeRetired: null }]) {
        const result = await run(LIST, variables, viewer)
        expect(result.errors).toBeUndefined()
        expect(result.data).toEqual({ gifts: onSale })
      }
    }
  })

  it('refuses includeRetired: true to anyone but an admin', async () => {
    for (const [viewer, code] of [
      [null, 'UNAUTHENTICATED'],
      [NO_ROLES, 'FORBIDDEN'],
      [CREATOR_ACCOUNTANT, 'FORBIDDEN'],
    ] as const) {
      const result = await run(LIST, { includeRetired: true }, viewer)
      expect(result.data).toBeNull()
      expect(result.errors?.[0]?.extensions.code).toBe(code)
    }
  })
})

// ---- coin packages ---------------------------------------------------------------

describe('createCoinPackage', () => {
  it('adds a package with its prices, on sale in each currency it is priced in', async () => {
    const before = await publicPackages('USD')
    const pkg = await newPackage({ sku: 'coins_1000', coins: 1_000, bonusCoins: 50 })
    expect(pkg).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      sku: 'coins_1000',
      coins: 1_000,
      bonusCoins: 50,
      active: true,
      sortOrder: Math.max(...before.map((p) => p.sortOrder)) + 10,
      price: { amount: 1_299, currency: 'USD', formatted: '$12.99' },
      prices: [
        { amount: 1_199, currency: 'EUR', formatted: '€11.99' },
        { amount: 1_299, currency: 'USD', formatted: '$12.99' },
      ],
    })
    expect((await publicPackages('USD')).at(-1)).toEqual(pkg)
    expect((await publicPackages('EUR')).at(-1)).toEqual({
      ...pkg,
      price: { amount: 1_199, currency: 'EUR', formatted: '€11.99' },
    })
    expect((await publicPackages('JPY')).map((p) => p.id)).not.toContain(pkg.id)
    await succeed('retireCoinPackage', { packageId: pkg.id })
  })

  it('defaults bonusCoins to 0; a package without a USD price shows its first price', async () => {
    const pkg = await newPackage({
      bonusCoins: undefined,
      prices: [
        { currency: 'JPY', amount: 1_500 },
        { currency: 'GBP', amount: 999 },
      ],
    })
    expect(pkg.bonusCoins).toBe(0)
    expect(pkg.price).toEqual({ amount: 999, currency: 'GBP', formatted: '£9.99' })
    expect(pkg.prices.map((p) => p.formatted)).toEqual(['£9.99', '¥1,500'])
    expect((await publicPackages('JPY')).map((p) => p.id)).toEqual([pkg.id])
    expect((await publicPackages('USD')).map((p) => p.id)).not.toContain(pkg.id)
    await succeed('retireCoinPackage', { packageId: pkg.id })
  })

  it('accepts the limits: bonus equal to coins, 10,000,000 coins and minor units', async () => {
    const pkg = await newPackage({
      coins: 10_000_000,
      bonusCoins: 10_000_000,
      prices: [{ currency: 'USD', amount: 10_000_000 }],
    })
    expect([pkg.coins, pkg.bonusCoins, pkg.price.formatted]).toEqual([10_000_000, 10_000_000, '$100,000.00'])
    await succeed('retireCoinPackage', { packageId: pkg.id })
  })
})

describe('updateCoinPackage', () => {
  it('changes the fields given and replaces the prices of the currencies given; bumps updated_at', async () => {
    const pkg = await newPackage()
    const aged = await ageRow('coin_packages', pkg.id)
    const { coinPackage: updated } = await succeed('updateCoinPackage', {
      packageId: pkg.id,
      coins: 1_100,
      bonusCoins: 110,
      sortOrder: 1,
      prices: [
        { currency: 'USD', amount: 1_499 },
        { currency: 'GBP', amount: 1_099 },
      ],
    })
    expect(updated).toEqual({
      ...pkg,
      coins: 1_100,
      bonusCoins: 110,
      sortOrder: 1,
      price: { amount: 1_499, currency: 'USD', formatted: '$14.99' },
      prices: [
        { amount: 1_199, currency: 'EUR', formatted: '€11.99' },
        { amount: 1_099, currency: 'GBP', formatted: '£10.99' },
        { amount: 1_499, currency: 'USD', formatted: '$14.99' },
      ],
    })
    expect(await updatedAt('coin_packages', pkg.id)).not.toBe(aged)
    expect(await isRecent('coin_packages', pkg.id)).toBe(true)
    expect((await publicPackages('USD'))[0]).toEqual(updated)
    expect((await publicPackages('GBP')).map((p) => p.id)).toEqual([pkg.id])
    expect((await publicPackages('EUR'))[0]?.price.amount).toBe(1_199)

    // Left out, null or an empty list: unchanged.
    const { coinPackage: same } = await succeed('updateCoinPackage', {
      packageId: pkg.id,
      coins: null,
      prices: [],
    })
    expect(same).toEqual(updated)
    await succeed('retireCoinPackage', { packageId: pkg.id })
  })

  it('checks the bonus against the coins stored when only one of them is given', async () => {
    const pkg = await newPackage({ coins: 100, bonusCoins: 20 })
    const tables = await catalogTables()
    const tooMuchBonus = await mutate('updateCoinPackage', { packageId: pkg.id, bonusCoins: 101 })
    expect(tooMuchBonus.coinPackage).toBeNull()
    expect(tooMuchBonus.userErrors).toMatchObject([{ code: 'INVALID_INPUT', field: 'input.bonusCoins' }])
    const tooFewCoins = await mutate('updateCoinPackage', { packageId: pkg.id, coins: 19 })
    expect(tooFewCoins.userErrors).toMatchObject([{ code: 'INVALID_INPUT', field: 'input.coins' }])
    expect(await catalogTables()).toEqual(tables)
    // Both at once, consistent: fine.
    const { coinPackage } = await succeed('updateCoinPackage', {
      packageId: pkg.id,
      coins: 19,
      bonusCoins: 19,
    })
    expect([coinPackage?.coins, coinPackage?.bonusCoins]).toEqual([19, 19])
    await succeed('retireCoinPackage', { packageId: pkg.id })
  })
})

describe('retireCoinPackage', () => {
  it('takes a package off sale in every currency but keeps it; twice is harmless', async () => {
    const pkg = await newPackage()
    await ageRow('coin_packages', pkg.id)
    const { coinPackage: retired } = await succeed('retireCoinPackage', { packageId: pkg.id })
    expect(retired).toEqual({ ...pkg, active: false })
    expect(await isRecent('coin_packages', pkg.id)).toBe(true)
    for (const currency of ['USD', 'EUR']) {
      expect((await publicPackages(currency)).map((p) => p.id)).not.toContain(pkg.id)
    }
    const tables = await catalogTables()
    const again = await succeed('retireCoinPackage', { packageId: pkg.id })
    expect(again.coinPackage).toEqual(retired)
    expect(await catalogTables()).toEqual(tables)
    // Prices stay with the package.
    const prices = rowsOf(
      await testDb.database.db.execute(
        sql`select currency from coin_package_prices where package_id = ${pkg.id}`,
      ),
    )
    expect(prices).toHaveLength(2)
  })
})

// ---- refusals ------------------------------------------------------------------

/** Runs a mutation that must be refused with these fields at fault, and change nothing. */
async function expectRefused(
  name: MutationName,
  input: Variables,
  expected: { code: string; field: string }[],
): Promise<void> {
  const tables = await catalogTables()
  const payload = await mutate(name, input)
  const label = `${name} ${JSON.stringify(input)}`
  expect(payload.gift ?? payload.coinPackage ?? null, label).toBeNull()
  expect(
    payload.userErrors.map(({ code, field }) => ({ code, field })),
    label,
  ).toEqual(expected)
  for (const error of payload.userErrors) expect(error.message, label).not.toBe('')
  expect(await catalogTables(), label).toEqual(tables)
}

const invalid = (field: string) => [{ code: 'INVALID_INPUT', field }]

describe('validation', () => {
  const BAD_SKUS = ['', 'Rose', '_rose', '-rose', 'ro se', 'rosé', 'a'.repeat(65), 'rose!']
  const BAD_NAMES = ['', '    ', 'x'.repeat(61), '🎁'.repeat(61), 'two\nlines', 'tab\there']
  const BAD_COINS = [0, -1, 10_000_001]
  const BAD_IMAGE_URLS = [
    '',
    'http://cdn.example.com/a.png',
    'ftp://cdn.example.com/a.png',
    'javascript:alert(1)',
    'https://user:secret@cdn.example.com/a.png',
    'https:///a.png',
    'https:\\\\cdn.example.com\\a.png',
    ' https://cdn.example.com/a.png',
    '/images/a.png',
    'static/a.png',
    '/static/',
    '/static/../secrets.txt',
    '/static/gifts/./a.png',
    '/static/a b.png',
    `https://cdn.example.com/${'a'.repeat(2_048)}.png`,
  ]
  const BAD_SORT_ORDERS = [-1, 1_000_001]

  it('refuses a bad gift to create, naming the field, changing nothing', async () => {
    for (const sku of BAD_SKUS) await expectRefused('createGift', giftInput({ sku }), invalid('input.sku'))
    for (const name of BAD_NAMES)
      await expectRefused('createGift', giftInput({ name }), invalid('input.name'))
    for (const coinCost of BAD_COINS) {
      await expectRefused('createGift', giftInput({ coinCost }), invalid('input.coinCost'))
    }
    for (const imageUrl of BAD_IMAGE_URLS) {
      await expectRefused('createGift', giftInput({ imageUrl }), invalid('input.imageUrl'))
    }
    for (const sortOrder of BAD_SORT_ORDERS) {
      await expectRefused('createGift', giftInput({ sortOrder }), invalid('input.sortOrder'))
    }
  })

  it('reports every field at fault at once', async () => {
    await expectRefused('createGift', giftInput({ sku: 'Bad', name: '', coinCost: 0, imageUrl: 'x' }), [
      ...invalid('input.sku'),
      ...invalid('input.name'),
      ...invalid('input.coinCost'),
      ...invalid('input.imageUrl'),
    ])
  })

  it('refuses a bad gift update, changing nothing', async () => {
    const gift = await newGift()
    for (const name of BAD_NAMES) {
      await expectRefused('updateGift', { giftId: gift.id, name }, invalid('input.name'))
    }
    for (const coinCost of BAD_COINS) {
      await expectRefused('updateGift', { giftId: gift.id, coinCost }, invalid('input.coinCost'))
    }
    for (const imageUrl of BAD_IMAGE_URLS) {
      await expectRefused('updateGift', { giftId: gift.id, imageUrl }, invalid('input.imageUrl'))
    }
    for (const sortOrder of BAD_SORT_ORDERS) {
      await expectRefused('updateGift', { giftId: gift.id, sortOrder }, invalid('input.sortOrder'))
    }
    // One bad field spoils the good ones with it.
    await expectRefused(
      'updateGift',
      { giftId: gift.id, name: 'Fine', coinCost: 0 },
      invalid('input.coinCost'),
    )
    await succeed('retireGift', { giftId: gift.id })
  })

  it('refuses a bad package to create, changing nothing', async () => {
    for (const sku of BAD_SKUS) {
      await expectRefused('createCoinPackage', packageInput({ sku }), invalid('input.sku'))
    }
    for (const coins of BAD_COINS) {
      await expectRefused('createCoinPackage', packageInput({ coins, bonusCoins: 0 }), invalid('input.coins'))
    }
    for (const bonusCoins of [-1, 1_001]) {
      await expectRefused(
        'createCoinPackage',
        packageInput({ coins: 1_000, bonusCoins }),
        invalid('input.bonusCoins'),
      )
    }
    for (const sortOrder of BAD_SORT_ORDERS) {
      await expectRefused('createCoinPackage', packageInput({ sortOrder }), invalid('input.sortOrder'))
    }
    await expectRefused('createCoinPackage', packageInput({ prices: [] }), invalid('input.prices'))
    for (const currency of ['usd', 'US', 'USDT', 'U$D', '']) {
      await expectRefused(
        'createCoinPackage',
        packageInput({
          prices: [
            { currency: 'EUR', amount: 100 },
            { currency, amount: 100 },
          ],
        }),
        invalid('input.prices.1.currency'),
      )
    }
    for (const amount of [0, -1, 10_000_001]) {
      await expectRefused(
        'createCoinPackage',
        packageInput({ prices: [{ currency: 'USD', amount }] }),
        invalid('input.prices.0.amount'),
      )
    }
    await expectRefused(
      'createCoinPackage',
      packageInput({
        prices: [
          { currency: 'USD', amount: 100 },
          { currency: 'EUR', amount: 100 },
          { currency: 'USD', amount: 200 },
        ],
      }),
      invalid('input.prices.2.currency'),
    )
    const tooMany = Array.from({ length: 51 }, (_, i) => ({
      currency: `A${String.fromCharCode(65 + Math.floor(i / 26))}${String.fromCharCode(65 + (i % 26))}`,
      amount: 100,
    }))
    await expectRefused('createCoinPackage', packageInput({ prices: tooMany }), invalid('input.prices'))
  })

  it('refuses a bad package update, changing nothing', async () => {
    const pkg = await newPackage({ coins: 1_000, bonusCoins: 50 })
    const packageId = pkg.id
    for (const coins of BAD_COINS) {
      await expectRefused('updateCoinPackage', { packageId, coins }, invalid('input.coins'))
    }
    await expectRefused('updateCoinPackage', { packageId, bonusCoins: -1 }, invalid('input.bonusCoins'))
    for (const sortOrder of BAD_SORT_ORDERS) {
      await expectRefused('updateCoinPackage', { packageId, sortOrder }, invalid('input.sortOrder'))
    }
    await expectRefused(
      'updateCoinPackage',
      { packageId, prices: [{ currency: 'usd', amount: 100 }] },
      invalid('input.prices.0.currency'),
    )
    await expectRefused(
      'updateCoinPackage',
      { packageId, prices: [{ currency: 'USD', amount: 0 }] },
      invalid('input.prices.0.amount'),
    )
    await expectRefused(
      'updateCoinPackage',
      {
        packageId,
        prices: [
          { currency: 'EUR', amount: 100 },
          { currency: 'EUR', amount: 200 },
        ],
      },
      invalid('input.prices.1.currency'),
    )
    // A good price does not go in beside a bad field.
    await expectRefused(
      'updateCoinPackage',
      { packageId, coins: 0, prices: [{ currency: 'USD', amount: 1 }] },
      invalid('input.coins'),
    )
    await succeed('retireCoinPackage', { packageId })
  })

  it('leaves a value of the wrong type to GraphQL (BAD_USER_INPUT), changing nothing', async () => {
    const tables = await catalogTables()
    for (const coinCost of [1.5, 'ten', 2 ** 53]) {
      const result = await run(MUTATIONS.createGift, { input: giftInput({ coinCost }) })
      expect(result.data).toBeUndefined()
      expect(result.errors?.[0]?.message).toMatch(/Amount/)
    }
    expect(await catalogTables()).toEqual(tables)
  })
})

describe('duplicate sku', () => {
  it('refuses a gift whose sku is taken, even by a retired gift', async () => {
    await expectRefused('createGift', giftInput({ sku: 'rose' }), invalid('input.sku'))
    const retired = await newGift()
    await succeed('retireGift', { giftId: retired.id })
    await expectRefused('createGift', giftInput({ sku: retired.sku }), invalid('input.sku'))
  })

  it('refuses a package whose sku is taken, adding no price', async () => {
    await expectRefused('createCoinPackage', packageInput({ sku: 'coins_70' }), invalid('input.sku'))
  })

  it('is one sku space per kind: a gift and a package may share one', async () => {
    const pkg = await newPackage({ sku: 'gold' })
    const gift = await newGift({ sku: 'gold' })
    expect([pkg.sku, gift.sku]).toEqual(['gold', 'gold'])
    await succeed('retireCoinPackage', { packageId: pkg.id })
    await succeed('retireGift', { giftId: gift.id })
  })
})

describe('unknown ids', () => {
  const UNKNOWN = [randomUUID(), 'not-a-uuid', '', '1']

  it('answer NOT_FOUND naming the id field, changing nothing', async () => {
    for (const giftId of UNKNOWN) {
      await expectRefused('updateGift', { giftId, name: 'Ghost' }, [
        { code: 'NOT_FOUND', field: 'input.giftId' },
      ])
      await expectRefused('retireGift', { giftId }, [{ code: 'NOT_FOUND', field: 'input.giftId' }])
    }
    for (const packageId of UNKNOWN) {
      await expectRefused(
        'updateCoinPackage',
        { packageId, coins: 5, prices: [{ currency: 'USD', amount: 1 }] },
        [{ code: 'NOT_FOUND', field: 'input.packageId' }],
      )
      await expectRefused('retireCoinPackage', { packageId }, [
        { code: 'NOT_FOUND', field: 'input.packageId' },
      ])
    }
  })

  it('do not mix: a package id is no gift id', async () => {
    const [pkg] = await publicPackages()
    if (!pkg) throw new Error('no package')
    await expectRefused('retireGift', { giftId: pkg.id }, [{ code: 'NOT_FOUND', field: 'input.giftId' }])
  })
})

// ---- who may ----------------------------------------------------------------------

describe('authorization', () => {
  it('refuses every mutation to a viewer who is not an admin, changing nothing', async () => {
    const [gift] = await publicGifts()
    const [pkg] = await publicPackages()
    if (!gift || !pkg) throw new Error('no catalog')
    const inputs: Record<MutationName, Variables> = {
      createGift: giftInput(),
      updateGift: { giftId: gift.id, name: 'Hacked' },
      retireGift: { giftId: gift.id },
      createCoinPackage: packageInput(),
      updateCoinPackage: { packageId: pkg.id, prices: [{ currency: 'USD', amount: 1 }] },
      retireCoinPackage: { packageId: pkg.id },
    }
    const tables = await catalogTables()
    for (const [viewer, code] of [
      [null, 'UNAUTHENTICATED'],
      [NO_ROLES, 'FORBIDDEN'],
      [CREATOR_ACCOUNTANT, 'FORBIDDEN'],
    ] as const) {
      for (const name of Object.keys(MUTATIONS) as MutationName[]) {
        const label = `${name} as ${JSON.stringify(viewer)}`
        const result = await run(MUTATIONS[name], { input: inputs[name] }, viewer)
        expect(result.data, label).toBeNull()
        expect(result.errors, label).toHaveLength(1)
        expect(result.errors?.[0]?.extensions.code, label).toBe(code)
        expect(result.errors?.[0]?.path, label).toEqual([name])
      }
    }
    expect(await catalogTables()).toEqual(tables)
  })

  it('refuses an invalid input from a non-admin as FORBIDDEN, not as userErrors', async () => {
    const result = await run(MUTATIONS.createGift, { input: giftInput({ sku: 'Bad' }) }, NO_ROLES)
    expect(result.errors?.[0]?.extensions.code).toBe('FORBIDDEN')
  })
})
