// End to end: reserve_pool_size / reserve_pool_timeout across workers (PoolQuotas' reserve): a burst
// beyond pool_size waits reserve_pool_timeout, then gets reserve servers, counted by SHOW and /metrics.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ReservePoolTests: XCTestCase {
    /// 2 workers, pool_size 2, reserve 2 for the pool (global reserve_pool_size 1, the database's
    /// `reserve_pool=3`, the user's `reserve_pool_size=2`: the user's applies), reserve_pool_timeout 1.
    /// 6 clients, 3 on each worker, each run `pg_sleep(5)` at once: 2 servers serve at once; no third
    /// backend appears before the waiting clients have waited reserve_pool_timeout, then 2 reserve
    /// servers open; SHOW POOLS, SHOW SERVERS, SHOW DATABASES and /metrics count 4 servers; PostgreSQL
    /// never sees more than pool_size + reserve = 4 backends of the pool while every query finishes;
    /// the log has PgBouncer's "taking connection from reserve_pool" once per reserve connection.
    func testBurstGetsReserveServersAfterTheTimeoutAcrossWorkers() throws {
        let pg = try PostgresServer.shared()
        XCTAssertTrue(TxFixtures.waitForNoBackends(pg), "leftover \(TxFixtures.role) backends")
        var s = try TxFixtures.settings(pg, workers: 2, poolSize: 2)
        s.databases[0].connection += " reserve_pool=3"
        s.userSettings = [(TxFixtures.role, "reserve_pool_size=2")]
        s.settings += [("reserve_pool_size", "1"), ("reserve_pool_timeout", "1"), ("admin_users", "u_trust")]
        let metricsPort = try freePort()
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)")]
        // The readiness check's server must not count in testdb's figures.
        s.probe?.database = "bench"
        let px = try Pgswift.start(s)
        defer { px.stop() }
        XCTAssertFalse(px.log().contains("reserve_pool is not implemented"), px.log())

        // Three clients on each worker (the slot is in the BackendKeyData process id).
        var bySlot: [Int32: [WireClient]] = [:]
        for _ in 0..<60 {
            let c = try WireClient.connect(port: px.port, user: TxFixtures.role, database: "testdb")
            bySlot[c.backendProcessID >> 20, default: []].append(c)
            if (bySlot[0]?.count ?? 0) >= 3 && (bySlot[1]?.count ?? 0) >= 3 { break }
        }
        defer { for list in bySlot.values { for c in list { c.close() } } }
        guard let w0 = bySlot[0], let w1 = bySlot[1], w0.count >= 3, w1.count >= 3 else {
            return XCTFail("the 60 connections did not reach both workers: \(bySlot.mapValues(\.count))")
        }
        let burst = Array(w0.prefix(3)) + Array(w1.prefix(3))
        for list in bySlot.values { for c in list where !burst.contains(where: { $0 === c }) { c.close() } }
        bySlot = [0: Array(w0.prefix(3)), 1: Array(w1.prefix(3))]
        // Let both workers report the pool, so the burst starts from the even split.
        sleepSeconds(0.5)

        let sampler = BackendSampler(pg, user: TxFixtures.role, db: "testdb")
        defer { _ = sampler.stop() }
        let start = monotonicNow()
        for c in burst { try c.socket.send(WireEncode.query("select pg_sleep(5)")) }
        XCTAssertTrue(waitUntil(timeout: 4, poll: 0.02) { sampler.latest >= 3 },
                      "no reserve server within 4 s; log:\n\(px.log().suffix(3000))")
        let firstReserve = (sampler.firstTime(atLeast: 3) ?? monotonicNow()) - start
        print("reserve pool: first server above pool_size seen \(firstReserve) s after the burst")
        XCTAssertGreaterThanOrEqual(firstReserve, 1.0, "a reserve server before reserve_pool_timeout")
        XCTAssertTrue(waitUntil(timeout: 3, poll: 0.02) { sampler.latest == 4 },
                      "the whole reserve was not used: \(sampler.latest) backends; log:\n\(px.log().suffix(3000))")

        // The admin console and /metrics count the reserve servers like any other.
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { admin.close() }
        var pools = AdminAnswer(columns: [], rows: [])
        let serverColumns = ["sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login"]
        func pool(_ column: String) -> Int {
            guard let i = pools.columns.firstIndex(of: column), let d = pools.columns.firstIndex(of: "database"),
                  let u = pools.columns.firstIndex(of: "user") else { return -1 }
            return pools.rows.filter { $0[d] == "testdb" && $0[u] == TxFixtures.role }.reduce(0) { $0 + (Int($1[i] ?? "") ?? 0) }
        }
        XCTAssertTrue(try waitUntil(timeout: 5) {
            pools = try admin.show("SHOW POOLS")
            return serverColumns.map(pool).reduce(0, +) == 4
        }, "SHOW POOLS: \(pools.rows)")
        print("reserve pool: \(monotonicNow() - start) s: SHOW POOLS sv_active \(pool("sv_active")), sv_idle \(pool("sv_idle")), "
              + "cl_active \(pool("cl_active")), cl_waiting \(pool("cl_waiting"))")
        let servers = try admin.show("SHOW SERVERS")
        XCTAssertEqual(zip(servers.column("database"), servers.column("user")).filter { $0 == "testdb" && $1 == TxFixtures.role }.count,
                       4, "SHOW SERVERS: \(servers.rows)")
        let databases = try admin.show("SHOW DATABASES")
        XCTAssertEqual(databases.sum("current_connections", where: "name", is: "testdb"), 4, "\(databases.rows)")
        XCTAssertEqual(databases.sum("reserve_pool_size", where: "name", is: "testdb"), 3,
                       "SHOW DATABASES shows the database's value, as PgBouncer does")
        XCTAssertTrue(try waitUntil(timeout: 5) {
            let text = try Self.metricsBody(port: metricsPort)
            let open = ["active", "idle", "used", "testing", "login"].compactMap {
                Self.sample(text, "pgbouncer_pools_server_\($0)_connections", label: "database=\"testdb\"")
            }.reduce(0, +)
            return open == 4 && Self.sample(text, "pgbouncer_databases_reserve_pool", label: "name=\"testdb\"") == 3
        }, "/metrics did not count 4 servers")

        // Every query finishes; PostgreSQL never saw more than pool_size + reserve.
        for c in burst {
            while let m = try c.readMessage(timeout: 60), m.typeChar != "Z" {
                XCTAssertNotEqual(m.typeChar, "E", "a query failed")
            }
        }
        let elapsed = monotonicNow() - start
        let (maxSeen, samples) = sampler.stop()
        print("reserve pool: 6 queries of 5 s took \(elapsed) s, at most \(maxSeen) backends in \(samples) samples")
        XCTAssertGreaterThan(samples, 0)
        XCTAssertLessThanOrEqual(maxSeen, 4, "more than pool_size + reserve_pool_size; log:\n\(px.log().suffix(3000))")
        let taken = px.logLines(containing: "taking connection from reserve_pool")
        print("reserve pool: log:\n" + taken.joined(separator: "\n"))
        XCTAssertEqual(taken.count, 2, px.log())
        XCTAssertTrue(px.isRunning)
    }

    // MARK: /metrics

    private static func metricsBody(port: Int) throws -> String {
        let socket = try TestSocket(port: port, timeout: 10)
        defer { socket.close() }
        try socket.send(Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        let response = String(decoding: socket.readUntilClosed(timeout: 10).data, as: UTF8.self)
        guard response.hasPrefix("HTTP/1.1 200"), let split = response.range(of: "\r\n\r\n") else {
            throw E2EError("bad /metrics response: \(response.prefix(300))")
        }
        return String(response[split.upperBound...])
    }

    /// The sum of `name`'s samples whose labels contain `label`, nil when there is none.
    private static func sample(_ text: String, _ name: String, label: String) -> Int? {
        let values = text.split(separator: "\n").filter { $0.hasPrefix(name + "{") && $0.contains(label) }
            .compactMap { Double($0.split(separator: " ").last ?? "") }
        return values.isEmpty ? nil : Int(values.reduce(0, +))
    }
}

