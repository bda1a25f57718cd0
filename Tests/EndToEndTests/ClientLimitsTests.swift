// End to end: max_db_client_connections and max_user_client_connections hold for the whole service
// (two workers), refuse with PgBouncer's error, and give a place back when a client leaves or its
// worker dies.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ClientLimitsTests: XCTestCase {
    /// Connection attempts of one (user, database), keeping the admitted clients and the refusals.
    private final class Attempts {
        let port: Int
        let user: String
        let database: String
        var admitted: [WireClient] = []
        var refused: [String] = []

        init(_ px: Pgswift, user: String, database: String) {
            port = px.port
            self.user = user
            self.database = database
        }

        @discardableResult
        func attempt() -> Bool {
            do {
                admitted.append(try WireClient.connect(port: port, user: user, database: database,
                                                       password: PostgresServer.passwords[user], timeout: 10))
                return true
            } catch let e as WireServerError {
                refused.append("\(e.fields.severity ?? "?") \(e.fields.sqlstate ?? "?") \(e.fields.message ?? "?")")
            } catch {
                refused.append("other: \(error)")
            }
            return false
        }

        /// Workers (BackendKeyData slot) of the admitted clients.
        var workers: Set<Int32> { Set(admitted.map { $0.backendProcessID >> 20 }) }

        /// Until the admitted clients sit on more than one worker: closes the newest and tries again.
        func spreadOverWorkers() {
            var tries = 0
            while workers.count < 2 && tries < 40, let last = admitted.popLast() {
                last.close()
                tries += 1
                _ = waitUntil(timeout: 10, poll: 0.05) { self.attempt() }
            }
        }

        func closeAll() {
            admitted.forEach { $0.close() }
            admitted.removeAll()
        }
    }

    private func start(_ pg: PostgresServer, databases: [(String, String)] = [], settings: [(String, String)] = [],
                       users: [(String, String)] = []) throws -> Pgswift {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.poolMode = "transaction"
        for (name, options) in databases { s.databases.append((name, pg.connectionString(dbname: "testdb", extra: options))) }
        s.settings = settings.map { (key: $0.0, value: $0.1) }
        s.userSettings = users.map { (user: $0.0, settings: $0.1) }
        return try Pgswift.start(s)
    }

    private func pid(ofWorker slot: Int32, _ px: Pgswift) -> pid_t? {
        guard let line = px.logLines(containing: "worker \(slot) started (pid ").last else { return nil }
        return pid_t(line.split(separator: "(pid ").last?.dropLast() ?? "")
    }

    /// `max_db_client_connections=3` on one database with two workers: three clients get in, spread
    /// over both workers (each holds fewer than three), every further one gets PgBouncer's FATAL 08P01
    /// "client connections exceeded (max_db_client_connections)", whichever worker it reaches; a client
    /// leaving frees its place, and so does a worker that dies with clients. Another database, with no
    /// limit of its own (the global one is 0), is not affected.
    func testDatabaseLimitHoldsAcrossWorkers() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, databases: [("limdb", "max_db_client_connections=3")], settings: [("admin_users", "u_trust")])
        defer { px.stop() }
        let lim = Attempts(px, user: "u_trust", database: "limdb")
        defer { lim.closeAll() }
        for _ in 0..<3 { XCTAssertTrue(lim.attempt(), "refusals: \(lim.refused)") }
        lim.spreadOverWorkers()
        XCTAssertEqual(lim.workers.count, 2, "all clients landed on one worker: the test proves nothing")
        for _ in 0..<8 { XCTAssertFalse(lim.attempt(), "a fourth client got in") }
        XCTAssertEqual(Set(lim.refused), ["FATAL 08P01 client connections exceeded (max_db_client_connections)"])
        // Whichever worker refused holds at most two of the three itself: the count is the service's.
        XCTAssertLessThan(lim.admitted.filter { $0.backendProcessID >> 20 == 0 }.count, 3)
        for c in lim.admitted { XCTAssertEqual(try c.query("select 1"), [["1"]]) }
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        let dbs = try admin.show("SHOW DATABASES")
        let row = try XCTUnwrap(dbs.rows.first { $0[dbs.columns.firstIndex(of: "name")!] == "limdb" })
        XCTAssertEqual(row[dbs.columns.firstIndex(of: "max_client_connections")!], "3")
        XCTAssertEqual(row[dbs.columns.firstIndex(of: "current_client_connections")!], "3", "the service's count")

        let other = Attempts(px, user: "u_trust", database: "testdb")
        defer { other.closeAll() }
        for _ in 0..<5 { XCTAssertTrue(other.attempt(), "\(other.refused)") }

        // One leaves: one more gets in (once its worker has seen it go), then no more.
        lim.admitted.removeFirst().close()
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.05) { lim.attempt() }, "the place was not given back: \(lim.refused.suffix(3))")
        XCTAssertFalse(lim.attempt())

        // A worker dies with clients of limdb: the supervisor gives their places back.
        let slot = lim.admitted[0].backendProcessID >> 20
        let held = lim.admitted.filter { $0.backendProcessID >> 20 == slot }
        guard let victim = pid(ofWorker: slot, px) else { return XCTFail("no start line for worker \(slot)") }
        XCTAssertEqual(kill(victim, SIGKILL), 0)
        for c in held { XCTAssertTrue(c.socket.readUntilClosed(timeout: 10).closed) }
        lim.admitted.removeAll { c in held.contains { $0 === c } }
        XCTAssertTrue(waitUntil(timeout: 15, poll: 0.1) { lim.admitted.count == 3 || (lim.attempt() && lim.admitted.count == 3) },
                      "\(held.count) places of the killed worker not given back: \(lim.admitted.count) admitted")
        XCTAssertFalse(lim.attempt(), "the limit no longer holds after a worker died")
    }

    /// A `[users]` max_user_client_connections=2 counts the user's clients of every database on both
    /// workers: a third gets "client connections exceeded (max_user_client_connections)"; the global
    /// max_user_client_connections=3 holds another user; one leaving frees a place.
    func testUserLimitHoldsAcrossWorkersAndDatabases() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, settings: [("max_user_client_connections", "3"), ("admin_users", "u_trust")],
                           users: [("u_password", "max_user_client_connections=2")])
        defer { px.stop() }
        let a = Attempts(px, user: "u_password", database: "testdb")
        let b = Attempts(px, user: "u_password", database: "bench")
        defer { a.closeAll(); b.closeAll() }
        XCTAssertTrue(a.attempt(), "\(a.refused)")
        XCTAssertTrue(b.attempt(), "\(b.refused)")
        for _ in 0..<3 {
            XCTAssertFalse(a.attempt())
            XCTAssertFalse(b.attempt())
        }
        XCTAssertEqual(Set(a.refused + b.refused), ["FATAL 08P01 client connections exceeded (max_user_client_connections)"])
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        let users = try admin.show("SHOW USERS")
        let row = try XCTUnwrap(users.rows.first { $0[users.columns.firstIndex(of: "name")!] == "u_password" })
        XCTAssertEqual(row[users.columns.firstIndex(of: "max_user_client_connections")!], "2")
        XCTAssertEqual(row[users.columns.firstIndex(of: "current_client_connections")!], "2", "in both databases")

        let md5 = Attempts(px, user: "u_md5", database: "testdb")
        defer { md5.closeAll() }
        for _ in 0..<3 { XCTAssertTrue(md5.attempt(), "\(md5.refused)") }
        md5.spreadOverWorkers()
        XCTAssertEqual(md5.workers.count, 2, "all clients landed on one worker: the test proves nothing")
        XCTAssertFalse(md5.attempt(), "a fourth u_md5 client got in under the global 3")
        XCTAssertEqual(md5.refused.last, "FATAL 08P01 client connections exceeded (max_user_client_connections)")

        b.admitted.removeFirst().close()
        XCTAssertTrue(waitUntil(timeout: 10, poll: 0.05) { a.attempt() }, "the place was not given back: \(a.refused.suffix(3))")
        XCTAssertFalse(b.attempt())
        for c in a.admitted { XCTAssertEqual(try c.query("select current_user"), [["u_password"]]) }
    }
}
