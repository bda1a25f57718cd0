// Replication clients (Replication.swift) through a real worker loop: each gets a server of its own,
// opened with its replication value, parameters and options, linked for good in any pool mode and
// closed when it leaves; room is taken from an idle server or waited for; a failed login fails only it.
import XCTest
@testable import Worker
import Shared

final class ReplicationTests: WorkerHarnessCase {
    /// A replication client's startup packet, answered up to its ReadyForQuery.
    private func replicationLogin(_ mode: String = "database", _ extra: [(String, String)] = [],
                                  file: StaticString = #filePath, line: UInt = #line) -> (Peer, [Msg]) {
        let c = h.connect(file: file, line: line)
        c.send(FE.startup(user: "u", database: "db", [("replication", mode)] + extra))
        return (c, h.readUntilReady(c, file: file, line: line))
    }

    func testOwnServerGetsTheReplicationValueParametersAndOptionsAndAnswersTheLogin() throws {
        try start()  // transaction mode
        // Every scripted server reports this value (one entry, as PostgreSQL reports each parameter once).
        h.welcome = h.welcome.map { $0.0 == "application_name" ? ($0.0, "walreceiver") : $0 }
        let (c, login) = replicationLogin("database", [("application_name", "walreceiver"),
                                                       ("options", "-c extra_float_digits=3 -c datestyle=ISO")])
        XCTAssertEqual(login.first?.char, "R")
        XCTAssertEqual(login.last?.status, "I")
        let s = try XCTUnwrap(h.servers.first)
        XCTAssertEqual(s.startup?["replication"], "database")
        XCTAssertEqual(s.startup?["options"], "-c extra_float_digits=3 -c datestyle=ISO",
                       "options go as they came, settings pgswift does not track included")
        XCTAssertEqual(s.startup?["application_name"], "walreceiver")
        // The client's login answer is its own server's ParameterStatus set.
        let reported = login.filter { $0.char == "S" }.map { $0.strings }
        XCTAssertTrue(reported.contains(["application_name", "walreceiver"]), "\(reported)")

        // Transaction mode does not apply: the link outlives ReadyForQuery, and another client never
        // gets this server.
        h.roundTrip(c, s, "IDENTIFY_SYSTEM")
        let other = h.login()
        other.send(FE.query("select 2"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        XCTAssertFalse(s1 === s)
        XCTAssertNil(s1.startup?["replication"], "an ordinary server")
        h.answerQuery(s1, expect: "select 2")
        h.readUntilReady(other)
        h.roundTrip(c, s, "TIMELINE_HISTORY 1")
        XCTAssertNil(s1.nextMessage())
    }

    func testPhysicalReplicationAsksForYesAndCopyBothPassesThroughBothWays() throws {
        try start()
        let (c, _) = replicationLogin("on")
        let s = try XCTUnwrap(h.servers.first)
        XCTAssertEqual(s.startup?["replication"], "yes", "PgBouncer's spelling of physical")
        c.send(FE.query("START_REPLICATION 0/0 TIMELINE 1"))
        XCTAssertEqual(h.next(s)?.firstString, "START_REPLICATION 0/0 TIMELINE 1")
        // CopyBothResponse, then WAL data one way and a standby status update the other.
        let copyBoth = TestWire.message("W", [0] + TestWire.int16(0))
        let wal = TestWire.message("d", [UInt8(ascii: "w")] + [UInt8](repeating: 7, count: 40_000))
        s.send(copyBoth + wal)
        let got = h.read(c, 2)
        XCTAssertEqual(got.map { $0.frame }, [copyBoth, wal], "byte for byte")
        let status = TestWire.message("d", [UInt8(ascii: "r")] + [UInt8](repeating: 1, count: 33))
        c.send(status + TestWire.message("c", []))
        XCTAssertEqual(h.next(s, 2).map { $0.frame }, [status, TestWire.message("c", [])])
        s.send(TestWire.message("c", []) + BE.complete("START_STREAMING") + BE.ready("I"))
        XCTAssertEqual(h.readUntilReady(c).map { $0.char }, ["c", "C", "Z"])
    }

    func testTheServerClosesWithItsClientAndServesNobodyElse() throws {
        try start(["pool_mode": "session"])
        let (c, _) = replicationLogin()
        let s = try XCTUnwrap(h.waitServers(1))
        c.send(FE.terminate)
        h.waitClosed(s)
        XCTAssertNil(s.nextMessage(), "no reset query: the server is closed, not pooled")
        let other = h.login()
        other.send(FE.query("select 1"))
        let s1 = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(s1, expect: "select 1")
    }

    func testAReplicationClientEvictsAnIdleServerForRoomAndOthersWaitForIt() throws {
        try start(databaseOptions: "pool_size=1")
        let a = h.login()
        let s0 = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s0, "select 1")  // s0 idle in the pool
        let (r1, _) = replicationLogin()
        h.waitClosed(s0)  // evicted
        let s1 = try XCTUnwrap(h.waitServers(2))
        XCTAssertEqual(s1.startup?["replication"], "database")

        // No room and nothing idle: the second replication client waits, its login unanswered.
        let r2 = h.connect()
        r2.send(FE.startup(user: "u", database: "db", [("replication", "database")]))
        h.settle()
        XCTAssertEqual(h.servers.count, 2, "no server beyond pool_size")
        XCTAssertTrue(r2.reader.unread.isEmpty, "still logging in")
        r1.send(FE.terminate)
        h.waitClosed(s1)
        let s2 = try XCTUnwrap(h.waitServers(3))
        XCTAssertEqual(s2.startup?["replication"], "database")
        XCTAssertEqual(h.readUntilReady(r2).last?.status, "I")
    }

    func testARefusedLoginFailsOnlyThatClient() throws {
        try start()
        h.onStartup = { s in
            if s.startup?["replication"] != nil {
                s.send(BE.error("42501", "permission denied to start WAL sender", severity: "FATAL"))
            } else {
                s.answerLogin(welcome: self.h.welcome)
            }
        }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", [("replication", "true")]))
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.last?.char, "E")
        XCTAssertEqual(got.last?.error?.message, "login failed")
        XCTAssertFalse(got.contains { $0.char == "R" }, "no AuthenticationOk before its server's login ended")
        // The pool's ordinary logins go on at once (no cached error, no server_login_retry wait).
        let ok = h.login()
        ok.send(FE.query("select 1"))
        let s = try XCTUnwrap(h.waitServers(1))
        h.answerQuery(s, expect: "select 1")
        XCTAssertEqual(h.readUntilReady(ok).last?.status, "I")
    }

    func testAnInvalidReplicationValueIsRefusedAsPostgreSQLRefusesIt() throws {
        try start()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", [("replication", "maybe")]))
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.last?.sqlState, SQLState.invalidParameterValue)
        XCTAssertEqual(got.last?.error?.message, "invalid value for parameter \"replication\": \"maybe\"")
        XCTAssertTrue(h.servers.isEmpty)
    }

    /// `replication=false` is an ordinary session (PostgreSQL reads it so too).
    func testReplicationFalseIsAnOrdinarySession() throws {
        try start()
        let (c, login) = replicationLogin("off")
        XCTAssertEqual(login.last?.status, "I")
        c.send(FE.query("select 1"))
        let s = try XCTUnwrap(h.waitServers(1))
        XCTAssertNil(s.startup?["replication"])
        h.answerQuery(s, expect: "select 1")
    }
}
