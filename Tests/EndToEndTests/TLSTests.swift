// End to end: TLS with clients and with PostgreSQL: sslmodes, certificates, versions, ciphers, direct TLS, bad input.
import Foundation
import XCTest

/// Certificates made with the openssl CLI for one test run: a CA, a server certificate for
/// 127.0.0.1/localhost, client certificates for u_trust and u_md5, and an unrelated CA.
final class TestCertificates: @unchecked Sendable {
    let dir: String
    var caCert: String { dir + "/ca.crt" }
    var otherCACert: String { dir + "/other-ca.crt" }
    var serverCert: String { dir + "/server.crt" }
    var serverKey: String { dir + "/server.key" }
    func clientCert(_ user: String) -> String { dir + "/client-\(user).crt" }
    func clientKey(_ user: String) -> String { dir + "/client-\(user).key" }

    init() throws {
        dir = try makeTempDirectory(prefix: "tls")
        try makeCA("ca", cn: "pgswift test CA")
        try makeCA("other-ca", cn: "someone else's CA")
        try makeSigned("server", cn: "localhost", san: "subjectAltName=DNS:localhost,IP:127.0.0.1")
        try makeSigned("client-u_trust", cn: "u_trust", san: nil)
        try makeSigned("client-u_md5", cn: "u_md5", san: nil)
        try makeSigned("client-rogue", cn: "u_trust", san: nil, ca: "other-ca")
        // libpq refuses a client key readable by others.
        for f in ["server.key", "client-u_trust.key", "client-u_md5.key", "client-rogue.key"] { chmod(dir + "/" + f, 0o600) }
    }

    private func openssl(_ args: [String]) throws {
        let r = try runCommand(["openssl"] + args, timeout: 60)
        guard r.succeeded else { throw E2EError("openssl \(args.joined(separator: " ")): \(r)") }
    }

    private func makeCA(_ name: String, cn: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).crt", "-days", "2", "-subj", "/CN=\(cn)"])
    }

    private func makeSigned(_ name: String, cn: String, san: String?, ca: String = "ca") throws {
        try openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).csr", "-subj", "/CN=\(cn)"])
        var args = ["x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/\(ca).crt", "-CAkey", "\(dir)/\(ca).key",
                    "-CAcreateserial", "-out", "\(dir)/\(name).crt", "-days", "2"]
        if let san {
            try san.write(toFile: "\(dir)/\(name).ext", atomically: false, encoding: .utf8)
            args += ["-extfile", "\(dir)/\(name).ext"]
        }
        try openssl(args)
    }

    /// Server certificate and key copied into a PostgreSQL data directory, owned by postgres, 0600.
    func install(into dataDir: String) throws {
        for (src, dst) in [(serverCert, "server.crt"), (serverKey, "server.key"), (caCert, "root.crt")] {
            let to = dataDir + "/" + dst
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: src, toPath: to)
            try PostgresUser.chownIfRoot(to)
            chmod(to, 0o600)
        }
    }
}

final class TLSTests: XCTestCase {
    private final class Shared: @unchecked Sendable {
        let lock = NSLock()
        var certs: TestCertificates?
        var pg: PostgresServer?
    }
    private static let shared = Shared()

    /// One PostgreSQL with ssl=on for the whole class (stopped in tearDown of the class).
    private func environment() throws -> (TestCertificates, PostgresServer) {
        let s = Self.shared
        s.lock.lock()
        defer { s.lock.unlock() }
        if let c = s.certs, let p = s.pg { return (c, p) }
        let certs = try TestCertificates()
        // Database certdb takes TLS connections with a client certificate from the test CA only (for
        // server_tls_key_file / server_tls_cert_file), database sslonly any TLS connection and no other
        // (a managed PostgreSQL that forces TLS); the rest of pg_hba.conf is the harness's.
        let pg = try PostgresServer.startPrivate(settings: ["ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key",
                                                            "ssl_ca_file=root.crt"],
                                                 configure: { data in
            try certs.install(into: data)
            let hba = data + "/pg_hba.conf"
            let harness = readTextFile(hba)
            guard !harness.isEmpty else { throw E2EError("cannot read \(hba)") }
            try ("hostssl   certdb all 127.0.0.1/32 cert\nhostnossl certdb all 127.0.0.1/32 reject\n"
                 + "hostssl   sslonly all 127.0.0.1/32 trust\nhostnossl sslonly all 127.0.0.1/32 reject\n" + harness)
                .write(toFile: hba, atomically: false, encoding: .utf8)
        })
        try pg.adminQuery("create database certdb")
        try pg.adminQuery("create database sslonly")
        s.certs = certs
        s.pg = pg
        return (certs, pg)
    }

    override class func tearDown() {
        shared.lock.lock()
        let pg = shared.pg
        shared.pg = nil
        shared.lock.unlock()
        pg?.stop()
        super.tearDown()
    }

    /// pgswift in front of the TLS PostgreSQL; `databases` replace the usual [databases] entries.
    private func start(_ pg: PostgresServer, _ settings: [(String, String)], authType: String = "trust",
                       poolMode: String = "session", users: [(String, String)]? = nil,
                       databases: [(String, String)]? = nil) throws -> Pgswift {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = authType
        s.poolMode = poolMode
        s.databases = [("testdb", pg.connectionString(dbname: "testdb", extra: "user=u_trust")),
                       ("bench", pg.connectionString(dbname: "bench", extra: "user=bench password=\(PostgresServer.passwords["bench"]!)")),
                       ("certdb", pg.connectionString(dbname: "certdb", extra: "user=u_trust"))]
        if let databases { s.databases = databases }
        if let users { s.users = users }
        s.settings = settings.map { (key: $0.0, value: $0.1) }
        s.probe = nil
        // No probe: it speaks plaintext, which client_tls_sslmode=require refuses.
        let px = try Pgswift.start(s)
        return px
    }

