// End to end: on `pgswift upgrade`, clients linked to a server move to the new workers together with
// that server (Worker/Control/PairHandoff.swift): session-mode sessions keep their backend, temp tables
// and settings; transactions go on on their backend instead of holding the old worker until COMMIT;
// and no descriptor is left behind in the new workers or the supervisor.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class PairHandoffTests: XCTestCase {
    /// Acceptance (issue 18): 100 session-mode clients, each with a temp table and session settings,
    /// plus pgbench in session mode through the upgrade: every worker is replaced within 15 s (not after
    /// drain_timeout, 60 s here), pgbench sees no error, and every session is still the one it was (same
    /// backend pid, its temp table, its settings). The new workers and the supervisor hold no descriptor
    /// more than the connections they serve.
    func testSessionClientsMoveWithTheirSessionsUnderLoad() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        var settings = PgswiftSettings(postgres: pg)
        settings.poolMode = "session"
        settings.workers = 2
        settings.defaultPoolSize = 110
        settings.settings = [("stats_users", "u_trust")]
        settings.pgswiftSettings = [("drain_timeout", "60")]
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "pairs")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        var sessions: [(client: WireClient, pid: String?)] = []
        defer { for s in sessions { s.client.close() } }
        for k in 0..<100 {
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            let rows = try c.query("create temp table mine (k int); insert into mine values (\(k)); "
                                   + "set myapp.x = 'v\(k)'; set application_name = 'session\(k)'; select pg_backend_pid()")
            sessions.append((c, rows.first?.first ?? nil))
        }
        let slots = Set(sessions.map { $0.client.backendProcessID >> 20 })
        XCTAssertEqual(slots.count, 2, "both workers hold sessions")

        let bench = try UpgradeFixtures.spawnPgbench(px, dir: dir, args: ["-c", "8", "-j", "2", "-T", "10"])
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg, minimumBackends: 4), "pgbench never got going: \(bench.stderrText())")
        let before = Set(px.workerPids())
        XCTAssertEqual(before.count, 2)
        let fdsBefore = DescriptorCensus(px: px, pg: pg)

        let upgradeStart = monotonicNow()
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertEqual(UpgradeFixtures.rows(cli.stdout).filter { $0.result == "ok" }.count, 2, cli.stdout)
        let replaced = waitUntil(timeout: max(0, 15 - (monotonicNow() - upgradeStart))) {
            let now = Set(px.workerPids())
            return now.count == 2 && now.isDisjoint(with: before)
        }
        let took = monotonicNow() - upgradeStart
        XCTAssertTrue(replaced, "old workers still there \(String(format: "%.1f", took)) s after the upgrade started: "
                      + "\(px.workerPids()) vs \(before)\nlog:\n\(px.log().suffix(4000))")

        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertFalse(r.stderr.contains("aborted"), r.abridged)
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)

        for (k, s) in sessions.enumerated() {
            let row = try s.client.query("select pg_backend_pid(), (select k from mine), current_setting('myapp.x'), "
                                         + "current_setting('application_name')").first
            XCTAssertEqual(row, [s.pid, String(k), "v\(k)", "session\(k)"], "session \(k)")
        }
        let pairs = Self.adoptedPairs(px)
        XCTAssertGreaterThanOrEqual(pairs, 100, "every session moved with its server\n\(px.log().suffix(3000))")
        print("session pairs: all workers replaced \(String(format: "%.2f", took)) s after `pgswift upgrade` started; "
              + "\(pairs) clients moved with their server; pgbench \(summary.transactions ?? 0) transactions")

        fdsBefore.expectSameAfterwards(file: #filePath, line: #line)
    }

    /// Acceptance (issue 18): transaction mode, clients holding transactions open for ~4 s (BEGIN, then
    /// pg_sleep in separate statements): the upgrade replaces every worker while the transactions are
    /// still open (the pairs move at their next ReadyForQuery instead of holding the old worker until
    /// COMMIT), no statement fails, and each transaction commits on the backend it began on. Beside
    /// them pgbench runs TPC-B with protocol-level prepared statements, so pairs also move inside
    /// transactions whose server holds statements under the old worker's names (closed and prepared
    /// again under the new worker's where they differ): no failure either.
    func testTransactionsMoveWithTheirServersInsteadOfWaitingForCommit() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        var settings = PgswiftSettings(postgres: pg)
        settings.poolMode = "transaction"
        settings.workers = 2
        settings.defaultPoolSize = 20
        settings.settings = [("stats_users", "u_trust")]
        settings.pgswiftSettings = [("drain_timeout", "60")]
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let count = 12, naps = 10
        var clients: [SharedClient] = []
        for _ in 0..<count {
            clients.append(SharedClient(try WireClient.connect(port: px.port, user: "u_trust", database: "testdb", timeout: 60)))
        }
        defer { for c in clients { c.client.close() } }
        XCTAssertEqual(Set(clients.map { $0.client.backendProcessID >> 20 }).count, 2, "both workers hold clients")
        let dir = try makeTempDirectory(prefix: "pairs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = UpgradeFixtures.benchTarget(px)
        // -j = -c: libpq's synchronous prepare must not wait behind the same thread's other clients (README).
        let bench = try ChildProcess.spawn([try PostgresTools.path("pgbench"), "-n", "-M", "prepared", "-h", "127.0.0.1",
                                            "-p", String(px.port), "-U", target.user, "-c", "4", "-j", "4", "-T", "8",
                                            target.database],
                                           environment: target.environment, stdoutPath: dir + "/pgbench.out",
                                           stderrPath: dir + "/pgbench.err")
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg, minimumBackends: 2), "pgbench never got going: \(bench.stderrText())")
        let before = Set(px.workerPids())
        let fdsBefore = DescriptorCensus(px: px, pg: pg)

        let results = TransactionResults()
        let group = DispatchGroup()
        for (i, c) in clients.enumerated() {
            // A thread each: the global queue runs only a few blocking blocks at once on 2 cores, so most
            // transactions would start after the first ones had ended.
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    guard try c.client.query("begin").isEmpty else { throw E2EError("begin returned rows") }
                    let first = try c.client.query("select txid_current()::text, pg_backend_pid()::text").first ?? []
                    results.began()
                    for _ in 0..<naps { _ = try c.client.query("select pg_sleep(0.4)") }
                    let last = try c.client.query("select txid_current()::text, pg_backend_pid()::text").first ?? []
                    results.committing(at: monotonicNow())
                    _ = try c.client.query("commit")
                    results.record(i, first: first, last: last)
                } catch {
                    results.fail(i, error)
                }
            }.start()
        }
        XCTAssertTrue(waitUntil(timeout: 30) { results.begun == count }, "the transactions never all began")
        let upgradeStart = monotonicNow()
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 },
                      "workers now \(px.workerPids()), before \(before)\n\(px.log().suffix(3000))")
        let replacedAt = monotonicNow()
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success, "the transactions never ended")

        XCTAssertEqual(results.failures, [], "\(px.log().suffix(3000))")
        XCTAssertEqual(results.rows.count, count)
        for (i, row) in results.rows.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(row.first.count, 2, "client \(i)")
            XCTAssertEqual(row.first, row.last, "client \(i): the same transaction on the same backend throughout")
        }
        let firstCommit = results.firstCommit
        XCTAssertLessThan(replacedAt, firstCommit,
                          "every old worker was gone before any transaction reached its COMMIT\n\(px.log().suffix(3000))")
        let pairs = Self.adoptedPairs(px)
        XCTAssertGreaterThanOrEqual(pairs, count, "every client moved with its server inside its transaction")
        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertFalse(r.stderr.contains("aborted"), r.abridged)
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        print("transaction pairs: workers replaced \(String(format: "%.2f", replacedAt - upgradeStart)) s after the "
              + "upgrade started, first COMMIT \(String(format: "%.2f", firstCommit - upgradeStart)) s after it; \(pairs) pairs "
              + "moved; pgbench -M prepared \(summary.transactions ?? 0) transactions")

        fdsBefore.expectSameAfterwards(file: #filePath, line: #line)
    }

    /// Clients adopted with their server, from the new workers' "predecessor done handing off" lines.
    static func adoptedPairs(_ px: Pgswift) -> Int {
        px.logLines(containing: "predecessor done handing off").compactMap { line -> Int? in
            guard let open = line.range(of: "clients adopted ("),
                  let n = line[open.upperBound...].split(separator: " ").first else { return nil }
            return Int(n)
        }.reduce(0, +)
    }
}

