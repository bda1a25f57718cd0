// SQLSessionCandidate (Shared/SQL/SQLSessionCandidate.swift): the data path's first-word check decides
// which texts are lexed for session state; it may say yes too often, never too rarely.
import XCTest
import Shared

final class SQLSessionCandidateTests: XCTestCase {
    func candidate(_ sql: String) -> Bool {
        Array(sql.utf8).withUnsafeBytes { SQLSessionCandidate.check($0) }
    }

    func testPlainStatementsAreNotCandidates() {
        for sql in ["SELECT 1", "select abalance from pgbench_accounts where aid = $1",
                    "SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "  select 1;  ",
                    "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "BEGIN", "COMMIT", "SHOW search_path",
                    "select settings from t", "selectx", "", "   ", "SETTINGS", "values (1)"] {
            XCTAssertFalse(candidate(sql), sql)
        }
    }

    func testSessionStatementsAreCandidates() {
        for sql in ["SET search_path = app, public", "set statement_timeout to '150ms'", "  RESET ALL",
                    "reset role", "DISCARD TEMP", "PREPARE s AS SELECT 1", "EXECUTE s(1)", "DEALLOCATE s",
                    "deallocate all", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "CLOSE c",
                    "CREATE TEMP TABLE t (i int)", "create table t (i int)", "Set x.y = 1",
                    "\tSET\na = 1"] {
            XCTAssertTrue(candidate(sql), sql)
        }
    }

    func testCommentsParenthesesAndSecondStatementsAreCandidates() {
        for sql in ["/* hint */ SELECT 1", "-- c\nSELECT 1", "(SELECT 1)", "BEGIN; SET a = 1; COMMIT",
                    "select 1; select 2", "SELECT 1;\n;  x"] {
            XCTAssertTrue(candidate(sql), sql)
        }
        XCTAssertFalse(candidate("select 1;"))
        // A Parse's text runs on into its parameter types: the NUL ends it.
        XCTAssertFalse(candidate("select 1\u{0}\u{0}\u{1};x"))
        XCTAssertFalse(candidate("select 1;\u{0}x"))
        XCTAssertTrue(candidate("set a = 1\u{0}\u{0}\u{1}"))
        XCTAssertFalse(candidate("select 1 ;  \n"))
    }

    func testAdvisoryLocksAndSelectIntoAreCandidates() {
        for sql in ["SELECT pg_advisory_lock(1)", "select PG_ADVISORY_LOCK_SHARED(42)",
                    "SELECT pg_try_advisory_lock($1)", "select pg_advisory_unlock_all()",
                    "SELECT * INTO TEMP t FROM x", "WITH a AS (SELECT 1) SELECT * INTO t FROM a",
                    "UPDATE t SET note = 'advisory'"] {
            XCTAssertTrue(candidate(sql), sql)
        }
        // INTO after INSERT is no SELECT INTO.
        XCTAssertFalse(candidate("INSERT INTO t SELECT 1"))
    }
}
