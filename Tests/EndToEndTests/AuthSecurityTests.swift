// End to end: the authentication holes of issues 14 (finding 4: user enumeration) and 15 (trust lets
// unknown users in, SCRAM downgraded to MD5, databases revealed before authentication, startup errors).
import Foundation
import XCTest
import Shared
#if canImport(Glibc)
import Glibc
#endif

final class AuthSecurityTests: XCTestCase {
    private let passwords = PostgresServer.passwords

    /// auth_file with a plain password (u_password, u_trust), an MD5 hash (u_md5), a SCRAM secret (u_scram).
    private func settings(_ pg: PostgresServer, authType: String, workers: Int = 1) throws -> PgswiftSettings {
        var s = PgswiftSettings(postgres: pg)
        s.workers = workers
        s.authType = authType
        s.databases = [("testdb", pg.connectionString(dbname: "testdb", extra: "user=u_trust"))]
        s.users = [("u_trust", passwords["u_trust"]!), ("u_password", passwords["u_password"]!),
                   ("u_md5", try pg.storedPassword(of: "u_md5")), ("u_scram", try pg.storedPassword(of: "u_scram"))]
        return s
    }

    /// The first authentication request of a login: its code (5 MD5, 10 SASL...) and the rest of its body.
    private struct AuthRequest: Equatable {
        var code: Int
        var rest: [UInt8]
        /// SASL mechanism names (code 10).
        var mechanisms: [String] {
            rest.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        }
    }

    private func startLogin(_ px: Pgswift, user: String, database: String) throws -> (WireClient, AuthRequest?, WireErrorFields?) {
        let c = WireClient(socket: try TestSocket(port: px.port, timeout: 30), timeout: 30)
        try c.socket.send(WireEncode.startup(parameters: [("user", user), ("database", database)]))
        guard let m = try c.readMessage() else { throw E2EError("\(user): closed without an answer") }
        if m.typeChar == "E" { return (c, nil, WireErrorFields(body: m.body)) }
        guard m.typeChar == "R", m.body.count >= 4 else { throw E2EError("\(user): unexpected \(m.typeChar)") }
        let code = Int(m.body[0]) << 24 | Int(m.body[1]) << 16 | Int(m.body[2]) << 8 | Int(m.body[3])
        return (c, AuthRequest(code: code, rest: Array(m.body.dropFirst(4))), nil)
    }

    private func firstRequest(_ px: Pgswift, user: String, database: String = "testdb") throws -> AuthRequest {
        let (c, r, e) = try startLogin(px, user: user, database: database)
        c.socket.close()
        guard let r else { throw E2EError("\(user): error instead of an authentication request: \(e!)") }
        return r
    }

    /// The salt and iteration count of the SCRAM server-first message shown to `user`; `servedBy`
    /// collects the worker that answered.
    private func scramSaltAndIterations(_ px: Pgswift, user: String, servedBy: UnsafeMutablePointer<Set<pid_t>>? = nil) throws -> String {
        let (c, r, _) = try startLogin(px, user: user, database: "testdb")
        defer { c.socket.close() }
        if let servedBy, let owner = ProcFS.owner(ofConnectionFrom: c.socket.localPort, to: px.port, among: px.workerPids()) {
            servedBy.pointee.insert(owner)
        }
        guard r?.code == 10 else { throw E2EError("\(user): not asked for SASL: \(String(describing: r))") }
        let first = Array("n,,n=,r=\(randomAlphanumeric(24))".utf8)
        try c.socket.send(WireEncode.message("p", WireEncode.cString("SCRAM-SHA-256") + WireEncode.int32(UInt32(first.count)) + first))
        guard let m = try c.readMessage(), m.typeChar == "R", m.body.count > 4, m.body[3] == 11 else {
            throw E2EError("\(user): no SASL continue")
        }
        let text = String(decoding: m.body.dropFirst(4), as: UTF8.self)
        return text.split(separator: ",").filter { $0.hasPrefix("s=") || $0.hasPrefix("i=") }.joined(separator: ",")
    }