/// The descriptors of pgswift's processes, split into the connections they serve (TCP to PostgreSQL,
/// TCP clients of pgswift's port) and everything else (listeners, control and handoff sockets, epoll,
/// signalfd, the client-count file...). Taken before an upgrade, `expectSameAfterwards` waits until the
/// new workers each hold as many "everything else" descriptors as an old one did and the supervisor as
/// many as before, and until the new workers' connection sockets are exactly those SHOW SOCKETS lists: a
/// descriptor a move left behind (a socket whose record is gone, a handoff socket) would stay.
struct DescriptorCensus {
    struct Counts: Equatable, CustomStringConvertible {
        var servers = 0
        var clients = 0
        var other = 0
        var description: String { "servers \(servers), clients \(clients), other \(other)" }
    }

    let px: Pgswift
    let pg: PostgresServer
    let workers: [Counts]
    let supervisor: Counts

    init(px: Pgswift, pg: PostgresServer) {
        self.px = px
        self.pg = pg
        workers = px.workerPids().map { Self.count(pid: $0, pgPort: pg.port, pgswiftPort: px.port) }
        supervisor = Self.count(pid: px.supervisorPid, pgPort: pg.port, pgswiftPort: px.port)
        listings = px.workerPids().map { "worker \($0): \(Self.listing(pid: $0))" }.joined(separator: "\n")
            + "\nsupervisor: \(Self.listing(pid: px.supervisorPid))"
    }
    let listings: String

