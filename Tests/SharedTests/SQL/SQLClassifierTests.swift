// SQLClassifier (Shared/SQL/SQLClassifier.swift): statement kinds, issue 19's session-state details
// and issue 20's read-only verdict on real-world statements; unknown input is never read-only.
import XCTest
import Shared

final class SQLClassifierTests: XCTestCase {
    func check(_ sql: String, _ kind: SQLStatementKind, readOnly: Bool, file: StaticString = #filePath, line: UInt = #line) {
        let (info, _) = sqlClassify(sql)
        XCTAssertEqual(info.kind, kind, sql, file: file, line: line)
        XCTAssertEqual(info.readOnly, readOnly, sql, file: file, line: line)
    }

    func testReadOnlyVerdicts() {
        let cases: [(String, SQLStatementKind, Bool)] = [
            ("SELECT 1", .select, true),
            ("select * from users where id = $1", .select, true),
            // pgbench -S and its TPC-B statements.
            ("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", .select, true),
            ("UPDATE pgbench_accounts SET abalance = abalance + -3 WHERE aid = 42;", .update, false),
            ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 42, -3, CURRENT_TIMESTAMP);", .insert, false),
            // Django / SQLAlchemy / Hibernate / ActiveRecord shapes.
            ("SELECT \"auth_user\".\"id\", \"auth_user\".\"username\" FROM \"auth_user\" WHERE \"auth_user\".\"id\" = 1 LIMIT 21", .select, true),
            ("SELECT users.id AS users_id, users.name AS users_name FROM users WHERE users.id = %(pk_1)s", .select, true),
            ("select u1_0.id,u1_0.email from users u1_0 where u1_0.id=?", .select, true),
            ("SELECT \"posts\".* FROM \"posts\" WHERE \"posts\".\"id\" IN ($1, $2, $3) ORDER BY \"posts\".\"id\" DESC LIMIT $4", .select, true),
            ("SELECT 1 AS one FROM \"users\" WHERE \"users\".\"email\" = $1 LIMIT $2", .select, true),
            ("SELECT COUNT(*) FROM (SELECT 1 FROM t WHERE x > 5) sub", .select, true),
            ("(SELECT 1) UNION ALL (SELECT 2)", .select, true),
            ("((VALUES (1), (2)))", .values, true),
            ("VALUES (1, 'a'), (2, 'b')", .values, true),
            ("TABLE users", .table, true),
            ("SHOW search_path", .show, true),
            ("SHOW ALL", .show, true),
            ("WITH t AS (SELECT 1) SELECT * FROM t", .select, true),
            ("WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 10) SELECT sum(n) FROM t", .select, true),
            ("with a as materialized (select 1), b as not materialized (select 2) select * from a, b", .select, true),
            ("EXPLAIN SELECT * FROM t", .explain, true),
            ("EXPLAIN (FORMAT JSON, COSTS OFF) SELECT 1", .explain, true),
            ("EXPLAIN ANALYZE SELECT * FROM t", .explain, true),
            ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", .explain, true),
            ("EXPLAIN UPDATE t SET a = 1", .explain, true),  // only planned, never run
            ("EXPLAIN ANALYZE UPDATE t SET a = 1", .explain, false),
            ("EXPLAIN ANALYSE VERBOSE DELETE FROM t", .explain, false),
            ("EXPLAIN (ANALYZE true) INSERT INTO t VALUES (1)", .explain, false),
            ("EXPLAIN (ANALYZE off) INSERT INTO t VALUES (1)", .explain, true),
            ("EXPLAIN (ANALYZE 0, VERBOSE) INSERT INTO t VALUES (1)", .explain, true),
            ("EXPLAIN ANALYZE SELECT nextval('s')", .explain, false),
            // Locking clauses.
            ("SELECT * FROM t WHERE id = 1 FOR UPDATE", .select, false),
            ("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", .select, false),
            ("select * from t for share", .select, false),
            ("SELECT * FROM t FOR KEY SHARE OF t NOWAIT", .select, false),
            ("SELECT * FROM (SELECT * FROM jobs LIMIT 1 FOR UPDATE SKIP LOCKED) j", .select, false),
            ("SELECT substring(s FROM 1 FOR 3) FROM t", .select, true),
            // Data-modifying WITH.
            ("WITH d AS (DELETE FROM t WHERE a < 0 RETURNING *) SELECT count(*) FROM d", .select, false),
            ("WITH x AS MATERIALIZED (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", .select, false),
            ("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", .select, false),
            ("WITH s AS (SELECT 1) INSERT INTO t SELECT * FROM s", .insert, false),
            ("WITH s AS (SELECT 1) UPDATE t SET a = 1", .update, false),
            ("WITH s AS (SELECT 1) DELETE FROM t", .delete, false),
            ("WITH s AS (SELECT 1) MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", .merge, false),
            // SELECT INTO creates a table.
            ("SELECT * INTO new_t FROM t", .select, false),
            ("SELECT * INTO TEMP new_t FROM t", .select, false),
            // Denied functions, any case, schema-qualified, quoted.
            ("SELECT nextval('users_id_seq')", .select, false),
            ("SELECT NEXTVAL('s')", .select, false),
            ("SELECT pg_catalog.setval('s', 1)", .select, false),
            ("SELECT \"nextval\"('s')", .select, false),
            ("SELECT \"NextVal\"('s')", .select, true),
            ("SELECT pg_advisory_lock(1)", .select, false),
            ("SELECT pg_try_advisory_lock_shared(1)", .select, false),
            ("SELECT lo_import('/tmp/x')", .select, false),
            ("SELECT txid_current()", .select, false),
            ("SELECT pg_current_wal_lsn()", .select, false),
            ("SELECT set_config('a.b', 'c', false)", .select, false),
            ("SELECT * FROM dblink('x', 'select 1') AS t(a int)", .select, false),
            ("SELECT nextval", .select, true),  // a column, not a call
            ("SELECT 'nextval(1)'", .select, true),
            ("SELECT lower(name) FROM t", .select, true),
            ("VALUES (nextval('s'))", .values, false),
            // Writes and everything else.
            ("INSERT INTO t VALUES (1)", .insert, false),
            ("DELETE FROM t", .delete, false),
            ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)", .merge, false),
            ("COPY t FROM STDIN", .copyFrom, false),
            ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", .copyFrom, false),
            ("COPY (SELECT * FROM t) TO STDOUT", .copyTo, false),
            ("COPY t TO STDOUT", .copyTo, false),
            ("CREATE TABLE t (a int)", .ddl, false),
            ("ALTER TABLE t ADD COLUMN b int", .ddl, false),
            ("DROP TABLE t", .ddl, false),
            ("GRANT SELECT ON t TO bob", .ddl, false),
            ("TRUNCATE t", .truncate, false),
            ("CALL p(1)", .call, false),
            ("DO $$BEGIN END$$", .do, false),
            ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", .lock, false),
            ("VACUUM ANALYZE t", .vacuum, false),
            ("ANALYZE t", .analyze, false),
            ("CHECKPOINT", .other, false),
            ("LISTEN ch", .listen, false),
            ("SET x = 1", .set, false),
            ("BEGIN READ ONLY", .begin, false),
            ("garbage words", .other, false),
            ("( garbage", .other, false),
            ("42", .other, false),
            ("", .empty, false),
            ("/* only a comment */", .empty, false),
            // Unterminated input is never read-only.
            ("SELECT 'abc", .select, false),
            ("SELECT 1 /* open", .select, false),
        ]
        for (sql, kind, readOnly) in cases {
            check(sql, kind, readOnly: readOnly)
        }
    }

    func testFlagsOfReadOnlyChecks() {
        XCTAssertTrue(sqlClassify("SELECT * FROM t FOR UPDATE").0.flags.contains(.lockingClause))
        XCTAssertTrue(sqlClassify("WITH d AS (DELETE FROM t RETURNING 1) SELECT 1").0.flags.contains(.dataModifyingSubstatement))
        XCTAssertTrue(sqlClassify("SELECT 1 INTO x").0.flags.contains(.selectInto))
        XCTAssertTrue(sqlClassify("SELECT nextval('s')").0.flags.contains(.deniedFunction))
        XCTAssertTrue(sqlClassify("EXPLAIN ANALYZE SELECT 1").0.flags.contains(.explainAnalyze))
        XCTAssertTrue(sqlClassify("SELECT 'x").0.flags.contains(.incomplete))
        XCTAssertEqual(sqlClassify("SELECT a FROM t").0.flags, [])
    }

    func testConfigurableDenyList() {
        let custom = SQLClassifier(denyList: SQLFunctionDenyList(commaSeparated: " audit_* , bump,"))
        XCTAssertFalse(sqlClassify("SELECT audit_log(1)", custom).0.readOnly)
        XCTAssertFalse(sqlClassify("SELECT app.BUMP()", custom).0.readOnly)
        XCTAssertTrue(sqlClassify("SELECT bumper()", custom).0.readOnly, "not a prefix pattern")
        XCTAssertTrue(sqlClassify("SELECT nextval('s')", custom).0.readOnly, "the default list was replaced")
        XCTAssertFalse(sqlClassify("SELECT now()", SQLClassifier(denyList: SQLFunctionDenyList(["*"]))).0.readOnly)
        XCTAssertTrue(sqlClassify("SELECT 1", SQLClassifier(denyList: SQLFunctionDenyList(["*"]))).0.readOnly)
        XCTAssertEqual(SQLFunctionDenyList.default.patterns.count, 9)
        let lo = SQLFunctionDenyList(["LO_*"])
        XCTAssertEqual(lo.patterns.map(\.name), [Array("lo_".utf8)])
        XCTAssertEqual(lo.patterns.map(\.isPrefix), [true])
    }

    func testRoutingHints() {
        let cases: [(String, SQLRoutingHint)] = [
            ("/* pgswift:primary */ SELECT 1", .primary),
            ("/*pgswift:standby*/SELECT 1", .standby),
            ("  /*  PGSWIFT:Standby  */\n-- x\nSELECT 1", .standby),
            ("-- c\n/* other */ /* pgswift:primary */ SELECT 1", .primary),
            ("SELECT 1 /* pgswift:primary */", .none),
            ("/* pgswift:replica */ SELECT 1", .none),
            ("/* pgswift:primary", .none),
            ("SELECT 1", .none),
        ]
        for (sql, hint) in cases {
            XCTAssertEqual(sqlClassify(sql).0.hint, hint, sql)
        }
        // The hint does not change the verdict; the router combines them.
        XCTAssertTrue(sqlClassify("/* pgswift:primary */ SELECT 1").0.readOnly)
    }

    func testTransactionControl() {
        let cases: [(String, SQLStatementKind, SQLStatementFlags)] = [
            ("BEGIN", .begin, []),
            ("begin work", .begin, []),
            ("BEGIN TRANSACTION READ ONLY", .begin, .readOnlyTransaction),
            ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE", .begin, .readOnlyTransaction),
            ("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE", .begin, .readWriteTransaction),
            ("BEGIN ISOLATION LEVEL READ COMMITTED", .begin, []),
            ("START TRANSACTION READ ONLY", .startTransaction, .readOnlyTransaction),
            ("START TRANSACTION", .startTransaction, []),
            ("SET TRANSACTION READ ONLY", .setTransaction, .readOnlyTransaction),
            ("SET LOCAL TRANSACTION READ WRITE", .setTransaction, .readWriteTransaction),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", .set, .readOnlyTransaction),
            ("COMMIT", .commit, []),
            ("END", .commit, []),
            ("COMMIT AND CHAIN", .commit, .andChain),
            ("COMMIT AND NO CHAIN", .commit, []),
            ("ROLLBACK", .rollback, []),
            ("ABORT", .rollback, []),
            ("ROLLBACK WORK AND CHAIN", .rollback, .andChain),
            ("ROLLBACK TO SAVEPOINT s1", .rollbackToSavepoint, []),
            ("ROLLBACK TRANSACTION TO s1", .rollbackToSavepoint, []),
            ("SAVEPOINT s1", .savepoint, []),
            ("RELEASE SAVEPOINT s1", .release, []),
            ("RELEASE s1", .release, []),
            ("PREPARE TRANSACTION 'gid1'", .prepareTransaction, []),
            ("COMMIT PREPARED 'gid1'", .commitPrepared, []),
            ("ROLLBACK PREPARED 'gid1'", .rollbackPrepared, []),
        ]
        for (sql, kind, flags) in cases {
            let (info, text) = sqlClassify(sql)
            XCTAssertEqual(info.kind, kind, sql)
            XCTAssertEqual(info.flags, flags, sql)
            XCTAssertFalse(info.readOnly, sql)
            if kind == .savepoint || kind == .release || kind == .rollbackToSavepoint {
                XCTAssertEqual(text(info.name), "s1", sql)
            }
            if kind == .prepareTransaction || kind == .commitPrepared || kind == .rollbackPrepared {
                XCTAssertEqual(text(info.value), "'gid1'", sql)
            }
        }
    }

    func testSet() {
        // (sql, kind, setting, name, value, flags)
        let cases: [(String, SQLStatementKind, SQLSetting, String?, String?, SQLStatementFlags)] = [
            ("SET search_path = app, public", .set, .named, "search_path", "app, public", []),
            ("set search_path to \"$user\", public;", .set, .named, "search_path", "\"$user\", public", []),
            ("SET statement_timeout = '150ms'", .set, .named, "statement_timeout", "'150ms'", []),
            ("SET SESSION statement_timeout TO 5000", .set, .named, "statement_timeout", "5000", []),
            ("SET LOCAL statement_timeout = 0", .setLocal, .named, "statement_timeout", "0", []),
            ("SET work_mem TO DEFAULT", .set, .named, "work_mem", nil, .toDefault),
            ("SET work_mem = default", .set, .named, "work_mem", nil, .toDefault),
            ("SET myapp.user_id = 42 /* c */", .set, .named, "myapp.user_id", "42", []),
            ("SET \"MyApp\".x = 'y'", .set, .named, "\"MyApp\".x", "'y'", []),
            ("SET search_path FROM CURRENT", .set, .named, "search_path", nil, .fromCurrent),
            ("SET TIME ZONE 'Europe/Paris'", .set, .timeZone, "TIME ZONE", "'Europe/Paris'", []),
            ("SET TIME ZONE LOCAL", .set, .timeZone, "TIME ZONE", nil, .toDefault),
            ("SET timezone = 'UTC'", .set, .named, "timezone", "'UTC'", []),
            ("SET NAMES 'UTF8'", .set, .names, "NAMES", "'UTF8'", []),
            ("SET NAMES", .set, .names, "NAMES", nil, .toDefault),
            ("SET SCHEMA 'app'", .set, .schema, "SCHEMA", "'app'", []),
            ("SET ROLE admin", .set, .role, "ROLE", "admin", []),
            ("SET ROLE NONE", .set, .role, "ROLE", nil, .toDefault),
            ("SET role = 'admin'", .set, .named, "role", "'admin'", []),
            ("SET LOCAL ROLE admin", .setLocal, .role, "ROLE", "admin", []),
            ("SET SESSION AUTHORIZATION 'bob'", .set, .sessionAuthorization, "SESSION AUTHORIZATION", "'bob'", []),
            ("SET SESSION AUTHORIZATION DEFAULT", .set, .sessionAuthorization, "SESSION AUTHORIZATION", nil, .toDefault),
            ("SET SESSION SESSION AUTHORIZATION bob", .set, .sessionAuthorization, "SESSION AUTHORIZATION", "bob", []),
            ("SET XML OPTION DOCUMENT", .set, .xmlOption, "XML OPTION", "DOCUMENT", []),
            ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", .setTransaction, .transactionSnapshot, nil, "'00000003-0000001B-1'", []),
        ]
        for (sql, kind, setting, name, value, flags) in cases {
            let (info, text) = sqlClassify(sql)
            XCTAssertEqual(info.kind, kind, sql)
            XCTAssertEqual(info.setting, setting, sql)
            XCTAssertEqual(text(info.name), name, sql)
            XCTAssertEqual(text(info.value), value, sql)
            XCTAssertEqual(info.flags, flags, sql)
            XCTAssertFalse(info.readOnly, sql)
        }
        XCTAssertEqual(SQLSetting.names.parameterName?.description, "client_encoding")
        XCTAssertEqual(SQLSetting.schema.parameterName?.description, "search_path")
        XCTAssertNil(SQLSetting.named.parameterName)
    }

    func testFoldedSettingName() {
        let text = Array("SET MyApp.\"Flag\" = 1".utf8)
        text.withUnsafeBytes { b in
            let info = SQLClassifier().classify(b)
            XCTAssertEqual(SQLLexer(b).foldedName(info.name!), "myapp.Flag")
        }
    }

    func testReset() {
        let cases: [(String, SQLSetting, String?, SQLStatementFlags)] = [
            ("RESET ALL", .all, nil, .all),
            ("RESET search_path", .named, "search_path", []),
            ("reset myapp.user_id;", .named, "myapp.user_id", []),
            ("RESET TIME ZONE", .timeZone, "TIME ZONE", []),
            ("RESET SESSION AUTHORIZATION", .sessionAuthorization, "SESSION AUTHORIZATION", []),
            ("RESET ROLE", .role, "ROLE", []),
            ("RESET TRANSACTION ISOLATION LEVEL", .transactionIsolation, "TRANSACTION ISOLATION LEVEL", []),
        ]
        for (sql, setting, name, flags) in cases {
            let (info, text) = sqlClassify(sql)
            XCTAssertEqual(info.kind, .reset, sql)
            XCTAssertEqual(info.setting, setting, sql)
            XCTAssertEqual(text(info.name), name, sql)
            XCTAssertEqual(info.flags, flags, sql)
        }
    }

    func testDiscard() {
        let cases: [(String, SQLDiscardTarget, SQLStatementFlags)] = [
            ("DISCARD ALL", .all, .all), ("discard temp", .temporary, []), ("DISCARD TEMPORARY", .temporary, []),
            ("DISCARD PLANS", .plans, []), ("DISCARD SEQUENCES", .sequences, []), ("DISCARD", .none, []),
        ]
        for (sql, target, flags) in cases {
            let info = sqlClassify(sql).0
            XCTAssertEqual(info.kind, .discard, sql)
            XCTAssertEqual(info.discard, target, sql)
            XCTAssertEqual(info.flags, flags, sql)
        }
    }

    func testListenNotify() {
        var (info, text) = sqlClassify("LISTEN orders_changed")
        XCTAssertEqual(info.kind, .listen)
        XCTAssertEqual(text(info.name), "orders_changed")
        (info, text) = sqlClassify("listen \"Mixed Case\";")
        XCTAssertEqual(text(info.name), "\"Mixed Case\"")
        (info, text) = sqlClassify("UNLISTEN ch")
        XCTAssertEqual(info.kind, .unlisten)
        XCTAssertEqual(text(info.name), "ch")
        (info, _) = sqlClassify("UNLISTEN *")
        XCTAssertEqual(info.kind, .unlisten)
        XCTAssertTrue(info.flags.contains(.all))
        XCTAssertNil(info.name)
        (info, text) = sqlClassify("NOTIFY ch, 'it''s here'")
        XCTAssertEqual(info.kind, .notify)
        XCTAssertEqual(text(info.name), "ch")
        XCTAssertEqual(text(info.value), "'it''s here'")
        (info, _) = sqlClassify("SELECT pg_notify('ch', 'x')")
        XCTAssertEqual(info.kind, .select)
        XCTAssertTrue(info.readOnly)
    }

    func testPreparedStatements() {
        var (info, text) = sqlClassify("PREPARE get_user (int) AS SELECT * FROM users WHERE id = $1;")
        XCTAssertEqual(info.kind, .prepare)
        XCTAssertEqual(text(info.name), "get_user")
        XCTAssertEqual(text(info.body), "SELECT * FROM users WHERE id = $1")
        (info, text) = sqlClassify("PREPARE s AS INSERT INTO t VALUES ($1)")
        XCTAssertEqual(text(info.name), "s")
        XCTAssertEqual(text(info.body), "INSERT INTO t VALUES ($1)")
        (info, text) = sqlClassify("EXECUTE get_user(42)")
        XCTAssertEqual(info.kind, .execute)
        XCTAssertEqual(text(info.name), "get_user")
        (info, text) = sqlClassify("DEALLOCATE PREPARE get_user")
        XCTAssertEqual(info.kind, .deallocate)
        XCTAssertEqual(text(info.name), "get_user")
        (info, text) = sqlClassify("DEALLOCATE \"S1\"")
        XCTAssertEqual(text(info.name), "\"S1\"")
        (info, _) = sqlClassify("DEALLOCATE ALL")
        XCTAssertTrue(info.flags.contains(.all))
        XCTAssertNil(info.name)
        (info, _) = sqlClassify("deallocate prepare all")
        XCTAssertTrue(info.flags.contains(.all))
    }

    func testCursors() {
        var (info, text) = sqlClassify("DECLARE c1 NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t")
        XCTAssertEqual(info.kind, .declareCursor)
        XCTAssertEqual(text(info.name), "c1")
        XCTAssertTrue(info.flags.contains(.withHold))
        XCTAssertEqual(text(info.body), "SELECT * FROM t")
        (info, _) = sqlClassify("DECLARE c2 CURSOR WITHOUT HOLD FOR SELECT 1")
        XCTAssertFalse(info.flags.contains(.withHold))
        (info, _) = sqlClassify("DECLARE c3 CURSOR FOR WITH x AS (SELECT 1) SELECT * FROM x")
        XCTAssertFalse(info.flags.contains(.withHold), "a WITH in the query is not WITH HOLD")
        (info, text) = sqlClassify("CLOSE c1")
        XCTAssertEqual(info.kind, .close)
        XCTAssertEqual(text(info.name), "c1")
        (info, _) = sqlClassify("CLOSE ALL")
        XCTAssertTrue(info.flags.contains(.all))
        (info, text) = sqlClassify("FETCH FORWARD 10 FROM c1")
        XCTAssertEqual(info.kind, .fetch)
        XCTAssertEqual(text(info.name), "c1")
        (info, text) = sqlClassify("MOVE c1")
        XCTAssertEqual(info.kind, .fetch)
        XCTAssertEqual(text(info.name), "c1")
    }

    func testTemporaryObjects() {
        let cases: [(String, Bool, Bool)] = [
            ("CREATE TEMP TABLE t (a int)", true, false),
            ("create temporary table t as select 1", true, false),
            ("CREATE LOCAL TEMPORARY TABLE t (a int)", true, false),
            ("CREATE GLOBAL TEMP TABLE t (a int)", true, false),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", true, false),
            ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", true, true),
            ("CREATE TEMP SEQUENCE s", true, false),
            ("CREATE TABLE pg_temp.t (a int)", true, false),
            ("SELECT * INTO TEMP TABLE t2 FROM t", true, false),
            ("SELECT * INTO TEMPORARY t2 FROM t", true, false),
            ("SELECT * INTO pg_temp.t2 FROM t", true, false),
            ("CREATE TABLE t (a int)", false, false),
            ("CREATE UNLOGGED TABLE t (a int)", false, false),
            ("SELECT * FROM pg_temp.t", false, false),
            ("INSERT INTO temp VALUES (1)", false, false),
            ("SELECT * INTO t2 FROM t", false, false),
        ]
        for (sql, temporary, onCommitDrop) in cases {
            let flags = sqlClassify(sql).0.flags
            XCTAssertEqual(flags.contains(.temporary), temporary, sql)
            XCTAssertEqual(flags.contains(.onCommitDrop), onCommitDrop, sql)
        }
    }

    func testAdvisoryLocks() {
        let cases: [(String, SQLStatementFlags)] = [
            ("SELECT pg_advisory_lock(42)", .sessionAdvisoryLock),
            ("select PG_ADVISORY_LOCK_SHARED(1, 2)", .sessionAdvisoryLock),
            ("SELECT pg_try_advisory_lock(hashtext('job'))", .sessionAdvisoryLock),
            ("SELECT pg_catalog.pg_try_advisory_lock_shared(1)", .sessionAdvisoryLock),
            ("SELECT pg_advisory_xact_lock(1)", []),
            ("SELECT pg_try_advisory_xact_lock(1)", []),
            ("SELECT pg_advisory_unlock(42)", .advisoryUnlock),
            ("SELECT pg_advisory_unlock_shared(42)", .advisoryUnlock),
            ("SELECT pg_advisory_unlock_all()", .advisoryUnlockAll),
            ("SELECT 'pg_advisory_lock(1)'", []),
            ("SELECT pg_advisory_lock", []),
            ("WITH l AS (SELECT pg_advisory_lock(1)) SELECT 1", .sessionAdvisoryLock),
        ]
        for (sql, expected) in cases {
            let flags = sqlClassify(sql).0.flags.intersection([.sessionAdvisoryLock, .advisoryUnlock, .advisoryUnlockAll])
            XCTAssertEqual(flags, expected, sql)
        }
    }

    /// set_config whose third argument is not the word `true`: a setting for the session.
    func testSetConfigOutsideATransactionIsFlagged() {
        for (sql, session) in [
            ("SELECT set_config('app.tenant', $1, false)", true),
            ("select SET_CONFIG('a.b', 'c', FALSE)", true),
            ("SELECT pg_catalog.set_config('a.b', 'c', $3)", true),
            ("SELECT set_config('a.b', lower('C'), 1 = 1)", true),
            ("SELECT set_config('a.b', 'c', true)", false),
            ("SELECT set_config('a.b', format('%s,%s', 1, 2), TRUE)", false),
            ("SELECT set_config('a.b', (SELECT max(x) FROM t), /* local */ true)", false),
            ("SELECT current_setting('a.b'), my_set_config('a', 'b', false)", false),
        ] {
            XCTAssertEqual(sqlClassify(sql).0.flags.contains(.sessionSetConfig), session, sql)
        }
        // The name, when every such call gives the same plain literal.
        for (sql, name) in [
            ("SELECT set_config('TimeZone', $1, false)", "'TimeZone'"),
            ("SELECT set_config('a.b', '1', false), set_config('a.b', '2', false)", "'a.b'"),
            ("SELECT set_config('a.b', '1', false), set_config('a.c', '2', false)", nil),
            ("SELECT set_config($1, '1', false)", nil),
            ("SELECT set_config('a' || '.b', '1', false)", nil),
            ("SELECT set_config('a.b', '1', true), set_config('a.c', '2', false)", "'a.c'"),
        ] as [(String, String?)] {
            let (info, text) = sqlClassify(sql)
            XCTAssertEqual(text(info.setConfigName), name, sql)
        }
    }

    func testSubrangeOfAMultiStatementText() {
        let text = Array("SELECT 1; LISTEN ch; SET x = 2".utf8)
        text.withUnsafeBytes { b in
            var s = SQLStatementSplitter(b)
            var kinds: [SQLStatementKind] = []
            while let st = s.next() { kinds.append(SQLClassifier().classify(b, range: st.range).kind) }
            XCTAssertEqual(kinds, [.select, .listen, .set])
        }
    }

    /// Random soups never crash, and every range the classifier reports lies inside the input.
    func testRandomSoups() {
        var rng = SQLTestRandom("SQLClassifierTests.testRandomSoups")
        let classifier = SQLClassifier()
        for i in 0..<2000 {
            let n = Int(rng.next() % 24)
            let text = (0..<n).map { _ in sqlSoupFragments[Int(rng.next() % UInt64(sqlSoupFragments.count))] }.joined(separator: i % 2 == 0 ? " " : "")
            let bytes = Array(text.utf8)
            bytes.withUnsafeBytes { b in
                let info = classifier.classify(b)
                for r in [info.name, info.value, info.body].compactMap({ $0 }) where r.lowerBound < 0 || r.upperBound > bytes.count || r.isEmpty {
                    XCTFail("range \(r) outside 0..<\(bytes.count): seed \(rng.seed), case \(i), \(text.debugDescription)")
                }
                if info.readOnly {
                    XCTAssertTrue([.select, .values, .table, .show, .explain].contains(info.kind), text.debugDescription)
                }
            }
        }
    }
}
