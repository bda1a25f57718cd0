// End to end: `pidfile` (Supervisor/Service/PidFile.swift) names the supervisor while it runs, keeps a
// second instance from starting, and goes at a clean exit, as PgBouncer's does.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class PidFileTests: XCTestCase {
    /// The pidfile holds the supervisor's pid (and a newline) while it runs. A second start on the same
    /// configuration is refused (exit status 1, before it listens) and leaves the file alone. SIGTERM's
    /// clean stop removes it. A pidfile naming a process that is gone (a supervisor that crashed) is a
    /// warning: the new supervisor starts and writes its own pid, and removes the file when it stops.
    func testPidfileNamesTheSupervisorRefusesASecondStartAndGoesAtExit() throws {
        let pg = try PostgresServer.shared()
        let dir = try makeTempDirectory(prefix: "pidfile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/pgswift.pid"
        var s = PgswiftSettings(postgres: pg)
        s.settings = [("pidfile", path)]

        let px = try Pgswift.start(s)
        defer { px.stop() }
        XCTAssertEqual(readTextFile(path), "\(px.supervisorPid)\n")
        let second = try Pgswift.runCLI([px.configPath], timeout: 60)
        XCTAssertEqual(second.status, 1, "\(second)")
        XCTAssertTrue(second.stderr.contains("pidfile \(path) names a running process (pid \(px.supervisorPid))"), "\(second)")
        XCTAssertEqual(readTextFile(path), "\(px.supervisorPid)\n", "the refused start touched the pidfile")
        XCTAssertTrue(px.isRunning)
        px.signal(SIGTERM)
        XCTAssertEqual(px.waitForExit(timeout: 30), 0, px.log())
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the pidfile outlived a clean stop")

        // A pid that is gone: a short-lived child, reaped.
        let child = try ChildProcess.spawn(["true"], stdoutPath: nil, stderrPath: nil)
        XCTAssertNotNil(child.wait(timeout: 30))
        try "\(child.pid)\n".write(toFile: path, atomically: false, encoding: .utf8)
        let next = try Pgswift.start(s)
        defer { next.stop() }
        XCTAssertFalse(next.logLines(containing: "pidfile \(path) names pid \(child.pid), which is gone").isEmpty, next.log())
        XCTAssertEqual(readTextFile(path), "\(next.supervisorPid)\n")
        next.signal(SIGTERM)
        XCTAssertEqual(next.waitForExit(timeout: 30), 0, next.log())
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the pidfile outlived a clean stop")
    }
}
