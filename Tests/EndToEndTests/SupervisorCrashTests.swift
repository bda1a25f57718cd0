// End to end: a supervisor crash drops no client (issue 14, finding 5). Its workers stop accepting
// and drain; a supervisor started again (as systemd's Restart= would) serves new clients on the same
// port and Unix socket beside them.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class SupervisorCrashTests: XCTestCase {
    /// kill -9 of the supervisor under a pgbench load (4 clients, -T 10, started before the kill):
    /// pgbench finishes with no failed transaction and no connection error; a new supervisor on the
    /// same config (started at once, while the old workers still hold their clients) serves psql
    /// over TCP and the Unix socket; the old workers exit once their clients have left.
    func testSupervisorCrashDropsNoClient() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let pidDir = try makeTempDirectory(prefix: "crashpid")
        defer { try? FileManager.default.removeItem(atPath: pidDir) }
        var settings = PgswiftSettings(postgres: pg)
        settings.poolMode = "transaction"
        settings.settings = [("pidfile", pidDir + "/pgswift.pid")]
        settings.pgswiftSettings = [("drain_timeout", "90")]
        let first = try Pgswift.start(settings)
        var current = first
        let oldWorkers = first.workerPids()
        XCTAssertEqual(oldWorkers.count, 2)
        defer {
            current.stop()
            first.stop()
            for pid in oldWorkers where ProcFS.isAlive(pid) { _ = kill(pid, SIGKILL) }
        }

        let bench = ClientTarget(port: first.port, user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
        let out = try makeTempDirectory(prefix: "crashbench")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let pgbench = try ChildProcess.spawn(
            [try PostgresTools.path("pgbench"), "-h", "127.0.0.1", "-p", String(first.port), "-U", "bench",
             "-c", "4", "-j", "2", "-T", "10", "-P", "1", "-n", "bench"],
            environment: bench.environment, stdoutPath: out + "/out", stderrPath: out + "/err")
        defer { pgbench.terminate(SIGKILL, grace: 0) }
        // pgbench connects all its clients, then runs; its first progress line says it is running.
        XCTAssertTrue(waitUntil(timeout: 30) { pgbench.stderrText().contains("progress:") },
                      "pgbench never got going: \(pgbench.stderrText())")

        XCTAssertEqual(kill(first.supervisorPid, SIGKILL), 0)
        XCTAssertNotNil(first.waitForExit(timeout: 10), "the supervisor survived SIGKILL")
        // A worker that held pgbench clients keeps serving them; one that held none (SO_REUSEPORT may
        // have put all four on the other) has nothing to drain and may exit at once, saying so.
        XCTAssertTrue(oldWorkers.contains(where: ProcFS.isAlive), "every worker died with the supervisor\n\(first.log().suffix(3000))")
        for pid in oldWorkers where !ProcFS.isAlive(pid) {
            XCTAssertFalse(first.logLines(containing: "[\(pid)] w", "serving the 0 clients here").isEmpty,
                           "worker \(pid) died with the supervisor while it held clients\n\(first.log().suffix(3000))")
        }

        // Started at once: the old workers may still hold the port and the Unix socket for a moment.
        let probe = ClientTarget(port: first.port, user: "u_trust", database: "testdb", password: PostgresServer.passwords["u_trust"])
        let restartedAt = monotonicNow()
        let next = try first.relaunch(probe: probe)
        current = next
        print("SupervisorCrashTests: new supervisor ready \(String(format: "%.2f", monotonicNow() - restartedAt)) s after the kill")
        let newWorkers = next.workerPids()
        XCTAssertTrue(Set(newWorkers).isDisjoint(with: oldWorkers), "\(newWorkers) vs \(oldWorkers)")
        for i in 0..<5 {
            let r = try Psql.run(probe, "select \(i)")
            XCTAssertEqual(r.stdout.trimmed, String(i), "\(r)\nnew log:\n\(next.log().suffix(3000))")
        }
        let unix = try runCommand([try PostgresTools.path("psql"),
                                   "host=\(first.dir) port=\(first.port) dbname=testdb user=u_trust", "-XAtc", "select 42"],
                                  environment: probe.environment, timeout: 60)
        XCTAssertEqual(unix.stdout.trimmed, "42", "over the Unix socket: \(unix)\nnew log:\n\(next.log().suffix(3000))")
        // While pgbench still runs (its -T is 10 s), the old workers still hold its clients.
        if pgbench.isRunning {
            XCTAssertTrue(oldWorkers.contains(where: ProcFS.isAlive), "old workers gone while their clients ran")
        }

        XCTAssertNotNil(pgbench.wait(timeout: 120), "pgbench did not finish")
        let summary = Pgbench.parse(pgbench.stdoutText())
        print("SupervisorCrashTests: pgbench across the supervisor crash: \(summary.transactions ?? -1) transactions, \(summary.failedTransactions ?? 0) failed")
        XCTAssertEqual(pgbench.poll(), 0, "pgbench: \(pgbench.stdoutText())\n\(pgbench.stderrText())\nold log:\n\(first.log().suffix(3000))")
        XCTAssertEqual(summary.failedTransactions ?? 0, 0, pgbench.stdoutText())
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, pgbench.stdoutText())
        XCTAssertFalse(pgbench.stderrText().lowercased().contains("connection"), pgbench.stderrText())
        XCTAssertFalse(pgbench.stderrText().contains("error"), pgbench.stderrText())

        // Their clients gone, the old workers exit on their own (well before drain_timeout).
        XCTAssertTrue(waitUntil(timeout: 60) { !oldWorkers.contains(where: ProcFS.isAlive) },
                      "old workers still running: \(oldWorkers.filter(ProcFS.isAlive))\n\(first.log().suffix(3000))")
        XCTAssertFalse(first.logLines(containing: "supervisor gone").isEmpty, String(first.log().suffix(3000)))
        XCTAssertTrue(next.isRunning)
        XCTAssertEqual(next.workerPids().count, 2)
        print("SupervisorCrashTests: new supervisor's start-up:\n" + next.log().split(separator: "\n").prefix(8).joined(separator: "\n"))
    }

    /// The new supervisor starts while the old workers still hold the Unix socket and the port (here
    /// they are stopped with SIGSTOP until it waits for them): it recognises the Unix listener as made
    /// by the dead supervisor and replaces it, waits for the port, and a session held on an old worker
    /// carries on. No pidfile: the Unix socket alone tells it that old workers are around.
    func testRestartBesideOldWorkersStillHoldingTheSockets() throws {
        let pg = try PostgresServer.shared()
        var settings = PgswiftSettings(postgres: pg)
        settings.settings = [("admin_users", "u_trust")]
        let first = try Pgswift.start(settings)
        var current = first
        let oldWorkers = first.workerPids()
        XCTAssertEqual(oldWorkers.count, 2)
        defer {
            for pid in oldWorkers { _ = kill(pid, SIGCONT) }
            current.stop()
            first.stop()
            for pid in oldWorkers where ProcFS.isAlive(pid) { _ = kill(pid, SIGKILL) }
        }
        let session = try WireClient.connect(port: first.port, user: "u_trust", database: "testdb")
        XCTAssertEqual(try session.query("select 1").first?.first ?? nil, "1")

        let admin = try WireClient.connect(port: first.port, user: "u_trust", database: "pgbouncer")
        XCTAssertFalse(try admin.query("show version").isEmpty)

        for pid in oldWorkers { XCTAssertEqual(kill(pid, SIGSTOP), 0) }
        // Sent while its worker is stopped: the worker sees it and its supervisor's death together.
        try admin.socket.send(WireEncode.query("show version"))
        XCTAssertEqual(kill(first.supervisorPid, SIGKILL), 0)
        XCTAssertNotNil(first.waitForExit(timeout: 10))
        let probe = ClientTarget(port: first.port, user: "u_trust", database: "testdb", password: nil)
        let next = try first.relaunch(probe: probe, wait: false)
        current = next
        XCTAssertTrue(waitUntil(timeout: 30) { next.log().contains("waiting for the old workers to close it") || !next.isRunning },
                      "the new supervisor did not wait for the port:\n\(next.log())")
        for pid in oldWorkers { XCTAssertEqual(kill(pid, SIGCONT), 0) }
        try next.waitUntilReady(probe: probe)
        XCTAssertFalse(next.logLines(containing: "which is gone: workers of a crashed pgswift are still draining; replacing it").isEmpty,
                       next.log())

        XCTAssertEqual(try Psql.run(probe, "select 7").stdout.trimmed, "7")
        let unix = try runCommand([try PostgresTools.path("psql"),
                                   "host=\(first.dir) port=\(first.port) dbname=testdb user=u_trust", "-XAtc", "select 42"],
                                  timeout: 60)
        XCTAssertEqual(unix.stdout.trimmed, "42", "over the Unix socket: \(unix)\nnew log:\n\(next.log().suffix(3000))")
        // The session on the old worker was never interrupted.
        XCTAssertEqual(try session.query("select 2").first?.first ?? nil, "2")
        session.close()
        // The admin console of the old worker answers with an error instead of hanging; the new
        // supervisor's works.
        var answerError: WireErrorFields?
        while let m = try admin.readMessage(timeout: 30), m.typeChar != "Z" {
            if m.typeChar == "E" { answerError = WireErrorFields(body: m.body) }
        }
        XCTAssertTrue(answerError?.description.contains("supervisor") ?? false, "\(String(describing: answerError))")
        XCTAssertThrowsError(try admin.query("show version")) { XCTAssertTrue("\($0)".contains("supervisor"), "\($0)") }
        admin.close()
        let show = try runCommand([try PostgresTools.path("psql"),
                                   "host=\(first.dir) port=\(first.port) dbname=pgbouncer user=u_trust", "-XAtc", "show version"],
                                  timeout: 60)
        XCTAssertTrue(show.succeeded && show.stdout.contains("pgswift"), "\(show)")
        XCTAssertTrue(waitUntil(timeout: 60) { !oldWorkers.contains(where: ProcFS.isAlive) },
                      "old workers still running: \(oldWorkers.filter(ProcFS.isAlive))\n\(first.log().suffix(3000))")
    }
}