    /// psql through pgswift with connection options `options` (sslmode, certificates, user...).
    private func psql(_ px: Pgswift, _ options: String, _ sql: String, password: String? = nil) throws -> CommandResult {
        var env = childEnvironment()
        env["PGPASSWORD"] = password
        env["PGSSLCERT"] = "/nonexistent"  // no ~/.postgresql/postgresql.crt by accident
        let conn = "hostaddr=127.0.0.1 host=localhost port=\(px.port) dbname=testdb gssencmode=disable connect_timeout=20 " + options
        return try runCommand([try PostgresTools.path("psql"), conn, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              environment: env, timeout: 60)
    }

    // MARK: 1. client side

    func testClientTLSRequireAndVerifyFull() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "disable")])
        defer { px.stop() }

        let req = try psql(px, "sslmode=require user=u_trust", "select 1")
        XCTAssertTrue(req.succeeded, "sslmode=require: \(req)\n\(px.log().suffix(3000))")
        XCTAssertEqual(req.stdout.trimmed, "1")

        let full = try psql(px, "sslmode=verify-full sslrootcert=\(certs.caCert) user=u_trust", "select current_user")
        XCTAssertTrue(full.succeeded, "sslmode=verify-full: \(full)\n\(px.log().suffix(3000))")
        XCTAssertEqual(full.stdout.trimmed, "u_trust")

        let wrongCA = try psql(px, "sslmode=verify-full sslrootcert=\(certs.otherCACert) user=u_trust", "select 1")
        XCTAssertFalse(wrongCA.succeeded, "a certificate from another CA was accepted by the client")

        let plain = try psql(px, "sslmode=disable user=u_trust", "select 1")
        XCTAssertFalse(plain.succeeded, "plaintext accepted under client_tls_sslmode=require")
        XCTAssertTrue(plain.stderr.contains("SSL required"), plain.stderr)
        let fields = try WireClient.failedLogin(port: px.port, user: "u_trust", database: "testdb")
        XCTAssertEqual(fields.sqlstate, "28000", "\(fields)")

        XCTAssertFalse(px.logLines(containing: "login attempt", "tls=TLSv1.").isEmpty, px.log().suffix(3000).description)
    }

    /// Megabytes each way over TLS on both sides: a 3 MB query text up, 5 MB of rows down.
    func testBulkDataOverTLS() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "require")])
        defer { px.stop() }
        let dir = try makeTempDirectory(prefix: "tlsbulk")
        let sqlPath = dir + "/big.sql"
        try ("select length('" + String(repeating: "abcdefgh", count: 3 * 131_072) + "');\n"
             + "select length(string_agg(repeat('y', 100), '')) from generate_series(1, 50000);\n"
             + "select count(*) from (select repeat('z', 1000) from generate_series(1, 5000)) s;\n")
            .write(toFile: sqlPath, atomically: false, encoding: .utf8)
        var env = childEnvironment()
        env["PGSSLCERT"] = "/nonexistent"
        let conn = "hostaddr=127.0.0.1 port=\(px.port) dbname=testdb user=u_trust sslmode=require gssencmode=disable"
        let r = try runCommand([try PostgresTools.path("psql"), conn, "-XAtq", "-v", "ON_ERROR_STOP=1", "-f", sqlPath],
                               environment: env, timeout: 120)
        XCTAssertTrue(r.succeeded, "\(r.stderr)\n\(px.log().suffix(3000))")
        XCTAssertEqual(r.stdout.split(separator: "\n").map(String.init), ["3145728", "5000000", "5000"])
        let rows = try runCommand([try PostgresTools.path("psql"), conn, "-XAtq", "-c",
                                   "select repeat('w', 1000) from generate_series(1, 5000)"], environment: env, timeout: 120)
        XCTAssertTrue(rows.succeeded, rows.stderr)
        XCTAssertEqual(rows.stdout.utf8.count, 5000 * 1001)
    }

    /// TLS off: SSLRequest gets 'N' (sslmode=require fails, prefer goes on in plaintext). allow/prefer:
    /// both plaintext and TLS clients get in.
    func testClientTLSOffAndPrefer() throws {
        let (certs, pg) = try environment()
        let off = try start(pg, [("server_tls_sslmode", "disable")])
        defer { off.stop() }
        let refused = try psql(off, "sslmode=require user=u_trust", "select 1")
        XCTAssertFalse(refused.succeeded)
        XCTAssertTrue(refused.stderr.contains("does not support SSL"), refused.stderr)
        XCTAssertTrue(try psql(off, "sslmode=prefer user=u_trust", "select 1").succeeded)

        let prefer = try start(pg, [("client_tls_sslmode", "prefer"), ("client_tls_key_file", certs.serverKey),
                                    ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "disable")])
        defer { prefer.stop() }
        for mode in ["disable", "require"] {
            let r = try psql(prefer, "sslmode=\(mode) user=u_trust", "select 1")
            XCTAssertTrue(r.succeeded, "sslmode=\(mode) under prefer: \(r)")
        }
    }

    // MARK: 2. server side

    func testServerTLSVerifyFull() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("server_tls_sslmode", "verify-full"), ("server_tls_ca_file", certs.caCert)])
        defer { px.stop() }
        let r = try psql(px, "sslmode=disable user=u_trust", "select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        XCTAssertTrue(r.succeeded, "\(r)\n\(px.log().suffix(3000))")
        XCTAssertEqual(r.stdout.trimmed, "t", "the server connection is not on TLS")
        // The admin console (Unix socket, root) shows the server's TLS version in SHOW SERVERS.
        let show = try runCommand([try PostgresTools.path("psql"), "-h", px.dir, "-p", String(px.port), "-U", "u_trust",
                                   "-XAtq", "-d", "pgbouncer", "-c", "show servers"], timeout: 30)
        XCTAssertTrue(show.stdout.contains("TLSv1.3/"), "\(show)")

        // As in PgBouncer (test_ssl.py test_server_ssl_verify), a failed certificate check does not fail
        // the client at once: it waits for a server while connects are retried (every server_login_retry),
        // here until client_login_timeout; the log says why.
        let wrong = try start(pg, [("server_tls_sslmode", "verify-full"), ("server_tls_ca_file", certs.otherCACert),
                                   ("client_login_timeout", "3"), ("server_login_retry", "1")])
        defer { wrong.stop() }
        let w = try psql(wrong, "sslmode=disable user=u_trust", "select 1")
        XCTAssertFalse(w.succeeded, "a server certificate from another CA was accepted")
        XCTAssertTrue(w.stderr.contains("client_login_timeout (server down)"), w.stderr)
        let failures = wrong.logLines(containing: "TLS handshake with server failed")
        XCTAssertFalse(failures.isEmpty, wrong.log().suffix(3000).description)
        XCTAssertTrue(failures.contains { $0.contains("certificate") }, "\(failures)")
    }

    /// The supervisor's health checks speak TLS as the workers' server connections do. Behind pg_hba
    /// lines that take only TLS (a managed PostgreSQL forcing it), a plaintext check could not log in, so
    /// the host's role stayed unknown and a `target_session_attrs = read-write` database had no usable
    /// host; over TLS the check learns it is the primary. A check that fails the certificate check marks
    /// the host down, with the reason in the log.
    func testHealthChecksUseServerTLS() throws {
        let (certs, pg) = try environment()
        let sslonly = ("sslonly", pg.connectionString(dbname: "sslonly", extra: "user=u_trust target_session_attrs=read-write"))
        // The only entry: the check logs in to the first database that names the host.
        let px = try start(pg, [("server_tls_sslmode", "verify-full"), ("server_tls_ca_file", certs.caCert)],
                           databases: [sslonly])
        defer { px.stop() }
        let key = "127.0.0.1:\(pg.port)"
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            !px.logLines(containing: "backend \(key) is up (primary, read-write)").isEmpty
        }, "the check logged in over TLS and read the role:\n\(px.log().suffix(3000))")
        XCTAssertTrue(px.logLines(containing: "health check of \(key)", "refused").isEmpty, px.log().suffix(3000).description)
        let r = try runCommand([try PostgresTools.path("psql"),
                                "host=127.0.0.1 port=\(px.port) dbname=sslonly user=u_trust sslmode=disable connect_timeout=20",
                                "-XAtq", "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"],
                               environment: childEnvironment(), timeout: 60)
        XCTAssertTrue(r.succeeded, "read-write database behind TLS-only lines: \(r)\n\(px.log().suffix(3000))")
        XCTAssertEqual(r.stdout.trimmed, "t")

        // server_tls_ca_file names a copy of another CA: the check fails. The right CA copied over the
        // same file counts from the next reload, for the checks as for the workers.
        let caCopy = certs.dir + "/health-ca.crt"
        try readTextFile(certs.otherCACert).write(toFile: caCopy, atomically: true, encoding: .utf8)
        let wrong = try start(pg, [("server_tls_sslmode", "verify-ca"), ("server_tls_ca_file", caCopy)],
                              databases: [sslonly])
        defer { wrong.stop() }
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            wrong.logLines(containing: "backend \(key) is DOWN", "TLS handshake", "certificate").count > 0
        }, "a certificate from another CA fails the check:\n\(wrong.log().suffix(3000))")
        try readTextFile(certs.caCert).write(toFile: caCopy, atomically: true, encoding: .utf8)
        wrong.signal(SIGHUP)
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            !wrong.logLines(containing: "backend \(key) is UP again").isEmpty
        }, "the replaced CA file counts after the reload:\n\(wrong.log().suffix(3000))")
    }

    // MARK: 3. pgbench over TLS

    func testPgbenchOverTLSTransactionMode() throws {
        let (certs, pg) = try environment()
        try pg.ensurePgbenchData()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "require")],
                           poolMode: "transaction")
        defer { px.stop() }
        var env = childEnvironment()
        env["PGSSLMODE"] = "require"
        env["PGGSSENCMODE"] = "disable"
        env["PGPASSWORD"] = PostgresServer.passwords["bench"]
        let r = try runCommand([try PostgresTools.path("pgbench"), "-h", "127.0.0.1", "-p", String(px.port), "-U", "bench",
                                "-c", "50", "-j", "2", "-t", "40", "bench"], environment: env, timeout: 300)
        let summary = Pgbench.parse(r.stdout)
        XCTAssertTrue(r.succeeded, "\(r)\n\(px.log().suffix(3000))")
        XCTAssertEqual(summary.transactions, 2000, r.stdout)
        XCTAssertEqual(summary.failedTransactions ?? 0, 0, r.stdout)
    }

    /// psycopg 3 (libpq underneath) with sslmode=require, transaction mode: the driver script's
    /// basic workload (several connections, errors, transactions) over TLS on both sides.
    func testPsycopgOverTLS() throws {
        let (certs, pg) = try environment()
        let python = try DriverTests.python()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "require")],
                           poolMode: "transaction")
        defer { px.stop() }
        let dsn = "postgresql://u_trust@127.0.0.1:\(px.port)/testdb?sslmode=require&gssencmode=disable"
        let r = try runCommand([python, DriverTests.driversDirectory + "/psycopg_check.py", "basic", dsn],
                               environment: childEnvironment(["PYTHONDONTWRITEBYTECODE": "1"]), timeout: 300)
        XCTAssertEqual(r.status, 0, "\(r)\n\(px.log().suffix(3000))")
        XCTAssertTrue(r.stdout.hasPrefix("OK "), "\(r)")
        XCTAssertFalse(px.logLines(containing: "tls=TLSv1.").isEmpty)
    }

    // MARK: 4. auth_type cert and SCRAM channel binding

    func testCertAuth() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("client_tls_ca_file", certs.caCert),
                                ("server_tls_sslmode", "disable")], authType: "cert")
        defer { px.stop() }
        let ok = try psql(px, "sslmode=require user=u_trust sslcert=\(certs.clientCert("u_trust")) sslkey=\(certs.clientKey("u_trust"))",
                          "select current_user")
        XCTAssertTrue(ok.succeeded, "\(ok)\n\(px.log().suffix(3000))")
        XCTAssertEqual(ok.stdout.trimmed, "u_trust")

        let otherUser = try psql(px, "sslmode=require user=u_md5 sslcert=\(certs.clientCert("u_trust")) sslkey=\(certs.clientKey("u_trust"))",
                                 "select 1")
        XCTAssertFalse(otherUser.succeeded, "a certificate for u_trust logged in as u_md5")
        XCTAssertTrue(otherUser.stderr.contains("certificate authentication failed"), otherUser.stderr)

        let noCert = try psql(px, "sslmode=require user=u_trust", "select 1")
        XCTAssertFalse(noCert.succeeded, "no client certificate, but cert auth passed")

        // Right CN, but signed by a CA pgswift does not trust.
        let rogue = try psql(px, "sslmode=require user=u_trust sslcert=\(certs.clientCert("rogue")) sslkey=\(certs.clientKey("rogue"))",
                             "select 1")
        XCTAssertFalse(rogue.succeeded, "a certificate from an untrusted CA passed cert auth")
        XCTAssertFalse(px.logLines(containing: "client certificate not verified").isEmpty, px.log().suffix(3000).description)
    }

    /// auth_type = hba over TLS: hostssl lines match TLS clients only, hostnossl plaintext ones, and an
    /// hba `cert` line takes the certificate check of auth_type cert.
    func testHbaWithTLS() throws {
        let (certs, pg) = try environment()
        let hba = certs.dir + "/hba.conf"
        try """
            hostssl   testdb  u_md5  127.0.0.1/32  cert
            hostssl   testdb  all    127.0.0.1/32  trust
            hostnossl testdb  all    127.0.0.1/32  reject
            """.write(toFile: hba, atomically: false, encoding: .utf8)
        let px = try start(pg, [("client_tls_sslmode", "prefer"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("client_tls_ca_file", certs.caCert),
                                ("server_tls_sslmode", "disable"), ("auth_hba_file", hba)], authType: "hba")
        defer { px.stop() }
        let tls = try psql(px, "sslmode=require user=u_trust", "select 1")
        XCTAssertTrue(tls.succeeded, "hostssl trust: \(tls)\n\(px.log().suffix(3000))")
        let plain = try psql(px, "sslmode=disable user=u_trust", "select 1")
        XCTAssertFalse(plain.succeeded, "hostnossl reject let a plaintext client in")
        XCTAssertTrue(plain.stderr.contains("login rejected"), plain.stderr)
        let cert = try psql(px, "sslmode=require user=u_md5 sslcert=\(certs.clientCert("u_md5")) sslkey=\(certs.clientKey("u_md5"))",
                            "select 1")
        XCTAssertTrue(cert.succeeded, "hba cert with the right certificate: \(cert)\n\(px.log().suffix(3000))")
        let wrong = try psql(px, "sslmode=require user=u_md5 sslcert=\(certs.clientCert("u_trust")) sslkey=\(certs.clientKey("u_trust"))",
                             "select 1")
        XCTAssertFalse(wrong.succeeded, "hba cert accepted another user's certificate")
        XCTAssertTrue(wrong.stderr.contains("certificate authentication failed"), wrong.stderr)
    }

    /// An hba cert line with `map=` (auth_ident_file, PgBouncer's rules): the certificate's CN logs in as
    /// the users its map lines name, or as anyone with `all`, and as itself only when a line says so. A
    /// reload reads the ident file again.
    func testHbaCertLineWithAnIdentMap() throws {
        let (certs, pg) = try environment()
        let hba = certs.dir + "/hba-map.conf"
        let ident = certs.dir + "/ident-map.conf"
        try """
            hostssl   testdb  u_md5  127.0.0.1/32  cert map=anyone
            hostssl   testdb  all    127.0.0.1/32  cert map=certs
            """.write(toFile: hba, atomically: false, encoding: .utf8)
        try """
            # MAPNAME  SYSTEM-USERNAME (the certificate's CN)  PG-USERNAME
            certs      u_md5     u_trust
            anyone     "u_trust" all
            """.write(toFile: ident, atomically: false, encoding: .utf8)
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("client_tls_ca_file", certs.caCert),
                                ("server_tls_sslmode", "disable"), ("auth_hba_file", hba), ("auth_ident_file", ident)],
                           authType: "hba")
        defer { px.stop() }
        func login(_ user: String, certificateOf cn: String) throws -> CommandResult {
            try psql(px, "sslmode=require user=\(user) sslcert=\(certs.clientCert(cn)) sslkey=\(certs.clientKey(cn))",
                     "select 1")
        }
        let mapped = try login("u_trust", certificateOf: "u_md5")
        XCTAssertTrue(mapped.succeeded, "CN u_md5 mapped to u_trust: \(mapped)\n\(px.log().suffix(3000))")
        let all = try login("u_md5", certificateOf: "u_trust")
        XCTAssertTrue(all.succeeded, "CN u_trust may be anyone on the first line: \(all)\n\(px.log().suffix(3000))")
        let own = try login("u_trust", certificateOf: "u_trust")
        XCTAssertFalse(own.succeeded, "a CN equal to the user name is not enough under a map without that line")
        XCTAssertTrue(own.stderr.contains("certificate authentication failed"), own.stderr)
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            !px.logLines(containing: "ident map: certs does not have a match for certificate CN \"u_trust\"").isEmpty
        }, "PgBouncer's words in the log:\n\(px.log().suffix(3000))")
        let unmapped = try login("u_md5", certificateOf: "u_md5")
        XCTAssertFalse(unmapped.succeeded, "the first line's map has no line for CN u_md5")

        // A new line in the ident file counts from the next reload.
        try "certs u_md5 u_trust\ncerts u_trust u_trust\nanyone \"u_trust\" all\n"
            .write(toFile: ident, atomically: true, encoding: .utf8)
        px.signal(SIGHUP)
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.5) { (try? login("u_trust", certificateOf: "u_trust"))?.succeeded == true },
                      "after the reload CN u_trust may be u_trust:\n\(px.log().suffix(3000))")
    }

    /// client_tls_sslmode = verify-ca: the handshake itself needs a client certificate from the CA.
    func testClientVerifyCARequiresCertificate() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("client_tls_sslmode", "verify-ca"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("client_tls_ca_file", certs.caCert),
                                ("server_tls_sslmode", "disable")])
        defer { px.stop() }
        let ok = try psql(px, "sslmode=require user=u_trust sslcert=\(certs.clientCert("u_md5")) sslkey=\(certs.clientKey("u_md5"))",
                          "select 1")
        XCTAssertTrue(ok.succeeded, "\(ok)\n\(px.log().suffix(3000))")
        XCTAssertFalse(try psql(px, "sslmode=require user=u_trust", "select 1").succeeded, "no certificate under verify-ca")
        let rogue = try psql(px, "sslmode=require user=u_trust sslcert=\(certs.clientCert("rogue")) sslkey=\(certs.clientKey("rogue"))",
                             "select 1")
        XCTAssertFalse(rogue.succeeded, "an untrusted certificate under verify-ca")
        XCTAssertFalse(try psql(px, "sslmode=disable user=u_trust", "select 1").succeeded)
    }

    func testScramChannelBinding() throws {
        let (certs, pg) = try environment()
        let scram = try pg.storedPassword(of: "u_scram")
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "disable")],
                           authType: "scram-sha-256", users: [("u_trust", "trust-pw"), ("u_scram", scram)])
        defer { px.stop() }
        let pw = PostgresServer.passwords["u_scram"]!
        let bound = try psql(px, "sslmode=require channel_binding=require user=u_scram", "select 1", password: pw)
        XCTAssertTrue(bound.succeeded, "channel_binding=require: \(bound)\n\(px.log().suffix(3000))")
        let wrong = try psql(px, "sslmode=require channel_binding=require user=u_scram", "select 1", password: "nope")
        XCTAssertFalse(wrong.succeeded)
        let unbound = try psql(px, "sslmode=require channel_binding=disable user=u_scram", "select 1", password: pw)
        XCTAssertTrue(unbound.succeeded, "channel_binding=disable: \(unbound)")
    }

    // MARK: 5. bad input over TLS, direct TLS

    func testBadInputOverTLS() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "disable"),
                                ("client_login_timeout", "2")])
        defer { px.stop() }
        let sslRequest = WireEncode.int32(8) + WireEncode.int32(80877103)

        // A client that never starts the handshake after 'S': closed by client_login_timeout.
        let idle = try TestSocket(port: px.port)
        try idle.send(sslRequest)
        XCTAssertEqual(try idle.read(count: 1, timeout: 10), [UInt8(ascii: "S")])
        let t0 = monotonicNow()
        let idleEnd = idle.readUntilClosed(timeout: 20)
        XCTAssertTrue(idleEnd.closed, "a client that never did the handshake was not closed")
        XCTAssertLessThan(monotonicNow() - t0, 15)

        // A handshake abandoned midway: half a ClientHello record, then nothing.
        let half = try TestSocket(port: px.port)
        try half.send(sslRequest)
        XCTAssertEqual(try half.read(count: 1, timeout: 10), [UInt8(ascii: "S")])
        try half.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03] + [UInt8](repeating: 7, count: 40))
        XCTAssertTrue(half.readUntilClosed(timeout: 20).closed, "a half-done handshake was not closed")

        // Plaintext garbage where the handshake should be: closed at once.
        let junk = try TestSocket(port: px.port)
        try junk.send(sslRequest)
        XCTAssertEqual(try junk.read(count: 1, timeout: 10), [UInt8(ascii: "S")])
        try junk.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        XCTAssertTrue(junk.readUntilClosed(timeout: 20).closed)

        // Bytes after SSLRequest in the same packet are refused (no plaintext injection before TLS).
        let inject = try TestSocket(port: px.port)
        try inject.send(sslRequest + WireEncode.query("select 1"))
        XCTAssertTrue(inject.readUntilClosed(timeout: 20).closed)

        // Garbage after a finished handshake (direct TLS through openssl s_client): an error, then closed.
        let garbage = try sClient(px, alpn: true, input: Array(repeating: UInt8(0x41), count: 64))
        XCTAssertFalse(garbage.timedOut, "garbage over TLS was not closed: \(garbage)")
        XCTAssertTrue(garbage.stdout.contains("invalid startup packet length"), garbage.stdout)

        // The worker still serves.
        let after = try psql(px, "sslmode=require user=u_trust", "select 42")
        XCTAssertEqual(after.stdout.trimmed, "42", "\(after)\n\(px.log().suffix(3000))")
    }

    /// PostgreSQL 17's direct TLS: a ClientHello with ALPN "postgresql" and no SSLRequest; without ALPN it is refused.
    func testDirectTLS() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
                                ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "disable")])
        defer { px.stop() }
        let login = WireEncode.startup(parameters: [("user", "u_trust"), ("database", "testdb")])
            + WireEncode.query("select 'direct-' || 'tls-ok'")
        // Terminate only after the answer had time to come: pgswift drops what a leaving client still awaits.
        let direct = try sClient(px, alpn: true, input: login, then: WireEncode.message("X", []))
        XCTAssertFalse(direct.timedOut, "\(direct)")
        XCTAssertTrue(direct.stdout.contains("direct-tls-ok"), "\(direct)\n\(px.log().suffix(3000))")

        let noALPN = try sClient(px, alpn: false, input: login)
        XCTAssertFalse(noALPN.stdout.contains("direct-tls-ok"), "direct TLS without ALPN was served")
        XCTAssertFalse(px.logLines(containing: "without ALPN").isEmpty, px.log().suffix(3000).description)
    }

    /// `openssl s_client` speaking direct TLS to pgswift with `input` as the plaintext to send.
    /// `then` is sent a second later.
    private func sClient(_ px: Pgswift, alpn: Bool, input: [UInt8], then: [UInt8] = []) throws -> CommandResult {
        let inputPath = NSTemporaryDirectory() + "/pgswift-sclient-\(UUID().uuidString)"
        try Data(input).write(to: URL(fileURLWithPath: inputPath))
        try Data(then).write(to: URL(fileURLWithPath: inputPath + ".then"))
        defer {
            try? FileManager.default.removeItem(atPath: inputPath)
            try? FileManager.default.removeItem(atPath: inputPath + ".then")
        }
        var cmd = "(cat \(inputPath); sleep 1; cat \(inputPath).then) | openssl s_client -connect 127.0.0.1:\(px.port) -quiet"
        if alpn { cmd += " -alpn postgresql" }
        return try runCommand(["/bin/sh", "-c", cmd], timeout: 30)
    }

    /// A TLS setting that cannot work stops pgswift at start with the file:line of the setting.
    func testBadTLSSettingRefusedAtStart() throws {
        let ini = """
            [databases]
            testdb = host=127.0.0.1 port=1
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = {{PORT}}
            unix_socket_dir = {{DIR}}
            auth_type = trust
            auth_file = {{DIR}}/userlist.txt
            client_tls_sslmode = require
            client_tls_key_file = {{DIR}}/missing.key
            client_tls_cert_file = {{DIR}}/missing.crt
            """
        let px = try Pgswift.launch(ini: ini, userlist: "\"u_trust\" \"x\"\n")
        defer { px.stop() }
        XCTAssertEqual(px.waitForExit(timeout: 30), 1, px.log())
        XCTAssertTrue(px.log().contains("\(px.configPath):11:"), px.log())
        XCTAssertTrue(px.log().contains("client_tls_cert_file"), px.log())
    }

    // MARK: 6. protocol versions and ciphers offered to clients

    /// What `openssl s_client` saw of one handshake with pgswift, after PostgreSQL's SSLRequest.
    private struct Handshake: CustomStringConvertible {
        var established: Bool
        var version: String
        var cipher: String
        var output: String
        var description: String { output }
    }

    /// `openssl s_client -starttls postgres` (SSLRequest, then the handshake) with `args` (-tls1_2,
    /// -cipher, -ciphersuites...); it closes when its stdin (/dev/null) ends.
    private func handshake(_ px: Pgswift, _ args: [String]) throws -> Handshake {
        let r = try runCommand(["openssl", "s_client", "-connect", "127.0.0.1:\(px.port)", "-starttls", "postgres",
                                "-brief"] + args, timeout: 30)
        let out = r.stdout + r.stderr
        func field(_ name: String) -> String {
            guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix(name + ": ") }) else { return "" }
            return String(line.dropFirst(name.count + 2)).trimmed
        }
        let ok = r.succeeded && out.contains("CONNECTION ESTABLISHED")
        return Handshake(established: ok, version: field("Protocol version"), cipher: field("Ciphersuite"),
                         output: "s_client \(args.joined(separator: " ")): status \(r.status)\n\(out)")
    }

    private func clientTLS(_ certs: TestCertificates, _ more: [(String, String)]) -> [(String, String)] {
        [("client_tls_sslmode", "require"), ("client_tls_key_file", certs.serverKey),
         ("client_tls_cert_file", certs.serverCert), ("server_tls_sslmode", "disable")] + more
    }

    /// client_tls_protocols: a client limited to a version outside the list fails the handshake (openssl
    /// and libpq alike), one inside it gets that version.
    func testClientTLSProtocols() throws {
        let (certs, pg) = try environment()
        let only13 = try start(pg, clientTLS(certs, [("client_tls_protocols", "tlsv1.3")]))
        defer { only13.stop() }
        let old = try handshake(only13, ["-tls1_2"])
        XCTAssertFalse(old.established, "TLS 1.2 accepted under client_tls_protocols = tlsv1.3: \(old)")
        let new = try handshake(only13, ["-tls1_3"])
        XCTAssertTrue(new.established, "\(new)\n\(only13.log().suffix(3000))")
        XCTAssertEqual(new.version, "TLSv1.3", "\(new)")
        let psql12 = try psql(only13, "sslmode=require ssl_max_protocol_version=TLSv1.2 user=u_trust", "select 1")
        XCTAssertFalse(psql12.succeeded, "psql limited to TLS 1.2 got in: \(psql12)")
        let psqlAny = try psql(only13, "sslmode=require user=u_trust", "select 1")
        XCTAssertTrue(psqlAny.succeeded, "\(psqlAny)\n\(only13.log().suffix(3000))")

        // PgBouncer's "!" removes a version from the list.
        let only12 = try start(pg, clientTLS(certs, [("client_tls_protocols", "secure,!tlsv1.3")]))
        defer { only12.stop() }
        let tls13 = try handshake(only12, ["-tls1_3"])
        XCTAssertFalse(tls13.established, "TLS 1.3 accepted under client_tls_protocols = secure,!tlsv1.3: \(tls13)")
        let best = try handshake(only12, [])
        XCTAssertTrue(best.established, "\(best)\n\(only12.log().suffix(3000))")
        XCTAssertEqual(best.version, "TLSv1.2", "\(best)")
        let psql13 = try psql(only12, "sslmode=require ssl_min_protocol_version=TLSv1.3 user=u_trust", "select 1")
        XCTAssertFalse(psql13.succeeded, "psql requiring TLS 1.3 got in: \(psql13)")
        XCTAssertTrue(try psql(only12, "sslmode=require user=u_trust", "select 1").succeeded)
        XCTAssertFalse(only12.logLines(containing: "login attempt", "tls=TLSv1.2/").isEmpty, only12.log().suffix(3000).description)
    }

    /// client_tls_ciphers: a TLS 1.2 client offering only a cipher outside the list fails, one inside it
    /// gets it; TLS 1.3 is not affected. "default" is OpenSSL's default list, as in PgBouncer.
    func testClientTLSCiphers() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, clientTLS(certs, [("client_tls_ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256")]))
        defer { px.stop() }
        let excluded = try handshake(px, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"])
        XCTAssertFalse(excluded.established, "a cipher outside client_tls_ciphers was accepted: \(excluded)")
        let included = try handshake(px, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"])
        XCTAssertTrue(included.established, "\(included)\n\(px.log().suffix(3000))")
        XCTAssertEqual(included.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256", "\(included)")
        let anyCipher = try handshake(px, ["-tls1_2"])
        XCTAssertEqual(anyCipher.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256", "\(anyCipher)")
        let tls13 = try handshake(px, ["-tls1_3"])
        XCTAssertTrue(tls13.established, "client_tls_ciphers should not touch TLS 1.3: \(tls13)")

        // "default" leaves OpenSSL's own list: a cipher it has (when this OpenSSL has it) gets in.
        let defaults = try runCommand(["openssl", "ciphers", "DEFAULT"], timeout: 30).stdout.trimmed.split(separator: ":")
        if defaults.contains("ECDHE-ECDSA-AES128-SHA256") {
            let dflt = try start(pg, clientTLS(certs, [("client_tls_ciphers", "default")]))
            defer { dflt.stop() }
            let cbc = try handshake(dflt, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"])
            XCTAssertTrue(cbc.established, "a cipher of OpenSSL's default list refused under default: \(cbc)")
        }
    }

    /// client_tls13_ciphers: the same for TLS 1.3's cipher suites; TLS 1.2 is not affected.
    func testClientTLS13Ciphers() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, clientTLS(certs, [("client_tls13_ciphers", "TLS_CHACHA20_POLY1305_SHA256")]))
        defer { px.stop() }
        let excluded = try handshake(px, ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"])
        XCTAssertFalse(excluded.established, "a suite outside client_tls13_ciphers was accepted: \(excluded)")
        let included = try handshake(px, ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"])
        XCTAssertTrue(included.established, "\(included)\n\(px.log().suffix(3000))")
        XCTAssertEqual(included.cipher, "TLS_CHACHA20_POLY1305_SHA256", "\(included)")
        let tls12 = try handshake(px, ["-tls1_2"])
        XCTAssertTrue(tls12.established, "client_tls13_ciphers should not touch TLS 1.2: \(tls12)")
        // libpq offers every suite; pgswift picks the one it allows (PgBouncer's test_ssl.py checks the same log).
        XCTAssertTrue(try psql(px, "sslmode=require user=u_trust", "select 1").succeeded)
        XCTAssertFalse(px.logLines(containing: "login attempt", "tls=TLSv1.3/TLS_CHACHA20_POLY1305_SHA256").isEmpty,
                       px.log().suffix(3000).description)
    }

    /// client_tls_ecdhcurve: a client offering only a group outside the setting fails (TLS 1.3 and 1.2),
    /// one offering it gets it, and libpq (which offers several) gets in. client_tls_dheparams, with an
    /// RSA key: `auto` (the default) lets a TLS 1.2 client that offers only a DHE suite in, `none` does not.
    func testClientTLSKeyExchangeSettings() throws {
        let (certs, pg) = try environment()
        let p384 = try start(pg, clientTLS(certs, [("client_tls_ecdhcurve", "secp384r1")]))
        defer { p384.stop() }
        for version in ["-tls1_3", "-tls1_2"] {
            let other = try handshake(p384, [version, "-groups", "prime256v1"])
            XCTAssertFalse(other.established, "a group outside client_tls_ecdhcurve was accepted: \(other)")
            // The client prefers P-256 and also offers P-384 (a TLS 1.2 client must offer the ECDSA
            // certificate's curve, P-256): pgswift takes P-384.
            let same = try handshake(p384, [version, "-groups", "prime256v1:secp384r1"])
            XCTAssertTrue(same.established, "\(same)\n\(p384.log().suffix(3000))")
            XCTAssertTrue(same.output.contains("P-384") || same.output.contains("secp384r1"), "\(same)")
        }
        XCTAssertTrue(try psql(p384, "sslmode=require user=u_trust", "select 1").succeeded, p384.log().suffix(3000).description)
        // The default (auto) takes the group the client prefers.
        let auto = try start(pg, clientTLS(certs, []))
        defer { auto.stop() }
        let preferred = try handshake(auto, ["-tls1_3", "-groups", "prime256v1:secp384r1"])
        XCTAssertTrue(preferred.established && !preferred.output.contains("P-384"), "\(preferred)")

        // DHE needs an RSA key (the test certificates are ECDSA).
        let rsaKey = certs.dir + "/rsa.key", rsaCert = certs.dir + "/rsa.crt"
        let made = try runCommand(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", rsaKey,
                                   "-out", rsaCert, "-days", "2", "-subj", "/CN=localhost"], timeout: 120)
        XCTAssertTrue(made.succeeded, "\(made)")
        func rsa(_ dhe: String?) -> [(String, String)] {
            [("client_tls_sslmode", "require"), ("client_tls_key_file", rsaKey), ("client_tls_cert_file", rsaCert),
             ("server_tls_sslmode", "disable")] + (dhe.map { [("client_tls_dheparams", $0)] } ?? [])
        }
        let dhe = ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]
        let dheAuto = try start(pg, rsa(nil))
        defer { dheAuto.stop() }
        let withDH = try handshake(dheAuto, dhe)
        XCTAssertTrue(withDH.established, "\(withDH)\n\(dheAuto.log().suffix(3000))")
        XCTAssertEqual(withDH.cipher, "DHE-RSA-AES128-GCM-SHA256", "\(withDH)")
        let dheNone = try start(pg, rsa("none"))
        defer { dheNone.stop() }
        let withoutDH = try handshake(dheNone, dhe)
        XCTAssertFalse(withoutDH.established, "a DHE suite was accepted with client_tls_dheparams = none: \(withoutDH)")
        XCTAssertTrue(try handshake(dheNone, ["-tls1_2"]).established, "ECDHE suites still work with dheparams none")
    }

    // MARK: 7. client certificate, protocol versions and ciphers towards PostgreSQL

    /// "version/cipher/client DN" of the TLS connection between pgswift and PostgreSQL, from pg_stat_ssl
    /// on the server connection a plaintext client gets.
    private func serverSSL(_ px: Pgswift, database: String = "testdb") throws -> CommandResult {
        try psql(px, "sslmode=disable user=u_trust dbname=\(database)",
                 "select version || '/' || cipher || '/' || coalesce(client_dn, '') from pg_stat_ssl where pid = pg_backend_pid()")
    }

    /// server_tls_key_file / server_tls_cert_file: PostgreSQL's `hostssl certdb ... cert` lets pgswift in
    /// with its certificate (pg_stat_ssl shows its DN), and refuses it without one.
    func testServerTLSClientCertificate() throws {
        let (certs, pg) = try environment()
        let px = try start(pg, [("server_tls_sslmode", "require"), ("server_tls_key_file", certs.clientKey("u_trust")),
                                ("server_tls_cert_file", certs.clientCert("u_trust"))])
        defer { px.stop() }
        let r = try serverSSL(px, database: "certdb")
        XCTAssertTrue(r.succeeded, "\(r)\n\(px.log().suffix(3000))")
        XCTAssertTrue(r.stdout.trimmed.hasSuffix("/CN=u_trust"), "pg_stat_ssl: \(r.stdout)")

        let without = try start(pg, [("server_tls_sslmode", "require"), ("client_login_timeout", "10")])
        defer { without.stop() }
        let refused = try serverSSL(without, database: "certdb")
        XCTAssertFalse(refused.succeeded, "certdb let pgswift in without a client certificate")
        XCTAssertTrue(refused.stderr.contains("certificate"), refused.stderr)
        XCTAssertFalse(without.logLines(containing: "server login failed", "certificate").isEmpty, without.log().suffix(3000).description)
    }

    /// server_tls_protocols: pg_stat_ssl shows the version pgswift allowed; a version PostgreSQL does not
    /// take (it needs TLS 1.2 or later) fails the handshake.
    func testServerTLSProtocols() throws {
        let (_, pg) = try environment()
        for (setting, version) in [("tlsv1.2", "TLSv1.2"), ("tlsv1.3", "TLSv1.3")] {
            let px = try start(pg, [("server_tls_sslmode", "require"), ("server_tls_protocols", setting)])
            defer { px.stop() }
            let r = try serverSSL(px)
            XCTAssertTrue(r.succeeded, "\(setting): \(r)\n\(px.log().suffix(3000))")
            XCTAssertTrue(r.stdout.trimmed.hasPrefix(version + "/"), "server_tls_protocols = \(setting): pg_stat_ssl \(r.stdout)")
        }
        let old = try start(pg, [("server_tls_sslmode", "require"), ("server_tls_protocols", "tlsv1.0"),
                                 ("client_login_timeout", "3"), ("server_login_retry", "1")])
        defer { old.stop() }
        let r = try serverSSL(old)
        XCTAssertFalse(r.succeeded, "a TLS 1.0 server connection got in: \(r)")
        XCTAssertFalse(old.logLines(containing: "TLS handshake with server failed").isEmpty, old.log().suffix(3000).description)
    }

    /// server_tls_ciphers: pg_stat_ssl shows the TLS 1.2 cipher pgswift offered alone; one the server's
    /// certificate (ECDSA) cannot use fails the handshake.
    func testServerTLSCiphers() throws {
        let (_, pg) = try environment()
        for cipher in ["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256"] {
            let px = try start(pg, [("server_tls_sslmode", "require"), ("server_tls_protocols", "tlsv1.2"),
                                    ("server_tls_ciphers", cipher)])
            defer { px.stop() }
            let r = try serverSSL(px)
            XCTAssertTrue(r.succeeded, "\(cipher): \(r)\n\(px.log().suffix(3000))")
            XCTAssertTrue(r.stdout.trimmed.hasPrefix("TLSv1.2/\(cipher)/"), "server_tls_ciphers = \(cipher): pg_stat_ssl \(r.stdout)")
        }
        let rsa = try start(pg, [("server_tls_sslmode", "require"), ("server_tls_protocols", "tlsv1.2"),
                                 ("server_tls_ciphers", "ECDHE-RSA-AES128-GCM-SHA256"),
                                 ("client_login_timeout", "3"), ("server_login_retry", "1")])
        defer { rsa.stop() }
        let r = try serverSSL(rsa)
        XCTAssertFalse(r.succeeded, "an RSA-only cipher list got a TLS connection to an ECDSA server: \(r)")
        XCTAssertTrue(r.stderr.contains("client_login_timeout (server down)"), r.stderr)
        let failures = rsa.logLines(containing: "TLS handshake with server failed")
        XCTAssertFalse(failures.isEmpty, rsa.log().suffix(3000).description)
    }

    /// server_tls13_ciphers: pg_stat_ssl shows the TLS 1.3 suite pgswift allowed (not OpenSSL's first choice,
    /// TLS_AES_256_GCM_SHA384).
    func testServerTLS13Ciphers() throws {
        let (_, pg) = try environment()
        for suite in ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"] {
            let px = try start(pg, [("server_tls_sslmode", "require"), ("server_tls13_ciphers", suite)])
            defer { px.stop() }
            let r = try serverSSL(px)
            XCTAssertTrue(r.succeeded, "\(suite): \(r)\n\(px.log().suffix(3000))")
            XCTAssertTrue(r.stdout.trimmed.hasPrefix("TLSv1.3/\(suite)/"), "server_tls13_ciphers = \(suite): pg_stat_ssl \(r.stdout)")
        }
    }

    // MARK: reload

    /// SIGHUP with new certificate files: new connections get them, a session open meanwhile goes on.
    func testCertificatesReloadWithoutDroppingConnections() throws {
        let (certs, pg) = try environment()
        let dir = try makeTempDirectory(prefix: "tlsreload")
        let cert = dir + "/cert.pem"
        let key = dir + "/key.pem"
        try FileManager.default.copyItem(atPath: certs.clientCert("u_trust"), toPath: cert)
        try FileManager.default.copyItem(atPath: certs.clientKey("u_trust"), toPath: key)
        let px = try start(pg, [("client_tls_sslmode", "require"), ("client_tls_key_file", key),
                                ("client_tls_cert_file", cert), ("server_tls_sslmode", "disable")])
        defer { px.stop() }
        var env = childEnvironment()
        env["PGSSLCERT"] = "/nonexistent"
        let conn = "hostaddr=127.0.0.1 port=\(px.port) dbname=testdb user=u_trust sslmode=require gssencmode=disable"
        let long = try ChildProcess.spawn([try PostgresTools.path("psql"), conn, "-XAtq", "-c", "select pg_sleep(3)", "-c", "select 'still-here'"],
                                          environment: env, stdoutPath: dir + "/long.out", stderrPath: dir + "/long.err")
        XCTAssertTrue(waitUntil(timeout: 20) { (try? pg.countBackends(user: "u_trust", db: "testdb")) ?? 0 > 0 })

        try FileManager.default.removeItem(atPath: cert)
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: certs.serverCert, toPath: cert)
        try FileManager.default.copyItem(atPath: certs.serverKey, toPath: key)
        px.signal(SIGHUP)
        let switched = waitUntil(timeout: 20, poll: 0.2) {
            (try? psql(px, "sslmode=verify-full sslrootcert=\(certs.caCert) user=u_trust", "select 1"))?.succeeded ?? false
        }
        XCTAssertTrue(switched, "new certificate not in use after SIGHUP: \(px.log().suffix(3000))")
        XCTAssertEqual(long.wait(timeout: 30), 0, readTextFile(dir + "/long.err"))
        XCTAssertTrue(readTextFile(dir + "/long.out").contains("still-here"))
    }
}