    // MARK: issue 15

    /// auth_type = trust used to let in any name; PgBouncer (and now pgswift) answers
    /// `"trust" authentication failed` (08P01) to a user missing from auth_file.
    func testTrustRefusesUsersMissingFromAuthFile() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try settings(pg, authType: "trust"))
        defer { px.stop() }
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "no_such_user_x", database: "testdb")) { e in
            let f = (e as? WireServerError)?.fields
            XCTAssertEqual(f?.message, "\"trust\" authentication failed", "\(e)")
            XCTAssertEqual(f?.sqlstate, "08P01", "\(e)")
        }
        // Known users still need no password.
        let c = try WireClient.connect(port: px.port, user: "u_md5", database: "testdb")
        XCTAssertEqual(try c.query("select current_user").first?.first, "u_trust")
        c.close()
    }

    /// Under trust, a user missing from auth_file is looked up with auth_query (as PgBouncer does): one
    /// the server knows gets in, an unknown one gets PgBouncer's "no such user" (08P01).
    func testTrustWithAuthQueryAdmitsOnlyUsersItFinds() throws {
        let pg = try PostgresServer.shared()
        try pg.adminQuery("""
            do $$ begin
              if not exists (select from pg_roles where rolname = 'aq_auth') then
                create role aq_auth login superuser password 'aq-auth-pw';
              end if;
            end $$
            """)
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = "trust"
        s.databases = [("aqdb", pg.connectionString(dbname: "testdb") + " auth_user=aq_auth"),
                       ("testdb", pg.connectionString(dbname: "testdb"))]
        s.users = [("aq_auth", "aq-auth-pw"), ("u_trust", passwords["u_trust"]!)]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        let c = try WireClient.connect(port: px.port, user: "u_md5", database: "aqdb")
        XCTAssertEqual(try c.query("select current_user").first?.first, "u_md5")
        c.close()
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "aq_nobody", database: "aqdb")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "no such user", "\(e)")
            XCTAssertEqual((e as? WireServerError)?.fields.sqlstate, "08P01", "\(e)")
        }
    }

    /// An empty password in auth_file never authenticates a password method (PgBouncer and PostgreSQL
    /// refuse empty passwords); under trust the user is still known.
    func testEmptyPasswordNeverAuthenticates() throws {
        let pg = try PostgresServer.shared()
        for authType in ["plain", "md5", "trust"] {
            var s = try settings(pg, authType: authType)
            s.users.append(("u_empty", ""))
            let px = try Pgswift.start(s)
            defer { px.stop() }
            if authType == "trust" {
                XCTAssertNoThrow(try WireClient.connect(port: px.port, user: "u_empty", database: "testdb").close())
                continue
            }
            let r = try Psql.run(px.target(user: "u_empty", database: "testdb", password: ""), "select 1")
            XCTAssertFalse(r.succeeded, "\(authType): an empty password logged in")
            if authType == "plain" {
                // libpq sends nothing for an empty password; answer the request by hand.
                let (c, req, _) = try startLogin(px, user: "u_empty", database: "testdb")
                defer { c.socket.close() }
                XCTAssertEqual(req?.code, 3)
                try c.socket.send(WireEncode.password(""))
                let m = try XCTUnwrap(try c.readMessage())
                XCTAssertEqual(m.typeChar, "E")
                XCTAssertEqual(WireErrorFields(body: m.body).sqlstate, "28P01")
            }
        }
    }

    /// auth_type = scram-sha-256 used to ask a user whose secret is an MD5 hash for MD5 instead (a
    /// downgrade). Now it is asked for SCRAM, which that secret cannot verify: even the right
    /// password fails, with the wrong-password error. The same through an hba scram-sha-256 line.
    func testScramOnlyNeverDowngradesAnMd5SecretToMd5() throws {
        let pg = try PostgresServer.shared()
        for hba in [false, true] {
            var s = try settings(pg, authType: hba ? "hba" : "scram-sha-256")
            if hba {
                let dir = try makeTempDirectory(prefix: "hba")
                let path = dir + "/hba.conf"
                try "host all all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n".write(toFile: path, atomically: true, encoding: .utf8)
                s.settings.append(("auth_hba_file", path))
            }
            let px = try Pgswift.start(s)
            defer { px.stop() }
            let r = try firstRequest(px, user: "u_md5")
            XCTAssertEqual(r.code, 10, "hba \(hba): u_md5 was not asked for SASL")
            XCTAssertEqual(r.mechanisms, ["SCRAM-SHA-256"])
            let right = try Psql.run(px.target(user: "u_md5", database: "testdb", password: passwords["u_md5"]), "select 1")
            XCTAssertFalse(right.succeeded, "hba \(hba): u_md5 logged in under scram-sha-256")
            XCTAssertTrue(right.stderr.contains("SASL authentication failed"), "PgBouncer's words after SCRAM: \(right.stderr)")
            // A SCRAM user still logs in.
            let ok = try Psql.run(px.target(user: "u_scram", database: "testdb", password: passwords["u_scram"]), "select 1")
            XCTAssertTrue(ok.succeeded, "hba \(hba): \(ok)")
        }
    }

    /// An unknown database used to be reported at the startup packet, before any password. Now the
    /// client is asked to authenticate first; a wrong password gets the password error, and only the
    /// right one learns that the database does not exist (PgBouncer's order and text).
    func testUnknownDatabaseIsToldOnlyAfterAuthentication() throws {
        let pg = try PostgresServer.shared()
        for authType in ["md5", "scram-sha-256"] {
            let px = try Pgswift.start(try settings(pg, authType: authType))
            defer { px.stop() }
            let r = try firstRequest(px, user: "u_password", database: "no_such_db")
            XCTAssertEqual(r.code, authType == "md5" ? 5 : 10, "\(authType): \(r)")
            let existing = try firstRequest(px, user: "u_password", database: "testdb")
            XCTAssertEqual(r.code, existing.code, authType)
            // MD5 salts are random per attempt; the SASL mechanism list is the same.
            XCTAssertEqual(r.rest.count, existing.rest.count, authType)
            if authType != "md5" { XCTAssertEqual(r, existing) }
            let wrong = try WireClient.failedLogin(port: px.port, user: "u_password", database: "no_such_db")
            XCTAssertEqual(wrong.sqlstate, "28P01", "\(authType): \(wrong)")
            XCTAssertEqual(wrong.message, authType == "md5" ? "password authentication failed for user \"u_password\""
                                                              : "SASL authentication failed")
            let right = try Psql.run(px.target(user: "u_password", database: "no_such_db", password: passwords["u_password"]),
                                     "select 1")
            XCTAssertFalse(right.succeeded)
            XCTAssertTrue(right.stderr.contains("no such database: no_such_db"), "\(authType): \(right.stderr)")
        }
        // Under trust the known user learns it at once (there is no password to check), an unknown
        // user gets the trust failure, not the database error.
        let px = try Pgswift.start(try settings(pg, authType: "trust"))
        defer { px.stop() }
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "u_trust", database: "no_such_db")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "no such database: no_such_db", "\(e)")
        }
        XCTAssertThrowsError(try WireClient.connect(port: px.port, user: "ghost", database: "no_such_db")) { e in
            XCTAssertEqual((e as? WireServerError)?.fields.message, "\"trust\" authentication failed", "\(e)")
        }
    }

    /// Finding 5: the startup error said "invalid startup packet" twice, and echoed a parameter name of
    /// any length (up to ~10 KB); names are now cut to 63 bytes.
    func testStartupErrorsAreShortAndSayItOnce() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try settings(pg, authType: "md5"))
        defer { px.stop() }
        // Close to the 10,000-byte startup packet limit.
        let long = String(repeating: "x", count: 9_900)
        let (c1, _, e1) = try startLogin(px, user: "u_md5", database: "testdb") as (WireClient, AuthRequest?, WireErrorFields?)
        c1.socket.close()
        XCTAssertNil(e1)
        let c = WireClient(socket: try TestSocket(port: px.port, timeout: 30), timeout: 30)
        defer { c.socket.close() }
        try c.socket.send(WireEncode.startup(parameters: [("user", "u_md5"), (long, "1")]))
        let m = try XCTUnwrap(try c.readMessage())
        XCTAssertEqual(m.typeChar, "E")
        let f = WireErrorFields(body: m.body)
        XCTAssertEqual(f.message, "unsupported startup parameter: " + String(repeating: "x", count: 63) + "...")
        XCTAssertEqual(f.sqlstate, "08P01")
        XCTAssertTrue(px.logLines(containing: String(repeating: "x", count: 64)).isEmpty, "the log echoes the whole name")

        // A startup packet whose last byte is not the terminator.
        let c2 = WireClient(socket: try TestSocket(port: px.port, timeout: 30), timeout: 30)
        defer { c2.socket.close() }
        var bad = WireEncode.startup(parameters: [("user", "u_md5")])
        bad[bad.count - 1] = 0x41
        try c2.socket.send(bad)
        let m2 = try XCTUnwrap(try c2.readMessage())
        let f2 = WireErrorFields(body: m2.body)
        XCTAssertEqual(f2.message?.components(separatedBy: "invalid startup packet").count, 2, "\(f2)")
    }

    // MARK: issue 14, finding 4 (user enumeration)

    /// Under scram-sha-256 a known and an unknown user get the same SASL request; the unknown name's
    /// salt is stable (on either worker, and after a worker is killed and respawned), differs between
    /// names, and has PostgreSQL's default iteration count; the final errors differ only by the name.
    func testUnknownUsersGetTheKnownUsersScramExchange() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try settings(pg, authType: "scram-sha-256", workers: 2))
        defer { px.stop() }
        let known = try firstRequest(px, user: "u_scram")
        XCTAssertEqual(known.code, 10)
        XCTAssertEqual(try firstRequest(px, user: "ghost_one"), known)
        XCTAssertEqual(try firstRequest(px, user: "u_password"), known)

        // SO_REUSEPORT spreads these over both workers (checked: each answered some).
        var ghost = Set<String>(), plain = Set<String>(), scram = Set<String>()
        var workers = Set<pid_t>()
        for i in 0..<40 where i < 12 || workers.count < 2 {
            ghost.insert(try scramSaltAndIterations(px, user: "ghost_one", servedBy: &workers))
            plain.insert(try scramSaltAndIterations(px, user: "u_password", servedBy: &workers))
            scram.insert(try scramSaltAndIterations(px, user: "u_scram"))
        }
        XCTAssertEqual(workers.count, 2, "the logins did not reach both workers: \(workers)")
        XCTAssertEqual(ghost.count, 1, "\(ghost)")
        XCTAssertEqual(plain.count, 1, "a plain-password user's salt differs between workers: \(plain)")
        XCTAssertEqual(scram.count, 1)
        XCTAssertTrue(ghost.first!.hasSuffix("i=4096"), ghost.first!)
        XCTAssertNotEqual(try scramSaltAndIterations(px, user: "ghost_two"), ghost.first!)
        XCTAssertEqual(ghost.first!.count, scram.first!.count, "salt lengths differ: \(ghost) vs \(scram)")

        // A respawned worker has the same key (the supervisor's environment).
        let before = px.workerPids()
        XCTAssertEqual(before.count, 2)
        kill(before[0], SIGKILL)
        XCTAssertTrue(waitUntil(timeout: 30) {
            let now = px.workerPids()
            return now.count == 2 && !now.contains(before[0])
        }, "worker not respawned: \(px.workerPids())")
        XCTAssertTrue(waitUntil(timeout: 30) { (try? self.scramSaltAndIterations(px, user: "ghost_one")) != nil })
        for _ in 0..<8 { XCTAssertEqual(try scramSaltAndIterations(px, user: "ghost_one"), ghost.first!) }

        let unknown = try WireClient.failedLogin(port: px.port, user: "ghost_one", database: "testdb")
        let wrong = try WireClient.failedLogin(port: px.port, user: "u_scram", database: "testdb")
        XCTAssertEqual(unknown.sqlstate, "28P01")
        XCTAssertEqual(wrong.sqlstate, "28P01")
        // PgBouncer's words for a failed SCRAM exchange, the same for both.
        XCTAssertEqual(unknown.message, "SASL authentication failed")
        XCTAssertEqual(wrong.message, "SASL authentication failed")
    }

    /// scram_iterations: the SCRAM exchange of an auth_file user with a plain-text password, and of an
    /// unknown user, uses that many iterations (as PgBouncer's ad hoc and mock secrets do), and the
    /// plain-text user logs in with it; a user whose auth_file entry is a SCRAM secret keeps the
    /// secret's own count.
    func testScramIterationsApplyToPlainPasswordsAndUnknownUsers() throws {
        let pg = try PostgresServer.shared()
        var s = try settings(pg, authType: "scram-sha-256")
        s.settings = [("scram_iterations", "6000")]
        let px = try Pgswift.start(s)
        defer { px.stop() }
        XCTAssertTrue(try scramSaltAndIterations(px, user: "u_password").hasSuffix(",i=6000"))
        XCTAssertTrue(try scramSaltAndIterations(px, user: "ghost_iterations").hasSuffix(",i=6000"))
        XCTAssertTrue(try scramSaltAndIterations(px, user: "u_scram").hasSuffix(",i=4096"), "the stored secret's count")
        let r = try Psql.run(px.target(user: "u_password", database: "testdb", password: passwords["u_password"]),
                             "select 1")
        XCTAssertTrue(r.succeeded, "\(r)\nlog:\n\(px.log().suffix(3000))")
        XCTAssertFalse(px.log().contains("scram_iterations is not implemented"), px.log())
    }

    /// `pgswift upgrade` execs the supervisor in place and replaces every worker: the environment,
    /// and with it the mock key, goes along, so an unknown name keeps its salt.
    func testUnknownNamesKeepTheirSaltAcrossABinaryUpgrade() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try settings(pg, authType: "scram-sha-256", workers: 2))
        defer { px.stop() }
        let salt = try scramSaltAndIterations(px, user: "ghost_upgrade")
        let plain = try scramSaltAndIterations(px, user: "u_password")
        let before = Set(px.workerPids())
        let cli = try UpgradeFixtures.upgradeCLI(px)
        XCTAssertTrue(cli.succeeded, "\(cli)\nlog:\n\(px.log().suffix(4000))")
        XCTAssertTrue(waitUntil(timeout: 60) { Set(px.workerPids()).isDisjoint(with: before) && px.workerPids().count == 2 },
                      "workers now \(px.workerPids()), before \(before)")
        for _ in 0..<8 {
            XCTAssertEqual(try scramSaltAndIterations(px, user: "ghost_upgrade"), salt)
            XCTAssertEqual(try scramSaltAndIterations(px, user: "u_password"), plain)
        }
    }

    /// Under md5 a known user with an MD5 (or plain) secret and an unknown one both get an MD5 request
    /// with a 4-byte salt, and the same final error.
    func testUnknownUsersGetTheKnownUsersMd5Request() throws {
        let pg = try PostgresServer.shared()
        let px = try Pgswift.start(try settings(pg, authType: "md5"))
        defer { px.stop() }
        for user in ["u_md5", "u_password", "ghost_md5"] {
            let r = try firstRequest(px, user: user)
            XCTAssertEqual(r.code, 5, user)
            XCTAssertEqual(r.rest.count, 4, user)
        }
        let unknown = try WireClient.failedLogin(port: px.port, user: "ghost_md5", database: "testdb")
        let wrong = try WireClient.failedLogin(port: px.port, user: "u_md5", database: "testdb")
        XCTAssertEqual(unknown.sqlstate, wrong.sqlstate)
        XCTAssertEqual(unknown.message, "password authentication failed for user \"ghost_md5\"")
        XCTAssertEqual(wrong.message, "password authentication failed for user \"u_md5\"")
    }
}
