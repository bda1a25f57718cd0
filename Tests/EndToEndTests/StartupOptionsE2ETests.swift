// End to end: the `options` startup parameter (libpq's PGOPTIONS) as PgBouncer 1.20+ takes it.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class StartupOptionsE2ETests: XCTestCase {
    /// psql with `PGOPTIONS` set, through pgswift; the result as psql prints it (-XAtq).
    private func psql(_ target: ClientTarget, options: String, _ sql: String...) throws -> CommandResult {
        var env = target.environment
        env["PGOPTIONS"] = options
        return try runCommand(try Psql.argv(target, sql, verbose: false), environment: env, timeout: 60)
    }

    /// One worker, one server per pool, transaction mode: every client runs on the same backend, so
    /// a value that followed one client must be gone for the next.
    private func start(_ settings: [(key: String, value: String)]) throws -> Pgswift {
        var s = PgswiftSettings(postgres: try PostgresServer.shared())
        s.workers = 1
        s.poolMode = "transaction"
        s.defaultPoolSize = 1
        s.settings = settings
        return try Pgswift.start(s)
    }

    /// `PGOPTIONS='-c statement_timeout=1234 -c search_path=x'`: both reach the client's server
    /// (search_path is tracked by default, statement_timeout because track_extra_parameters names it),
    /// and leave with the client: the next one on the same backend has the defaults again.
    func testPGOPTIONSSettingsFollowTheClientToItsServer() throws {
        let px = try start([("track_extra_parameters", "IntervalStyle, statement_timeout")])
        defer { px.stop() }
        let target = px.target(user: "u_trust", database: "testdb")
        let with = try psql(target, options: "-c statement_timeout=1234 -c search_path=x",
                            "show statement_timeout", "show search_path", "select pg_backend_pid()")
        XCTAssertTrue(with.succeeded, "\(with)\n\(px.log().suffix(2000))")
        let lines = with.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(Array(lines.prefix(2)), ["1234ms", "x"], "\(with)")
        // The --name=value spelling and escapes, as PgBouncer reads them; a search_path list stays a list.
        let escaped = try psql(target, options: "--statement_timeout=5s -c search_path=a,\\ public --datestyle=German,\\ YMD",
                               "show statement_timeout", "show search_path", "show datestyle")
        XCTAssertEqual(escaped.stdout.split(separator: "\n").map(String.init), ["5s", "a, public", "German, YMD"], "\(escaped)")
        let without = try Psql.run(target, "show statement_timeout", "show search_path", "select pg_backend_pid()")
        XCTAssertTrue(without.succeeded, "\(without)")
        let plain = without.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(Array(plain.prefix(2)), ["0", "\"$user\", public"], "the defaults are back: \(without)")
        XCTAssertEqual(plain.last, lines.last, "both ran on the one backend of the pool")
    }

    /// A name neither tracked nor in ignore_startup_parameters refuses the client with PgBouncer's
    /// words; so does anything but `-c name=value` / `--name=value`. Listed in
    /// ignore_startup_parameters, the name is dropped (the server keeps its default); with `options`
    /// listed, every unknown name in it is.
    func testUntrackedOrMalformedOptionsAreRefusedUnlessIgnored() throws {
        let px = try start([])
        defer { px.stop() }
        for (options, message) in [
            ("-c statement_timeout=1234", "unsupported startup parameter in options: statement_timeout"),
            ("-d 5", "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"),
            ("-c search_path", "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"),
        ] {
            XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "testdb",
                                                        parameters: [("options", options)])) { e in
                let f = (e as? WireServerError)?.fields
                XCTAssertEqual(f?.severity, "FATAL", "\(options): \(e)")
                XCTAssertEqual(f?.sqlstate, "08P01", "\(options): \(e)")
                XCTAssertEqual(f?.message, message, "\(options): \(e)")
            }
        }
        let refused = try psql(px.target(user: "u_trust", database: "testdb"), options: "-c statement_timeout=1234", "select 1")
        XCTAssertFalse(refused.succeeded)
        XCTAssertTrue(refused.stderr.contains("unsupported startup parameter in options: statement_timeout"), refused.stderr)

        let ignoring = try start([("ignore_startup_parameters", "statement_timeout")])
        defer { ignoring.stop() }
        let r = try psql(ignoring.target(user: "u_trust", database: "testdb"),
                         options: "-c statement_timeout=1234 -c search_path=y", "show statement_timeout", "show search_path")
        XCTAssertEqual(r.stdout.split(separator: "\n").map(String.init), ["0", "y"], "\(r)")

        let all = try start([("ignore_startup_parameters", "options")])
        defer { all.stop() }
        let r2 = try psql(all.target(user: "u_trust", database: "testdb"),
                          options: "-c enable_seqscan=off -c search_path=z", "show enable_seqscan", "show search_path")
        XCTAssertEqual(r2.stdout.split(separator: "\n").map(String.init), ["on", "z"], "\(r2)")
        let bad = try psql(all.target(user: "u_trust", database: "testdb"), options: "-d 5", "select 1")
        XCTAssertTrue(bad.stderr.contains("only '-c config=val' and '--config=val' are allowed"), "still refused: \(bad)")
    }
}
