// The contract's operations (../shared/contract/operations.graphql), as the
// clients send them, for end-to-end tests.

export const ME = `query Me {
  me {
    user { id handle displayName isCreator }
    wallet { coins updatedAt }
    earnings { coins pendingPayoutCoins }
  }
}`

export const MY_ACTIVITY = `query MyActivity($first: Int, $after: String) {
  me {
    wallet {
      coins
      history(first: $first, after: $after) {
        edges {
          cursor
          node { id kind amount balanceAfter postedAt description }
        }
        pageInfo { hasNextPage endCursor }
      }
    }
  }
}`

export const LIVE_NOW = `query LiveNow($first: Int, $after: String) {
  liveStreams(first: $first, after: $after) {
    edges {
      cursor
      node {
        id
        title
        status
        startedAt
        creator { id handle displayName }
        giftCoins
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}`

export const STREAM = `query Stream($id: ID!) {
  liveStream(id: $id) {
    id
    title
    status
    startedAt
    endedAt
    giftCoins
    creator { id handle }
    topGifters(first: 10) {
      rank
      user { id handle }
      coins
    }
  }
}`

export const START_LIVE = `mutation StartLive($title: String!) {
  startLiveStream(input: { title: $title }) {
    liveStream { id status startedAt }
    userErrors { code message field }
  }
}`

export const END_LIVE = `mutation EndLive($liveStreamId: ID!) {
  endLiveStream(input: { liveStreamId: $liveStreamId }) {
    liveStream { id status endedAt giftCoins }
    userErrors { code message field }
  }
}`

export const SEND_GIFT = `mutation SendGift($giftId: ID!, $liveStreamId: ID, $creatorId: ID, $quantity: Int, $idempotencyKey: String!) {
  sendGift(input: { giftId: $giftId, liveStreamId: $liveStreamId, creatorId: $creatorId, quantity: $quantity, idempotencyKey: $idempotencyKey }) {
    giftEvent {
      id
      sequence
      quantity
      coins
      combo
      sentAt
      gift { id name }
      creator { id handle }
    }
    wallet { coins }
    userErrors { code message field }
  }
}`

export const GRANT_COINS = `mutation GrantCoins($userId: ID!, $coins: Amount!, $reason: String!, $idempotencyKey: String!) {
  grantCoins(input: { userId: $userId, coins: $coins, reason: $reason, idempotencyKey: $idempotencyKey }) {
    wallet { coins }
    ledgerTransaction { id kind }
    userErrors { code message field }
  }
}`

export const CATALOG = `query Catalog($currency: String) {
  coinPackages(currency: $currency) {
    id
    coins
    bonusCoins
    price { amount currency formatted }
  }
  gifts {
    id
    name
    coinCost
    imageUrl
  }
}`

export const CREATE_RECHARGE = `mutation CreateRecharge($packageId: ID!, $provider: PaymentProvider!, $idempotencyKey: String!) {
  createRecharge(input: { packageId: $packageId, provider: $provider, idempotencyKey: $idempotencyKey }) {
    recharge { id status provider coins price { amount currency } createdAt }
    checkout { provider clientSecret approvalUrl providerReference }
    userErrors { code message field }
  }
}`

export const CONFIRM_RECHARGE = `mutation ConfirmRecharge($rechargeId: ID!) {
  confirmRecharge(input: { rechargeId: $rechargeId }) {
    recharge { id status completedAt }
    wallet { coins }
    userErrors { code message field }
  }
}`

export const RECHARGE = `query Recharge($id: ID!) {
  recharge(id: $id) { id status provider providerReference coins price { amount currency } createdAt completedAt }
}`

// ---- accountants: audit ---------------------------------------------------

export const TRIAL_BALANCE = `query TrialBalance($asOf: DateTime) {
  trialBalance(asOf: $asOf) {
    asOf
    lines {
      account { id code name type currency }
      debits
      credits
      balance
    }
    totals { currency debits credits }
  }
}`

export const JOURNAL = `query Journal($filter: LedgerTransactionFilter, $first: Int, $after: String) {
  ledgerTransactions(filter: $filter, first: $first, after: $after) {
    edges {
      cursor
      node {
        id
        kind
        postedAt
        idempotencyKey
        description
        reverses { id }
        entries {
          id
          account { id code }
          direction
          amount
          currency
          balanceAfter
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}`

export const ACCOUNT_STATEMENT = `query AccountStatement($id: ID!, $from: DateTime, $to: DateTime, $first: Int, $after: String) {
  ledgerAccount(id: $id) {
    id
    code
    currency
    balance
    balanceAt(at: $to)
    entries(from: $from, to: $to, first: $first, after: $after) {
      edges {
        cursor
        node {
          id
          direction
          amount
          balanceAfter
          transaction { id kind postedAt }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}`
