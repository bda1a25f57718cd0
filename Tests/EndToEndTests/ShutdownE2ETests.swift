// End to end: SHUTDOWN WAIT_FOR_CLIENTS / WAIT_FOR_SERVERS as PgBouncer does them: TCP closes, the Unix
// socket stays for the admin console, logins to databases are refused, queued clients are failed.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ShutdownE2ETests: XCTestCase {
    private func settings(workers: Int, poolSize: Int = 20) throws -> PgswiftSettings {
        var s = PgswiftSettings(postgres: try PostgresServer.shared())
        s.workers = workers
        s.poolMode = "transaction"
        s.defaultPoolSize = poolSize
        s.settings = [("admin_users", "u_trust")]
        return s
    }

    /// psql over pgswift's Unix socket (root or pgswift's own user: admin console without a password).
    private func overUnixSocket(_ px: Pgswift, database: String, _ sql: String) throws -> CommandResult {
        try runCommand([try PostgresTools.path("psql"), "host=\(px.dir) port=\(px.port) dbname=\(database) user=u_trust connect_timeout=10",
                        "-XAtq", "-c", sql], timeout: 30)
    }

    private func admin(_ px: Pgswift, _ sql: String) throws -> AdminAnswer {
        let a = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { a.close() }
        return try a.show(sql)
    }

    /// SHUTDOWN WAIT_FOR_CLIENTS: the TCP port closes at once; the admin console still answers on the
    /// Unix socket (and refuses RESUME: "pooler is shutting down"), a login to a database there gets
    /// PgBouncer's "pooler is shutting down"; the client already in is served until it leaves, then
    /// pgswift exits. Two workers: the one with no client left at once, the other keeps the socket.
    func testWaitForClientsKeepsTheAdminConsoleOnTheUnixSocket() throws {
        let px = try Pgswift.start(try settings(workers: 2))
        defer { px.stop() }
        let held = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { held.close() }
        XCTAssertEqual(try held.query("select 1"), [["1"]])
        _ = try admin(px, "SHUTDOWN WAIT_FOR_CLIENTS")

        XCTAssertTrue(waitUntil(timeout: 20) { !TestSocket.canConnect(port: px.port) }, "TCP still accepts")
        let version = try overUnixSocket(px, database: "pgbouncer", "SHOW VERSION")
        XCTAssertTrue(version.succeeded && version.stdout.contains("pgswift"), "\(version)\n\(px.log().suffix(3000))")
        let resume = try overUnixSocket(px, database: "pgbouncer", "RESUME")
        XCTAssertTrue(resume.stderr.contains("pooler is shutting down"), "\(resume)")
        let login = try overUnixSocket(px, database: "testdb", "select 1")
        XCTAssertFalse(login.succeeded)
        XCTAssertTrue(login.stderr.contains("pooler is shutting down"), "\(login)")

        XCTAssertEqual(try held.query("select 2"), [["2"]], "the client already in is served")
        XCTAssertTrue(px.isRunning, "a client is still in")
        held.close()
        XCTAssertEqual(px.waitForExit(timeout: 30), 0, "pgswift did not exit once its clients left:\n\(px.log().suffix(3000))")
    }

    /// SHUTDOWN WAIT_FOR_SERVERS, two workers, one server for the service: a client queued for it gets
    /// PgBouncer's FATAL 08P01 "server shutting down" promptly (not at its query_wait_timeout), and so
    /// does an idle client at its next transaction, on either worker: the worker with nothing in use
    /// waits for the other, as PgBouncer (one process) does, instead of closing its clients early. The
    /// client inside its transaction finishes it while the admin console answers on the Unix socket;
    /// once that server is released the service exits, and the clients still connected get PgBouncer's
    /// "database removed".
    func testWaitForServersFailsQueuedClientsAndLetsTransactionsFinish() throws {
        let px = try Pgswift.start(try settings(workers: 2, poolSize: 1))
        defer { px.stop() }
        func slot(_ c: WireClient) -> Int32 { c.backendProcessID >> 20 }
        let inTx = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { inTx.close() }
        _ = try inTx.query("begin")
        XCTAssertEqual(try inTx.query("select 1"), [["1"]])
        // Idle clients until there are three on the other worker (and whatever lands on inTx's).
        var clients: [WireClient] = []
        defer { clients.forEach { $0.close() } }
        while clients.filter({ slot($0) != slot(inTx) }).count < 3 && clients.count < 40 {
            clients.append(try WireClient.connect(port: px.port, user: "u_trust", database: "testdb"))
        }
        let others = clients.filter { slot($0) != slot(inTx) }
        XCTAssertEqual(others.count, 3, "connections never reached the second worker")
        guard others.count == 3 else { return }
        let (queued, idle, watcher) = (others[0], others[1], others[2])
        try queued.socket.send(WireEncode.query("select 'queued'"))
        XCTAssertTrue(waitUntil(timeout: 20, poll: 0.1) {
            ((try? self.admin(px, "SHOW POOLS"))?.sum("cl_waiting", where: "database", is: "testdb") ?? 0) == 1
        }, "the client never queued")

        _ = try admin(px, "SHUTDOWN WAIT_FOR_SERVERS")
        let started = monotonicNow()
        let failed = try queued.readMessage(timeout: 20)
        let fields = failed.map { WireErrorFields(body: $0.body) }
        XCTAssertEqual(failed?.typeChar, "E", "\(String(describing: failed))")
        XCTAssertEqual(fields?.sqlstate, "08P01", "\(String(describing: fields))")
        XCTAssertEqual(fields?.message, "server shutting down")
        XCTAssertLessThan(monotonicNow() - started, 10, "failed at once, not at query_wait_timeout (120 s)")

        XCTAssertEqual(try inTx.query("select 3"), [["3"]], "the transaction goes on")
        let version = try overUnixSocket(px, database: "pgbouncer", "SHOW VERSION")
        XCTAssertTrue(version.succeeded, "\(version)\n\(px.log().suffix(3000))")
        // The worker with no server in use is still there: its client hears "server shutting down" when
        // it needs a server (had it exited, the client would have been closed with "database removed").
        try idle.socket.send(WireEncode.query("select 'idle'"))
        let idleError = try idle.readMessage(timeout: 20).map { WireErrorFields(body: $0.body) }
        XCTAssertEqual(idleError?.message, "server shutting down", "an idle client's next transaction")
        XCTAssertTrue(px.isRunning, "a server is still linked")
        XCTAssertFalse(px.logLines(containing: "closing because: server shutting down").isEmpty, px.log().suffix(3000).description)

        try inTx.socket.send(WireEncode.query("commit"))
        let last = try watcher.readMessage(timeout: 30).map { WireErrorFields(body: $0.body) }
        XCTAssertEqual(last?.message, "database removed", "the clients still connected when the service exits")
        XCTAssertEqual(px.waitForExit(timeout: 30), 0, "pgswift did not exit once no server was in use:\n\(px.log().suffix(3000))")
        XCTAssertFalse(px.logLines(containing: "server connections dropped, exiting").isEmpty, px.log().suffix(3000).description)
    }
}
