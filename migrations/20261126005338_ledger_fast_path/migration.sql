ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_transaction_id_ledger_transactions_id_fkey";--> statement-breakpoint
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_account_id_ledger_accounts_id_fkey";--> statement-breakpoint

-- The hot path, cheaper and with nothing a planner can get wrong.
--
-- 1. The entries' insert check no longer looks up each entry's predecessor
--    in ledger_entries (a plan cached on a small ledger could walk a hot
--    account's whole history through the (account_id, posted_at) index).
--    It locks the accounts of the statement and chains the new entries from
--    the account rows themselves: per account, the entries continue its
--    last_seq and balance, in sequence order. It also checks, set-based,
--    what the two per-row foreign keys dropped above checked (the
--    transaction and the account exist).
-- 2. The database keeps the accounts' cached balance, totals and sequence
--    itself, in the same trigger, from the entries it has just checked: the
--    cache cannot drift from the entries, the engine no longer writes it, and
--    no session may (ledger_accounts_check_update refuses any change to them
--    that does not come from this trigger).

CREATE OR REPLACE FUNCTION ledger_entries_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT n.id, n.transaction_id,
         CASE WHEN t.id IS NOT NULL AND t.xact_id <> txid_current() THEN 'LG005' ELSE 'LG003' END AS code,
         CASE WHEN t.id IS NULL THEN 'its transaction does not exist'
              WHEN t.xact_id <> txid_current() THEN 'its transaction was posted by another database transaction'
              ELSE 'its posted_at differs from its transaction''s' END AS reason
    INTO bad
    FROM new_entries n LEFT JOIN ledger_transactions t ON t.id = n.transaction_id
   WHERE t.id IS NULL OR t.xact_id <> txid_current() OR t.posted_at <> n.posted_at
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

  UPDATE ledger_accounts a
     SET balance = d.balance, last_seq = d.last_seq,
         debits_total = a.debits_total + d.debits, credits_total = a.credits_total + d.credits,
         updated_at = clock_timestamp()
    FROM (SELECT n.account_id,
                 max(n.account_seq) AS last_seq,
                 (array_agg(n.balance_after ORDER BY n.account_seq DESC))[1] AS balance,
                 coalesce(sum(n.amount) FILTER (WHERE n.direction = 'debit'), 0) AS debits,
                 coalesce(sum(n.amount) FILTER (WHERE n.direction = 'credit'), 0) AS credits
            FROM new_entries n GROUP BY n.account_id) d
   WHERE a.id = d.account_id;
  RETURN NULL;
END
$$;
--> statement-breakpoint

-- An account's balance, totals and sequence change only inside the entries'
-- insert trigger above (trigger depth 2: its UPDATE's own trigger); the held
-- amount only together with its pending holds.
CREATE OR REPLACE FUNCTION ledger_accounts_check_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  IF pg_trigger_depth() < 2 THEN
    SELECT n.id, n.code INTO bad
      FROM new_accounts n JOIN old_accounts o ON o.id = n.id
     WHERE (n.balance, n.debits_total, n.credits_total, n.last_seq)
           IS DISTINCT FROM (o.balance, o.debits_total, o.credits_total, o.last_seq)
     LIMIT 1;
    IF FOUND THEN
      RAISE EXCEPTION 'ledger: account % (%) refused: its balance, totals and sequence move only with its entries',
        bad.id, bad.code USING ERRCODE = 'LG003';
    END IF;
  END IF;

  SELECT n.id, n.code INTO bad
    FROM new_accounts n JOIN old_accounts o ON o.id = n.id
   WHERE n.held_amount <> o.held_amount
     AND n.held_amount <> (SELECT coalesce(sum(h.amount), 0) FROM ledger_holds h
                            WHERE h.account_id = n.id AND h.status = 'pending')
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: account % (%) refused: its held amount differs from its pending holds',
      bad.id, bad.code USING ERRCODE = 'LG003';
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint

-- At commit: every transaction written in this database transaction has two
-- or more entries and balances in each unit. (That the accounts caught up
-- with their entries is now true by construction.)
CREATE OR REPLACE FUNCTION ledger_transactions_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  checked_upto bigint := coalesce(nullif(current_setting('ledger.checked_upto', true), ''), '0')::bigint;
  bad record;
  upto bigint;
BEGIN
  IF NEW.id <= checked_upto THEN
    RETURN NULL;
  END IF;
  SELECT max(t.id) INTO upto FROM ledger_transactions t WHERE t.id >= NEW.id AND t.xact_id = txid_current();

  SELECT t.id, count(e.id) AS entry_count,
         (SELECT string_agg(format('%s: debits %s, credits %s', s.unit, s.debits, s.credits), '; ')
            FROM (SELECT e2.unit,
                         sum(e2.amount) FILTER (WHERE e2.direction = 'debit') AS debits,
                         sum(e2.amount) FILTER (WHERE e2.direction = 'credit') AS credits
                    FROM ledger_entries e2 WHERE e2.transaction_id = t.id GROUP BY e2.unit) s) AS sums
    INTO bad
    FROM ledger_transactions t
    LEFT JOIN ledger_entries e ON e.transaction_id = t.id
   WHERE t.id >= NEW.id AND t.id <= upto AND t.xact_id = txid_current()
   GROUP BY t.id
  HAVING count(e.id) < 2
      OR EXISTS (SELECT 1 FROM ledger_entries e3 WHERE e3.transaction_id = t.id GROUP BY e3.unit
                 HAVING sum(CASE e3.direction WHEN 'debit' THEN e3.amount ELSE -e3.amount END) <> 0)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: transaction % does not balance (% entries; %)', bad.id, bad.entry_count, coalesce(bad.sums, 'none')
      USING ERRCODE = 'LG002';
  END IF;

  PERFORM set_config('ledger.checked_upto', upto::text, true);
  RETURN NULL;
END
$$;
