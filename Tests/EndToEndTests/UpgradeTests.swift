// End to end: rolling restarts (`pgswift upgrade`) under pgbench load: no failed transaction, no dropped
// connection, every worker replaced; a broken worker binary stops the roll and the old workers serve on.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

enum UpgradeFixtures {
    /// Transaction pooling, 2 workers, enough servers for pgbench's 50 clients to flow.
    static func settings(_ pg: PostgresServer) throws -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.poolMode = "transaction"
        s.workers = 2
        s.defaultPoolSize = 20
        s.pgswiftSettings.append(("drain_timeout", "60"))
        return s
    }

    static func benchTarget(_ px: Pgswift) -> ClientTarget {
        px.target(user: "bench", database: "bench", password: PostgresServer.passwords["bench"])
    }

    /// pgbench in the background (TPC-B, simple protocol), output to files in `dir`.
    static func spawnPgbench(_ px: Pgswift, dir: String, args: [String]) throws -> ChildProcess {
        let target = benchTarget(px)
        let argv = [try PostgresTools.path("pgbench"), "-n", "-M", "simple", "-h", "127.0.0.1", "-p", String(px.port),
                    "-U", target.user] + args + [target.database]
        return try ChildProcess.spawn(argv, environment: target.environment,
                                      stdoutPath: dir + "/pgbench.out", stderrPath: dir + "/pgbench.err")
    }

    /// Waits for pgbench to end; its result and summary.
    static func finish(_ child: ChildProcess, timeout: Double = 90) -> (CommandResult, PgbenchSummary) {
        var status = child.wait(timeout: timeout)
        let timedOut = status == nil
        if timedOut { status = child.terminate(SIGKILL, grace: 0) }
        let r = CommandResult(status: timedOut ? -1 : status!, stdout: child.stdoutText(), stderr: child.stderrText(),
                              timedOut: timedOut)
        return (r, Pgbench.parse(r.stdout))
    }

    /// `pgswift upgrade -c CONFIG` with the given supervisor binary (default: the built one).
    static func upgradeCLI(_ px: Pgswift, binary: String? = nil) throws -> CommandResult {
        try runCommand([try binary ?? PgswiftBinaries.supervisor(), "upgrade", "-c", px.configPath],
                       environment: pgswiftEnvironment(), timeout: 120)
    }

    /// Lines of the CLI's table: (slot, old pid, new pid, result).
    static func rows(_ output: String) -> [(slot: Int, old: Int32, new: Int32, result: String)] {
        output.split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true).map(String.init)
            guard f.count == 4, let s = Int(f[0]), let o = Int32(f[1]), let n = Int32(f[2]) else { return nil }
            return (s, o, n, f[3].trimmed)
        }
    }

    /// Copies the built `pgswift` and `pgswift-worker` into a fresh directory (the "installed" release).
    static func installCopy() throws -> String {
        let dir = try makeTempDirectory(prefix: "upgbin")
        if runningAsRoot { chmod(dir, 0o755) }
        for name in ["pgswift", "pgswift-worker"] {
            try FileManager.default.copyItem(atPath: try PgswiftBinaries.directory() + "/" + name, toPath: dir + "/" + name)
        }
        return dir
    }

    /// Installs a "new release" over the binaries in `dir`, as a package manager does (write beside,
    /// rename over): the same build with its version string rewritten (`pgswift-version=X` lives in the
    /// binary's read-only data, Shared/Util/Version.swift), so `--version` differs. Returns the new version.
    static func installNewRelease(in dir: String, from current: String) throws -> String {
        let next = String(current.dropLast()) + (current.hasSuffix("9") ? "8" : "9")
        let old = Data("pgswift-version=\(current)\0".utf8), new = Data("pgswift-version=\(next)\0".utf8)
        for name in ["pgswift", "pgswift-worker"] {
            var data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
            guard let range = data.range(of: old) else { throw E2EError("no version string in \(name)") }
            data.replaceSubrange(range, with: new)
            try data.write(to: URL(fileURLWithPath: dir + "/" + name + ".new"))
            guard chmod(dir + "/" + name + ".new", 0o755) == 0, rename(dir + "/" + name + ".new", dir + "/" + name) == 0 else {
                throw E2EError("cannot install \(name): \(String(cString: strerror(errno)))")
            }
        }
        return next
    }

    static func version(_ binary: String) throws -> String {
        let r = try runCommand([binary, "--version"], timeout: 30)
        guard r.succeeded, let v = r.stdout.trimmed.split(separator: " ").last else { throw E2EError("\(binary) --version: \(r)") }
        return String(v)
    }

    /// The executable a process runs now (" (deleted)" once the file was replaced under it).
    static func exe(_ pid: pid_t) -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? "?"
    }

    /// Waits until pgswift's log shows a pgbench client served by every worker (so the roll meets load).
    static func waitForLoad(_ pg: PostgresServer, minimumBackends: Int = 5) -> Bool {
        waitUntil(timeout: 20, poll: 0.1) { ((try? pg.countBackends(user: "bench", db: "bench")) ?? 0) >= minimumBackends }
    }
}

