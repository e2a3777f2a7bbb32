import { randomUUID } from 'node:crypto'
import { createClient } from 'graphql-ws'
import pino from 'pino'
import WebSocket from 'ws'
import { type FakePayPal, startFakePayPal } from '../../test/fakes/paypal.js'
import { type FakeStripe, startFakeStripe } from '../../test/fakes/stripe.js'
import { signToken } from '../auth/tokens.js'
import { seedCatalog } from '../catalog/seed.js'
import { loadConfig } from '../config.js'
import { openDatabase } from '../db/client.js'
import { migrateDatabase } from '../db/migrate.js'
import { buildApp } from '../http/server.js'
import { createServices } from '../services.js'

// `npm run demo`: the whole product in about a minute, on an embedded
// database, with local stand-ins for Stripe and PayPal that speak their real
// wire formats (the same fakes the tests use: test/fakes/). Everything goes
// through the real server over HTTP and WebSocket, as clients would; only
// the payment providers' side (the buyer paying, the provider's webhooks) is
// played by the stand-ins.

const STRIPE_WEBHOOK_SECRET = 'whsec_demo_giftledger'
const PAYPAL = { clientId: 'demo-client', clientSecret: 'demo-secret', webhookId: 'WH-DEMO' }
const JWT_SECRET = `demo-only-${randomUUID()}-${randomUUID()}`

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s)
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s)
let stepNumber = 0
const step = (title: string) => console.log(`\n${bold(`${++stepNumber}. ${title}`)}`)
const say = (line: string) => console.log(`   ${line}`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** GraphQL response data, read as each operation selects it (the demo prints it; it does not validate it). */
// biome-ignore lint/suspicious/noExplicitAny: see above
type Data = any

interface Person {
  name: string
  userId: string
  token: string
  /** Runs an operation as this person; throws on GraphQL errors or user errors. */
  run<T = Data>(query: string, variables?: Record<string, unknown>): Promise<T>
}

const started = Date.now()
console.log(bold('giftledger: the newcomer’s tour'))
console.log(
  dim('An embedded PostgreSQL (PGlite, in memory), the real server, and local Stripe and PayPal stand-ins.'),
)

step('Start everything')
const stripe: FakeStripe = await startFakeStripe({ webhookSecret: STRIPE_WEBHOOK_SECRET })
const paypal: FakePayPal = await startFakePayPal(PAYPAL)
say(`Stripe stand-in at ${stripe.url}, PayPal stand-in at ${paypal.url}`)
const config = loadConfig({
  NODE_ENV: 'development',
  HOST: '127.0.0.1',
  PORT: '0',
  PGLITE_DIR: 'memory://',
  JWT_SECRET,
  LOG_LEVEL: 'silent',
  STRIPE_SECRET_KEY: stripe.secretKey,
  STRIPE_WEBHOOK_SECRET,
  STRIPE_API_BASE: stripe.url,
  PAYPAL_CLIENT_ID: PAYPAL.clientId,
  PAYPAL_CLIENT_SECRET: PAYPAL.clientSecret,
  PAYPAL_WEBHOOK_ID: PAYPAL.webhookId,
  PAYPAL_API_BASE: paypal.url,
  GIFT_COMBO_WINDOW_MS: '1500',
})
const database = await openDatabase(config.database)
await migrateDatabase(config.database, database)
await seedCatalog(database.db)
const services = createServices(config, database)
const app = buildApp({ config, database, services, logger: pino({ level: 'silent' }), shutdownGraceMs: 500 })
const { port } = await app.start()
const base = `http://127.0.0.1:${port}`
say(`giftledger at ${base}/graphql (migrated, catalog seeded)`)

step('Sign in')
const key = new TextEncoder().encode(JWT_SECRET)
async function signIn(name: string, roles: string[] = []): Promise<Person> {
  const token = await signToken(
    key,
    { sub: `demo|${name}`, preferred_username: name, name: name[0]?.toUpperCase() + name.slice(1), roles },
    { expiresIn: '1h', issuer: config.jwt.issuer, audience: config.jwt.audience },
  )
  const run = async (query: string, variables?: Record<string, unknown>) => {
    const response = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    })
    const body = (await response.json()) as { data?: Data; errors?: { message: string }[] }
    if (body.errors?.length) throw new Error(`${name}: ${body.errors.map((e) => e.message).join('; ')}`)
    for (const payload of Object.values(body.data ?? {}) as Data[]) {
      if (payload?.userErrors?.length) throw new Error(`${name}: ${JSON.stringify(payload.userErrors)}`)
    }
    return body.data
  }
  const { me } = await run('{ me { user { id } } }')
  return { name, userId: me.user.id, token, run }
}
const alice = await signIn('alice')
const bob = await signIn('bob')
const carol = await signIn('carol', ['creator'])
const audrey = await signIn('audrey', ['accountant'])
say('alice and bob (viewers), carol (a creator), audrey (an accountant): JWTs signed with a throwaway key')

