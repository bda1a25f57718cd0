// End to end: client authentication (trust, plain, md5, scram-sha-256) and server login methods.
import Foundation
import XCTest

final class E2EAuthTests: XCTestCase {
    private let passwords = PostgresServer.passwords

    // MARK: client side

    /// Client auth against a userlist holding a plain password (u_trust, u_password), the MD5 hash
    /// (u_md5) and the SCRAM secret (u_scram) as PostgreSQL stores them. The server side is kept
    /// trivial: every client is pooled onto u_trust, which the server trusts.
    private func clientAuthSettings(_ pg: PostgresServer, authType: String) throws -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = authType
        s.databases = [("testdb", pg.connectionString(dbname: "testdb", extra: "user=u_trust"))]
        let md5 = try pg.storedPassword(of: "u_md5")
        let scram = try pg.storedPassword(of: "u_scram")
        XCTAssertTrue(md5.hasPrefix("md5"), md5)
        XCTAssertTrue(scram.hasPrefix("SCRAM-SHA-256$"), scram)
        s.users = [
            ("u_trust", passwords["u_trust"]!),
            ("u_password", passwords["u_password"]!),
            ("u_md5", md5),
            ("u_scram", scram),
        ]
        return s
    }

    /// The right password logs in (and lands on the forced server user); a wrong one is refused
    /// with `password authentication failed` (PgBouncer's `SASL authentication failed` after a SCRAM
    /// exchange: `sasl`) and SQLSTATE 28P01.
    private func assertPasswordChecked(_ px: Pgswift, user: String, sasl: Bool = false,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        let failure = sasl ? "SASL authentication failed" : "password authentication failed"
        let right = try Psql.run(px.target(user: user, database: "testdb", password: passwords[user]),
                                 "select current_user")
        XCTAssertTrue(right.succeeded, "\(user), right password: \(right)\nlog:\n\(px.log().suffix(3000))",
                      file: file, line: line)
        XCTAssertEqual(right.stdout.trimmed, "u_trust", file: file, line: line)

        let wrong = try Psql.run(px.target(user: user, database: "testdb", password: "not-" + passwords[user]!),
                                 "select 1")
        XCTAssertFalse(wrong.succeeded, "\(user), wrong password was accepted", file: file, line: line)
        XCTAssertTrue(wrong.stderr.contains(failure),
                      "\(user), wrong password: \(wrong.stderr)", file: file, line: line)

        // psql does not print the SQLSTATE of a failed connection; the raw protocol shows it.
        let fields = try WireClient.failedLogin(port: px.port, user: user, database: "testdb")
        XCTAssertEqual(fields.sqlstate, "28P01", "\(user): \(fields)", file: file, line: line)
        XCTAssertTrue(fields.message?.contains(failure) ?? false, "\(fields)",
                      file: file, line: line)
    }

    func testClientAuthTrustAcceptsAnyPassword() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try clientAuthSettings(pg, authType: "trust"))
        defer { px.stop() }
        for password in [nil, "whatever", passwords["u_trust"]] {
            let r = try Psql.run(px.target(user: "u_trust", database: "testdb", password: password), "select 1")
            XCTAssertTrue(r.succeeded, "password \(password ?? "none"): \(r)")
        }
    }

    func testClientAuthPlain() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try clientAuthSettings(pg, authType: "plain"))
        defer { px.stop() }
        for user in ["u_password", "u_md5", "u_scram"] { try assertPasswordChecked(px, user: user) }
    }

    func testClientAuthMd5() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try clientAuthSettings(pg, authType: "md5"))
        defer { px.stop() }
        for user in ["u_password", "u_md5"] { try assertPasswordChecked(px, user: user) }
    }

    /// As in PgBouncer: with auth_type md5, a user whose auth_file entry is a SCRAM secret is
    /// asked for SCRAM instead.
    func testClientAuthMd5WithScramSecretUsesScram() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try clientAuthSettings(pg, authType: "md5"))
        defer { px.stop() }
        try assertPasswordChecked(px, user: "u_scram", sasl: true)
    }

    /// (An MD5 hash cannot answer SCRAM, so u_md5 is not tried here.)
    func testClientAuthScram() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try clientAuthSettings(pg, authType: "scram-sha-256"))
        defer { px.stop() }
        for user in ["u_password", "u_scram"] { try assertPasswordChecked(px, user: user, sasl: true) }
    }

    /// A non-ASCII password that SASLprep changes (a ligature, a no-break space, full-width letters, a
    /// Roman numeral: "first pwIX" once prepared). PostgreSQL stores its SCRAM secret prepared and
    /// libpq prepares it when it answers, so pgswift must too, on both sides: psql logs in to pgswift,
    /// which checks it against the plain-text userlist entry, and pgswift logs in to PostgreSQL with
    /// that entry. The prepared form is the same password; another one is refused.
    func testNonASCIIPasswordIsPreparedLikePostgreSQL() throws {
        let pg = try PostgresServer.shared()
        let password = "\u{FB01}rst\u{00A0}\u{FF50}\u{FF57}\u{2168}"
        try pg.adminQuery(["drop role if exists u_saslprep", "set password_encryption = 'scram-sha-256'",
                           "create role u_saslprep login password '\(password)'"])
        XCTAssertTrue(try pg.storedPassword(of: "u_saslprep").hasPrefix("SCRAM-SHA-256$"))
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = "scram-sha-256"
        s.databases = [("testdb", pg.connectionString(dbname: "testdb"))]
        s.users = [("u_saslprep", password)]
        s.probe = ClientTarget(port: 0, user: "u_saslprep", database: "testdb", password: password)
        let px = try Pgswift.start(s)
        defer { px.stop() }
        for typed in [password, "first pwIX"] {
            let r = try Psql.run(px.target(user: "u_saslprep", database: "testdb", password: typed), "select current_user")
            XCTAssertTrue(r.succeeded, "password \(typed): \(r)\nlog:\n\(px.log().suffix(3000))")
            XCTAssertEqual(r.stdout.trimmed, "u_saslprep")
        }
        let wrong = try Psql.run(px.target(user: "u_saslprep", database: "testdb", password: "first pwIx"), "select 1")
        XCTAssertFalse(wrong.succeeded, "a different password was accepted")
        XCTAssertTrue(wrong.stderr.contains("SASL authentication failed"), wrong.stderr)
    }

    // MARK: server side

    /// Databases whose entries force the server user, with the password in the connection string
    /// (right or wrong) or, for `*_authfile`, taken from auth_file. The server asks u_password for
    /// a clear-text password, u_md5 for MD5 and u_scram for SCRAM-SHA-256.
    func testServerLoginMethods() throws {
        let pg = try PostgresServer.shared()
        func entry(_ user: String, _ password: String?) -> String {
            pg.connectionString(dbname: "testdb", extra: "user=\(user)" + (password.map { " password=\($0)" } ?? ""))
        }
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.databases = [
            ("s_trust", entry("u_trust", nil)),
            ("s_password", entry("u_password", passwords["u_password"])),
            ("s_md5", entry("u_md5", passwords["u_md5"])),
            ("s_scram", entry("u_scram", passwords["u_scram"])),
            ("s_scram_authfile", entry("u_scram", nil)),
            ("s_md5_authfile", entry("u_md5", nil)),
            ("s_password_bad", entry("u_password", "wrong-password")),
            ("s_md5_bad", entry("u_md5", "wrong-password")),
            ("s_scram_bad", entry("u_scram", "wrong-password")),
        ]
        s.users = [("u_trust", passwords["u_trust"]!), ("u_scram", passwords["u_scram"]!),
                   ("u_md5", passwords["u_md5"]!)]
        s.probe = ClientTarget(port: 0, user: "u_trust", database: "s_trust", password: nil)
        let px = try Pgswift.start(s)
        defer { px.stop() }

        let good = [("s_trust", "u_trust"), ("s_password", "u_password"), ("s_md5", "u_md5"),
                    ("s_scram", "u_scram"), ("s_scram_authfile", "u_scram"), ("s_md5_authfile", "u_md5")]
        for (db, serverUser) in good {
            let r = try Psql.run(px.target(user: "u_trust", database: db), "select current_user")
            XCTAssertTrue(r.succeeded, "\(db): \(r)\nlog:\n\(px.log().suffix(3000))")
            XCTAssertEqual(r.stdout.trimmed, serverUser, db)
        }

        for db in ["s_password_bad", "s_md5_bad", "s_scram_bad"] {
            let started = monotonicNow()
            let r = try Psql.run(px.target(user: "u_trust", database: db), "select 1", timeout: 90)
            XCTAssertFalse(r.succeeded, "\(db): a wrong server password gave a working session")
            XCTAssertFalse(r.timedOut, "\(db): no answer within 90 s")
            // A clean error: an ErrorResponse the client can show, not a dropped connection.
            XCTAssertTrue(r.stderr.contains("FATAL") || r.stderr.contains("ERROR"), "\(db): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("server closed the connection unexpectedly"), "\(db): \(r.stderr)")
            // As PgBouncer does, the server's reason reaches the client.
            XCTAssertTrue(r.stderr.contains("password authentication failed"), "\(db): \(r.stderr)")
            print("\(db): refused after \(String(format: "%.2f", monotonicNow() - started)) s: \(r.stderr.trimmed)")
        }
        // The failures left the good pools alone.
        let again = try Psql.run(px.target(user: "u_trust", database: "s_scram"), "select current_user")
        XCTAssertEqual(again.stdout.trimmed, "u_scram", "\(again)")
        XCTAssertTrue(px.isRunning)
    }
}
