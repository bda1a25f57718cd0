// End to end: read/write routing (issue 20) over a real primary and two streaming standbys made with
// pg_basebackup -R (ReplicaSet): reads to the standbys, spread; writes, locking reads and nextval to
// the primary; BEGIN READ ONLY and hints; read-after-write; a lagging standby gets no reads; with the
// standbys stopped reads fall back to the primary; SHOW ROUTING and /metrics count it all.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class RoutingE2ETests: XCTestCase {
    /// One primary and two standbys for the whole class (standby 2 applies WAL 500 ms late), started on
    /// first use; `tearDown` of the class stops them.
    private static let lock = NSLock()
    nonisolated(unsafe) private static var shared: ReplicaSet?

    private static func cluster() throws -> ReplicaSet {
        lock.lock()
        defer { lock.unlock() }
        if let s = shared { return s }
        let s = try ReplicaSet(standbys: 2, standbySettings: [[], ["recovery_min_apply_delay=500ms"]])
        do {
            try s.primary.adminQuery(["create table public.rt(id bigserial primary key, v int)",
                                      "grant all on public.rt to public", "grant all on sequence public.rt_id_seq to public",
                                      "create sequence public.rs", "grant all on sequence public.rs to public"],
                                     database: "testdb")
        } catch {
            s.stop()
            throw error
        }
        XCTAssertTrue(s.waitCaughtUp())
        shared = s
        return s
    }

    override class func tearDown() {
        lock.lock()
        shared?.stop()
        shared = nil
        lock.unlock()
        super.tearDown()
    }

    private func settings(_ rs: ReplicaSet, _ options: String, workers: Int = 2, metricsPort: Int? = nil) -> PgswiftSettings {
        var s = HealthE2E.settings(rs.primary, workers: workers, poolSize: 6)
        if let m = metricsPort { s.pgswiftSettings.append(("metrics_listen", "127.0.0.1:\(m)")) }
        s.databases = [("testdb", "\(rs.hostsAndPorts) dbname=testdb routing=read-write-split \(options)")]
        s.pgswiftSettings = s.pgswiftSettings.filter { $0.key != "fail_fast" } + [("health_check_user", "u_trust")]
        return s
    }

    private func client(_ px: Pgswift) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "testdb", password: PostgresServer.passwords["u_trust"])
    }

    /// SHOW ROUTING rows keyed by port (of `database` only, when given).
    private func routing(_ px: Pgswift, database: String? = nil) throws -> [Int: [String: String]] {
        let a = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { a.close() }
        let cols = ["database", "host", "port", "role", "replay_lag_ms", "reads", "writes", "fallbacks", "retries"]
        var out: [Int: [String: String]] = [:]
        for row in try a.query("SHOW ROUTING") {
            let d = Dictionary(uniqueKeysWithValues: zip(cols, row.map { $0 ?? "" }))
            if let database, d["database"] != database { continue }
            out[Int(d["port"] ?? "") ?? 0] = d
        }
        return out
    }

    /// Waits until SHOW ROUTING gives every server its role.
    private func waitRoles(_ px: Pgswift, _ rs: ReplicaSet) {
        let ok = waitUntil(timeout: 30) {
            guard let r = try? self.routing(px) else { return false }
            return r[rs.primary.port]?["role"] == "primary"
                && rs.standbys.allSatisfy { r[$0.port]?["role"]?.hasPrefix("standby") == true }
        }
        XCTAssertTrue(ok, "roles not learnt: \((try? routing(px)) ?? [:])")
    }

    private func port(_ c: WireClient, _ sql: String) throws -> Int {
        Int(try c.query(sql).last?.last.flatMap { $0 } ?? "") ?? -1
    }

    /// Acceptance 1: mixed autocommit reads and writes through one endpoint: every write on the primary,
    /// reads spread over both standbys; locking reads, nextval, hints and BEGIN READ ONLY where they belong.
    func testReadsGoToStandbysAndWritesToThePrimary() throws {
        let rs = try Self.cluster()
        let metricsPort = try freePort()
        let px = try Pgswift.start(settings(rs, "read_after_write=none max_standby_lag=600000", metricsPort: metricsPort))
        defer { px.stop() }
        waitRoles(px, rs)
        let standbyPorts = Set(rs.standbys.map { $0.port })
        let p = rs.primary.port
        var readsOn: [Int: Int] = [:]
        var writes = 0
        let clients = try (0..<4).map { _ in try client(px) }
        defer { clients.forEach { $0.close() } }
        for i in 0..<1000 {
            let c = clients[i % clients.count]
            if i % 3 == 0 {
                XCTAssertEqual(try port(c, "insert into rt(v) values (\(i)) returning inet_server_port()"), p, "write \(i)")
                writes += 1
            } else {
                let at = try port(c, "select inet_server_port()")
                XCTAssertTrue(standbyPorts.contains(at), "read \(i) ran on \(at)")
                readsOn[at, default: 0] += 1
            }
        }
        XCTAssertEqual(readsOn.count, 2, "reads not spread over both standbys: \(readsOn)")
        let c = clients[0]
        XCTAssertEqual(try port(c, "select inet_server_port() from rt for update limit 1"), p, "FOR UPDATE")
        XCTAssertEqual(try port(c, "select nextval('rs'), inet_server_port()"), p, "nextval")
        XCTAssertEqual(try port(c, "/* pgswift:primary */ select inet_server_port()"), p, "hint primary")
        XCTAssertTrue(standbyPorts.contains(try port(c, "/* pgswift:standby */ select inet_server_port()")), "hint standby")
        // The 25006 safety net: a write sent to a standby by a wrong hint is re-run on the primary.
        XCTAssertEqual(try port(c, "/* pgswift:standby */ insert into rt(v) values (-1) returning inet_server_port()"), p,
                       "a write a standby refused, re-run on the primary")
        XCTAssertEqual(try port(c, "with x as (insert into rt(v) values (0) returning id) select inet_server_port() from x"),
                       p, "data-modifying WITH")
        _ = try c.query("BEGIN READ ONLY")
        XCTAssertTrue(standbyPorts.contains(try port(c, "select inet_server_port()")), "BEGIN READ ONLY")
        XCTAssertEqual(try c.query("show transaction_read_only").first?.first, "on")
        _ = try c.query("COMMIT")
        _ = try c.query("BEGIN")
        XCTAssertEqual(try port(c, "select inet_server_port()"), p, "a read inside BEGIN goes with the transaction")
        _ = try c.query("COMMIT")

        // SHOW ROUTING counts: writes only on the primary, reads on the standbys.
        XCTAssertTrue(waitUntil(timeout: 10) {
            guard let r = try? self.routing(px) else { return false }
            return Int(r[p]?["writes"] ?? "") ?? 0 >= writes
        }, "\((try? routing(px)) ?? [:])")
        let r = try routing(px)
        print("routing: \(writes) writes on the primary, reads per standby port \(readsOn); SHOW ROUTING \(r)")
        XCTAssertGreaterThanOrEqual(Int(r[p]?["retries"] ?? "") ?? 0, 1, "\(r)")
        for s in rs.standbys {
            XCTAssertEqual(r[s.port]?["writes"], "0", "\(r)")
            XCTAssertGreaterThan(Int(r[s.port]?["reads"] ?? "") ?? 0, 100, "\(r)")
        }
        // The same counters in /metrics.
        let metrics = try httpGet(port: metricsPort, path: "/metrics")
        XCTAssertTrue(metrics.contains("pgswift_routing_reads_total{database=\"testdb\",host=\"127.0.0.1\",port=\"\(rs.standbys[0].port)\"}"),
                      metrics)
    }

    /// Read-after-write (lsn, the default): a client that inserts a row and reads it back at once always
    /// sees it, although one standby applies WAL 500 ms late; reads reach the standbys again once they
    /// have replayed the client's last commit.
    func testReadAfterWriteSeesOwnWrites() throws {
        let rs = try Self.cluster()
        let px = try Pgswift.start(settings(rs, "max_standby_lag=600000"))
        defer { px.stop() }
        waitRoles(px, rs)
        let c = try client(px)
        defer { c.close() }
        for i in 0..<1000 {
            let id = try c.query("insert into rt(v) values (\(i)) returning id").first?.first.flatMap { $0 } ?? ""
            let seen = try c.query("select count(*) from rt where id = \(id)").first?.first.flatMap { $0 }
            XCTAssertEqual(seen, "1", "row \(id) not visible right after its insert (round \(i))")
        }
        let standbyPorts = Set(rs.standbys.map { $0.port })
        XCTAssertTrue(waitUntil(timeout: 20) { standbyPorts.contains((try? self.port(c, "select inet_server_port()")) ?? 0) },
                      "no read on a standby once they caught up")
        print("read after write: SHOW ROUTING \(try routing(px))")
    }

    /// A standby whose replay lag exceeds max_standby_lag gets no reads while it lags.
    func testLaggingStandbyGetsNoReads() throws {
        let rs = try Self.cluster()
        let px = try Pgswift.start(settings(rs, "read_after_write=none max_standby_lag=200"))
        defer { px.stop() }
        waitRoles(px, rs)
        let delayed = rs.standbys[1].port
        // A steady trickle of writes keeps the delayed standby 500 ms behind.
        let stop = StopFlag()
        let pxPort = px.port
        let writer = Thread {
            guard let w = try? WireClient.connect(port: pxPort, user: "u_trust", database: "testdb",
                                                  password: PostgresServer.passwords["u_trust"]) else { return }
            defer { w.close() }
            while !stop.isSet {
                _ = try? w.query("insert into rt(v) values (1)")
                usleep(20_000)
            }
        }
        writer.start()
        defer { stop.set() }
        XCTAssertTrue(waitUntil(timeout: 20) { (try? self.routing(px))?[delayed]?["role"] == "standby (lagging)" },
                      "\((try? routing(px)) ?? [:])")
        let c = try client(px)
        defer { c.close() }
        var onDelayed = 0
        for _ in 0..<100 where try port(c, "select inet_server_port()") == delayed { onDelayed += 1 }
        // A check in flight may still see it caught up for a moment: allow a few.
        XCTAssertLessThan(onDelayed, 5, "a lagging standby took reads")
    }

    /// With both standbys stopped, reads fall back to the primary with no client error, counted; when
    /// they are back, reads return to them.
    func testReadsFallBackToThePrimaryWhenStandbysStop() throws {
        let rs = try Self.cluster()
        let px = try Pgswift.start(settings(rs, "read_after_write=none max_standby_lag=600000"))
        defer { px.stop() }
        waitRoles(px, rs)
        for s in rs.standbys { s.stopServer() }
        defer { for s in rs.standbys where !s.isRunning { try? s.startServer() } }
        XCTAssertTrue(waitUntil(timeout: 20) {
            guard let r = try? self.routing(px) else { return false }
            return rs.standbys.allSatisfy { r[$0.port]?["role"] == "down" }
        })
        let c = try client(px)
        defer { c.close() }
        for _ in 0..<50 { XCTAssertEqual(try port(c, "select inet_server_port()"), rs.primary.port) }
        let fallbacks = Int(try routing(px)[rs.primary.port]?["fallbacks"] ?? "") ?? 0
        print("fallback: \(fallbacks) reads fell back to the primary")
        XCTAssertGreaterThanOrEqual(fallbacks, 50)
        for s in rs.standbys { try s.startServer() }
        waitRoles(px, rs)
        let standbyPorts = Set(rs.standbys.map { $0.port })
        XCTAssertTrue(waitUntil(timeout: 20) { standbyPorts.contains((try? self.port(c, "select inet_server_port()")) ?? 0) })
    }
}

