// Server logins (ServerLogin.swift) through a real worker loop: what pgswift sends PostgreSQL, how a
// failed login reaches the clients waiting for it.
import XCTest
@testable import Worker
import Shared

final class ServerLoginTests: WorkerHarnessCase {
    func testStartupNamesTheEntrysDatabaseAndUser() throws {
        try start(databaseOptions: "dbname=realdb user=realuser")
        h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        XCTAssertEqual(s.startup?["database"], "realdb")
        XCTAssertEqual(s.startup?["user"], "realuser")
        XCTAssertEqual(s.sslRequests, 1, "server_tls_sslmode prefer asks for TLS first")
    }

    /// client_encoding, datestyle, timezone and application_name of the `[databases]` entry go into
    /// every server's startup packet, as PgBouncer sends them (its `startup_params`).
    func testStartupCarriesTheEntrysSessionDefaults() throws {
        try start(databaseOptions: "client_encoding=LATIN1 datestyle='SQL, DMY' timezone=Europe/Paris application_name=dbapp")
        h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        XCTAssertEqual(s.startup?["client_encoding"], "LATIN1")
        XCTAssertEqual(s.startup?["datestyle"], "SQL, DMY")
        XCTAssertEqual(s.startup?["timezone"], "Europe/Paris")
        XCTAssertEqual(s.startup?["application_name"], "dbapp")
        XCTAssertEqual(s.startup?["database"], "db")
    }

    func testServerLoginErrorFailsTheWaitingClient() throws {
        try start()
        h.onStartup = { $0.send(BE.error("28P01", "password authentication failed for user \"u\"", severity: "FATAL")) }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.invalidPassword], "\(got)")
        XCTAssertEqual(got.first?.error?.message, "password authentication failed for user \"u\"")
    }

    func testClientsFailFastAfterAServerLoginFailure() throws {
        try start(["server_login_retry": "60"])
        h.onStartup = { $0.send(BE.error("28P01", "password authentication failed", severity: "FATAL")) }
        let a = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        _ = h.readUntilClosed(a)
        let b = h.connect()
        b.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilClosed(b).map { $0.sqlState }, [SQLState.invalidPassword])
        XCTAssertEqual(h.servers.count, 1, "no new server login within server_login_retry")
    }

    func testServerAskingForACleartextPasswordGetsTheEntrysPassword() throws {
        try start(databaseOptions: "password=sekrit")
        var asked: FakeServer? = nil
        h.onStartup = { s in
            asked = s
            s.send(TestWire.message("R", TestWire.int32(3)))
        }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the server login") { asked != nil }
        let s = try XCTUnwrap(asked)
        let p = h.next(s)
        XCTAssertEqual(p?.char, "p")
        XCTAssertEqual(p?.firstString, "sekrit")
        s.answerLogin(welcome: h.welcome)
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
    }

    func testServerClosingDuringLoginFailsTheWaitingClient() throws {
        try start()
        h.onStartup = { $0.close() }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.connectionFailure], "\(got)")
    }

    func testUnreachableServerFailsTheWaitingClient() throws {
        try start()
        h.stopBackend()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.connectionFailure], "\(got)")
    }

    func testClientsAuthenticatedBeforeTheFirstServerLoginAllGetTheWelcome() throws {
        try start()
        var pending: [FakeServer] = []
        h.onStartup = { pending.append($0) }
        let a = h.connect(), b = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        b.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the first server login") { !pending.isEmpty }
        h.settle(turns: 5)
        XCTAssertTrue(a.received.isEmpty && b.received.isEmpty, "nothing before the welcome parameters are known")
        XCTAssertEqual(h.servers.count, 1, "one login learns the welcome set for everyone")
        pending[0].answerLogin(welcome: h.welcome)
        XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
        XCTAssertEqual(h.readUntilReady(b).last?.status, "I")
    }
}
