// Read/write routing's classification of a transaction's first message (Routing.swift); the routing
// itself, against a real primary and standbys, is EndToEndTests/RoutingTests.
import XCTest
@testable import Worker
import Shared

final class RoutingTests: XCTestCase {
    /// A Query or Parse message's body (after the type and length).
    private func body(_ type: UInt8, _ sql: String, name: String = "") -> [UInt8] {
        if type == FrontendType.parse { return Array(name.utf8) + [0] + Array(sql.utf8) + [0, 0, 0] }
        return Array(sql.utf8) + [0]
    }

    private func target(_ sql: String, type: UInt8 = FrontendType.query, name: String = "",
                        classifier: SQLClassifier = SQLClassifier()) -> RouteTarget? {
        let b = body(type, sql, name: name)
        return b.withUnsafeBytes { raw in
            RouteClassifier.text(type: type, body: raw).map { RouteClassifier.target($0, classifier) }
        }
    }

    func testReadsGoToStandbys() {
        for sql in ["select 1", "SELECT * FROM t WHERE a = 'x;y'", "with a as (select 1) select * from a", "values (1)",
                    "table t", "show search_path", "explain select 1", "select 1; select 2", "  /* c */ select 1",
                    "BEGIN READ ONLY", "start transaction isolation level serializable, read only", "select 1;"] {
            XCTAssertEqual(target(sql), .read, sql)
        }
    }

    func testWritesAndUnknownGoToThePrimary() {
        for sql in ["insert into t values (1)", "update t set a = 1", "delete from t", "select * from t for update",
                    "select nextval('s')", "select pg_advisory_lock(1)", "with x as (delete from t returning *) select * from x",
                    "select * into t2 from t", "begin", "begin read write", "set a = 1", "listen x", "copy t from stdin",
                    "create table x(a int)", "select 1; insert into t values (1)", "explain analyze delete from t",
                    "", "  ", "select 'unterminated", "checkpoint", "call p()", "do $$ begin end $$"] {
            XCTAssertEqual(target(sql), .write, sql)
        }
    }

    func testHintsDecideFirst() {
        XCTAssertEqual(target("/* pgswift:primary */ select 1"), .write)
        XCTAssertEqual(target("/*pgswift:standby*/ select 1"), .read)
        XCTAssertEqual(target("/* PGSWIFT:STANDBY */ select now()"), .read)
        // A hint is read before the first word only.
        XCTAssertEqual(target("select /* pgswift:primary */ 1"), .read)
    }

    func testParseTextAfterTheStatementName() {
        XCTAssertEqual(target("select 1", type: FrontendType.parse, name: "s1"), .read)
        XCTAssertEqual(target("update t set a = 1", type: FrontendType.parse), .write)
        // Other messages carry no text: nothing to classify (the caller sends them to the primary).
        XCTAssertNil(Array("x".utf8).withUnsafeBytes { RouteClassifier.text(type: FrontendType.bind, body: $0) })
        XCTAssertNil([UInt8](Array("select 1".utf8)).withUnsafeBytes { RouteClassifier.text(type: FrontendType.query, body: $0) },
                     "no terminating NUL")
    }

    func testConfiguredDenyList() {
        let c = SQLClassifier(denyList: SQLFunctionDenyList(commaSeparated: "my_writer, audit_*"))
        XCTAssertEqual(target("select my_writer(1)", classifier: c), .write)
        XCTAssertEqual(target("select audit_log('x')", classifier: c), .write)
        XCTAssertEqual(target("select nextval('s')", classifier: c), .read, "the configured list replaces the default")
    }
}