final class UpgradeTests: XCTestCase {
    /// Acceptance 1: 50 long-lived pgbench clients in transaction mode, a rolling restart in the middle:
    /// no failed transaction, no dropped connection, both worker pids changed.
    func testRollingRestartUnderLongLivedClientsLosesNothing() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg))
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "upg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = Set(px.workerPids())
        XCTAssertEqual(before.count, 2)

        let bench = try UpgradeFixtures.spawnPgbench(px, dir: dir, args: ["-c", "50", "-j", "2", "-T", "20"])
        // The roll should meet a busy service: wait until most of the pool is in use.
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg, minimumBackends: 15), "pgbench never got going: \(bench.stderrText())")
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        let rows = UpgradeFixtures.rows(cli.stdout)
        XCTAssertEqual(rows.map(\.slot).sorted(), [0, 1], cli.stdout)
        for r in rows {
            XCTAssertEqual(r.result, "ok", cli.stdout)
            XCTAssertTrue(before.contains(r.old), "old pid \(r.old) not one of \(before)")
            XCTAssertFalse(before.contains(r.new), cli.stdout)
        }
        let replaced = waitUntil(timeout: 30) {
            let now = Set(px.workerPids())
            return now.count == 2 && now.isDisjoint(with: before)
        }
        XCTAssertTrue(replaced, "workers now \(px.workerPids()), before \(before); log:\n\(px.log().suffix(4000))")

        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertFalse(r.stderr.contains("aborted"), r.abridged)
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        let moved = px.logLines(containing: "adopted")
        print("rolling restart under pgbench: \(summary.transactions ?? 0) transactions, tps \(summary.tps ?? 0); \(moved.joined(separator: " | "))")
        XCTAssertFalse(moved.isEmpty, "no client was handed over; log:\n\(px.log().suffix(4000))")
    }

    /// Acceptance 2: pgbench -C (a new connection per transaction) across a rolling restart: no failure.
    func testRollingRestartUnderConnectionChurnLosesNothing() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg))
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "upg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = Set(px.workerPids())

        let bench = try UpgradeFixtures.spawnPgbench(px, dir: dir, args: ["-C", "-c", "50", "-j", "2", "-T", "12"])
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg, minimumBackends: 5), "pgbench never got going: \(bench.stderrText())")
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 },
                      "workers now \(px.workerPids()), before \(before)")

        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        print("rolling restart under pgbench -C: \(summary.transactions ?? 0) transactions, tps \(summary.tps ?? 0)")
    }

    /// Acceptance 3: a binary upgrade to a release with another --version under 50 long-lived clients,
    /// then under connection churn: the supervisor keeps its PID and runs the new binary, every worker
    /// is replaced by the new one, pgbench sees no failure and no dropped connection.
    func testBinaryUpgradeUnderLongLivedClientsLosesNothing() throws {
        try binaryUpgrade(pgbench: ["-c", "50", "-j", "2", "-T", "20"], minimumBackends: 15)
    }

    func testBinaryUpgradeUnderConnectionChurnLosesNothing() throws {
        try binaryUpgrade(pgbench: ["-C", "-c", "50", "-j", "2", "-T", "12"], minimumBackends: 5)
    }

    private func binaryUpgrade(pgbench args: [String], minimumBackends: Int) throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let bin = try UpgradeFixtures.installCopy()
        defer { try? FileManager.default.removeItem(atPath: bin) }
        let supervisor = bin + "/pgswift"
        let oldVersion = try UpgradeFixtures.version(supervisor)
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg), binary: supervisor)
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "upg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = Set(px.workerPids())
        XCTAssertEqual(before.count, 2)
        for w in before { XCTAssertEqual(UpgradeFixtures.exe(w), bin + "/pgswift-worker") }

        let bench = try UpgradeFixtures.spawnPgbench(px, dir: dir, args: args)
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg, minimumBackends: minimumBackends), "pgbench never got going: \(bench.stderrText())")
        let newVersion = try UpgradeFixtures.installNewRelease(in: bin, from: oldVersion)
        XCTAssertNotEqual(newVersion, oldVersion)
        XCTAssertEqual(try UpgradeFixtures.version(supervisor), newVersion)
        XCTAssertEqual(UpgradeFixtures.exe(px.supervisorPid), supervisor + " (deleted)")

        let cli = try UpgradeFixtures.upgradeCLI(px, binary: supervisor)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertEqual(UpgradeFixtures.rows(cli.stdout).filter { $0.result == "ok" }.count, 2, cli.stdout)
        // Same process, new image: systemd's MAINPID stays valid.
        XCTAssertTrue(px.isRunning)
        XCTAssertEqual(UpgradeFixtures.exe(px.supervisorPid), supervisor, "the supervisor still runs the old binary")
        XCTAssertFalse(px.logLines(containing: "[\(px.supervisorPid)] supervisor", "pgswift \(newVersion) took over").isEmpty,
                       px.log().suffix(4000).description)
        XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 },
                      "workers now \(px.workerPids()), before \(before)")
        for w in px.workerPids() { XCTAssertEqual(UpgradeFixtures.exe(w), bin + "/pgswift-worker", "worker \(w)") }

        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertFalse(r.stderr.contains("aborted"), r.abridged)
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        print("binary upgrade \(oldVersion) -> \(newVersion) under pgbench \(args.joined(separator: " ")): \(summary.transactions ?? 0) transactions")
    }

    /// A supervisor binary that cannot start: checked in a child first, so nothing is replaced, the
    /// answer says why, and the same process goes on with its old image and workers.
    func testBrokenSupervisorBinaryKeepsTheRunningImage() throws {
        let pg = try PostgresServer.shared()
        let bin = try UpgradeFixtures.installCopy()
        defer { try? FileManager.default.removeItem(atPath: bin) }
        let supervisor = bin + "/pgswift"
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg), binary: supervisor)
        defer { px.stop() }
        let before = Set(px.workerPids())
        try "#!/bin/sh\necho 'broken build' >&2\nexit 3\n".write(toFile: supervisor + ".new", atomically: false, encoding: .utf8)
        XCTAssertEqual(chmod(supervisor + ".new", 0o755), 0)
        XCTAssertEqual(rename(supervisor + ".new", supervisor), 0)

        let cli = try UpgradeFixtures.upgradeCLI(px, binary: try PgswiftBinaries.supervisor())
        XCTAssertEqual(cli.status, 1, "\(cli)")
        let rows = UpgradeFixtures.rows(cli.stdout)
        XCTAssertEqual(rows.count, 2, cli.stdout)
        XCTAssertTrue(rows.allSatisfy { $0.result.contains("failed its check") && $0.result.contains("exited with status 3") }, cli.stdout)
        XCTAssertFalse(px.logLines(containing: "UPGRADE failed", "keep serving").isEmpty, px.log())
        XCTAssertTrue(px.isRunning)
        XCTAssertEqual(UpgradeFixtures.exe(px.supervisorPid), supervisor + " (deleted)", "the old image must still run")
        XCTAssertEqual(Set(px.workerPids()), before)
        let probe = try Psql.run(px.target(user: "u_trust", database: "testdb"), "select 7")
        XCTAssertEqual(probe.stdout.trimmed, "7", "\(probe)")
        // And the service still upgrades once a working binary is back.
        try FileManager.default.removeItem(atPath: supervisor)
        try FileManager.default.copyItem(atPath: try PgswiftBinaries.supervisor(), toPath: supervisor)
        let again = try UpgradeFixtures.upgradeCLI(px, binary: supervisor)
        XCTAssertTrue(again.succeeded, "\(again)\n\(px.log().suffix(3000))")
        XCTAssertEqual(UpgradeFixtures.exe(px.supervisorPid), supervisor)
    }

    /// A client moved by a roll keeps the BackendKeyData it got at login: a CancelRequest with that key
    /// (landing on whichever worker) still cancels its query, after one roll and after a second one.
    func testCancelKeyFollowsTheClientAcrossRolls() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg))
        defer { px.stop() }
        // A client that is not at table index 0 of its worker: alone on the successor it gets index 0
        // there, so its old key no longer matches the successor's own numbering (the adopted-key path).
        var spare: [WireClient] = []
        var client = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        while client.backendProcessID & 0xF_FFFF == 0 && spare.count < 20 {
            spare.append(client)
            client = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        }
        spare.forEach { $0.close() }
        defer { client.close() }
        XCTAssertEqual(try client.query("select 1").first?.first ?? nil, "1")
        let (pid, key) = (client.backendProcessID, client.backendSecretKey)
        for round in 1...2 {
            let before = Set(px.workerPids())
            let cli = try UpgradeFixtures.upgradeCLI(px)
            XCTAssertTrue(cli.succeeded, "\(cli)\n\(px.log().suffix(3000))")
            XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 })
            // Still the same connection, now served by a new worker.
            XCTAssertEqual(try client.query("select \(round)").first?.first ?? nil, String(round))
            try client.socket.send(WireEncode.query("select pg_sleep(60)"))
            XCTAssertTrue(waitUntil(timeout: 20) {
                ((try? pg.adminQuery("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'")) ?? "0") == "1"
            }, "the query never started")
            // Several tries: SO_REUSEPORT may put each on either worker; all must be routed.
            let cancel = TestSocket.cancelRequest(processID: pid, secretKey: key)
            for _ in 0..<3 {
                let s = try TestSocket(port: px.port, timeout: 10)
                try s.send(cancel)
                _ = s.readUntilClosed(timeout: 10)
                s.close()
            }
            var code: String?
            while let m = try client.readMessage(timeout: 20) {
                if m.typeChar == "E" { code = WireErrorFields(body: m.body).sqlstate }
                if m.typeChar == "Z" { break }
            }
            XCTAssertEqual(code, "57014", "round \(round): the cancel did not reach the query\n\(px.log().suffix(3000))")
        }
    }

    /// Protocol-level prepared statements move with their clients: pgbench -M prepared (statements
    /// prepared once per connection, then only Bind/Execute) across a roll sees no failure.
    func testPreparedStatementsMoveWithTheirClients() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg))
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "upg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = Set(px.workerPids())
        let target = UpgradeFixtures.benchTarget(px)
        // -j = -c: libpq's synchronous prepare must not wait behind the same thread's other clients (README).
        let argv = [try PostgresTools.path("pgbench"), "-n", "-M", "prepared", "-S", "-h", "127.0.0.1",
                    "-p", String(px.port), "-U", target.user, "-c", "8", "-j", "8", "-T", "8", target.database]
        let bench = try ChildProcess.spawn(argv, environment: target.environment,
                                           stdoutPath: dir + "/pgbench.out", stderrPath: dir + "/pgbench.err")
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg, minimumBackends: 3), "pgbench never got going: \(bench.stderrText())")
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 })
        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        let adopted = px.logLines(containing: "adopted").compactMap { line in
            line.split(separator: ":").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") }
        }
        XCTAssertGreaterThan(adopted.reduce(0, +), 0, "no client moved; log:\n\(px.log().suffix(3000))")
    }

    /// Carried session state (issue 19) moves with its client: transaction-mode clients that SET
    /// statement_timeout and PREPARE a statement are served by the new workers after a roll (the old
    /// ones exit long before drain_timeout) and still have both, on whichever server they get.
    func testCarriedSessionStateMovesWithItsClients() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try UpgradeFixtures.settings(pg))
        defer { px.stop() }
        let before = Set(px.workerPids())
        let clients = try (0..<6).map { i -> WireClient in
            let c = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
            _ = try c.query("SET statement_timeout = '1\(i)s'")
            _ = try c.query("PREPARE answer AS select \(40 + i)")
            return c
        }
        defer { clients.forEach { $0.close() } }
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertTrue(waitUntil(timeout: 30) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 },
                      "the old workers did not exit (clients kept there?)\n\(px.log().suffix(3000))")
        for (i, c) in clients.enumerated() {
            for _ in 0..<3 {
                XCTAssertEqual(try c.query("show statement_timeout").first?.first ?? nil, "1\(i)s", "client \(i)")
                XCTAssertEqual(try c.query("EXECUTE answer").first?.first ?? nil, "\(40 + i)", "client \(i)")
            }
        }
        XCTAssertGreaterThan(px.logLines(containing: "adopted").count, 0, "no client moved; log:\n\(px.log().suffix(3000))")
    }

    /// A client that cannot move stays on the draining worker until drain_timeout: here a session-mode
    /// client whose query runs longer than that (a pair moves only once its ReadyForQuery has reached the
    /// client; TLS clients stay the same way). Once drain_timeout passes it is closed with an error and
    /// the old worker exits.
    func testBusySessionStaysUntilDrainTimeout() throws {
        let pg = try PostgresServer.shared()
        var settings = try UpgradeFixtures.settings(pg)
        settings.poolMode = "session"
        settings.pgswiftSettings = [("drain_timeout", "3")]
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let client = try WireClient.connect(port: px.port, user: "u_trust", database: "testdb")
        defer { client.close() }
        XCTAssertEqual(try client.query("select 1").first?.first ?? nil, "1")
        try client.socket.send(WireEncode.query("select pg_sleep(10)"))
        XCTAssertTrue(waitUntil(timeout: 20) {
            ((try? pg.adminQuery("select count(*) from pg_stat_activity where query = 'select pg_sleep(10)' and state = 'active'")) ?? "0") == "1"
        }, "the query never started")
        let before = Set(px.workerPids())
        let upgradedAt = monotonicNow()
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)")
        // The old worker is still there for its busy client.
        XCTAssertFalse(Set(px.workerPids()).isDisjoint(with: before), "the old worker left while its busy client was there")
        // After drain_timeout the session is closed and the old workers are gone.
        XCTAssertTrue(waitUntil(timeout: 20) { Set(px.workerPids()).isDisjoint(with: before) },
                      "old workers still there: \(px.workerPids()) vs \(before)\n\(px.log().suffix(3000))")
        XCTAssertGreaterThanOrEqual(monotonicNow() - upgradedAt, 2.5, "closed before drain_timeout")
        var fatal: String?
        while let m = try? client.readMessage(timeout: 10) {
            if m.typeChar == "E" { fatal = WireErrorFields(body: m.body).severity }
        }
        XCTAssertEqual(fatal, "FATAL", "the client is told why its session ends")
        XCTAssertThrowsError(try client.query("select 3"), "the session survived drain_timeout")
        XCTAssertFalse(px.logLines(containing: "drain_timeout passed").isEmpty, px.log())
        XCTAssertEqual(px.workerPids().count, 2)
    }

    /// Acceptance 4: the new worker binary exits at once: the roll stops at the first slot and says
    /// why, the old workers keep serving, pgbench sees no failure.
    func testBrokenWorkerBinaryStopsTheRollAndServiceContinues() throws {
        let pg = try PostgresServer.shared()
        try pg.ensurePgbenchData()
        let bin = try makeTempDirectory(prefix: "upgbin")
        defer { try? FileManager.default.removeItem(atPath: bin) }
        let worker = bin + "/pgswift-worker"
        try FileManager.default.copyItem(atPath: try PgswiftBinaries.directory() + "/pgswift-worker", toPath: worker)
        var settings = try UpgradeFixtures.settings(pg)
        settings.pgswiftSettings.append(("worker_binary", worker))
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "upg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = Set(px.workerPids())

        let bench = try UpgradeFixtures.spawnPgbench(px, dir: dir, args: ["-c", "20", "-j", "2", "-T", "8"])
        XCTAssertTrue(UpgradeFixtures.waitForLoad(pg), "pgbench never got going: \(bench.stderrText())")
        // A "new release" that cannot start: replaced atomically, as a package manager would.
        try "#!/bin/sh\necho 'broken build' >&2\nexit 1\n".write(toFile: worker + ".new", atomically: false, encoding: .utf8)
        XCTAssertEqual(chmod(worker + ".new", 0o755), 0)
        XCTAssertEqual(rename(worker + ".new", worker), 0)

        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertEqual(cli.status, 1, "\(cli)")
        let rows = UpgradeFixtures.rows(cli.stdout)
        XCTAssertEqual(rows.count, 2, cli.stdout)
        let failed = rows.filter { $0.result.hasPrefix("failed") }
        XCTAssertEqual(failed.count, 1, cli.stdout)
        XCTAssertTrue(failed.first?.result.contains("exited with status 1") ?? false, cli.stdout)
        XCTAssertEqual(rows.filter { $0.result == "not started" }.count, 1, cli.stdout)
        XCTAssertFalse(px.logLines(containing: "UPGRADE stopped at worker", "exited with status 1").isEmpty, px.log())
        XCTAssertEqual(Set(px.workerPids()), before, "the old workers must keep serving")

        let (r, summary) = UpgradeFixtures.finish(bench)
        XCTAssertEqual(r.status, 0, "\(r.abridged)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertEqual(summary.failedTransactions, 0, r.stdout)
        XCTAssertGreaterThan(summary.transactions ?? 0, 0, r.stdout)
        XCTAssertEqual(Set(px.workerPids()), before)
        let probe = try Psql.run(px.target(user: "u_trust", database: "testdb"), "select 42")
        XCTAssertEqual(probe.stdout.trimmed, "42", "\(probe)")
    }
}

extension TestSocket {
    /// A CancelRequest packet: length 16, code 80877102, process id, secret key.
    static func cancelRequest(processID: Int32, secretKey: UInt32) -> [UInt8] {
        WireEncode.int32(16) + WireEncode.int32(80_877_102) + WireEncode.int32(UInt32(bitPattern: processID))
            + WireEncode.int32(secretKey)
    }
}
