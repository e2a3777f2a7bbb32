-- Payouts: the cost side of a creator's cash-out. Approving a payout posts one
-- transaction: the coins leave the creator's earnings and are retired
-- (credited back to platform:coins_issued), and the money they convert to is
-- booked as this expense against platform:payouts_payable:<CUR> (docs/LEDGER.md,
-- "Payouts"). One account per currency the chart carries, like the others.
INSERT INTO ledger_accounts (code, name, type, unit, allow_negative)
SELECT format('platform:creator_payouts:%s', c.currency),
       format('Creator payouts: cost of cashed-out coins (%s)', c.currency),
       'expense'::account_type, c.currency, true
  FROM (VALUES ('USD'), ('EUR')) AS c(currency)
ON CONFLICT (code) DO NOTHING;
