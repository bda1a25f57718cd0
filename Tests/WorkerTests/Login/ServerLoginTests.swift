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

    /// As PgBouncer, a server whose login PostgreSQL refused closes with the server's message as the
    /// reason (test_auth.py test_change_server_password_* count those lines), after PgBouncer's
    /// `server login failed:` line.
    func testARefusedServerLoginClosesWithTheServersMessage() throws {
        try start(["log_disconnections": "1"])
        h.captureLog()
        h.onStartup = { $0.send(BE.error("28P01", "password authentication failed for user \"u\"", severity: "FATAL")) }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        h.readUntilClosed(c)
        h.waitUntil("the server's close is logged") { !h.logLines(containing: "S-", "closing because").isEmpty }
        XCTAssertEqual(h.logLines(containing: "S-", "db/u@", "closing because: password authentication failed for user \"u\" (age=").count, 1,
                       "\(h.logLines(containing: "closing because"))")
        XCTAssertEqual(h.logLines(containing: "S-", "server login failed: FATAL password authentication failed").count, 1)
    }

    /// A pool whose only logged-in server a RECONNECT marked has none left to offer: a refused login
    /// then fails the queued clients with the server's error, as PgBouncer's kill_pool_logins does in a
    /// pool tagged dirty (test_auth.py test_change_server_password_reconnect), instead of leaving them
    /// to wait for a server that closes when released.
    func testARefusedLoginFailsQueuedClientsWhenTheOnlyServerIsMarked() throws {
        try start(["default_pool_size": "2", "server_login_retry": "60"])
        let a = h.login()
        a.send(FE.query("begin"))
        let s1 = try XCTUnwrap(h.waitServers(1))
        h.answerQuery(s1, expect: "begin", status: "T")
        h.readUntilReady(a)
        _ = h.worker.applyDatabaseOp(.reconnect, "db")
        h.onStartup = { $0.send(BE.error("28P01", "password authentication failed for user \"u\"", severity: "FATAL")) }
        let b = h.login()
        b.send(FE.query("select 1"))
        let got = h.readUntilClosed(b)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.invalidPassword], "\(got)")
        XCTAssertFalse(a.eof, "the client holding the marked server keeps it until it is released")
        h.roundTrip(a, s1, "commit")
        h.waitClosed(s1)
    }

    /// PgBouncer's check_fast_fail: within server_login_retry a new client gets the cached error, and no
    /// new login is tried for it.
    func testNewClientsGetTheCachedErrorWithinServerLoginRetry() throws {
        try start(["server_login_retry": "60"])
        h.onStartup = { $0.send(BE.error("28P01", "password authentication failed", severity: "FATAL")) }
        let a = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilClosed(a).map { $0.sqlState }, [SQLState.invalidPassword], "the first client gets the server's error")
        let b = h.connect()
        b.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilClosed(b)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        XCTAssertEqual(got.first?.error?.message,
                       "server login has been failing, cached error: password authentication failed (server_login_retry)")
        XCTAssertEqual(h.servers.count, 1, "no new server login within server_login_retry")
    }

    /// After server_login_retry a new client makes a new attempt, and gets in when it works.
    func testALoginIsTriedAgainAfterServerLoginRetry() throws {
        try start(["server_login_retry": "0.3"])
        var refuse = true
        h.onStartup = { s in
            if refuse { s.send(BE.error("28P01", "password authentication failed", severity: "FATAL")) } else { s.answerLogin(welcome: self.h.welcome) }
        }
        let a = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilClosed(a).map { $0.sqlState }, [SQLState.invalidPassword])
        refuse = false
        let started = Clock.monotonicNanos()
        // Within the interval the cached error; once it has passed, a new login that works.
        var cached = 0
        h.waitUntil("a client getting in after server_login_retry") {
            let c = h.connect()
            c.send(FE.startup(user: "u", database: "db"))
            let first = h.read(c, 1).first
            if first?.sqlState == SQLState.protocolViolation { cached += 1 }
            return first?.char == "R"
        }
        XCTAssertGreaterThan(cached, 0, "no client got the cached error within server_login_retry")
        XCTAssertGreaterThanOrEqual(Clock.monotonicNanos() - started, 200_000_000, "retried before server_login_retry")
        XCTAssertEqual(h.servers.count, 2, "one new attempt, not one per client")
    }

    /// A logged-in client whose pool has lost its servers, while the login is refused: queued clients
    /// get the server's error; a new client gets the cached error (the pool has no server left).
    func testLoggedInClientsOfAFailingPoolGetTheCachedError() throws {
        try start(["server_login_retry": "60"])
        let a = h.login()
        let first = try XCTUnwrap(h.waitServers(1))
        h.onStartup = { $0.send(BE.error("28P01", "password authentication failed", severity: "FATAL")) }
        first.close()
        h.waitUntil("the pool notices its server is gone") { self.h.worker.pools[0].serverCount == 0 }
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.readUntilClosed(a).map { $0.sqlState }, [SQLState.invalidPassword], "queued: the server's own error")
        let b = h.login()
        b.send(FE.query("select 1"))
        let got = h.readUntilClosed(b)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        XCTAssertTrue(got.first?.error?.message.hasPrefix("server login has been failing, cached error: ") ?? false, "\(got)")
        XCTAssertEqual(h.servers.count, 2)
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

    /// A userlist SCRAM secret cannot answer the server's SCRAM request before a client gave its
    /// ClientKey (here the client logged in with trust): the waiting client gets PgBouncer's words
    /// (test_auth.py test_scram_server), the log PgBouncer's reason and its close of a server whose
    /// authentication request got no answer.
    func testASCRAMSecretWithoutClientKeyIsAWrongPasswordType() throws {
        let secret = "SCRAM-SHA-256$4096:D76gvGUVj9Z4DNiGoabOBg==$RukL0Xo3Ql/2F9FsD7mcQ3GATG2fD3PA71qY1JagGDs="
            + ":BhKUwyyivFm7Tq2jDJVXSVRbRDgTWyBilZKgg6DDuYU="
        try start(["log_disconnections": "1"], users: ["u": secret])
        h.captureLog()
        h.onStartup = { $0.send(TestWire.encode { Backend.authenticationSASL(into: &$0, mechanisms: ["SCRAM-SHA-256"]) }) }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilClosed(c)
        let e = try XCTUnwrap(got.first { $0.char == "E" }, "\(got)")
        XCTAssertEqual(e.error?.message, "server login failed: wrong password type")
        XCTAssertEqual(e.sqlState, "08P01")
        XCTAssertEqual(h.logLines(containing: "db/u@", "cannot do SCRAM authentication: password is SCRAM secret but "
                                  + "client authentication did not provide SCRAM keys").count, 1)
        XCTAssertEqual(h.logLines(containing: "db/u@", "closing because: failed to answer authreq").count, 1)
    }

    /// Not a refusal (PgBouncer kills waiting clients only from an ErrorResponse at login): the client
    /// keeps waiting and the login is tried again after server_login_retry.
    func testServerClosingDuringLoginLeavesTheClientWaitingForTheRetry() throws {
        try start(["server_login_retry": "0.3"])
        var attempts = 0
        h.onStartup = { s in
            attempts += 1
            if attempts == 1 { s.close() } else { s.answerLogin(welcome: self.h.welcome) }
        }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
        XCTAssertEqual(attempts, 2)
    }

    /// 57P03 ("the database system is starting up") is PostgreSQL's answer, but a passing one: the
    /// client waits for the next attempt (PgBouncer exempts it from kill_pool_logins).
    func testAStartingUpServerLeavesTheClientWaiting() throws {
        try start(["server_login_retry": "0.3"])
        var attempts = 0
        h.onStartup = { s in
            attempts += 1
            if attempts == 1 {
                s.send(BE.error(SQLState.cannotConnectNow, "the database system is starting up", severity: "FATAL"))
            } else {
                s.answerLogin(welcome: self.h.welcome)
            }
        }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
        XCTAssertEqual(attempts, 2)
    }

    /// A server that cannot be reached fails nobody at once: the client waits for the retries until
    /// client_login_timeout, in PgBouncer's words.
    func testUnreachableServerLeavesTheClientWaitingUntilClientLoginTimeout() throws {
        try start(["client_login_timeout": "1", "server_login_retry": "0.2"])
        h.stopBackend()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let started = Clock.monotonicNanos()
        let got = h.readUntilClosed(c)
        XCTAssertEqual(got.map { $0.sqlState }, [SQLState.protocolViolation], "\(got)")
        XCTAssertEqual(got.first?.error?.message, "client_login_timeout (server down)")
        XCTAssertGreaterThanOrEqual(Clock.monotonicNanos() - started, 500_000_000, "failed before client_login_timeout")
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
