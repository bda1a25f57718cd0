// SQLStatementSplitter (Shared/SQL/SQLStatementSplitter.swift): statements of a simple Query, split
// only at semicolons PostgreSQL would split at.
import XCTest
import Shared

final class SQLStatementSplitterTests: XCTestCase {
    func testSplits() {
        let cases: [(String, [String])] = [
            ("SELECT 1", ["SELECT 1"]),
            ("SELECT 1;", ["SELECT 1"]),
            ("  SELECT 1 ;  SELECT 2;\n", ["SELECT 1", "SELECT 2"]),
            ("BEGIN; UPDATE t SET a = 1; COMMIT", ["BEGIN", "UPDATE t SET a = 1", "COMMIT"]),
            (";;SELECT 1;;;SELECT 2;;", ["SELECT 1", "SELECT 2"]),
            ("", []),
            ("   \n ", []),
            (";", []),
            ("-- just a comment", []),
            ("SELECT 1; -- trailing comment", ["SELECT 1"]),
            ("SELECT 1; /* trailing */ ;", ["SELECT 1"]),
            // Leading comments belong to the statement (routing hints live there).
            ("SELECT 1; /* pgswift:standby */ SELECT 2", ["SELECT 1", "/* pgswift:standby */ SELECT 2"]),
            ("SELECT 1 /* c */; SELECT 2", ["SELECT 1 /* c */", "SELECT 2"]),
            // Semicolons that do not split.
            ("SELECT ';'; SELECT 2", ["SELECT ';'", "SELECT 2"]),
            ("SELECT E'\\';'; SELECT 2", ["SELECT E'\\';'", "SELECT 2"]),
            ("SELECT \"a;b\" FROM t; SELECT 2", ["SELECT \"a;b\" FROM t", "SELECT 2"]),
            ("SELECT 1 -- ; not here\n; SELECT 2", ["SELECT 1 -- ; not here", "SELECT 2"]),
            ("SELECT /* ; /* ; */ ; */ 1; SELECT 2", ["SELECT /* ; /* ; */ ; */ 1", "SELECT 2"]),
            ("DO $$BEGIN PERFORM 1; END$$; SELECT 2", ["DO $$BEGIN PERFORM 1; END$$", "SELECT 2"]),
            ("CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql; SELECT f()",
             ["CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql", "SELECT f()"]),
            ("CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1",
             ["CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))", "SELECT 1"]),
            // An unbalanced `)` does not make later semicolons disappear.
            ("SELECT 1); SELECT 2", ["SELECT 1)", "SELECT 2"]),
            // An unterminated quote swallows the rest, as PostgreSQL's parser would.
            ("SELECT 'a; SELECT 2", ["SELECT 'a; SELECT 2"]),
            ("SELECT $$a; SELECT 2", ["SELECT $$a; SELECT 2"]),
        ]
        for (sql, expected) in cases {
            XCTAssertEqual(sqlStatements(sql), expected, sql)
        }
    }

    func testBeginAtomicBodies() {
        let fn = """
            CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql
            BEGIN ATOMIC
              SELECT a + b;
              SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;
            END
            """
        XCTAssertEqual(sqlStatements(fn + "; SELECT 1"), [fn, "SELECT 1"])
        let proc = """
            create or replace procedure p() language sql begin atomic
              insert into t values (1);
              update t set a = case a when 1 then 2 end;
            end
            """
        XCTAssertEqual(sqlStatements(proc + ";select 2;"), [proc, "select 2"])
        // Not a routine: BEGIN is a statement of its own.
        XCTAssertEqual(sqlStatements("BEGIN; SELECT CASE WHEN true THEN 1 END; END;"),
                       ["BEGIN", "SELECT CASE WHEN true THEN 1 END", "END"])
        XCTAssertEqual(sqlStatements("CREATE TABLE begin_t (a int); BEGIN; COMMIT"),
                       ["CREATE TABLE begin_t (a int)", "BEGIN", "COMMIT"])
        // A routine without BEGIN ATOMIC splits at its end.
        XCTAssertEqual(sqlStatements("CREATE FUNCTION f() RETURNS int RETURN 1; SELECT 2"),
                       ["CREATE FUNCTION f() RETURNS int RETURN 1", "SELECT 2"])
        // Each statement starts its own detection.
        XCTAssertEqual(sqlStatements("CREATE FUNCTION f() RETURNS int RETURN 1; BEGIN; COMMIT"),
                       ["CREATE FUNCTION f() RETURNS int RETURN 1", "BEGIN", "COMMIT"])
    }

    func testTerminatedFlagAndRanges() {
        let text = Array("SELECT 1; SELECT 2".utf8)
        text.withUnsafeBytes { b in
            var s = SQLStatementSplitter(b)
            XCTAssertEqual(s.next(), SQLStatementRange(range: 0..<8, terminated: true))
            XCTAssertEqual(s.next(), SQLStatementRange(range: 10..<18, terminated: false))
            XCTAssertNil(s.next())
            XCTAssertNil(s.next())
        }
    }

    /// Random token soups: statements come in order, inside the input, never empty, never overlapping,
    /// and contain no splitting semicolon of their own (splitting one again yields itself).
    func testRandomSoups() {
        var rng = SQLTestRandom("SQLStatementSplitterTests.testRandomSoups")
        for i in 0..<1500 {
            let n = Int(rng.next() % 30)
            let text = (0..<n).map { _ in sqlSoupFragments[Int(rng.next() % UInt64(sqlSoupFragments.count))] }.joined()
            let bytes = Array(text.utf8)
            bytes.withUnsafeBytes { b in
                var s = SQLStatementSplitter(b)
                var at = 0
                var count = 0
                while let st = s.next() {
                    count += 1
                    guard st.range.lowerBound >= at, st.range.upperBound <= bytes.count, !st.range.isEmpty, count <= bytes.count else {
                        XCTFail("bad range \(st) at \(at): seed \(rng.seed), case \(i), \(text.debugDescription)")
                        return
                    }
                    at = st.range.upperBound
                    var again = SQLStatementSplitter(b, range: st.range)
                    XCTAssertEqual(again.next()?.range, st.range, "seed \(rng.seed), case \(i), \(text.debugDescription)")
                }
            }
        }
    }
}
