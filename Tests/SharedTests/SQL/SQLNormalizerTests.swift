// SQLNormalizer (Shared/SQL/SQLNormalizer.swift): patterns of real-world queries (ORMs, pgbench, psql),
// constant and list folding, canonical spacing, and the relations each statement reads and writes.
import XCTest
import Shared

final class SQLNormalizerTests: XCTestCase {
    static let corpus: [(String, String)] = [
        ("SELECT * FROM users WHERE id = 5", "select * from users where id = $1"),
        ("select  *\n  from USERS  where ID=5;", "select * from users where id = $1"),
        // Every constant form.
        ("SELECT 'a', 1, -2, 3.5, E'x\\'y', $$y$$, $t$z$t$, B'1', X'ff', N'n', U&'u', 1e3, 0x1F, TRUE, NULL",
         "select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15"),
        ("SELECT x FROM t WHERE y = 'it''s' AND z = E'\\\\n'", "select x from t where y = $1 and z = $2"),
        // NULL and booleans as values, not in IS tests or NOT NULL.
        ("SELECT * FROM t WHERE a IS NULL AND b IS NOT NULL AND c = NULL", "select * from t where a is null and b is not null and c = $1"),
        ("SELECT * FROM t WHERE f IS TRUE AND g IS NOT FALSE AND h = true AND NOT false",
         "select * from t where f is true and g is not false and h = $1 and not $2"),
        ("CREATE TABLE t (a int NOT NULL DEFAULT 0, b text DEFAULT NULL)",
         "create table t(a int not null default $1, b text default $2)"),
        // Signs.
        ("SELECT a - 1, b-1, -c, x*-1, -2", "select a - $1, b - $2, - c, x * $3, $4"),
        ("SELECT -1", "select $1"),
        ("SELECT CASE WHEN a THEN -1 ELSE 2 END FROM t", "select case when a then $1 else $2 end from t"),
        ("SELECT * FROM t WHERE a BETWEEN -5 AND 5", "select * from t where a between $1 and $2"),
        ("SELECT * FROM t WHERE a = - 5", "select * from t where a = $1"),
        // IN lists and arrays.
        ("SELECT a FROM t WHERE x IN (1, 2, 3)", "select a from t where x in ($1 /*, ... */)"),
        ("SELECT a FROM t WHERE x IN (4)", "select a from t where x in ($1 /*, ... */)"),
        ("SELECT a FROM t WHERE x NOT IN ('a'::text, 'b'::text, -3)", "select a from t where x not in ($1 /*, ... */)"),
        ("SELECT a FROM t WHERE x IN ($1, $2, $3) AND y = $4", "select a from t where x in ($1 /*, ... */) and y = $4"),
        ("SELECT a FROM t WHERE x IN (1, a)", "select a from t where x in ($1, a)"),
        ("SELECT a FROM t WHERE x IN (SELECT b FROM u)", "select a from t where x in (select b from u)"),
        ("SELECT a FROM t WHERE x IN ()", "select a from t where x in ()"),
        ("SELECT * FROM t WHERE id = ANY(ARRAY[1,2,3])", "select * from t where id = any (array[$1 /*, ... */])"),
        ("SELECT a FROM t WHERE x IN (1::int, 2::character varying, 3::pg_catalog.int4[])", "select a from t where x in ($1 /*, ... */)"),
        ("SELECT a[1:2] FROM t", "select a[$1 : $2] from t"),
        // Parameters keep their numbers; constants come after the highest.
        ("SELECT $2, 'x', $1", "select $2, $3, $1"),
        // Casts, calls, quoted names, comments.
        ("SELECT x::int, '1'::text, CAST(y AS int)", "select x::int, $1::text, cast(y as int)"),
        ("SELECT \"User\".\"Id\" FROM \"Users\"", "select \"User\".\"Id\" from \"Users\""),
        ("SELECT /* c */ 1 -- x\n FROM t", "select $1 from t"),
        ("SELECT count(*), max(a) FROM t GROUP BY b ORDER BY 1 DESC LIMIT 10 OFFSET 20",
         "select count(*), max(a) from t group by b order by $1 desc limit $2 offset $3"),
        ("SELECT a,b FROM t WHERE(a=1)AND b<>2", "select a, b from t where (a = $1) and b <> $2"),
        ("SELECT \"名前\" FROM テーブル WHERE 名前 = 'x'", "select \"名前\" from テーブル where 名前 = $1"),
        ("SELECT 1;;", "select $1"),
        ("SELECT 1; SELECT 2", "select $1; select $2"),
        ("", ""),
        ("/* only */ -- comments", ""),
        // pgbench (TPC-B and -S).
        ("UPDATE pgbench_accounts SET abalance = abalance + -3 WHERE aid = 42;",
         "update pgbench_accounts set abalance = abalance + $1 where aid = $2"),
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "select abalance from pgbench_accounts where aid = $1"),
        ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP);",
         "insert into pgbench_history(tid, bid, aid, delta, mtime) values ($1, $2, $3, $4, current_timestamp)"),
        // ORMs.
        ("SELECT \"auth_user\".\"id\" FROM \"auth_user\" WHERE \"auth_user\".\"username\" = 'bob' LIMIT 21",
         "select \"auth_user\".\"id\" from \"auth_user\" where \"auth_user\".\"username\" = $1 limit $2"),
        ("SELECT \"posts\".* FROM \"posts\" WHERE \"posts\".\"author_id\" IN (1, 2, 3) ORDER BY \"posts\".\"id\" ASC",
         "select \"posts\".* from \"posts\" where \"posts\".\"author_id\" in ($1 /*, ... */) order by \"posts\".\"id\" asc"),
        ("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING users.id",
         "insert into users(name, email) values ($1, $2) returning users.id"),
        ("select u1_0.id,u1_0.name from users u1_0 where u1_0.id=$1",
         "select u1_0.id, u1_0.name from users u1_0 where u1_0.id = $1"),
        ("SELECT users.id AS users_id FROM users WHERE users.name = 'x' AND users.age > 30",
         "select users.id as users_id from users where users.name = $1 and users.age > $2"),
        // psql's \d.
        ("""
         SELECT c.oid,
           n.nspname,
           c.relname
         FROM pg_catalog.pg_class c
              LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default
           AND pg_catalog.pg_table_is_visible(c.oid)
         ORDER BY 2, 3;
         """,
         "select c.oid, n.nspname, c.relname from pg_catalog.pg_class c left join pg_catalog.pg_namespace n "
            + "on n.oid = c.relnamespace where c.relname operator(pg_catalog.~) $1 collate pg_catalog.default "
            + "and pg_catalog.pg_table_is_visible(c.oid) order by $2, $3"),
        // Utility statements.
        ("SET search_path = app, public", "set search_path = app, public"),
        ("SET statement_timeout = '150ms'", "set statement_timeout = $1"),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", "create function f() returns int as $1 language sql"),
        ("SELECT pg_sleep(0.3)", "select pg_sleep($1)"),
        ("SELECT 'abc", "select $1"),
    ]

    func testPatterns() {
        var n = SQLNormalizer()
        for (sql, expected) in Self.corpus {
            XCTAssertEqual(sqlNormalize(sql, &n), expected, sql)
        }
    }

    /// A pattern normalizes to itself: spacing and numbering are canonical.
    func testPatternsAreFixedPoints() {
        var n = SQLNormalizer()
        for (_, pattern) in Self.corpus {
            XCTAssertEqual(sqlNormalize(pattern, &n), pattern, pattern)
        }
    }

    /// Texts that differ in literals, list lengths, spacing, comments, case of unquoted words and a
    /// trailing semicolon share one pattern and one queryid.
    func testSameShapeSameQueryID() {
        let shapes = [
            "SELECT * FROM orders WHERE customer_id = 7 AND status IN ('new', 'paid')",
            "select *   from ORDERS\nwhere customer_id=123456 and status in ('x') ;",
            "/* app:checkout */ SELECT * FROM orders WHERE customer_id = -1 AND status IN ('a','b','c','d','e') -- end",
        ]
        var n = SQLNormalizer()
        let ids = Set(shapes.map { s -> UInt64 in
            _ = sqlNormalize(s, &n)
            return SQLHash.pattern(n.pattern)
        })
        XCTAssertEqual(ids.count, 1)
        XCTAssertNotEqual(SQLHash.pattern(Array(sqlNormalize("SELECT * FROM orders WHERE customer_id = 7").utf8)), ids.first)
    }

    func testSummary() {
        var n = SQLNormalizer()
        let text = Array("SELECT 'a', $3 FROM t WHERE x IN (1, 2) AND y = ANY(ARRAY[3, 4])".utf8)
        let s = text.withUnsafeBytes { n.normalize($0) }
        XCTAssertEqual(s.highestParameter, 3)
        XCTAssertEqual(s.literals, 3)
        XCTAssertEqual(s.collapsedLists, 2)
        XCTAssertEqual(n.patternText, "select $4, $3 from t where x in ($5 /*, ... */) and y = any (array[$6 /*, ... */])")
    }

    func testStandardConformingStringsOff() {
        var n = SQLNormalizer()
        let text = Array("SELECT 'a\\'z' FROM t".utf8)
        text.withUnsafeBytes { _ = n.normalize($0, standardConformingStrings: false) }
        XCTAssertEqual(n.patternText, "select $1 from t")
        text.withUnsafeBytes { _ = n.normalize($0) }
        XCTAssertEqual(n.patternText, "select $1 z $2", "on: the string ends at the second quote, the rest is unterminated")
    }

    // MARK: Relations

    func relations(_ sql: String, max: Int = 16) -> [String] {
        var n = SQLNormalizer(maxRelations: max)
        _ = sqlNormalize(sql, &n)
        return n.relations.map { r in
            n.name(of: r) + ":" + (r.access == [.read, .write] ? "rw" : r.access == .write ? "w" : "r")
        }
    }

    func testRelations() {
        let cases: [(String, [String])] = [
            ("SELECT * FROM a, b AS x, c y JOIN d ON true LEFT JOIN s.e ON true", ["a:r", "b:r", "c:r", "d:r", "s.e:r"]),
            ("SELECT * FROM ONLY t", ["t:r"]),
            ("SELECT * FROM generate_series(1, 10) g, users u", ["users:r"]),
            ("SELECT * FROM (SELECT * FROM inner_t) sub, other", ["other:r", "inner_t:r"]),
            ("INSERT INTO t (a) SELECT a FROM s", ["t:w", "s:r"]),
            ("INSERT INTO t AS x VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a", ["t:w"]),
            ("UPDATE accounts SET x = 1 FROM rates r WHERE r.id = accounts.rid", ["accounts:w", "rates:r"]),
            ("UPDATE ONLY t SET a = 1", ["t:w"]),
            ("DELETE FROM logs USING users u WHERE u.id = logs.uid", ["logs:w", "users:r"]),
            ("DELETE FROM t WHERE id IN (SELECT id FROM u)", ["t:w", "u:r"]),
            ("MERGE INTO target t USING source s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a", ["target:w", "source:r"]),
            ("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN customers c ON true", ["orders:r", "customers:r"]),
            ("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", ["t:w"]),
            ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r, s", ["s:r"]),
            ("INSERT INTO t SELECT * FROM t", ["t:rw"]),
            ("SELECT extract(year FROM ts), substring(s FROM 2), trim(both FROM s) FROM events WHERE a IS DISTINCT FROM b",
             ["events:r"]),
            ("SELECT * FROM \"Users\", \"users\", Public.Items, \"My\"\"T\"", ["\"Users\":r", "users:r", "public.items:r", "\"My\"\"T\":r"]),
            ("SELECT * FROM users, Users, \"users\"", ["users:r"]),
            ("COPY t FROM STDIN", ["t:w"]),
            ("COPY s.t (a, b) TO STDOUT", ["s.t:r"]),
            ("COPY (SELECT * FROM s) TO STDOUT", ["s:r"]),
            ("SELECT * FROM t FOR UPDATE", ["t:r"]),
            ("SELECT ARRAY(SELECT id FROM u)", ["u:r"]),
            ("SELECT * FROM t1 NATURAL JOIN t2 CROSS JOIN t3", ["t1:r", "t2:r", "t3:r"]),
            ("SELECT * FROM a LEFT JOIN LATERAL (SELECT * FROM b WHERE b.x = a.x) l ON true", ["a:r", "b:r"]),
            ("EXPLAIN ANALYZE UPDATE t SET a = 1", ["t:w"]),
            ("PREPARE p AS UPDATE t SET a = $1", ["t:w"]),
            ("SELECT * FROM テーブル", ["テーブル:r"]),
            ("REVOKE SELECT ON t FROM bob", []),
            ("FETCH NEXT FROM c", []),
            ("SET search_path FROM CURRENT", []),
            ("SELECT 1", []),
            ("SELECT * FROM", []),
        ]
        for (sql, expected) in cases {
            XCTAssertEqual(relations(sql), expected, sql)
        }
    }

    func testRelationsAreBounded() {
        var n = SQLNormalizer(maxRelations: 3)
        let text = Array("SELECT * FROM a, b, c, d, e JOIN a ON true".utf8)
        let s = text.withUnsafeBytes { n.normalize($0) }
        XCTAssertEqual(n.relations.map { n.name(of: $0) }, ["a", "b", "c"])
        XCTAssertEqual(s.relationsDropped, 2)
    }

    /// Reuse keeps nothing from the previous statement.
    func testReuse() {
        var n = SQLNormalizer()
        XCTAssertEqual(sqlNormalize("SELECT * FROM a WHERE x IN (1, 2)", &n), "select * from a where x in ($1 /*, ... */)")
        XCTAssertEqual(n.relations.count, 1)
        XCTAssertEqual(sqlNormalize("VALUES (1)", &n), "values ($1)")
        XCTAssertEqual(n.relations.count, 0)
        XCTAssertTrue(n.relationNames.isEmpty)
    }

    /// Random soups: never crash, the pattern is valid UTF-8 and has no comment but the list marker,
    /// relations are bounded and name bytes inside the names buffer.
    func testRandomSoups() {
        var rng = SQLTestRandom("SQLNormalizerTests.testRandomSoups")
        var n = SQLNormalizer(maxRelations: 4)
        for i in 0..<2000 {
            let count = Int(rng.next() % 30)
            let text = (0..<count).map { _ in sqlSoupFragments[Int(rng.next() % UInt64(sqlSoupFragments.count))] }
                .joined(separator: i % 2 == 0 ? " " : "")
            let bytes = Array(text.utf8)
            bytes.withUnsafeBytes { _ = n.normalize($0, standardConformingStrings: i % 5 != 0) }
            let context = "seed \(rng.seed), case \(i), \(text.debugDescription)"
            XCTAssertNotNil(String(validating: n.pattern, as: UTF8.self), context)
            XCTAssertLessThanOrEqual(n.relations.count, 4, context)
            for r in n.relations {
                XCTAssertTrue(r.name.lowerBound >= 0 && r.name.upperBound <= n.relationNames.count && !r.name.isEmpty, context)
            }
        }
    }
}
