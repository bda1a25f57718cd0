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

    func testSetConfigIsACandidateAndOtherUnderscoresAreNot() {
        for sql in ["SELECT set_config('app.tenant', $1, false)", "select pg_catalog.SET_CONFIG('a.b', 'c', false)",
                    "SELECT x FROM t WHERE set_config('a.b', t.v, true) IS NOT NULL"] {
            XCTAssertTrue(candidate(sql), sql)
        }
        for sql in ["SELECT user_id, created_at FROM user_accounts WHERE account_id = $1", "select current_setting('a.b')",
                    "SELECT _x, et_config FROM t_"] {
            XCTAssertFalse(candidate(sql), sql)
        }
    }

    /// `plain`, the worker's one call for both hooks: no candidate, no LISTEN or UNLISTEN first, not blank.
    func testPlainAlsoLeavesOutTheListenRelaysWordsAndBlankTexts() {
        func plain(_ sql: String) -> Bool { Array(sql.utf8).withUnsafeBytes { SQLSessionCandidate.plain($0.baseAddress!, $0.count) } }
        for sql in ["SELECT 1", "SELECT 1\u{0}", "select abalance from pgbench_accounts where aid = $1\u{0}\u{0}\u{1}",
                    "INSERT INTO t VALUES (1)", "NOTIFY c", "listener", "unlistened x", "BEGIN"] {
            XCTAssertTrue(plain(sql), sql)
            XCTAssertFalse(candidate(sql), sql)
        }
        for sql in ["LISTEN c", "  listen c", "UNLISTEN *", "unlisten c;", "Listen\tc", "DISCARD ALL", "", "  \n",
                    "SET a = 1", "/* x */ SELECT 1", "select 1; select 2", "SELECT pg_advisory_lock(1)"] {
            XCTAssertFalse(plain(sql), sql)
        }
        // LISTEN and blanks are no session candidates: only `plain` leaves them out.
        XCTAssertFalse(candidate("LISTEN c"))
        XCTAssertFalse(candidate("   "))
    }

    /// The word-at-a-time scan against a byte-by-byte reference, on random texts made of what it looks
    /// for (and near misses) at every alignment.
    func testWordScanAgreesWithTheBytewiseReference() {
        var rng = SQLTestRandom("SQLSessionCandidateTests")
        let parts = ["select ", "SELECT ", "with ", "insert ", "x", "v", "V", "t", "advisor", "advisory", "ADVISORY",
                     "into", "INTO", "int", ";", " ; ", ";;", "\u{0}", " ", "\n", "pg_", "y", "(", "'", "é",
                     "set", "SET", "reset", "Deallocate", "dealloc", "create", "discard", "@", "_", "[", "`", "{",
                     "set_config", "SET_CONFIG", "set_conf", "et_config", "user_id", "listen", "UNLISTEN", "listen "]
        func reference(_ b: [UInt8]) -> Bool {
            var i = 0
            while i < b.count && SQLLexer.isWhitespace(b[i]) { i += 1 }
            if i == b.count { return false }
            if b[i] == UInt8(ascii: "/") || b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "(") { return true }
            var j = i
            while j < b.count && (b[j] | 0x20) >= 97 && (b[j] | 0x20) <= 122 { j += 1 }
            let first = String(decoding: b[i..<j].map { $0 | 0x20 }, as: UTF8.self)
            if ["set", "reset", "close", "create", "discard", "prepare", "execute", "declare", "deallocate"].contains(first)
                || (first.count == 10 && first.hasPrefix("dealloca")) { return true }
            let into = first == "select" || first == "with"
            let folded = b.map { $0 | 0x20 }
            var k = j
            while k < b.count {
                if b[k] == 0 { return false }
                if b[k] == UInt8(ascii: ";") {
                    var m = k + 1
                    while m < b.count && (SQLLexer.isWhitespace(b[m]) || b[m] == UInt8(ascii: ";")) { m += 1 }
                    return m < b.count && b[m] != 0
                }
                if k >= 2 && k + 6 <= b.count && Array(folded[(k - 2)..<(k + 6)]) == Array("advisory".utf8) { return true }
                if b[k] == UInt8(ascii: "_") && k >= 3 && k + 5 <= b.count
                    && Array(folded[(k - 3)..<(k + 5)]) == Array("set".utf8) + [0x7F] + Array("conf".utf8) { return true }
                if into && k >= 2 && k + 2 <= b.count && Array(folded[(k - 2)..<(k + 2)]) == Array("into".utf8) { return true }
                k += 1
            }
            return false
        }
        for _ in 0..<20_000 {
            var text = ""
            for _ in 0..<Int.random(in: 1...14, using: &rng) { text += parts.randomElement(using: &rng)! }
            let b = Array(text.utf8)
            XCTAssertEqual(b.withUnsafeBytes { SQLSessionCandidate.check($0) }, reference(b), "\(b)")
            var i = 0
            while i < b.count && SQLLexer.isWhitespace(b[i]) { i += 1 }
            var j = i
            while j < b.count && (b[j] | 0x20) >= 97 && (b[j] | 0x20) <= 122 { j += 1 }
            let first = String(decoding: b[i..<j].map { $0 | 0x20 }, as: UTF8.self)
            let plain = i < b.count && !reference(b) && first != "listen" && first != "unlisten"
            XCTAssertEqual(b.withUnsafeBytes { SQLSessionCandidate.plain($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, $0.count) },
                           plain, "plain \(b)")
        }
    }
}
