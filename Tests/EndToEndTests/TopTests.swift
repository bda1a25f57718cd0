// End to end (issue 21): `pgswift top` in a real terminal (a tmux pane) against a running pgswift
// with traffic: it logs in to the admin console (SCRAM, the password typed at its prompt or taken
// from PGPASSWORD), shows the pool and the busiest pattern, and q ends it.
import Foundation
import XCTest

final class TopTests: XCTestCase {
    /// tmux with its own server socket (not the user's), the test's environment and a fixed size.
    private struct Tmux {
        let socket: String
        func run(_ args: [String], timeout: Double = 20) throws -> CommandResult {
            try runCommand(["tmux", "-L", socket, "-f", "/dev/null"] + args,
                           environment: childEnvironment(["TERM": "xterm"]), timeout: timeout)
        }
        func screen() -> String { (try? run(["capture-pane", "-p", "-t", "top"]).stdout) ?? "" }
        func alive() -> Bool { (try? run(["has-session", "-t", "top"]).status) == 0 }
    }

    private func startPooler() throws -> Pgswift {
        let pg = try PostgresServer.shared()
        // The console's admin logs in with SCRAM; the traffic (WireClient: trust or cleartext only) with trust.
        let scratch = try makeTempDirectory(prefix: "top")
        let hbaPath = scratch + "/pg_hba.conf"
        try "host all u_scram 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
            .write(toFile: hbaPath, atomically: false, encoding: .utf8)
        var s = PgswiftSettings(postgres: pg)
        s.workers = 2
        s.authType = "hba"
        s.poolMode = "transaction"
        s.defaultPoolSize = 2
        s.settings = [("admin_users", "u_scram"), ("auth_hba_file", hbaPath)]
        return try Pgswift.start(s)
    }

    /// Clients that keep running a recognizable statement until stopped.
    private func traffic(_ px: Pgswift, clients: Int, stop: LockedFlag) -> [Thread] {
        (0..<clients).map { c in
            let t = Thread {
                guard let w = try? WireClient.connect(port: px.port, user: "u_trust", database: "testdb",
                                                      password: PostgresServer.passwords["u_trust"]) else { return }
                defer { w.close() }
                var i = 0
                while !stop.isSet {
                    _ = try? w.query("select pg_sleep(0.02), \(c * 100_000 + i) as top_probe_marker")
                    i += 1
                }
            }
            t.start()
            return t
        }
    }

    func testTopShowsPoolsAndTopPatternInATerminalAndQuits() throws {
        guard (try? runCommand(["tmux", "-V"]).status) == 0 else {
            throw XCTSkip("tmux is not installed (scripts/install-deps.sh test installs it)")
        }
        let px = try startPooler()
        defer { px.stop() }
        let stop = LockedFlag()
        let threads = traffic(px, clients: 4, stop: stop)
        defer { stop.set() }
        XCTAssertEqual(threads.count, 4)

        let tmux = Tmux(socket: "pgswift-top-\(getpid())")
        defer { _ = try? tmux.run(["kill-server"]) }
        let statusFile = px.dir + "/top.status"
        // No PGPASSWORD: top asks for it on the terminal.
        let command = "env -u PGPASSWORD \(try PgswiftBinaries.supervisor()) top -h 127.0.0.1 -p \(px.port) -U u_scram; "
            + "echo $? > \(statusFile); sleep 60"
        let started = try tmux.run(["new-session", "-d", "-s", "top", "-x", "150", "-y", "40", command])
        XCTAssertEqual(started.status, 0, started.stderr)

        XCTAssertTrue(waitUntil(timeout: 20) { tmux.screen().contains("Password for user u_scram:") },
                      "no password prompt: \(tmux.screen())")
        XCTAssertEqual(try tmux.run(["send-keys", "-t", "top", "scram-pw", "Enter"]).status, 0)

        // The screen: the header, the pool of the traffic, and its pattern in the last interval.
        var screen = ""
        func clients(_ screen: String) -> Int? {
            guard let pool = screen.split(separator: "\n").first(where: { $0.hasPrefix("testdb/u_trust") }) else { return nil }
            let f = pool.split(separator: " ")
            guard f.count >= 3, let act = Int(f[1]), let wait = Int(f[2]) else { return nil }
            return act + wait
        }
        let shown = waitUntil(timeout: 30, poll: 0.2) {
            screen = tmux.screen()
            return screen.contains("pgswift top - 127.0.0.1:\(px.port)") && screen.contains("calls/s")
                && clients(screen) == 4 && screen.contains("select pg_sleep($1), $2 as top_probe_marker")
        }
        print("pgswift top screen:\n\(screen)")
        XCTAssertTrue(shown, "the screen:\n\(screen)")
        let lines = screen.split(separator: "\n", omittingEmptySubsequences: false)
        // cl_act + cl_wait of the pool: the 4 traffic clients.
        XCTAssertEqual(clients(screen), 4, screen)
        let patternLine = lines.first { $0.contains("top_probe_marker") }.map(String.init) ?? ""
        let calls = Int(patternLine.split(separator: " ").first ?? "") ?? 0
        XCTAssertGreaterThan(calls, 0, "calls in the interval: \(patternLine)")
        XCTAssertTrue(patternLine.contains("testdb/u_trust"), patternLine)
        XCTAssertTrue(lines.contains { $0.hasPrefix("q: quit") }, screen)

        // q ends it, with status 0, and the shell goes on to write the status.
        XCTAssertEqual(try tmux.run(["send-keys", "-t", "top", "q"]).status, 0)
        XCTAssertTrue(waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: statusFile) && !readTextFile(statusFile).isEmpty },
                      "top did not exit on q: \(tmux.screen())")
        XCTAssertEqual(readTextFile(statusFile).trimmed, "0")
        stop.set()
    }

    /// Batch mode with PGPASSWORD, no terminal: each frame as plain text; a wrong password is refused.
    func testBatchModeWithPGPASSWORD() throws {
        let px = try startPooler()
        defer { px.stop() }
        let stop = LockedFlag()
        _ = traffic(px, clients: 2, stop: stop)
        defer { stop.set() }
        let r = try Pgswift.runCLI(["top", "-b", "-n", "3", "-s", "0.5", "-h", "127.0.0.1", "-p", "\(px.port)", "-U", "u_scram"],
                                   environment: ["PGPASSWORD": "scram-pw"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let frames = r.stdout.components(separatedBy: "pgswift top - ")
        XCTAssertEqual(frames.count, 4, r.stdout)
        XCTAssertTrue(frames[1].contains("(totals; intervals from the next refresh)"), frames[1])
        XCTAssertTrue(frames[3].contains("testdb/u_trust"), frames[3])
        XCTAssertTrue(frames[3].contains("top_probe_marker"), frames[3])
        XCTAssertFalse(r.stdout.contains("\u{1B}["), "batch mode writes no escapes")
        let bad = try Pgswift.runCLI(["top", "-b", "-n", "1", "-h", "127.0.0.1", "-p", "\(px.port)", "-U", "u_scram"],
                                     environment: ["PGPASSWORD": "wrong"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("pgswift top:"), bad.stderr)
        stop.set()
    }
}

/// A flag set by one thread and read by others.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
