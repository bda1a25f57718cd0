// The carried session state (Worker/Session/SessionState.swift): what a Query's statements do, which
// tags confirm them, what a transaction keeps, what pins a client, and the SQL replayed on a server.
import XCTest
@testable import Worker
import Shared

final class SessionStateTests: XCTestCase {
    func plan(_ sql: String, followed: @escaping (String) -> FollowedParameter = { _ in .no }) -> SessionPlan {
        Array(sql.utf8).withUnsafeBytes { SessionPlanner.plan($0, classifier: SQLClassifier(), followed: followed) }
    }

    func setting(_ key: String, _ set: String, _ reset: String? = nil) -> CarriedSetting {
        CarriedSetting(key: key, set: set, reset: reset ?? "RESET \(key)")
    }

    func testPlansSetsAndResets() {
        XCTAssertEqual(plan("SET search_path = app, public").ops,
                       [.set(setting("search_path", "SET search_path TO app, public"))])
        XCTAssertEqual(plan("set SESSION statement_timeout to '150ms'").ops,
                       [.set(setting("statement_timeout", "SET statement_timeout TO '150ms'"))])
        XCTAssertEqual(plan("SET work_mem TO DEFAULT").ops, [.reset(key: "work_mem", tag: .set)])
        XCTAssertEqual(plan("RESET work_mem; RESET ALL").ops, [.reset(key: "work_mem", tag: .reset), .resetAll])
        XCTAssertEqual(plan("SET ROLE app_reader").ops,
                       [.set(CarriedSetting(key: "role", set: "SET ROLE app_reader", reset: "RESET ROLE"))])
        XCTAssertEqual(plan("SET ROLE NONE").ops, [.reset(key: "role", tag: .set)])
        XCTAssertEqual(plan("SET SCHEMA 'app'").ops, [.set(setting("search_path", "SET search_path TO 'app'"))])
        XCTAssertEqual(plan("SET myapp.Tenant = 42").ops, [.set(CarriedSetting(
            key: "myapp.tenant", set: "SET myapp.Tenant TO 42", reset: "RESET myapp.Tenant"))])
        XCTAssertEqual(plan("SET LOCAL work_mem = '1MB'; SET TRANSACTION READ ONLY").ops,
                       [.none(tag: .set), .none(tag: .set)])
        XCTAssertEqual(plan("SET work_mem FROM CURRENT").ops, [.untracked(tag: .set)])
        XCTAssertEqual(plan("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").ops, [.untracked(tag: .set)])
        XCTAssertEqual(plan("DISCARD ALL; DISCARD TEMP; DISCARD PLANS").ops,
                       [.discardAll, .none(tag: .discardTemp), .none(tag: .discardOther)])
        XCTAssertEqual(plan("BEGIN; SET a.b = 1; COMMIT").ops, [.set(setting("a.b", "SET a.b TO 1"))])
        XCTAssertTrue(plan("SELECT 1").isEmpty)
    }

    func testTrackedParametersAreLeftToParameterStatus() {
        let followed: (String) -> FollowedParameter = { key in
            key == "application_name" || key == "timezone" ? .reported : key == "search_path" ? .unreported(5) : .no
        }
        XCTAssertEqual(plan("SET application_name = 'x'; SET TIME ZONE 'UTC'; RESET application_name",
                            followed: followed).ops, [.none(tag: .set), .none(tag: .set), .none(tag: .reset)])
        // search_path before PostgreSQL 18: the client's tracked value, as PostgreSQL would show it.
        XCTAssertEqual(plan("SET search_path = App, public", followed: followed).ops, [.tracked(index: 5, value: "app, public")])
        XCTAssertEqual(plan("SET search_path TO 'app', 'x y'", followed: followed).ops, [.tracked(index: 5, value: "app, x y")])
        XCTAssertEqual(plan("SET SCHEMA 'it''s'", followed: followed).ops, [.tracked(index: 5, value: "it's")])
        XCTAssertEqual(plan("SET search_path TO DEFAULT; RESET search_path", followed: followed).ops,
                       [.tracked(index: 5, value: nil), .trackedReset(index: 5)])
        XCTAssertEqual(plan("SET search_path = \"Odd\"", followed: followed).ops, [.untracked(tag: .set)])
        XCTAssertEqual(plan("SET search_path = a,", followed: followed).ops, [.untracked(tag: .set)])
        XCTAssertEqual(plan("SET extra_float_digits = -2", followed: { $0 == "extra_float_digits" ? .unreported(7) : .no }).ops,
                       [.tracked(index: 7, value: "-2")])
    }

