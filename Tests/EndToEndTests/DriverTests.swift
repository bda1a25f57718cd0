// End to end: real client drivers (psycopg 3, asyncpg, pgx, JDBC) through pgswift in transaction mode.
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

    /// pgx v4 (Go) with its default statement cache: named statements, each described once, on
    /// whichever server the transaction gets; COPY (CopyFrom), batches and carried session SETs.
    func testPgxPreparedStatements() throws {
        try runDriver(command: [try Self.pgxBinary(), "prepared"], name: "pgx prepared")
    }

    /// pgx without a statement cache: an unnamed Parse and Describe before every Bind.
    func testPgxUnnamedStatements() throws {
        try runDriver(command: [try Self.pgxBinary(), "unnamed"], name: "pgx unnamed")
    }

    /// pgx with PreferSimpleProtocol: everything as simple Query messages.
    func testPgxSimpleProtocol() throws {
        try runDriver(command: [try Self.pgxBinary(), "simple"], name: "pgx simple")
    }

    /// The PostgreSQL JDBC driver with prepareThreshold=1: named server statements from the first
    /// execution, pipelined batches, CopyManager, SETs as unnamed extended-protocol statements.
    func testJdbcNamedStatements() throws {
        try runDriver(command: try Self.jdbcCommand("prepared"), name: "JDBC prepared", jdbcURL: true)
    }

    /// JDBC's default threshold of 5: the same statement unnamed, then named.
    func testJdbcDefaultThreshold() throws {
        try runDriver(command: try Self.jdbcCommand("default"), name: "JDBC default", jdbcURL: true)
    }

    // MARK: helpers

    /// pgswift in transaction mode, 2 workers × 2 servers; the script's 4 connections share them.
    private func runDriver(_ script: String, mode: String, postgresqlErrors: Bool = false,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        try runDriver(command: [try Self.python(), Self.driversDirectory + "/" + script, mode], name: "\(script) \(mode)",
                      postgresqlErrors: postgresqlErrors, file: file, line: line)
    }

    /// `command` with the connection string appended (for JDBC: its URL, user and password).
    private func runDriver(command: [String], name: String, postgresqlErrors: Bool = false, jdbcURL: Bool = false,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let pg = try PostgresServer.shared()
        var settings = try TxFixtures.settings(pg, workers: 2, poolSize: 2, postgresqlErrors: postgresqlErrors)
        // JDBC sends extra_float_digits in its startup packet: PgBouncer's users list it here, as here.
        if jdbcURL { settings.settings.append(("ignore_startup_parameters", "extra_float_digits")) }
        let px = try Pgswift.start(settings)
        defer { px.stop() }
        let target = jdbcURL
            ? ["jdbc:postgresql://127.0.0.1:\(px.port)/testdb", TxFixtures.role, TxFixtures.password]
            : ["postgresql://\(TxFixtures.role):\(TxFixtures.password)@127.0.0.1:\(px.port)/testdb?sslmode=disable"]
        let r = try runCommand(command + target, environment: childEnvironment(["PYTHONDONTWRITEBYTECODE": "1"]), timeout: 300)
        let context = "\(name): \(r)\npgswift log (tail):\n\(px.log().suffix(4000))"
        XCTAssertFalse(r.timedOut, context, file: file, line: line)
        XCTAssertEqual(r.status, 0, context, file: file, line: line)
        XCTAssertTrue(r.stdout.hasPrefix("OK "), context, file: file, line: line)
        print(r.stdout.trimmed)
        XCTAssertTrue(px.isRunning, file: file, line: line)
    }

    /// pgx_check.go built once per test run with Debian's Go and pgx v4 (GOPATH mode:
    /// golang-github-jackc-pgx-v4-dev installs the sources under /usr/share/gocode).
    static func pgxBinary() throws -> String {
        try pgxBuild.get()
    }

    private static let pgxBuild: Result<String, Error> = Result {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/go") else {
            throw E2EError("no /usr/bin/go: run scripts/install-deps.sh test (golang-go, golang-github-jackc-pgx-v4-dev)")
        }
        let dir = NSTemporaryDirectory() + "pgswift-pgx-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let binary = dir + "/pgx_check"
        let r = try runCommand(["/usr/bin/go", "build", "-o", binary, driversDirectory + "/pgx_check.go"],
                               environment: childEnvironment(["GO111MODULE": "off", "GOPATH": "/usr/share/gocode",
                                                              "GOCACHE": dir + "/cache", "GOFLAGS": ""]),
                               timeout: 600)
        guard r.succeeded else { throw E2EError("building pgx_check.go failed: \(r)") }
        return binary
    }

    /// `java` running JdbcCheck.java from source with Debian's driver (libpostgresql-jdbc-java).
    static func jdbcCommand(_ mode: String) throws -> [String] {
        let jar = "/usr/share/java/postgresql.jar"
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/java"), FileManager.default.fileExists(atPath: jar) else {
            throw E2EError("no /usr/bin/java or \(jar): run scripts/install-deps.sh test (default-jdk-headless, libpostgresql-jdbc-java)")
        }
        return ["/usr/bin/java", "-Dfile.encoding=UTF-8", "-cp", jar, driversDirectory + "/JdbcCheck.java", mode]
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
