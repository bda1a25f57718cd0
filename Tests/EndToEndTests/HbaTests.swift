// End to end: auth_type = hba against the real PostgreSQL — each method allowed and refused by
// address and by user, local lines (trust, peer), hostnossl/hostssl/cert without TLS, lines skipped
// with a warning, and reloads.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The first thing pgswift answers to a startup packet: an auth request (its code) or an error.
enum HbaLoginAnswer: Equatable, CustomStringConvertible {
    case auth(Int)
    case error(sqlstate: String, message: String)

    var description: String {
        switch self {
        case .auth(let c): return "auth request \(c)"
        case .error(let s, let m): return "error \(s) \(m)"
        }
    }
}

/// Sends a startup packet from `source` (any 127/8 address: all of it is loopback) to pgswift on
/// 127.0.0.1 and returns its first answer. libpq cannot choose its source address, hence this.
func firstLoginAnswer(port: Int, source: String, user: String, database: String) throws -> HbaLoginAnswer {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw E2EError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var local = sockaddr_in()
    local.sin_family = sa_family_t(AF_INET)
    guard inet_pton(AF_INET, source, &local.sin_addr) == 1 else { throw E2EError("bad source \(source)") }
    var rc = withUnsafePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { throw E2EError("bind \(source): \(String(cString: strerror(errno)))") }
    var tv = timeval(tv_sec: 20, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var remote = sockaddr_in.loopback(port: port)
    rc = withUnsafePointer(to: &remote) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { throw E2EError("connect from \(source): \(String(cString: strerror(errno)))") }
    let packet = WireEncode.startup(parameters: [("user", user), ("database", database)])
    guard packet.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == packet.count else {
        throw E2EError("send: \(String(cString: strerror(errno)))")
    }
    func read(_ n: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: n)
        while out.count < n {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, n - out.count, 0) }
            if got <= 0 { throw E2EError("connection from \(source) closed or timed out before an answer") }
            out += chunk[0..<got]
        }
        return out
    }
    let header = try read(5)
    let len = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
    let body = try read(len - 4)
    switch header[0] {
    case UInt8(ascii: "R"):
        return .auth(Int(body[0]) << 24 | Int(body[1]) << 16 | Int(body[2]) << 8 | Int(body[3]))
    case UInt8(ascii: "E"):
        let f = WireErrorFields(body: body)
        return .error(sqlstate: f.sqlstate ?? "", message: f.message ?? "")
    default:
        throw E2EError("unexpected first message \(header[0])")
    }
}

final class E2EHbaTests: XCTestCase {
    private let passwords = PostgresServer.passwords
    private let rejected = HbaLoginAnswer.error(sqlstate: "28000", message: "login rejected")

    /// One line per (method, who may use it) from 127.0.0.1, one for 127.0.0.2, local lines.
    /// Every database alias lands on testdb as u_trust, so only pgswift's client auth is tested.
    private static let rules = """
        # pgswift E2E hba file
        host      db_trust     u_trust              127.0.0.1/32  trust
        host      db_password  u_password,u_md5     127.0.0.1/32  password
        host      db_md5       u_md5,u_password     127.0.0.1/32  md5
        host      db_scram     u_scram,u_password   127.0.0.1/32  scram-sha-256
        host      db_reject    u_md5                127.0.0.1/32  reject
        host      db_reject    all                  127.0.0.1/32  trust
        host      all          u_md5                127.0.0.2/32  md5
        hostssl   db_ssl       all                  127.0.0.0/8   trust
        hostnossl db_ssl       u_trust              127.0.0.0/8   password
        host      db_cert      all                  127.0.0.1     255.255.255.255  cert
        local     db_local     all                                trust
        local     db_peer      all                                peer
        """

