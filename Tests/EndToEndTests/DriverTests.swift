// End to end: real client drivers (psycopg 3, asyncpg) through pgswift in transaction mode.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Runs the scripts in Tests/EndToEndTests/drivers with the venv's Python (scripts/install-deps.sh
/// drivers makes it at .build/pyenv; $PGSWIFT_PYTHON overrides).
final class DriverTests: XCTestCase {
    func testPsycopgTransactionMode() throws {
        try runDriver("psycopg_check.py", mode: "basic")
    }

    func testAsyncpgTransactionMode() throws {
        try runDriver("asyncpg_check.py", mode: "basic")
    }

    /// psycopg's `conn.cancel()` (its own CancelRequest) through two workers.
    func testPsycopgCancel() throws {
        try runDriver("psycopg_check.py", mode: "cancel")
    }

    /// psycopg with prepare_threshold=0 names a server-side statement for every query.
    func testPsycopgPreparedStatements() throws {
        try runDriver("psycopg_check.py", mode: "prepared")
    }

    /// libpq-level named statements with `prepared_statement_errors = postgresql`: a reused name (42P05)
    /// and an unknown one (26000) get PostgreSQL's own errors and the connection survives; the
    /// statement keeps working across servers.
    func testPreparedStatementNameErrorsKeepTheConnection() throws {
        try runDriver("psycopg_check.py", mode: "names", postgresqlErrors: true)
    }

    /// asyncpg's default statement cache uses named prepared statements.
    func testAsyncpgPreparedStatements() throws {
        try runDriver("asyncpg_check.py", mode: "prepared")
    }

    /// Issue 15: 40 kB text and JSON parameters (larger than the 32 KiB I/O buffer), named and
    /// unnamed statements, sent and returned, with prepared-statement tracking on.
    func testPsycopgLargeParameters() throws {
        try runDriver("psycopg_check.py", mode: "large")
    }

    func testAsyncpgLargeParameters() throws {
        try runDriver("asyncpg_check.py", mode: "large")
    }

    // MARK: helpers

    /// pgswift in transaction mode, 2 workers × 2 servers; the script's 4 connections share them.
    private func runDriver(_ script: String, mode: String, postgresqlErrors: Bool = false,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let python = try Self.python()
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try TxFixtures.settings(pg, workers: 2, poolSize: 2, postgresqlErrors: postgresqlErrors))
        defer { px.stop() }
        let dsn = "postgresql://\(TxFixtures.role):\(TxFixtures.password)@127.0.0.1:\(px.port)/testdb?sslmode=disable"
        let r = try runCommand([python, Self.driversDirectory + "/" + script, mode, dsn],
                               environment: childEnvironment(["PYTHONDONTWRITEBYTECODE": "1"]), timeout: 300)
        let context = "\(script) \(mode): \(r)\npgswift log (tail):\n\(px.log().suffix(4000))"
        XCTAssertFalse(r.timedOut, context, file: file, line: line)
        XCTAssertEqual(r.status, 0, context, file: file, line: line)
        XCTAssertTrue(r.stdout.hasPrefix("OK "), context, file: file, line: line)
        print(r.stdout.trimmed)
        XCTAssertTrue(px.isRunning, file: file, line: line)
    }

    static var driversDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("drivers").path
    }

    /// $PGSWIFT_PYTHON, else <package root>/.build/pyenv/bin/python; it must import both drivers.
    static func python() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        var candidates: [String] = []
        if let p = ProcessInfo.processInfo.environment["PGSWIFT_PYTHON"], !p.isEmpty { candidates.append(p) }
        candidates.append(root.appendingPathComponent(".build/pyenv/bin/python").path)
        for p in candidates where FileManager.default.isExecutableFile(atPath: p) {
            let probe = try runCommand([p, "-c", "import psycopg, asyncpg"], timeout: 60)
            if probe.succeeded { return p }
        }
        throw E2EError("no Python with psycopg and asyncpg in \(candidates): run scripts/install-deps.sh drivers " +
                       "(or set PGSWIFT_PYTHON)")
    }
}
