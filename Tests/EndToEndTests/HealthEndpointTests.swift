// End to end: GET /health for load balancers: 503 while draining (stop, upgrade) or with no backend up, else 200.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class HealthEndpointTests: XCTestCase {
    private func settings(_ pg: PostgresServer, metricsPort: Int) -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.settings = [("admin_users", "u_trust"), ("server_check_delay", "0.5")]
        s.pgswiftSettings = [("metrics_listen", "127.0.0.1:\(metricsPort)"), ("health_check_backoff_initial", "0.5"),
                             ("health_check_backoff_max", "1"), ("health_check_timeout", "2")]
        return s
    }

    /// Status and body of GET /health; nil when nothing answers (listener closed, or reopening).
    private func health(_ port: Int) -> (status: Int, body: String)? {
        guard let text = try? httpGet(port: port, path: "/health", timeout: 5),
              let head = text.split(separator: "\r\n", maxSplits: 1).first,
              let status = Int(head.split(separator: " ").dropFirst().first ?? "") else { return nil }
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }

    /// Polls /health until it answers `status` (and a body containing `body`); the last answer seen.
    private func waitForHealth(_ port: Int, _ status: Int, body: String = "", timeout: Double) -> (ok: Bool, last: String) {
        var last = "no answer"
        let ok = waitUntil(timeout: timeout, poll: 0.05) {
            guard let h = health(port) else { return false }
            last = "\(h.status) \(h.body)"
            return h.status == status && h.body.contains(body)
        }
        return (ok, last)
    }

    /// A session client is connected (and works) while the stop drains: /health is 503 from the moment
    /// the stop begins until the service exits, so a balancer sends no new client to a host on its way out.
    private func assertStopDrainsWithHealthUnavailable(_ stop: (Pgswift) throws -> Void) throws {
        let pg = try PostgresServer.shared()
        let metricsPort = try freePort()
        let px = try Pgswift.start(settings(pg, metricsPort: metricsPort))
        defer { px.stop() }
        let up = waitForHealth(metricsPort, 200, body: "ok", timeout: 20)
        XCTAssertTrue(up.ok, "never healthy: \(up.last)\n\(px.log())")

        let client = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        XCTAssertEqual(try client.query("select 1"), [["1"]])
        try stop(px)
        let draining = waitForHealth(metricsPort, 503, body: "unavailable: shutting down", timeout: 20)
        XCTAssertTrue(draining.ok, "not 503 while draining: \(draining.last)\n\(px.log())")
        XCTAssertTrue(px.isRunning, "the service left before its client")
        XCTAssertEqual(try client.query("select 2"), [["2"]], "the connected client is served while draining")
        XCTAssertEqual(health(metricsPort)?.status, 503)
        client.close()
        XCTAssertEqual(px.waitForExit(timeout: 30), 0, px.log())
        XCTAssertNil(health(metricsPort), "the endpoint outlives the service")
    }

    func testShutdownWaitForClientsTurnsHealthUnavailable() throws {
        try assertStopDrainsWithHealthUnavailable { px in
            let admin = try WireClient.connect(port: px.port, user: "u_trust", database: "pgbouncer")
            try admin.socket.send(WireEncode.query("SHUTDOWN WAIT_FOR_CLIENTS"))
            // The admin session is a client too: leave, so only the testdb client holds the drain.
            admin.close()
        }
    }

    func testSIGTERMTurnsHealthUnavailable() throws {
        try assertStopDrainsWithHealthUnavailable { $0.signal(SIGTERM) }
    }

    /// `pgswift upgrade` while a session client runs a query: its worker cannot hand it over before the
    /// query ends, so the replaced worker drains; /health is 503 meanwhile and 200 again once the client
    /// has moved and every replaced worker is gone. The client sees nothing of it.
    func testUpgradeTurnsHealthUnavailableUntilTheReplacedWorkersAreGone() throws {
        let pg = try PostgresServer.shared()
        let metricsPort = try freePort()
        let px = try Pgswift.start(settings(pg, metricsPort: metricsPort))
        defer { px.stop() }
        let up = waitForHealth(metricsPort, 200, body: "ok", timeout: 20)
        XCTAssertTrue(up.ok, "never healthy: \(up.last)\n\(px.log())")
        let before = Set(px.workerPids())

        let client = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { client.close() }
        try client.socket.send(WireEncode.query("select pg_sleep(8)"))
        XCTAssertTrue(waitUntil(timeout: 20) {
            (try? pg.adminQuery("select count(*) from pg_stat_activity where query = 'select pg_sleep(8)' and state = 'active'"))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "1"
        }, "the query never started")

        let dir = try makeTempDirectory(prefix: "hup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cli = try ChildProcess.spawn([try PgswiftBinaries.supervisor(), "upgrade", "-c", px.configPath],
                                         environment: pgswiftEnvironment(),
                                         stdoutPath: dir + "/upgrade.out", stderrPath: dir + "/upgrade.err")
        defer { cli.terminate(SIGKILL, grace: 0) }
        let draining = waitForHealth(metricsPort, 503, body: "unavailable: upgrade in progress", timeout: 20)
        XCTAssertTrue(draining.ok, "not 503 during the upgrade: \(draining.last)\n\(px.log())")
        XCTAssertEqual(cli.wait(timeout: 60), 0, "upgrade: \(cli.stdoutText()) \(cli.stderrText())")
        // The roll is done, the client's old worker still drains: still 503.
        XCTAssertEqual(health(metricsPort)?.status, 503, "healthy while a replaced worker drains")

        XCTAssertEqual(try client.readResult(), [[""]], "the query's answer")
        let back = waitForHealth(metricsPort, 200, body: "ok", timeout: 30)
        XCTAssertTrue(back.ok, "not healthy after the upgrade: \(back.last)\n\(px.log())")
        XCTAssertTrue(Set(px.workerPids()).isDisjoint(with: before), "old workers left: \(px.workerPids()) vs \(before)")
        XCTAssertEqual(try client.query("select 3"), [["3"]], "the client moved with its session")
    }

    /// PostgreSQL stopped: no backend is up, /health says 503 (a balancer should not send clients that
    /// would only get errors); started again: 200.
    func testNoBackendUpTurnsHealthUnavailable() throws {
        let pg = try PostgresServer.startPrivate()
        defer { pg.stop() }
        let metricsPort = try freePort()
        let px = try Pgswift.start(settings(pg, metricsPort: metricsPort))
        defer { px.stop() }
        let up = waitForHealth(metricsPort, 200, body: "ok", timeout: 20)
        XCTAssertTrue(up.ok, "never healthy: \(up.last)\n\(px.log())")

        pg.stopServer()
        let down = waitForHealth(metricsPort, 503, body: "unavailable: no backend is up (1 checked)", timeout: 20)
        XCTAssertTrue(down.ok, "not 503 with PostgreSQL stopped: \(down.last)\n\(px.log())")
        XCTAssertTrue(px.isRunning)

        try pg.startServer()
        let back = waitForHealth(metricsPort, 200, body: "ok", timeout: 20)
        XCTAssertTrue(back.ok, "not healthy once PostgreSQL is back: \(back.last)\n\(px.log())")
    }
}