    private func start(rules: String = E2EHbaTests.rules) throws -> (Pgswift, hbaPath: String, scratch: String) {
        let pg = try PostgresServer.shared()
        let scratch = try makeTempDirectory(prefix: "hba")
        let hbaPath = scratch + "/pg_hba.conf"
        try rules.write(toFile: hbaPath, atomically: false, encoding: .utf8)
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = "hba"
        s.settings = [("auth_hba_file", hbaPath)]
        let target = pg.connectionString(dbname: "testdb", extra: "user=u_trust")
        s.databases = ["db_trust", "db_password", "db_md5", "db_scram", "db_reject", "db_ssl", "db_cert",
                       "db_local", "db_peer"].map { ($0, target) }
        s.users = [("u_trust", passwords["u_trust"]!), ("u_password", passwords["u_password"]!),
                   ("u_md5", try pg.storedPassword(of: "u_md5")), ("u_scram", try pg.storedPassword(of: "u_scram"))]
        s.probe = ClientTarget(port: 0, user: "u_trust", database: "db_trust", password: nil)
        return (try Pgswift.start(s), hbaPath, scratch)
    }

    private func login(_ px: Pgswift, _ user: String, _ db: String, password: String? = nil) throws -> CommandResult {
        try Psql.run(px.target(user: user, database: db, password: password), "select current_user")
    }

    private func assertLogsIn(_ px: Pgswift, _ user: String, _ db: String, password: String? = nil,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try login(px, user, db, password: password)
        XCTAssertTrue(r.succeeded, "\(user)@\(db): \(r)\nlog:\n\(px.log().suffix(2000))", file: file, line: line)
        XCTAssertEqual(r.stdout.trimmed, "u_trust", file: file, line: line)
    }

    private func assertRejected(_ px: Pgswift, _ user: String, _ db: String, source: String = "127.0.0.1",
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let answer = try firstLoginAnswer(port: px.port, source: source, user: user, database: db)
        XCTAssertEqual(answer, rejected, "\(user)@\(db) from \(source)", file: file, line: line)
    }

    private func assertAsked(_ px: Pgswift, _ user: String, _ db: String, source: String, code: Int,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let answer = try firstLoginAnswer(port: px.port, source: source, user: user, database: db)
        XCTAssertEqual(answer, .auth(code), "\(user)@\(db) from \(source)", file: file, line: line)
    }