extension RoutingE2ETests {
    /// psycopg 3 and asyncpg (their own checks, named statements included) and pgbench `-S -M
    /// extended` and `-M prepared` work unchanged through the routed endpoint, and the standbys get reads.
    func testDriversAndPgbenchThroughTheRoutedEndpoint() throws {
        let rs = try Self.cluster()
        try TxFixtures.ensureRole(rs.primary)
        try rs.primary.ensurePgbenchData()
        XCTAssertTrue(rs.waitCaughtUp())
        var s = settings(rs, "max_standby_lag=600000")
        s.databases.append(("bench", "\(rs.hostsAndPorts) dbname=bench routing=read-write-split max_standby_lag=600000"))
        s.users.append((TxFixtures.role, TxFixtures.password))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        waitRoles(px, rs)
        let python = try DriverTests.python()
        let dsn = "postgresql://\(TxFixtures.role):\(TxFixtures.password)@127.0.0.1:\(px.port)/testdb?sslmode=disable"
        for (script, mode) in [("psycopg_check.py", "basic"), ("psycopg_check.py", "prepared"), ("asyncpg_check.py", "basic"),
                               ("asyncpg_check.py", "prepared")] {
            let r = try runCommand([python, DriverTests.driversDirectory + "/" + script, mode, dsn],
                                   environment: childEnvironment(["PYTHONDONTWRITEBYTECODE": "1"]), timeout: 300)
            XCTAssertEqual(r.status, 0, "\(script) \(mode): \(r)\n\(px.log().suffix(3000))")
            XCTAssertTrue(r.stdout.hasPrefix("OK "), "\(script) \(mode): \(r)")
        }
        let bench = px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        for protocolMode in ["extended", "prepared"] {
            let (r, summary) = try Pgbench.run(bench, ["-S", "-M", protocolMode, "-c", "4", "-j", "2", "-T", "3"])
            XCTAssertTrue(r.succeeded, "pgbench -M \(protocolMode): \(r)")
            XCTAssertEqual(summary.failedTransactions ?? 0, 0)
            XCTAssertGreaterThan(summary.transactions ?? 0, 100)
        }
        let a = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        defer { a.close() }
        let rows = try a.query("SHOW ROUTING").filter { $0[0] == "bench" }
        let standbyReads = rows.filter { ($0[3] ?? "").hasPrefix("standby") }.map { Int($0[5] ?? "") ?? 0 }
        XCTAssertEqual(standbyReads.count, 2, "\(rows)")
        XCTAssertTrue(standbyReads.allSatisfy { $0 > 50 }, "pgbench -S reads did not reach both standbys: \(rows)")
    }
}

