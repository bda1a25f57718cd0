// Timeouts the janitor enforces (Janitor.swift), through a real worker loop.
import XCTest
@testable import Worker
import Shared

final class JanitorTests: WorkerHarnessCase {
    /// server_connect_timeout counts from the start of the connect, as PgBouncer's `connect_time`:
    /// connect and login together ("If connection and login don't finish in this amount of time"), not
    /// each phase on its own. The server here is logging in (its startup packet is never answered) and
    /// its login phase began just now; its connect's start is moved back past the timeout, as a connect
    /// that took that long would have left it. The janitor's next pass closes it, and the pool keeps
    /// the error for server_login_retry; the client keeps waiting (not a refusal).
    func testServerConnectTimeoutCountsFromTheStartOfTheConnect() throws {
        try start(["server_connect_timeout": "30", "server_login_retry": "60"])
        var silent: [FakeServer] = []
        h.onStartup = { silent.append($0) }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the server's startup packet") { !silent.isEmpty }
        let w = h.worker
        let si = try XCTUnwrap((0..<Int32(w.servers.capacity)).first { w.servers[$0].state == .login })
        let p = Int(w.servers[si].pool)
        XCTAssertLessThan(w.now - w.servers[si].stateSince, 30_000_000_000, "the login phase began just now")
        w.servers[si].createdAt -= 31_000_000_000
        h.waitClosed(silent[0])
        XCTAssertEqual(w.pools[p].loginError?.message, "server_connect_timeout")
        XCTAssertFalse(c.eof, "the waiting client was dropped")
        XCTAssertEqual(h.servers.count, 1, "no new attempt within server_login_retry")
    }

    /// query_wait_notify: a client queued for more than that many whole seconds gets PgBouncer's
    /// NOTICE once, stays queued and gets its answer when a server frees up; queued again, it is told
    /// again. The wait is aged by moving `stateSince` back, as that long a wait would have left it.
    func testAClientQueuedPastQueryWaitNotifyIsToldOncePerWait() throws {
        try start(["query_wait_notify": "2", "default_pool_size": "1"])
        let a = h.login(), b = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        let w = h.worker
        for round in 1...2 {
            h.roundTrip(a, s, "begin", status: "T")  // a holds the only server
            b.send(FE.query("select 2"))
            h.waitUntil("b queued") { (0..<Int32(w.clients.capacity)).contains { w.clients[$0].state == .waitServer } }
            let bi = try XCTUnwrap((0..<Int32(w.clients.capacity)).first { w.clients[$0].state == .waitServer })
            // The janitor's pass is made here, so that "not told" is not just "not looked at yet".
            w.janitor()
            h.settle()
            XCTAssertNil(b.reader.next(), "round \(round): not told before query_wait_notify")
            w.clients[bi].stateSince = w.now - 2_000_000_000  // 2 s: not more than 2 whole seconds
            w.janitor()
            h.settle()
            XCTAssertNil(b.reader.next(), "round \(round): told after 2 s with query_wait_notify = 2")
            w.clients[bi].stateSince = w.now - 3_000_000_000
            w.janitor()
            let notice = h.read(b, 1)
            XCTAssertEqual(notice.map { $0.char }, ["N"], "round \(round)")
            XCTAssertEqual(notice.first?.error?.message,
                           "No server connection available in postgres backend, client being queued")
            XCTAssertEqual(notice.first?.error?.severity, "NOTICE")
            XCTAssertEqual(notice.first?.sqlState, "00000")
            w.janitor()
            h.settle()
            XCTAssertNil(b.reader.next(), "round \(round): told once")
            XCTAssertEqual(w.clients[bi].state, .waitServer, "it stays queued")
            h.roundTrip(a, s, "commit")
            h.answerQuery(s, expect: "select 2")
            XCTAssertEqual(h.readUntilReady(b).last?.status, "I", "round \(round): answered once a server frees up")
        }
    }
}

/// Janitor timeouts and log lines as PgBouncer's suite checks them (test_timeouts.py).
final class JanitorPgBouncerTests: WorkerHarnessCase {
    /// As PgBouncer, whose clients waiting for their pool's first login sit in its waiting list: such
    /// a client is held to the global query_timeout (test_server_connect_timeout_establish: a server
    /// that takes 5 s to log in, query_timeout 3, client_login_timeout 60). Its wait is aged by moving
    /// `stateSince` back.
    func testAClientWaitingForTheWelcomeIsHeldToQueryTimeout() throws {
        try start(["query_timeout": "3", "client_login_timeout": "60"])
        h.onStartup = { _ in }  // the server never answers its startup packet
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let w = h.worker
        h.waitUntil("the client waits for the welcome") {
            (0..<Int32(w.clients.capacity)).contains { w.clients[$0].state == .waitWelcome }
        }
        let ci = try XCTUnwrap((0..<Int32(w.clients.capacity)).first { w.clients[$0].state == .waitWelcome })
        w.janitor()
        h.settle()
        XCTAssertFalse(c.eof, "failed before query_timeout")
        w.clients[ci].stateSince = w.now - 4_000_000_000
        w.janitor()
        let got = h.readUntilClosed(c)
        let error = try XCTUnwrap(got.first { $0.char == "E" }?.error, "\(got)")
        XCTAssertEqual(error.severity, "FATAL")
        XCTAssertEqual(error.message, "query_timeout")
        XCTAssertEqual(got.first { $0.char == "E" }?.sqlState, "08P01")
    }

    /// A server connect that is refused closes with PgBouncer's reason, `closing because: connect
    /// failed` (test_server_login_retry greps for it); no `server login failed` line, which PgBouncer
    /// writes only for an error PostgreSQL sent.
    func testARefusedConnectIsLoggedAsConnectFailed() throws {
        try start(["log_disconnections": "1", "server_login_retry": "60"])
        h.captureLog()
        h.stopBackend()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the connect's failure is logged") { !h.logLines(containing: "closing because").isEmpty }
        XCTAssertEqual(h.logLines(containing: "db/u@127.0.0.1:\(h.backendPort) closing because: connect failed (age=0s)").count, 1,
                       "\(h.logLines(containing: "S-"))")
        XCTAssertEqual(h.logLines(containing: "connect to 127.0.0.1:\(h.backendPort) failed: ").count, 1)
        XCTAssertTrue(h.logLines(containing: "server login failed").isEmpty)
    }

    /// server_connect_timeout closes with PgBouncer's reason, `closing because: connect timeout`
    /// (test_server_connect_timeout_establish greps for it), and no `server login failed` line.
    func testServerConnectTimeoutIsLoggedAsConnectTimeout() throws {
        try start(["log_disconnections": "1", "server_connect_timeout": "30", "server_login_retry": "60"])
        h.captureLog()
        var silent: [FakeServer] = []
        h.onStartup = { silent.append($0) }
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        h.waitUntil("the server's startup packet") { !silent.isEmpty }
        let w = h.worker
        let si = try XCTUnwrap((0..<Int32(w.servers.capacity)).first { w.servers[$0].state == .login })
        w.servers[si].createdAt -= 31_000_000_000
        h.waitClosed(silent[0])
        XCTAssertEqual(h.logLines(containing: "db/u@127.0.0.1:\(h.backendPort) closing because: connect timeout (age=31s)").count, 1,
                       "\(h.logLines(containing: "S-"))")
        XCTAssertTrue(h.logLines(containing: "server login failed").isEmpty)
    }
}
