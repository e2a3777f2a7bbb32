-- Each statement's entries must balance, per transaction and unit.
--
-- A hole closed. The check that a transaction balances runs at commit, once
-- per transaction row (a deferred constraint trigger). After SET CONSTRAINTS
-- ALL IMMEDIATE it ran at the end of the statement that inserted the
-- transaction instead, and never again: a later statement could add an
-- entry to that transaction, and the transaction committed unbalanced
-- (test/ledger/guards.test.ts). Now the entries' statement trigger also
-- refuses a statement whose entries of a transaction do not balance in each
-- unit (LG002). As entries are never changed or removed, every transaction
-- then balances after every statement, whatever the constraint mode. A
-- transaction's entries may still come in several statements, each
-- balanced; the engine writes each transaction's entries in one. The check
-- at commit stays: it refuses a transaction with fewer than two entries
-- (none at all, say).
--
-- The sums come from the rows the trigger groups already (its transition
-- table, by transaction and now by unit): no statement is added.

CREATE OR REPLACE FUNCTION ledger_entries_check_insert() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  bad record;
BEGIN
  -- Each statement's entries balance, transaction by transaction and unit by
  -- unit: entries are never changed or removed, so every transaction
  -- balances after every statement (SET CONSTRAINTS ALL IMMEDIATE included).
  SELECT x.entry_id AS id, x.transaction_id,
         CASE WHEN t.id IS NOT NULL AND t.xact_id <> txid_current() THEN 'LG005'
              WHEN t.id IS NOT NULL AND x.net <> 0 THEN 'LG002' ELSE 'LG003' END AS code,
         CASE WHEN t.id IS NULL THEN 'its transaction does not exist'
              WHEN t.xact_id <> txid_current() THEN 'its transaction was posted by another database transaction'
              WHEN x.net <> 0 THEN format('the statement''s entries of its transaction do not balance in %s (debits - credits = %s)',
                                          x.unit, x.net)
              ELSE 'its posted_at differs from its transaction''s' END AS reason
    INTO bad
    FROM (SELECT n.transaction_id, n.unit, min(n.id) AS entry_id,
                 min(n.posted_at) AS posted_min, max(n.posted_at) AS posted_max,
                 sum(CASE n.direction WHEN 'debit' THEN n.amount ELSE -n.amount END) AS net
            FROM new_entries n GROUP BY n.transaction_id, n.unit) x
    LEFT JOIN ledger_transactions t ON t.id = x.transaction_id
   WHERE t.id IS NULL OR t.xact_id <> txid_current() OR t.posted_at <> x.posted_min OR t.posted_at <> x.posted_max
      OR x.net <> 0
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: entry % of transaction % refused: %', bad.id, bad.transaction_id, bad.reason
      USING ERRCODE = bad.code;
  END IF;

  -- In id order, as every posting locks them (the engine already holds these locks).
  PERFORM 1 FROM ledger_accounts a
    WHERE a.id IN (SELECT DISTINCT n.account_id FROM new_entries n)
    ORDER BY a.id FOR UPDATE;

  SELECT x.id, x.account_id,
         CASE WHEN x.account_unit IS NULL OR x.unit <> x.account_unit
                OR x.account_seq <> x.expected_seq OR x.balance_after <> x.expected THEN 'LG003'
              ELSE 'LG004' END AS code,
         CASE WHEN x.account_unit IS NULL THEN 'the account does not exist'
              WHEN x.unit <> x.account_unit THEN format('unit %s does not match the account''s unit %s', x.unit, x.account_unit)
              WHEN x.account_seq <> x.expected_seq THEN format('account sequence %s, expected %s', x.account_seq, x.expected_seq)
              WHEN x.balance_after <> x.expected THEN format('balance_after %s, expected %s', x.balance_after, x.expected)
              ELSE format('the account may not go negative (balance after: %s)', x.balance_after) END AS reason
    INTO bad
    FROM (
      SELECT n.id, n.account_id, n.unit, n.account_seq, n.balance_after, a.unit AS account_unit, a.allow_negative,
             a.last_seq + row_number() OVER w AS expected_seq,
             a.balance + sum(CASE WHEN (a.type IN ('asset', 'expense')) = (n.direction = 'debit')
                                  THEN n.amount ELSE -n.amount END) OVER w AS expected
        FROM new_entries n
        LEFT JOIN ledger_accounts a ON a.id = n.account_id
      WINDOW w AS (PARTITION BY n.account_id ORDER BY n.account_seq ROWS UNBOUNDED PRECEDING)
    ) x
   WHERE x.account_unit IS NULL OR x.unit <> x.account_unit OR x.account_seq <> x.expected_seq
      OR x.balance_after <> x.expected OR (NOT x.allow_negative AND x.balance_after < 0)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: entry % on account % refused: %', bad.id, bad.account_id, bad.reason
      USING ERRCODE = bad.code;
  END IF;

  -- Every entry continued its account's chain (checked just above): the
  -- account's new balance is its balance plus the entries' net on its normal
  -- side, and its sequence moved by their count.
  UPDATE ledger_accounts a
     SET balance = a.balance + CASE WHEN a.type IN ('asset', 'expense') THEN d.debits - d.credits
                                    ELSE d.credits - d.debits END,
         last_seq = a.last_seq + d.n,
         debits_total = a.debits_total + d.debits, credits_total = a.credits_total + d.credits,
         updated_at = clock_timestamp()
    FROM (SELECT n.account_id, count(*) AS n,
                 coalesce(sum(n.amount) FILTER (WHERE n.direction = 'debit'), 0) AS debits,
                 coalesce(sum(n.amount) FILTER (WHERE n.direction = 'credit'), 0) AS credits
            FROM new_entries n GROUP BY n.account_id) d
   WHERE a.id = d.account_id;

  RETURN NULL;
END
$$;