    static func count(pid: pid_t, pgPort: Int, pgswiftPort: Int) -> Counts {
        let tcp = ProcFS.tcpSockets()
        let servers = Set(tcp.filter { $0.remotePort == pgPort && $0.inode != 0 }.map(\.inode))
        let clients = Set(tcp.filter { $0.localPort == pgswiftPort && $0.remotePort != 0 && $0.inode != 0 }.map(\.inode))
        var c = Counts()
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? [] {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? ""
            if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) {
                if servers.contains(inode) { c.servers += 1; continue }
                if clients.contains(inode) { c.clients += 1; continue }
            }
            c.other += 1
        }
        return c
    }

    /// What every process holds besides connections, listed for a failure message.
    static func listing(pid: pid_t) -> String {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).sorted().map { fd in
            "\(fd) -> \((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? "?")"
        }.joined(separator: ", ")
    }

    func expectSameAfterwards(file: StaticString, line: UInt) {
        let otherBefore = Set(workers.map(\.other))
        XCTAssertEqual(otherBefore.count, 1, "the old workers held the same descriptors besides connections: \(workers)",
                       file: file, line: line)
        var now: [Counts] = []
        var sup = Counts()
        let settled = waitUntil(timeout: 20, poll: 0.1) {
            now = px.workerPids().map { Self.count(pid: $0, pgPort: pg.port, pgswiftPort: px.port) }
            sup = Self.count(pid: px.supervisorPid, pgPort: pg.port, pgswiftPort: px.port)
            return now.count == workers.count && now.allSatisfy { otherBefore.contains($0.other) } && sup.other == supervisor.other
        }
        XCTAssertTrue(settled, "descriptors besides connections: old workers \(workers), new \(now); supervisor \(supervisor) "
                      + "then \(sup)\n" + px.workerPids().map { "worker \($0): \(Self.listing(pid: $0))" }.joined(separator: "\n")
                      + "\nsupervisor: \(Self.listing(pid: px.supervisorPid))\nbefore:\n\(listings)", file: file, line: line)
        // And every connection socket the new workers hold belongs to a connection their tables know:
        // SHOW SOCKETS (every worker's clients, the console included, and servers) lists as many.
        guard let admin = try? WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer") else {
            return XCTFail("no admin console", file: file, line: line)
        }
        defer { admin.close() }
        var listed = -1, held = -1
        let known = waitUntil(timeout: 20, poll: 0.2) {
            listed = (try? admin.show("SHOW SOCKETS").rows.count) ?? -1
            held = px.workerPids().map { Self.count(pid: $0, pgPort: pg.port, pgswiftPort: px.port) }
                .reduce(0) { $0 + $1.servers + $1.clients }
            return listed == held
        }
        XCTAssertTrue(known, "the new workers hold \(held) connection sockets, SHOW SOCKETS lists \(listed)", file: file, line: line)
        print("descriptors: old workers \(workers), new \(now); supervisor \(supervisor) then \(sup); \(held) connection sockets, all listed")
    }
}

/// A client used by one background thread while the test thread waits.
private final class SharedClient: @unchecked Sendable {
    let client: WireClient
    init(_ client: WireClient) { self.client = client }
}

/// What the transaction threads saw, behind a lock.
private final class TransactionResults: @unchecked Sendable {
    private let lock = NSLock()
    private var begunCount = 0
    private var commits: [Double] = []
    private var seen: [Int: (first: [String?], last: [String?])] = [:]
    private var failed: [String] = []

    func began() { lock.lock(); begunCount += 1; lock.unlock() }
    func committing(at t: Double) { lock.lock(); commits.append(t); lock.unlock() }
    func record(_ i: Int, first: [String?], last: [String?]) { lock.lock(); seen[i] = (first, last); lock.unlock() }
    func fail(_ i: Int, _ e: Error) { lock.lock(); failed.append("client \(i): \(e)"); lock.unlock() }

    var begun: Int { lock.lock(); defer { lock.unlock() }; return begunCount }
    var rows: [Int: (first: [String?], last: [String?])] { lock.lock(); defer { lock.unlock() }; return seen }
    var failures: [String] { lock.lock(); defer { lock.unlock() }; return failed }
    var firstCommit: Double { lock.lock(); defer { lock.unlock() }; return commits.min() ?? .infinity }
}