/// A flag one thread sets and another polls.
private final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}

/// Acceptance: a switchover under load (the primary stops, a standby is promoted, the other re-pointed):
/// writes resume on the new primary within 5 s of the promotion, no write ever succeeds anywhere but on
/// the host that was primary at the time, and reads go on. Its own cluster, which it breaks: run by
/// `make test-cluster`, not `make test`.
final class RoutingSwitchoverTests: XCTestCase {
    /// One statement's outcome: when, and the server port it ran on (nil: it failed).
    private struct Outcome { var at: Double; var port: Int? }

    private final class Log: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [Outcome] = []
        private var stopped = false
        func add(_ o: Outcome) { lock.lock(); items.append(o); lock.unlock() }
        var all: [Outcome] { lock.lock(); defer { lock.unlock() }; return items }
        var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
        func stop() { lock.lock(); stopped = true; lock.unlock() }
    }

    private static func now() -> Double { ProcessInfo.processInfo.systemUptime }

    /// A client that runs `sql` (whose last column is inet_server_port()) in a loop, reconnecting after errors.
    private static func loop(port: Int, sql: String, into log: Log) -> Thread {
        Thread {
            var c: WireClient? = nil
            while !log.isStopped {
                do {
                    if c == nil {
                        c = try WireClient.connect(port: port, user: "u_trust", database: "testdb",
                                                   password: PostgresServer.passwords["u_trust"], timeout: 10)
                    }
                    let rows = try c!.query(sql)
                    log.add(Outcome(at: now(), port: Int(rows.last?.last.flatMap { $0 } ?? "")))
                } catch {
                    log.add(Outcome(at: now(), port: nil))
                    c?.close()
                    c = nil
                    usleep(50_000)
                }
                usleep(10_000)
            }
            c?.close()
        }
    }

    func testSwitchoverUnderLoad() throws {
        let rs = try ReplicaSet(standbys: 2)
        defer { rs.stop() }
        try rs.primary.adminQuery(["create table public.rt(id bigserial primary key, v int)",
                                   "grant all on public.rt to public", "grant all on sequence public.rt_id_seq to public"],
                                  database: "testdb")
        XCTAssertTrue(rs.waitCaughtUp())
        var s = HealthE2E.settings(rs.primary, workers: 2, poolSize: 6)
        s.databases = [("testdb", "\(rs.hostsAndPorts) dbname=testdb routing=read-write-split max_standby_lag=600000")]
        s.pgswiftSettings = s.pgswiftSettings.filter { $0.key != "fail_fast" } + [("health_check_user", "u_trust")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let old = rs.primary.port, promoted = rs.standbys[0], other = rs.standbys[1]
        let writes = Log(), reads = Log()
        let writer = Self.loop(port: px.port, sql: "insert into rt(v) values (1) returning inet_server_port()", into: writes)
        let reader = Self.loop(port: px.port, sql: "select inet_server_port()", into: reads)
        writer.start()
        reader.start()
        defer { writes.stop(); reads.stop() }
        XCTAssertTrue(waitUntil(timeout: 20) { writes.all.contains { $0.port == old } && reads.all.contains { $0.port != nil } })

        rs.primary.stopServer()
        try promoted.adminQuery("select pg_promote()")
        let promotedAt = Self.now()
        try other.adminQuery(["alter system set primary_conninfo = 'host=\(promoted.socketDir) port=\(promoted.port) user=postgres'",
                              "select pg_reload_conf()"])
        XCTAssertTrue(waitUntil(timeout: 30) { writes.all.contains { $0.port == promoted.port } }, "writes never resumed")
        let firstWrite = writes.all.first { $0.port == promoted.port }!.at
        XCTAssertLessThan(firstWrite - promotedAt, 5, "writes resumed \(firstWrite - promotedAt) s after the promotion")
        // Reads go on after the promotion.
        let readsBefore = reads.all.filter { $0.port != nil }.count
        XCTAssertTrue(waitUntil(timeout: 20) { reads.all.filter { $0.port != nil }.count > readsBefore + 20 })
        writes.stop()
        reads.stop()
        let w = writes.all
        XCTAssertFalse(w.contains { $0.port == other.port }, "a write succeeded on a standby")
        XCTAssertFalse(w.contains { $0.port == promoted.port && $0.at < promotedAt - 0.001 }, "a write on the standby before its promotion")
        XCTAssertFalse(w.contains { $0.port == old && $0.at > promotedAt }, "a write on the stopped primary")
        print("switchover: writes resumed \(firstWrite - promotedAt) s after pg_promote; \(w.filter { $0.port == nil }.count) "
              + "failed writes during it; \(reads.all.filter { $0.port == nil }.count) failed reads")
    }
}

