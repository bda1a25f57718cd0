// End to end: the supervisor starts its workers, replaces a killed one, and shuts down cleanly.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class SupervisorE2ETests: XCTestCase {
    func testEachWorkerStartIsLoggedWithItsPid() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(PgswiftSettings(postgres: pg))
        defer { px.stop() }
        let pids = px.workerPids()
        XCTAssertEqual(pids.count, 2)
        for pid in pids {
            XCTAssertTrue(waitUntil(timeout: 5) { px.log().contains("started (pid \(pid))") },
                          "no 'worker N started (pid \(pid))' line; log:\n\(px.log())")
        }
        for slot in 0..<2 {
            XCTAssertFalse(px.logLines(containing: "supervisor", "worker \(slot) started (pid ").isEmpty, px.log())
        }
    }

    /// kill -9 of one worker: the supervisor starts a replacement quickly, new clients are served,
    /// and sessions on the other worker carry on untouched.
    ///
    /// Which worker serves a session is read from /proc: the worker whose fd table holds the
    /// accepted socket whose peer port is the session's local port (ProcFS.owner).
    func testKilledWorkerIsReplacedAndOtherWorkersSessionsSurvive() throws {
        let pg = try PostgresServer.shared()
        var settings = PgswiftSettings(postgres: pg)
        settings.defaultPoolSize = 64  // even if most sessions land on one worker, none waits for a server
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let workers = px.workerPids()
        XCTAssertEqual(workers.count, 2)

        // Open sessions until both workers hold at least one (SO_REUSEPORT spreads them by hash).
        var sessions: [(client: WireClient, worker: pid_t)] = []
        for i in 0..<60 {
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            XCTAssertEqual(try c.query("select \(i)").first?.first ?? nil, String(i))
            let owner = ProcFS.owner(ofConnectionFrom: c.socket.localPort, to: px.port, among: workers)
            let worker = try XCTUnwrap(owner, "cannot tell which worker serves local port \(c.socket.localPort)")
            sessions.append((c, worker))
            let perWorker = Set(sessions.map(\.worker))
            if sessions.count >= 10 && perWorker.count == 2 { break }
        }
        XCTAssertEqual(Set(sessions.map(\.worker)).count, 2, "all 60 sessions landed on one worker")
        let victim = workers[0]
        let survivors = sessions.filter { $0.worker != victim }

        let killedAt = monotonicNow()
        XCTAssertEqual(kill(victim, SIGKILL), 0)
        var replacement: pid_t?
        let replaced = waitUntil(timeout: 3, poll: 0.01) {
            let now = px.workerPids()
            guard now.count == 2, !now.contains(victim) else { return false }
            replacement = now.first { !workers.contains($0) }
            return replacement != nil
        }
        let elapsed = monotonicNow() - killedAt
        print("worker \(victim) killed; replacement \(replacement.map(String.init) ?? "none") after " +
              String(format: "%.3f", elapsed) + " s")
        XCTAssertTrue(replaced, "no replacement worker within 3 s; workers now \(px.workerPids()); log:\n\(px.log())")
        if let replacement {
            XCTAssertTrue(waitUntil(timeout: 5) { px.log().contains("started (pid \(replacement))") }, px.log())
        }

        // Sessions on the surviving worker keep working, several queries each.
        for (n, s) in survivors.enumerated() {
            for q in 0..<3 {
                XCTAssertEqual(try s.client.query("select \(n * 10 + q)").first?.first ?? nil, String(n * 10 + q))
            }
        }

        // New clients are served (by whichever worker the kernel picks).
        for _ in 0..<10 {
            let r = try Psql.run(px.target(user: "u_trust", database: "testdb"), "select 1")
            XCTAssertTrue(r.succeeded, "\(r)\nlog:\n\(px.log().suffix(3000))")
        }
        sessions.forEach { $0.client.close() }
        XCTAssertTrue(px.isRunning)
    }

    func testSigtermStopsSupervisorAndWorkers() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(PgswiftSettings(postgres: pg))
        defer { px.stop() }
        let workers = px.workerPids()
        XCTAssertEqual(workers.count, 2)

        px.signal(SIGTERM)
        let status = px.waitForExit(timeout: 30)
        XCTAssertEqual(status, 0, "supervisor exit status after SIGTERM with no clients; log:\n\(px.log())")
        XCTAssertTrue(waitUntil(timeout: 10) { !workers.contains(where: ProcFS.isAlive) },
                      "workers outlived the supervisor: \(workers.filter(ProcFS.isAlive))")
        XCTAssertFalse(TestSocket.canConnect(port: px.port), "port still accepts after shutdown")
    }
}
