-- The ledger's guarantees, enforced by the database itself, whatever code or
-- SQL session touches it. Error codes: LG001 immutable, LG002 unbalanced,
-- LG003 balance chain broken, LG004 overdraft, LG005 entry outside its
-- transaction's database transaction.

-- 1. Posted transactions, entries and accounts' identities cannot be changed or deleted.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger: % on % is not allowed; the books are append-only, correct them with a new transaction', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'LG001';
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_transactions_immutable BEFORE UPDATE OR DELETE ON ledger_transactions
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_holds_no_delete BEFORE DELETE ON ledger_holds
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_holds_no_truncate BEFORE TRUNCATE ON ledger_holds
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint

-- An account's identity never changes; its cached balances change only with its entries (checked below).
CREATE FUNCTION ledger_accounts_guard_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.code, NEW.type, NEW.unit, NEW.owner_id, NEW.allow_negative)
     IS DISTINCT FROM (OLD.id, OLD.code, OLD.type, OLD.unit, OLD.owner_id, OLD.allow_negative) THEN
    RAISE EXCEPTION 'ledger: account % (%): id, code, type, unit, owner and allow_negative cannot change', OLD.id, OLD.code
      USING ERRCODE = 'LG001';
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_accounts_identity BEFORE UPDATE ON ledger_accounts
  FOR EACH ROW EXECUTE FUNCTION ledger_accounts_guard_identity();
--> statement-breakpoint

-- A hold moves once, from pending to posted, voided or expired; nothing else about it changes.
CREATE FUNCTION ledger_holds_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'pending' OR NEW.status = 'pending'
     OR (NEW.id, NEW.idempotency_key, NEW.request_hash, NEW.kind, NEW.description, NEW.metadata, NEW.account_id,
         NEW.counter_account_id, NEW.unit, NEW.amount, NEW.expires_at, NEW.created_at)
        IS DISTINCT FROM
        (OLD.id, OLD.idempotency_key, OLD.request_hash, OLD.kind, OLD.description, OLD.metadata, OLD.account_id,
         OLD.counter_account_id, OLD.unit, OLD.amount, OLD.expires_at, OLD.created_at)
     OR (NEW.status = 'posted') <> (NEW.transaction_id IS NOT NULL) THEN
    RAISE EXCEPTION 'ledger: hold % may only move once from pending to posted (with its transaction), voided or expired', OLD.id
      USING ERRCODE = 'LG001';
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_holds_transition BEFORE UPDATE ON ledger_holds
  FOR EACH ROW EXECUTE FUNCTION ledger_holds_guard_update();
--> statement-breakpoint

-- 2. A transaction records the database transaction that wrote it; entries can
-- only join a transaction inside that same database transaction.
CREATE FUNCTION ledger_transactions_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.xact_id := txid_current();
  IF NEW.reverses_id IS NOT NULL AND NEW.reverses_id >= NEW.id THEN
    RAISE EXCEPTION 'ledger: transaction % cannot reverse a later transaction %', NEW.id, NEW.reverses_id USING ERRCODE = 'LG001';
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_transactions_stamp BEFORE INSERT ON ledger_transactions
  FOR EACH ROW EXECUTE FUNCTION ledger_transactions_stamp();
--> statement-breakpoint

-- 3. Every inserted entry continues its account's balance chain, in the
-- account's unit, and a non-negative account never goes below zero.
-- Set-based: one check per INSERT statement, however many rows it carries.
CREATE FUNCTION ledger_entries_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT n.id, n.transaction_id,
         CASE WHEN t.xact_id <> txid_current() THEN 'LG005' ELSE 'LG003' END AS code,
         CASE WHEN t.xact_id <> txid_current() THEN 'its transaction was posted by another database transaction'
              ELSE 'its posted_at differs from its transaction''s' END AS reason
    INTO bad
    FROM new_entries n JOIN ledger_transactions t ON t.id = n.transaction_id
   WHERE t.xact_id <> txid_current() OR t.posted_at <> n.posted_at
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: entry % of transaction % refused: %', bad.id, bad.transaction_id, bad.reason
      USING ERRCODE = bad.code;
  END IF;

  SELECT x.id, x.account_id, x.balance_after, x.expected,
         CASE WHEN x.unit <> x.account_unit THEN 'LG003'
              WHEN x.missing_prev OR x.balance_after <> x.expected THEN 'LG003'
              ELSE 'LG004' END AS code,
         CASE WHEN x.unit <> x.account_unit THEN format('unit %s does not match the account''s unit %s', x.unit, x.account_unit)
              WHEN x.missing_prev THEN format('account sequence %s has no predecessor', x.account_seq)
              WHEN x.balance_after <> x.expected THEN format('balance_after %s, expected %s', x.balance_after, x.expected)
              ELSE format('the account may not go negative (balance after: %s)', x.balance_after) END AS reason
    INTO bad
    FROM (
      SELECT n.id, n.account_id, n.unit, n.account_seq, n.balance_after, a.unit AS account_unit, a.allow_negative,
             (n.account_seq > 1 AND p.id IS NULL) AS missing_prev,
             coalesce(p.balance_after, 0)
               + CASE WHEN (a.type IN ('asset', 'expense')) = (n.direction = 'debit') THEN n.amount ELSE -n.amount END
               AS expected
        FROM new_entries n
        JOIN ledger_accounts a ON a.id = n.account_id
        LEFT JOIN ledger_entries p ON p.account_id = n.account_id AND p.account_seq = n.account_seq - 1
    ) x
   WHERE x.unit <> x.account_unit OR x.missing_prev OR x.balance_after <> x.expected
      OR (NOT x.allow_negative AND x.balance_after < 0)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: entry % on account % refused: %', bad.id, bad.account_id, bad.reason
      USING ERRCODE = bad.code;
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_entries_check_insert AFTER INSERT ON ledger_entries
  REFERENCING NEW TABLE AS new_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_check_insert();