extension RoutingE2ETests {
    /// Stops both standbys and waits until SHOW ROUTING says they are down; the caller restarts them
    /// (the deferred start here covers a failure).
    private func stopStandbys(_ px: Pgswift, _ rs: ReplicaSet) {
        for s in rs.standbys { s.stopServer() }
        XCTAssertTrue(waitUntil(timeout: 20) {
            guard let r = try? self.routing(px) else { return false }
            return rs.standbys.allSatisfy { r[$0.port]?["role"] == "down" }
        }, "\((try? routing(px)) ?? [:])")
    }

    /// A one-column DataRow's text.
    private func firstColumn(_ body: [UInt8]) -> String? {
        guard body.count >= 6 else { return nil }
        let n = Int(body[2]) << 24 | Int(body[3]) << 16 | Int(body[4]) << 8 | Int(body[5])
        guard n >= 0, 6 + n <= body.count else { return nil }
        return String(decoding: body[6..<(6 + n)], as: UTF8.self)
    }

    /// standby_reads_fallback=error: with both standbys stopped a read gets 57P03 at once, the client
    /// stays connected, its writes and primary-hinted reads run on the primary; once the standbys are
    /// back, reads go to them again.
    func testStandbyReadsFallbackError() throws {
        let rs = try Self.cluster()
        // Given as the [pgswift] default, which SHOW CONFIG shows.
        var s = settings(rs, "read_after_write=none max_standby_lag=600000")
        s.pgswiftSettings.append(("standby_reads_fallback", "error"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        waitRoles(px, rs)
        let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
        let config = try admin.query("SHOW CONFIG")
        admin.close()
        XCTAssertEqual(config.first { $0.first == "standby_reads_fallback" }?.dropFirst().map { $0 ?? "" }, ["error", "primary", "yes"])
        XCTAssertEqual(config.first { $0.first == "max_standby_lag" }?[1], "5000")
        defer { for s in rs.standbys where !s.isRunning { try? s.startServer() } }
        stopStandbys(px, rs)
        let c = try client(px)
        defer { c.close() }
        for i in 0..<3 {
            XCTAssertThrowsError(try c.query("select inet_server_port()"), "read \(i)") { e in
                let f = (e as? WireServerError)?.fields
                XCTAssertEqual(f?.sqlstate, "57P03", "\(e)")
                XCTAssertEqual(f?.severity, "ERROR", "\(e)")
                print("standby_reads_fallback=error: \(e)")
            }
            XCTAssertEqual(try port(c, "insert into rt(v) values (\(i)) returning inet_server_port()"), rs.primary.port,
                           "a write on the same connection after the refused read")
        }
        XCTAssertEqual(try port(c, "/* pgswift:primary */ select inet_server_port()"), rs.primary.port)
        XCTAssertEqual(try routing(px)[rs.primary.port]?["fallbacks"], "0", "nothing fell back to the primary")
        for s in rs.standbys { try s.startServer() }
        waitRoles(px, rs)
        let standbyPorts = Set(rs.standbys.map { $0.port })
        XCTAssertTrue(waitUntil(timeout: 20) { standbyPorts.contains((try? self.port(c, "select inet_server_port()")) ?? 0) })
    }

    /// standby_reads_fallback=wait: with both standbys stopped a read waits (writes go on meanwhile) and
    /// runs on a standby once they are back; a read on an entry with query_wait_timeout=2 gets
    /// PgBouncer's query_wait_timeout error instead.
    func testStandbyReadsFallbackWait() throws {
        let rs = try Self.cluster()
        var s = settings(rs, "read_after_write=none max_standby_lag=600000 standby_reads_fallback=wait query_wait_timeout=90")
        s.databases.append(("shortwait", "\(rs.hostsAndPorts) dbname=testdb routing=read-write-split read_after_write=none "
                            + "max_standby_lag=600000 standby_reads_fallback=wait query_wait_timeout=2"))
        let px = try Pgswift.start(s)
        defer { px.stop() }
        waitRoles(px, rs)
        defer { for s in rs.standbys where !s.isRunning { try? s.startServer() } }
        stopStandbys(px, rs)
        // The short wait ends with PgBouncer's error, and the client is closed.
        let short = try WireClient.connect(port: px.port, user: "u_trust", database: "shortwait",
                                           password: PostgresServer.passwords["u_trust"])
        defer { short.close() }
        try short.socket.send(WireEncode.query("select inet_server_port()"))
        var shortEnd: WireMessage? = nil
        while let m = try short.readMessage(timeout: 60) {
            if m.typeChar == "E" { shortEnd = m }
        }
        let f = WireErrorFields(body: try XCTUnwrap(shortEnd, "no error before the close").body)
        XCTAssertEqual(f.message, "query_wait_timeout")
        XCTAssertEqual(f.sqlstate, "08P01")
        // The long wait: the read is sent now and answered once a standby is back.
        let reader = try client(px)
        defer { reader.close() }
        try reader.socket.send(WireEncode.query("select inet_server_port()"))
        let w = try client(px)
        defer { w.close() }
        for i in 0..<5 {
            XCTAssertEqual(try port(w, "insert into rt(v) values (\(i)) returning inet_server_port()"), rs.primary.port,
                           "writes go on while a read waits")
        }
        for s in rs.standbys { try s.startServer() }
        var row: String? = nil
        var error: WireErrorFields? = nil
        while let m = try reader.readMessage(timeout: 90) {
            if m.typeChar == "D" { row = firstColumn(m.body) }
            if m.typeChar == "E" { error = WireErrorFields(body: m.body) }
            if m.typeChar == "Z" { break }
        }
        XCTAssertNil(error, "\(String(describing: error))")
        let standbyPorts = Set(rs.standbys.map { $0.port })
        XCTAssertTrue(standbyPorts.contains(Int(row ?? "") ?? 0), "the waiting read ran on \(row ?? "nothing")")
        let r = try routing(px, database: "testdb")
        print("standby_reads_fallback=wait: the waiting read ran on port \(row ?? "?"); SHOW ROUTING \(r)")
        XCTAssertEqual(r[rs.primary.port]?["fallbacks"], "0", "\(r)")
        XCTAssertGreaterThanOrEqual(Int(r[rs.primary.port]?["writes"] ?? "") ?? 0, 5, "\(r)")
    }
}