    func testPlansPins() {
        XCTAssertEqual(plan("CREATE TEMP TABLE t (i int)").pin, .temporary)
        XCTAssertEqual(plan("create temporary table t as select 1").pin, .temporary)
        XCTAssertEqual(plan("CREATE TEMP TABLE t (i int) ON COMMIT DROP").pin, [])
        XCTAssertEqual(plan("SELECT * INTO TEMP t FROM generate_series(1, 3)").pin, .temporary)
        XCTAssertEqual(plan("CREATE TABLE t (i int)").pin, [])
        XCTAssertEqual(plan("SELECT pg_advisory_lock(1)").pin, .advisoryLock)
        XCTAssertEqual(plan("select pg_try_advisory_lock_shared(1, 2)").pin, .advisoryLock)
        XCTAssertEqual(plan("SELECT pg_advisory_xact_lock(1)").pin, [])
        XCTAssertEqual(plan("SELECT pg_advisory_unlock_all()").unpinOnSuccess, .advisoryLock)
        let d = plan("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
        XCTAssertEqual(d.pin, .holdCursor)
        XCTAssertEqual(d.holdCursors, ["c"])
        XCTAssertEqual(plan("DECLARE c CURSOR FOR SELECT 1").pin, [])
        XCTAssertEqual(plan("CLOSE C").closedCursors, ["c"])
        XCTAssertTrue(plan("CLOSE ALL").closeAll)
    }

    func testConfirmedSetIsRememberedAtReadyOutsideATransaction() {
        var s = ClientSessionState()
        var server = SessionSettings()
        s.sent(plan("SET statement_timeout = '150ms'"))
        let tag = s.commandComplete(.set)
        XCTAssertTrue(tag.handled)
        XCTAssertFalse(tag.needsReset)
        XCTAssertTrue(tag.apply.isEmpty, "not before the transaction is over")
        let ready = s.ready(UInt8(ascii: "I"))
        XCTAssertEqual(ready.apply.count, 1)
        for op in ready.apply { s.remember(op, server: &server) }
        XCTAssertEqual(s.settings.entries.map(\.set), ["SET statement_timeout TO '150ms'"])
        XCTAssertEqual(server, s.settings)
        XCTAssertFalse(s.inFlight)
    }

    func testRolledBackOrFailedSetIsNotRemembered() {
        // BEGIN; SET ...; ROLLBACK in one Query.
        var s = ClientSessionState()
        s.sent(plan("BEGIN; SET a.b = 1; ROLLBACK"))
        XCTAssertTrue(s.commandComplete(.set).handled)
        let rb = s.commandComplete(.rollback)
        XCTAssertTrue(rb.needsReset, "a ROLLBACK TO SAVEPOINT cannot be told apart: reset")
        XCTAssertTrue(s.ready(UInt8(ascii: "I")).apply.isEmpty)

        // SET a.b = 1; SELECT 1/0: the implicit transaction is rolled back.
        s.sent(plan("SET a.b = 1; SELECT 1/0"))
        _ = s.commandComplete(.set)
        s.error()
        XCTAssertTrue(s.ready(UInt8(ascii: "I")).apply.isEmpty)

        // Across Queries: BEGIN / SET / COMMIT keeps it at COMMIT.
        s.sent(plan("SET a.b = 2"))
        _ = s.commandComplete(.set)
        XCTAssertTrue(s.ready(UInt8(ascii: "T")).apply.isEmpty)
        XCTAssertTrue(s.inFlight, "staged inside the transaction")
        let commit = s.commandComplete(.commit)
        XCTAssertEqual(commit.apply, [.set(setting("a.b", "SET a.b TO 2"))])
    }

    func testUntrackedAndOutOfStepTagsAskForAReset() {
        var s = ClientSessionState()
        s.sent(plan("SET work_mem FROM CURRENT"))
        let t = s.commandComplete(.set)
        XCTAssertTrue(t.handled)
        XCTAssertTrue(t.needsReset)
        // A tag with nothing expected: not handled, the caller's old rule applies.
        XCTAssertFalse(s.commandComplete(.set).handled)
        s.sent(plan("RESET ALL"))
        let wrong = s.commandComplete(.set)
        XCTAssertTrue(wrong.needsReset)
        XCTAssertFalse(wrong.handled)
    }

    func testPinsComeAndGo() {
        var s = ClientSessionState()
        s.sent(plan("DECLARE c CURSOR WITH HOLD FOR SELECT 1"))
        XCTAssertFalse(s.ready(UInt8(ascii: "I")).unpin.contains(.holdCursor))
        s.sent(plan("CLOSE c"))
        XCTAssertTrue(s.ready(UInt8(ascii: "I")).unpin.contains(.holdCursor))
        s.sent(plan("SELECT pg_advisory_unlock_all()"))
        XCTAssertTrue(s.ready(UInt8(ascii: "I")).unpin.contains(.advisoryLock))
        s.sent(plan("SELECT pg_advisory_unlock_all(); SELECT 1/0"))
        s.error()
        XCTAssertFalse(s.ready(UInt8(ascii: "I")).unpin.contains(.advisoryLock), "failed: kept")
        s.sent(plan("DISCARD TEMP"))
        XCTAssertEqual(s.commandComplete(.discardTemp).unpin, .temporary)
        XCTAssertEqual(s.commandComplete(.discardAll).unpin, [.temporary, .advisoryLock, .holdCursor, .setConfig])
    }

    func testSetConfigForTheSessionPinsAndForTheTransactionDoesNot() {
        XCTAssertEqual(plan("SELECT set_config('app.tenant', $1, false)").pin, .setConfig)
        XCTAssertEqual(plan("SELECT set_config('app.tenant', $1, is_local => false)").pin, .setConfig, "unsure: pinned")
        XCTAssertEqual(plan("SELECT set_config('app.tenant', $1, true)").pin, [])
        // A parameter the server reports: its ParameterStatus carries it, no pin.
        let reported: (String) -> FollowedParameter = { $0 == "timezone" ? .reported : .no }
        XCTAssertEqual(plan("select set_config('TimeZone', 'Europe/Paris', false)", followed: reported).pin, [])
        XCTAssertEqual(plan("select set_config('TimeZone', $1, false), set_config('TimeZone', 'UTC', false)",
                            followed: reported).pin, [])
        XCTAssertEqual(plan("select set_config('TimeZone', 'UTC', false), set_config('app.x', '1', false)",
                            followed: reported).pin, .setConfig, "another name too")
        XCTAssertEqual(plan("select set_config($1, 'UTC', false)", followed: reported).pin, .setConfig)
    }

    /// A SET pgswift cannot replay on another server pins like set_config(..., false); the ones it
    /// carries, and SET LOCAL / SET TRANSACTION, do not.
    func testSettingsThatCannotBeCarriedPin() {
        for sql in ["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "set session characteristics as transaction read only, deferrable",
                    "SET work_mem FROM CURRENT"] {
            let p = plan(sql)
            XCTAssertEqual(p.pin, .setConfig, sql)
            XCTAssertEqual(p.ops, [.untracked(tag: .set)], sql)
        }
        // TimeZone: every server reports it, so its ParameterStatus carries it.
        let reported: (String) -> FollowedParameter = { $0 == "timezone" ? .reported : .no }
        for sql in ["SET work_mem = '64MB'", "SET LOCAL work_mem = '1MB'", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "SET search_path TO app", "RESET work_mem", "SET TIME ZONE 'UTC'"] {
            XCTAssertEqual(plan(sql, followed: reported).pin, [], sql)
        }
    }

    func testTransitionReplaysOnlyWhatDiffers() {
        var server = SessionSettings()
        var client = SessionSettings()
        XCTAssertEqual(server.transition(to: client), "")
        client.apply(setting("search_path", "SET search_path TO app, public"))
        client.apply(setting("statement_timeout", "SET statement_timeout TO '150ms'"))
        XCTAssertEqual(server.transition(to: client), "SET search_path TO app, public;SET statement_timeout TO '150ms';")
        server = client
        XCTAssertEqual(server.transition(to: client), "")
        var other = SessionSettings()
        other.apply(setting("statement_timeout", "SET statement_timeout TO '1s'"))
        XCTAssertEqual(server.transition(to: other), "RESET search_path;SET statement_timeout TO '1s';")
        XCTAssertEqual(server.transition(to: SessionSettings()), "RESET search_path;RESET statement_timeout;")
    }

    func testResetGoesBackToTheStartupValue() {
        var s = ClientSessionState()
        s.baseline.apply(setting("work_mem", "SET work_mem TO '8MB'"))
        s.settings = s.baseline
        var server = SessionSettings()
        s.remember(.set(setting("work_mem", "SET work_mem TO '16MB'")), server: &server)
        s.remember(.reset(key: "work_mem", tag: .reset), server: &server)
        XCTAssertEqual(s.settings.entries.map(\.set), ["SET work_mem TO '8MB'"])
        XCTAssertTrue(server.isEmpty)
        s.remember(.resetAll, server: &server)
        XCTAssertEqual(s.settings, s.baseline)
    }

    func testPlansPrepareExecuteDeallocate() {
        let p = plan("PREPARE s (int) AS SELECT $1; EXECUTE s(1)")
        XCTAssertEqual(p.ops, [.prepare(name: "s", sql: "PREPARE s (int) AS SELECT $1")])
        XCTAssertEqual(p.referenced, ["s"], "a PREPARE of a name the client has needs it on the server: 42P05 then")
        XCTAssertEqual(plan("EXECUTE S(1); EXECUTE t").referenced, ["s", "t"])
        XCTAssertEqual(plan("DEALLOCATE PREPARE s").ops, [.deallocate(name: "s")])
        XCTAssertEqual(plan("DEALLOCATE s").referenced, ["s"])
        XCTAssertEqual(plan("deallocate all").ops, [.deallocateAll])
        XCTAssertEqual(plan("DEALLOCATE s; PREPARE s AS SELECT 2; EXECUTE s").referenced, ["s"])
        XCTAssertEqual(plan("PREPARE TRANSACTION 'x'").ops, [])
    }

    func testPreparedStatementsAreRememberedAtTheirTag() {
        var s = ClientSessionState()
        s.preparedLimit = 2
        s.sent(plan("BEGIN; PREPARE a AS SELECT 1; PREPARE b AS SELECT 2; PREPARE c AS SELECT 3"))
        XCTAssertEqual(s.commandComplete(.prepare).prepared, [.prepare(name: "a", sql: "PREPARE a AS SELECT 1")])
        XCTAssertFalse(s.commandComplete(.prepare).needsReset)
        let third = s.commandComplete(.prepare)
        XCTAssertTrue(third.needsReset, "beyond max_prepared_statements: not carried")
        XCTAssertTrue(third.prepared.isEmpty)
        XCTAssertEqual(Set(s.prepared.keys), ["a", "b"])
        _ = s.commandComplete(.rollback)
        XCTAssertEqual(Set(s.prepared.keys), ["a", "b"], "PREPARE is not transactional")
        _ = s.ready(UInt8(ascii: "I"))
        s.sent(plan("DEALLOCATE a"))
        XCTAssertEqual(s.commandComplete(.deallocate).prepared, [.deallocate(name: "a")])
        XCTAssertEqual(Array(s.prepared.keys), ["b"])
        s.sent(plan("DISCARD ALL"))
        _ = s.commandComplete(.discardAll)
        XCTAssertTrue(s.prepared.isEmpty)
    }
}