/// Counts a role's backends on a database every ~50 ms on its own thread (over the admin Unix
/// socket), keeping the most seen and when each count was first reached.
private final class BackendSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var stopping = false
    private var finished = false
    private var maxSeen = 0
    private var samples = 0
    private var current = 0
    private var reached: [Int: Double] = [:]

    init(_ pg: PostgresServer, user: String, db: String) {
        let t = Thread { [self] in
            while true {
                lock.lock()
                if stopping { finished = true; lock.unlock(); return }
                lock.unlock()
                if let n = try? pg.countBackends(user: user, db: db) {
                    let at = monotonicNow()
                    lock.lock()
                    current = n
                    samples += 1
                    maxSeen = max(maxSeen, n)
                    if reached[n] == nil { reached[n] = at }
                    lock.unlock()
                }
                sleepSeconds(0.03)
            }
        }
        t.name = "backend sampler"
        t.start()
    }

    var latest: Int {
        lock.lock(); defer { lock.unlock() }
        return current
    }

    /// When a sample first showed at least `n` backends.
    func firstTime(atLeast n: Int) -> Double? {
        lock.lock(); defer { lock.unlock() }
        return reached.filter { $0.key >= n }.map(\.value).min()
    }

    /// Stops the thread (waits for it) and returns the most backends seen and the number of samples.
    func stop() -> (Int, Int) {
        lock.lock(); stopping = true; lock.unlock()
        _ = waitUntil(timeout: 30, poll: 0.02) {
            lock.lock(); defer { lock.unlock() }
            return finished
        }
        lock.lock(); defer { lock.unlock() }
        return (maxSeen, samples)
    }
}