    func testEachMethodAllowedAndRefusedByAddressAndUser() throws {
        let (px, _, scratch) = try start()
        defer { px.stop(); try? FileManager.default.removeItem(atPath: scratch) }
        let md5Code = 5, cleartextCode = 3, saslCode = 10

        // trust: no password asked; another user, or the same user from 127.0.0.2, has no line.
        try assertLogsIn(px, "u_trust", "db_trust")
        try assertAsked(px, "u_trust", "db_trust", source: "127.0.0.1", code: 0)
        try assertRejected(px, "u_password", "db_trust")
        try assertRejected(px, "u_trust", "db_trust", source: "127.0.0.2")

        // password (clear text): right and wrong password; refused user; refused address.
        try assertLogsIn(px, "u_password", "db_password", password: passwords["u_password"])
        try assertAsked(px, "u_password", "db_password", source: "127.0.0.1", code: cleartextCode)
        let wrong = try login(px, "u_password", "db_password", password: "nope")
        XCTAssertFalse(wrong.succeeded)
        XCTAssertTrue(wrong.stderr.contains("password authentication failed"), wrong.stderr)
        try assertRejected(px, "u_scram", "db_password")
        try assertRejected(px, "u_password", "db_password", source: "127.0.0.2")

        // md5 (an MD5 hash in auth_file, and a plain password answered with md5 too).
        try assertLogsIn(px, "u_md5", "db_md5", password: passwords["u_md5"])
        try assertLogsIn(px, "u_password", "db_md5", password: passwords["u_password"])
        try assertAsked(px, "u_md5", "db_md5", source: "127.0.0.1", code: md5Code)
        let wrongMd5 = try WireClient.failedLogin(port: px.port, user: "u_md5", database: "db_md5")
        XCTAssertEqual(wrongMd5.sqlstate, "28P01", "\(wrongMd5)")
        try assertRejected(px, "u_trust", "db_md5")
        try assertRejected(px, "u_scram", "db_md5", source: "127.0.0.2")
        // The 127.0.0.2 line lets u_md5 in with md5, for every database (db_trust included).
        try assertAsked(px, "u_md5", "db_trust", source: "127.0.0.2", code: md5Code)

        // scram-sha-256 (a SCRAM secret, and a plain password turned into one).
        try assertLogsIn(px, "u_scram", "db_scram", password: passwords["u_scram"])
        try assertLogsIn(px, "u_password", "db_scram", password: passwords["u_password"])
        try assertAsked(px, "u_scram", "db_scram", source: "127.0.0.1", code: saslCode)
        let wrongScram = try WireClient.failedLogin(port: px.port, user: "u_scram", database: "db_scram")
        XCTAssertEqual(wrongScram.sqlstate, "28P01", "\(wrongScram)")
        try assertRejected(px, "u_md5", "db_scram")
        try assertRejected(px, "u_scram", "db_scram", source: "127.0.0.2")

        // reject: the reject line refuses u_md5 from 127.0.0.1; the next line lets others in; from
        // 127.0.0.2 the reject line does not apply and u_md5 gets md5.
        try assertRejected(px, "u_md5", "db_reject")
        let psqlRejected = try login(px, "u_md5", "db_reject", password: passwords["u_md5"])
        XCTAssertFalse(psqlRejected.succeeded)
        XCTAssertTrue(psqlRejected.stderr.contains("login rejected"), psqlRejected.stderr)
        try assertLogsIn(px, "u_trust", "db_reject")
        try assertAsked(px, "u_md5", "db_reject", source: "127.0.0.2", code: md5Code)

        // Without TLS the hostssl line never matches; hostnossl does, for u_trust only.
        try assertAsked(px, "u_trust", "db_ssl", source: "127.0.0.1", code: cleartextCode)
        try assertLogsIn(px, "u_trust", "db_ssl", password: passwords["u_trust"])
        try assertRejected(px, "u_md5", "db_ssl", source: "127.0.0.3")
        // cert needs TLS: a plain connection is refused with a clear reason.
        XCTAssertEqual(try firstLoginAnswer(port: px.port, source: "127.0.0.1", user: "u_trust", database: "db_cert"),
                       .error(sqlstate: "28000", message: "cert authentication requires TLS"))
        // Address + mask form (255.255.255.255): 127.0.0.2 is outside it.
        try assertRejected(px, "u_trust", "db_cert", source: "127.0.0.2")

        XCTAssertFalse(px.logLines(containing: "login rejected", "no auth_hba_file line matches").isEmpty)
        XCTAssertFalse(px.logLines(containing: "login rejected", "pg_hba.conf:6").isEmpty,
                       "the log names the reject line:\n\(px.log().suffix(3000))")
        XCTAssertTrue(px.isRunning)
    }

    func testLocalLinesTrustAndPeer() throws {
        let (px, _, scratch) = try start()
        defer { px.stop(); try? FileManager.default.removeItem(atPath: scratch) }
        func overSocket(_ user: String, _ db: String) throws -> CommandResult {
            let conn = "host=\(px.dir) port=\(px.port) dbname=\(db) user=\(user) connect_timeout=20"
            return try runCommand([try PostgresTools.path("psql"), conn, "-XAtq", "-c", "select current_user"],
                                  environment: childEnvironment(), timeout: 60)
        }
        // local trust; the same database over TCP has no host line.
        let local = try overSocket("u_md5", "db_local")
        XCTAssertTrue(local.succeeded, "\(local)\n\(px.log().suffix(2000))")
        XCTAssertEqual(local.stdout.trimmed, "u_trust")
        try assertRejected(px, "u_md5", "db_local")

        // peer: the OS user running this test may log in under its own name only.
        guard let pw = getpwuid(getuid()), let me = pw.pointee.pw_name.map({ String(cString: $0) }) else {
            return XCTFail("cannot tell who runs the test")
        }
        let peerOK = try overSocket(me, "db_peer")
        XCTAssertTrue(peerOK.succeeded, "peer as \(me): \(peerOK)\n\(px.log().suffix(2000))")
        XCTAssertEqual(peerOK.stdout.trimmed, "u_trust")
        let peerBad = try overSocket(me == "u_trust" ? "u_md5" : "u_trust", "db_peer")
        XCTAssertFalse(peerBad.succeeded)
        XCTAssertTrue(peerBad.stderr.contains("Peer authentication failed for user"), peerBad.stderr)
        // Over TCP the local lines do not exist.
        try assertRejected(px, me, "db_peer")
    }