const { coinPackages, gifts } = await alice.run(
  '{ coinPackages(currency: "USD") { id coins bonusCoins price { formatted } } gifts { id name coinCost } }',
)
const bigPackage = coinPackages[coinPackages.length - 1]
const rose = gifts.find((g: Data) => g.coinCost === Math.min(...gifts.map((x: Data) => x.coinCost)))
const fancy = [...gifts].sort((a: Data, b: Data) => a.coinCost - b.coinCost)[Math.min(2, gifts.length - 1)]

const CREATE_RECHARGE = `mutation ($packageId: ID!, $provider: PaymentProvider!, $idempotencyKey: String!) {
  createRecharge(input: { packageId: $packageId, provider: $provider, idempotencyKey: $idempotencyKey }) {
    recharge { id status coins }
    checkout { providerReference clientSecret approvalUrl }
    userErrors { code message field } } }`
const walletOf = async (who: Person) =>
  (await who.run('{ me { wallet { coins } } }')).me.wallet.coins as number
const statusOf = async (who: Person, id: string) =>
  (await who.run('query ($id: ID!) { recharge(id: $id) { status } }', { id })).recharge.status as string

step(
  `alice buys ${bigPackage.coins} + ${bigPackage.bonusCoins} bonus coins with Stripe (${bigPackage.price.formatted})`,
)
const stripeOrder = (
  await alice.run(CREATE_RECHARGE, { packageId: bigPackage.id, provider: 'STRIPE', idempotencyKey: 'demo-1' })
).createRecharge
const pi = stripeOrder.checkout.providerReference as string
say(`createRecharge → PaymentIntent ${pi} (the Payment Element gets its client secret)`)
const paid = stripe.succeed(pi, { feeMinor: 59 })
say('the card is charged; Stripe sends signed webhooks, each delivered twice:')
for (const event of paid.events) {
  const statuses = await stripe.deliver(event, `${base}/webhooks/stripe`, { times: 2 })
  say(`  ${event.type} → ${statuses.join(', ')}`)
}
await services.inbox.idle()
say(
  `order ${await statusOf(alice, stripeOrder.recharge.id)}; alice's wallet: ${await walletOf(alice)} coins (credited once)`,
)

step('bob buys coins with PayPal')
const paypalOrder = (
  await bob.run(CREATE_RECHARGE, { packageId: bigPackage.id, provider: 'PAYPAL', idempotencyKey: 'demo-2' })
).createRecharge
say(`createRecharge → Orders v2 order ${paypalOrder.checkout.providerReference}, approval link for the buyer`)
for (const event of paypal.controls.approve(paypalOrder.checkout.providerReference)) {
  const [result] = await paypal.controls.deliver(event, `${base}/webhooks/paypal`)
  say(`bob approves; PayPal sends ${event.event_type} → ${result?.status}; the server captures the order`)
}
await services.inbox.idle()
for (const event of paypal.controls.drainEvents()) {
  const [result] = await paypal.controls.deliver(event, `${base}/webhooks/paypal`)
  say(`PayPal sends ${event.event_type} → ${result?.status}`)
}
await services.inbox.idle()
say(`order ${await statusOf(bob, paypalOrder.recharge.id)}; bob's wallet: ${await walletOf(bob)} coins`)

step('carol goes live, and a viewer watches the gift feed (GraphQL over WebSocket)')
const stream = (
  await carol.run(
    'mutation { startLiveStream(input: { title: "Demo night" }) { liveStream { id } userErrors { code message field } } }',
  )
).startLiveStream.liveStream
say(`live stream ${stream.id}`)
const ws = createClient({
  url: `${base.replace('http', 'ws')}/graphql`,
  webSocketImpl: WebSocket,
  lazy: false,
})
const feed: string[] = []
const streaks: string[] = []
const unsubscribeFeed = ws.subscribe(
  {
    query: `subscription ($id: ID!) { liveGifts(streamId: $id) {
      sequence sender { handle } gift { name } quantity coins combo } }`,
    variables: { id: stream.id },
  },
  {
    next: ({ data }: Data) => {
      const g = data.liveGifts
      const line = `#${g.sequence} ${g.sender.handle} → ${g.gift.name} ×${g.quantity} (${g.coins} coins, combo ${g.combo})`
      feed.push(line)
      say(dim(`   feed: ${line}`))
    },
    error: (err) => say(`feed error: ${String(err)}`),
    complete: () => say(dim('   feed: the stream ended, subscription complete')),
  },
)
const unsubscribeStreaks = ws.subscribe(
  {
    query: 'subscription ($id: ID!) { liveStreakEnds(streamId: $id) { senderId combo lastSequence } }',
    variables: { id: stream.id },
  },
  {
    next: ({ data }: Data) => {
      const s = data.liveStreakEnds
      const who = s.senderId === alice.userId ? 'alice' : s.senderId === bob.userId ? 'bob' : s.senderId
      streaks.push(`${who} ×${s.combo}`)
      say(dim(`   streak over: ${who}'s combo ended at ${s.combo} (gift #${s.lastSequence})`))
    },
    error: () => {},
    complete: () => {},
  },
)
await sleep(300) // the subscriptions are registered before the first gift

