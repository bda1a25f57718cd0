// End to end: pgswift configured from the environment (PGSWIFT_<KEY> and ${NAME} in a minimal ini), as a container is.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class EnvironmentConfigTests: XCTestCase {
    /// The ini names only the databases, their address from ${PG_HOST}/${PG_PORT} (and one database
    /// name from a ${NAME:-default} whose variable is unset); every [pgbouncer]/[pgswift] setting comes
    /// from PGSWIFT_<KEY>. pgswift serves the real PostgreSQL through them, applies them (2 workers, a
    /// service-wide pool of 2 servers with clients queued behind it), says where they came from (SHOW
    /// CONFIG's NOTICE, the log, --check-config) and keeps them across a SIGHUP that re-reads an edited
    /// file: the environment has not changed, so PGSWIFT_DEFAULT_POOL_SIZE still beats the file's line.
    func testServiceRunsWithSettingsOnlyFromTheEnvironment() throws {
        let pg = try PostgresServer.shared()
        let scratch = try makeTempDirectory(prefix: "envcfg")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let userlist = scratch + "/userlist.txt"
        try PostgresServer.passwords.sorted { $0.key < $1.key }.map { "\"\($0.key)\" \"\($0.value)\"\n" }.joined()
            .write(toFile: userlist, atomically: false, encoding: .utf8)
        let port = try freePort()
        let environment = [
            "PG_HOST": "127.0.0.1", "PG_PORT": String(pg.port),
            "PGSWIFT_LISTEN_ADDR": "127.0.0.1", "PGSWIFT_LISTEN_PORT": String(port),
            "PGSWIFT_UNIX_SOCKET_DIR": scratch, "PGSWIFT_AUTH_TYPE": "trust", "PGSWIFT_AUTH_FILE": userlist,
            "PGSWIFT_ADMIN_USERS": "u_trust", "PGSWIFT_POOL_MODE": "session", "PGSWIFT_DEFAULT_POOL_SIZE": "2",
            "PGSWIFT_WORKERS": "2",
        ]
        let ini = """
            [databases]
            testdb = host=${PG_HOST} port=${PG_PORT} dbname=testdb
            app = host=${PG_HOST} port=${PG_PORT} dbname=${APP_DATABASE:-testdb}

            """
        let px = try Pgswift.launch(ini: ini, workers: 2, environment: environment, port: port)
        defer { px.stop() }
        try px.waitUntilReady(probe: px.target(user: "u_trust", database: "testdb"))
        XCTAssertEqual(px.workerPids().count, 2, "PGSWIFT_WORKERS")
        XCTAssertFalse(px.log().contains("WARNING"), "a clean environment warns about nothing:\n\(px.log())")
        XCTAssertFalse(px.logLines(containing: "set by the environment: ", "default_pool_size (PGSWIFT_DEFAULT_POOL_SIZE)",
                                   "workers (PGSWIFT_WORKERS)").isEmpty, px.log())

        // ${APP_DATABASE:-testdb}: unset, so the default.
        let app = try Psql.run(px.target(user: "u_trust", database: "app"), "select current_database()")
        XCTAssertEqual(app.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "testdb", "\(app)")

        // SHOW CONFIG: the values, and a NOTICE naming where they came from (psql prints it on stderr).
        let admin = px.target(user: "u_trust", database: "pgbouncer")
        let config = try Psql.run(admin, "SHOW CONFIG")
        XCTAssertTrue(config.succeeded, "\(config)")
        XCTAssertTrue(config.stdout.contains("default_pool_size|2|20|yes"), config.stdout)
        XCTAssertTrue(config.stdout.contains("listen_port|\(port)|6432|no"), config.stdout)
        XCTAssertTrue(config.stderr.contains("NOTICE:  set by the environment: "), "\(config)")
        XCTAssertTrue(config.stderr.contains("default_pool_size from PGSWIFT_DEFAULT_POOL_SIZE"), "\(config)")

        // The pool size applies service-wide: 4 sessions of 3 s, 2 servers, 2 clients waiting.
        var sleepers: [ChildProcess] = []
        defer { sleepers.forEach { $0.terminate(SIGKILL, grace: 0) } }
        for i in 0..<4 {
            sleepers.append(try Psql.spawn(px.target(user: "u_trust", database: "testdb"), "select pg_sleep(3)",
                                           dir: scratch, tag: "sleep\(i)"))
        }
        let adminWire = try WireClient.connect(port: port, user: "u_trust", database: "pgbouncer")
        defer { adminWire.close() }
        var seen = (active: 0, waiting: 0)
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.05) {
            guard let pools = try? adminWire.show("SHOW POOLS") else { return false }
            seen = (pools.sum("sv_active", where: "database", is: "testdb"), pools.sum("cl_waiting", where: "database", is: "testdb"))
            // Both servers busy (the second may still be logging in when the clients queue) and two
            // clients queued behind them.
            return seen.waiting == 2 && seen.active == 2
        }, "never 2 servers busy with 2 clients waiting: last SHOW POOLS sv_active \(seen.active), cl_waiting \(seen.waiting)")
        XCTAssertTrue(sleepers.allSatisfy { $0.wait(timeout: 60) == 0 }, "a session failed")

        // RELOAD re-reads the file with the same environment: the file's own line loses to the variable,
        // a new line without a variable applies.
        try (ini + "[pgbouncer]\ndefault_pool_size = 7\nmax_client_conn = 77\n").write(toFile: px.configPath, atomically: false,
                                                                                        encoding: .utf8)
        px.signal(SIGHUP)
        XCTAssertTrue(waitUntil(timeout: 20) {
            let rows = (try? adminWire.show("SHOW CONFIG"))?.rows ?? []
            return rows.contains { $0[0] == "max_client_conn" && $0[1] == "77" }
        }, px.log())
        XCTAssertEqual(try adminWire.show("SHOW CONFIG").rows.first { $0[0] == "default_pool_size" }?[1], "2")

        // --check-config with the same environment shows the effective values and where each is from.
        let check = try Pgswift.runCLI(["--check-config", px.configPath], environment: environment)
        XCTAssertEqual(check.status, 0, "\(check)")
        XCTAssertTrue(check.stdout.contains("default_pool_size = 2    ; environment variable PGSWIFT_DEFAULT_POOL_SIZE"), check.stdout)
        XCTAssertTrue(check.stdout.contains("max_client_conn = 77    ; \(px.configPath):"), check.stdout)
        XCTAssertTrue(check.stdout.contains("app = host=127.0.0.1 port=\(pg.port) dbname=testdb"), check.stdout)
        XCTAssertTrue(check.stdout.hasSuffix("configuration OK\n"), check.stdout)
    }

    /// A reference to an unset variable stops the start with file:line; so does a PGSWIFT_<KEY> whose
    /// value the key refuses (named by the variable); a PGSWIFT_ variable that names no key is a warning.
    func testBadEnvironmentIsRefusedAtLoadTime() throws {
        let scratch = try makeTempDirectory(prefix: "envbad")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let path = scratch + "/pgswift.ini"
        try "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = any\nlisten_port = ${LISTEN_PORT}\nunix_socket_dir =\n"
            .write(toFile: path, atomically: false, encoding: .utf8)

        let unset = try Pgswift.runCLI(["--check-config", path])
        XCTAssertEqual(unset.status, 1, "\(unset)")
        XCTAssertTrue(unset.stderr.contains("\(path):4: environment variable LISTEN_PORT is not set"), "\(unset)")

        let bad = try Pgswift.runCLI(["--check-config", path], environment: ["LISTEN_PORT": "6000", "PGSWIFT_WORKERS": "many"])
        XCTAssertEqual(bad.status, 1, "\(bad)")
        XCTAssertTrue(bad.stderr.contains("environment variable PGSWIFT_WORKERS: invalid value \"many\" for workers"), "\(bad)")

        let typo = try Pgswift.runCLI(["--check-config", path], environment: ["LISTEN_PORT": "6000", "PGSWIFT_WORKER": "2"])
        XCTAssertEqual(typo.status, 0, "\(typo)")
        XCTAssertTrue(typo.stderr.contains("environment variable PGSWIFT_WORKER: warning: PGSWIFT_WORKER names no"), "\(typo)")

        // The service refuses to start the same way, before it listens.
        let px = try Pgswift.launch(ini: "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {{PORT}}\n"
                                        + "unix_socket_dir = {{DIR}}\nauth_type = any\ndefault_pool_size = ${POOL}\n")
        defer { px.stop() }
        XCTAssertEqual(px.waitForExit(timeout: 30), 1, px.log())
        XCTAssertTrue(px.log().contains("\(px.configPath):6: environment variable POOL is not set"), px.log())
        XCTAssertFalse(TestSocket.canConnect(port: px.port))
    }
}