    /// A local peer line with `map=` (auth_ident_file): the OS user logs in as the database users the
    /// map names, and no longer as itself unless a line says so (PgBouncer's test_peer_auth_ident_map).
    func testLocalPeerLineWithAnIdentMap() throws {
        guard let pw = getpwuid(getuid()), let me = pw.pointee.pw_name.map({ String(cString: $0) }) else {
            return XCTFail("cannot tell who runs the test")
        }
        let scratch = try makeTempDirectory(prefix: "hba")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let ident = scratch + "/ident.conf"
        try "mymap \(me) u_md5\nmymap \(me) u_scram\n".write(toFile: ident, atomically: false, encoding: .utf8)
        let hba = scratch + "/peer-map.conf"
        try "local db_peer all peer map=mymap\n".write(toFile: hba, atomically: false, encoding: .utf8)
        let pg = try PostgresServer.shared()
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.authType = "hba"
        s.settings = [("auth_hba_file", hba), ("auth_ident_file", ident)]
        s.databases = [("db_peer", pg.connectionString(dbname: "testdb", extra: "user=u_trust"))]
        s.users = [("u_md5", try pg.storedPassword(of: "u_md5")), ("u_scram", try pg.storedPassword(of: "u_scram")),
                   ("u_trust", passwords["u_trust"]!)]
        s.probe = nil  // a TCP probe has no hba line
        let px = try Pgswift.start(s)
        defer { px.stop() }
        func overSocket(_ user: String) throws -> CommandResult {
            let conn = "host=\(px.dir) port=\(px.port) dbname=db_peer user=\(user) connect_timeout=20"
            return try runCommand([try PostgresTools.path("psql"), conn, "-XAtq", "-c", "select current_user"],
                                  environment: childEnvironment(), timeout: 60)
        }
        for user in ["u_md5", "u_scram"] {
            let r = try overSocket(user)
            XCTAssertTrue(r.succeeded, "\(me) mapped to \(user): \(r)\n\(px.log().suffix(2000))")
            XCTAssertEqual(r.stdout.trimmed, "u_trust")
        }
        for user in ["u_trust", me] where user != "u_md5" && user != "u_scram" {
            let r = try overSocket(user)
            XCTAssertFalse(r.succeeded, "\(me) as \(user), which the map does not name")
            XCTAssertTrue(r.stderr.contains("Peer authentication failed for user \"\(user)\""), r.stderr)
        }
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            !px.logLines(containing: "ident map mymap cannot be matched", "OS user \"\(me)\"").isEmpty
        }, "PgBouncer's words in the log:\n\(px.log().suffix(2000))")
    }

    /// A reload picks up a changed file; a broken file is refused (error with file and line) and the
    /// rules in force stay.
    func testReloadAppliesNewRulesAndKeepsOldOnesWhenBroken() throws {
        let (px, hbaPath, scratch) = try start()
        defer { px.stop(); try? FileManager.default.removeItem(atPath: scratch) }
        try assertRejected(px, "u_password", "db_trust")

        let opened = Self.rules.replacingOccurrences(
            of: "host      db_trust     u_trust              127.0.0.1/32  trust",
            with: "host      db_trust     u_trust,u_password   127.0.0.1/32  trust")
        XCTAssertNotEqual(opened, Self.rules)
        try opened.write(toFile: hbaPath, atomically: true, encoding: .utf8)
        px.signal(SIGHUP)
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            (try? firstLoginAnswer(port: px.port, source: "127.0.0.1", user: "u_password", database: "db_trust")) == .auth(0)
        }, "the reloaded file lets u_password in:\n\(px.log().suffix(2000))")

        try (opened + "\nhost all all all kerberos\n").write(toFile: hbaPath, atomically: true, encoding: .utf8)
        px.signal(SIGHUP)
        let badLine = opened.split(separator: "\n", omittingEmptySubsequences: false).count + 1
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            px.log().contains("\(hbaPath):\(badLine): ")
        }, "the refused reload names file and line:\n\(px.log().suffix(2000))")
        // Still the rules of the last good file.
        try assertAsked(px, "u_password", "db_trust", source: "127.0.0.1", code: 0)
        try assertRejected(px, "u_scram", "db_trust")
        try assertLogsIn(px, "u_trust", "db_trust")
        XCTAssertTrue(px.isRunning)
    }

    /// A line whose method or option pgswift does not support does not stop pgswift: it is skipped (an
    /// ldap line refuses what it matches instead), with a warning naming file and line, as PgBouncer does.
    func testUnsupportedMethodAndOptionLinesWarnAndTheRestApplies() throws {
        let rules = """
            host  db_trust  u_trust  127.0.0.2/32  gss include_realm=0
            host  db_trust  u_trust  127.0.0.3/32  ldap ldapserver=ldap.example.com ldapprefix="cn=" ldapsuffix=", dc=x"
            host  db_trust  u_trust  127.0.0.4/32  md5 clientcert=verify-full
            host  db_trust  u_trust  127.0.0.0/8   trust
            """
        let (px, hbaPath, scratch) = try start(rules: rules)
        defer { px.stop(); try? FileManager.default.removeItem(atPath: scratch) }
        // The gss line and the line with an option are skipped: the trust line below takes their clients.
        try assertAsked(px, "u_trust", "db_trust", source: "127.0.0.2", code: 0)
        try assertAsked(px, "u_trust", "db_trust", source: "127.0.0.4", code: 0)
        try assertLogsIn(px, "u_trust", "db_trust")
        // The ldap line keeps its clients and refuses them (no fall-through to the trust line).
        try assertRejected(px, "u_trust", "db_trust", source: "127.0.0.3")
        XCTAssertTrue(waitUntil(timeout: 30, poll: 0.2) {
            !px.logLines(containing: "login rejected", "rejected by \(hbaPath):2").isEmpty
        }, "the log names the ldap line:\n\(px.log().suffix(3000))")
        for (line, what) in [(1, "\"gss\""), (2, "\"ldap\""), (3, "\"clientcert=verify-full\"")] {
            XCTAssertFalse(px.logLines(containing: "\(hbaPath):\(line): ", what, "is not supported by pgswift").isEmpty,
                           "warning for line \(line):\n\(px.log().suffix(3000))")
        }
        // --check-config accepts the file and prints the same warnings.
        let check = try Pgswift.runCLI(["--check-config", px.configPath])
        XCTAssertEqual(check.status, 0, "\(check)")
        XCTAssertTrue(check.stderr.contains("\(hbaPath):1: warning: authentication method \"gss\""), "\(check)")
        XCTAssertTrue(px.isRunning)
    }

    func testBadHbaFileStopsStartWithFileAndLine() throws {
        let pg = try PostgresServer.shared()
        let scratch = try makeTempDirectory(prefix: "hba")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let hbaPath = scratch + "/pg_hba.conf"
        try "host all all 127.0.0.1/32 md5\nhost all +admins 127.0.0.1/32 md5\n"
            .write(toFile: hbaPath, atomically: false, encoding: .utf8)
        let ini = """
            [databases]
            testdb = \(pg.connectionString(dbname: "testdb"))
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = {{PORT}}
            unix_socket_dir = {{DIR}}
            auth_type = hba
            auth_hba_file = \(hbaPath)
            """
        let check = try Pgswift.runCLI(["--check-config", try writeTemp(ini.replacingOccurrences(of: "{{PORT}}", with: "1")
            .replacingOccurrences(of: "{{DIR}}", with: scratch), in: scratch)])
        XCTAssertNotEqual(check.status, 0)
        XCTAssertTrue((check.stderr + check.stdout).contains("\(hbaPath):2: "), "\(check)")
        let px = try Pgswift.launch(ini: ini)
        defer { px.stop() }
        XCTAssertNotNil(px.waitForExit(timeout: 30), "pgswift must refuse to start")
        XCTAssertTrue(px.log().contains("\(hbaPath):2: group names (+admins) are not supported"), px.log())
    }

    private func writeTemp(_ text: String, in dir: String) throws -> String {
        let path = dir + "/check.ini"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }
}
