-- The platform's chart of accounts. User and creator accounts are created on
-- first use by the ledger engine (src/ledger/chart.ts names them all).
-- Platform accounts may go negative: they are the platform's own books, and
-- refunds, chargebacks and corrections can move them anywhere. User-owned
-- accounts never may.
INSERT INTO ledger_accounts (code, name, type, unit, allow_negative) VALUES
  ('platform:coins_issued', 'Coins issued (coins in circulation, sold or granted)', 'asset', 'COIN', true),
  ('platform:commission', 'Platform gift commission', 'income', 'COIN', true),
  ('platform:promotions', 'Promotional coins granted', 'expense', 'COIN', true),
  ('platform:adjustments', 'Manual adjustments and corrections (coins)', 'equity', 'COIN', true)
ON CONFLICT (code) DO NOTHING;
--> statement-breakpoint
INSERT INTO ledger_accounts (code, name, type, unit, allow_negative)
SELECT format('platform:%s:%s', a.slug, c.currency), format('%s (%s)', a.name, c.currency), a.type::account_type, c.currency, true
  FROM (VALUES ('stripe_clearing', 'Stripe clearing: money held at Stripe', 'asset'),
               ('paypal_clearing', 'PayPal clearing: money held at PayPal', 'asset'),
               ('deferred_revenue', 'Deferred coin revenue: money received for coins', 'liability'),
               ('provider_fees', 'Payment provider fees', 'expense'),
               ('payouts_payable', 'Creator payouts payable', 'liability'),
               ('adjustments', 'Manual adjustments and corrections', 'equity')) AS a(slug, name, type)
  CROSS JOIN (VALUES ('USD'), ('EUR')) AS c(currency)
ON CONFLICT (code) DO NOTHING;