step('gifts: alice sends three roses in a row (a combo), bob sends a bigger gift twice')
const SEND_GIFT = `mutation ($giftId: ID!, $liveStreamId: ID, $quantity: Int, $idempotencyKey: String!) {
  sendGift(input: { giftId: $giftId, liveStreamId: $liveStreamId, quantity: $quantity, idempotencyKey: $idempotencyKey }) {
    giftEvent { sequence combo coins } wallet { coins } userErrors { code message field } } }`
let n = 0
const send = async (who: Person, gift: Data, quantity: number) => {
  const { sendGift } = await who.run(SEND_GIFT, {
    giftId: gift.id,
    liveStreamId: stream.id,
    quantity,
    idempotencyKey: `demo-gift-${++n}`,
  })
  say(
    `${who.name} sends ${gift.name} ×${quantity}: ${sendGift.giftEvent.coins} coin(s); wallet now ${sendGift.wallet.coins}`,
  )
}
for (let i = 0; i < 3; i++) await send(alice, rose, 1)
await send(bob, fancy, 2)
await send(bob, fancy, 1)
const retried = await bob.run(SEND_GIFT, {
  giftId: fancy.id,
  liveStreamId: stream.id,
  quantity: 1,
  idempotencyKey: `demo-gift-${n}`,
})
say(
  `bob's app retries its last request with the same idempotency key: gift #${retried.sendGift.giftEvent.sequence} again, wallet still ${retried.sendGift.wallet.coins}`,
)
await sleep(2_000) // the combo window (1.5 s here) passes: the server ends the streaks
const { liveStream } = await alice.run(
  'query ($id: ID!) { liveStream(id: $id) { giftCoins topGifters(first: 3) { user { handle } coins } } }',
  { id: stream.id },
)
say(
  `stream total: ${liveStream.giftCoins} coins; top gifters: ${liveStream.topGifters.map((t: Data) => `${t.user.handle} ${t.coins}`).join(', ')}`,
)

step('alice gets part of her Stripe payment refunded: the coins are clawed back')
const refundMinor = Math.floor(Number(paid.paymentIntent.amount) / 2)
const refunded = stripe.refund(pi, refundMinor)
for (const event of refunded.events) {
  const statuses = await stripe.deliver(event, `${base}/webhooks/stripe`)
  say(`  ${event.type} → ${statuses.join(', ')}`)
}
await services.inbox.idle()
say(
  `order ${await statusOf(alice, stripeOrder.recharge.id)}; alice's wallet: ${await walletOf(alice)} coins (what she had not spent of the refunded half is taken back; a shortfall would become a debt)`,
)

step('carol ends the stream')
await carol.run(
  'mutation ($id: ID!) { endLiveStream(input: { liveStreamId: $id }) { liveStream { status } userErrors { code message field } } }',
  { id: stream.id },
)
await sleep(300)
unsubscribeFeed()
unsubscribeStreaks()
await ws.dispose()
const { me: carolMe } = await carol.run('{ me { earnings { coins } } }')
say(
  `carol's earnings: ${carolMe.earnings.coins} coins (her share of every gift; the platform's commission went to platform:commission in the same transactions)`,
)
say(`the feed showed ${feed.length} gifts in order; streaks ended: ${streaks.join(', ') || 'none'}`)

step('the books, as audrey the accountant sees them')
for (const who of [alice, bob]) say(`${who.name}'s wallet: ${await walletOf(who)} coins`)
const { trialBalance } = await audrey.run('{ trialBalance { totals { currency debits credits } } }')
for (const t of trialBalance.totals)
  say(
    `trial balance ${t.currency}: debits ${t.debits} = credits ${t.credits} ${t.debits === t.credits ? '✓' : '✗'}`,
  )
const { ledgerIntegrity } = await audrey.run(
  '{ ledgerIntegrity { ok checkedTransactions checkedAccounts problems { kind message } } }',
)
say(
  `integrity check: ${ledgerIntegrity.ok ? 'ok ✓' : 'PROBLEMS ✗'} (${ledgerIntegrity.checkedTransactions} transactions, ${ledgerIntegrity.checkedAccounts} accounts recomputed from their entries)`,
)
for (const problem of ledgerIntegrity.problems) say(`  ${problem.kind}: ${problem.message}`)

await app.stop()
await database.close()
await stripe.stop()
await paypal.stop()
console.log(
  `\n${bold('Done')} in ${((Date.now() - started) / 1000).toFixed(1)} s. Next: README.md (npm start, the API), docs/.`,
)
if (!ledgerIntegrity.ok || trialBalance.totals.some((t: Data) => t.debits !== t.credits)) process.exit(1)