--> statement-breakpoint

-- 4. At commit, every transaction written in this database transaction has
-- two or more entries, balances in each unit, and its accounts' cached
-- balances have caught up with its entries. The first firing checks all of
-- this database transaction's ledger transactions at once, then remembers
-- the highest id it checked so that the other firings return at once.
CREATE FUNCTION ledger_transactions_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  checked_upto bigint := coalesce(nullif(current_setting('ledger.checked_upto', true), ''), '0')::bigint;
  bad record;
  upto bigint;
BEGIN
  IF NEW.id <= checked_upto THEN
    RETURN NULL;
  END IF;
  SELECT max(t.id) INTO upto FROM ledger_transactions t WHERE t.id >= NEW.id AND t.xact_id = txid_current();

  SELECT t.id,
         count(e.id) AS entry_count,
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

  SELECT e.transaction_id, e.account_id, e.account_seq, a.last_seq INTO bad
    FROM ledger_transactions t
    JOIN ledger_entries e ON e.transaction_id = t.id
    JOIN ledger_accounts a ON a.id = e.account_id
   WHERE t.id >= NEW.id AND t.id <= upto AND t.xact_id = txid_current() AND a.last_seq < e.account_seq
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger: transaction %: account % was not brought up to its entry % (last_seq %)',
      bad.transaction_id, bad.account_id, bad.account_seq, bad.last_seq USING ERRCODE = 'LG003';
  END IF;

  PERFORM set_config('ledger.checked_upto', upto::text, true);
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION ledger_transactions_check_balanced();
--> statement-breakpoint

-- 5. An account's cached balance, totals and sequence move only with its
-- entries: after every UPDATE statement, each changed account matches the
-- entries between its old and new sequence, and its held amount matches its
-- pending holds.
CREATE FUNCTION ledger_accounts_check_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT n.id, n.code,
         CASE
           WHEN n.last_seq < o.last_seq THEN 'its sequence went backwards'
           WHEN s.past > 0 THEN 'it has entries past its sequence'
           WHEN n.last_seq = 0 AND n.balance <> 0 THEN 'it has a balance but no entries'
           WHEN n.last_seq > 0 AND n.balance IS DISTINCT FROM (
                SELECT e.balance_after FROM ledger_entries e WHERE e.account_id = n.id AND e.account_seq = n.last_seq)
             THEN 'its balance differs from its last entry''s balance_after'
           WHEN n.debits_total - o.debits_total <> s.debits OR n.credits_total - o.credits_total <> s.credits
             THEN 'its debit and credit totals differ from its new entries'
           WHEN n.held_amount <> o.held_amount AND n.held_amount <> (
                SELECT coalesce(sum(h.amount), 0) FROM ledger_holds h WHERE h.account_id = n.id AND h.status = 'pending')
             THEN 'its held amount differs from its pending holds'
         END AS reason
    INTO bad
    FROM new_accounts n
    JOIN old_accounts o ON o.id = n.id
    CROSS JOIN LATERAL (
      SELECT coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit' AND e.account_seq <= n.last_seq), 0) AS debits,
             coalesce(sum(e.amount) FILTER (WHERE e.direction = 'credit' AND e.account_seq <= n.last_seq), 0) AS credits,
             count(*) FILTER (WHERE e.account_seq > n.last_seq) AS past
        FROM ledger_entries e
       WHERE e.account_id = n.id AND e.account_seq > o.last_seq
    ) s
   WHERE (n.balance, n.debits_total, n.credits_total, n.last_seq, n.held_amount)
         IS DISTINCT FROM (o.balance, o.debits_total, o.credits_total, o.last_seq, o.held_amount)
   ORDER BY reason NULLS LAST
   LIMIT 1;
  IF FOUND AND bad.reason IS NOT NULL THEN
    RAISE EXCEPTION 'ledger: account % (%) refused: %', bad.id, bad.code, bad.reason USING ERRCODE = 'LG003';
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_accounts_check_update AFTER UPDATE ON ledger_accounts
  REFERENCING OLD TABLE AS old_accounts NEW TABLE AS new_accounts
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_check_update();
--> statement-breakpoint

-- A new account starts empty.
CREATE FUNCTION ledger_accounts_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.balance, NEW.debits_total, NEW.credits_total, NEW.held_amount, NEW.last_seq) <> (0, 0, 0, 0, 0) THEN
    RAISE EXCEPTION 'ledger: account % must start with no balance, totals, holds or entries', NEW.code USING ERRCODE = 'LG003';
  END IF;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_accounts_check_insert BEFORE INSERT ON ledger_accounts
  FOR EACH ROW EXECUTE FUNCTION ledger_accounts_check_insert();
