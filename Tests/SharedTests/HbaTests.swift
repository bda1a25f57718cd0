// Tests of the auth_hba_file parser and matcher: line syntax, name lists, @file, addresses, methods,
// lines skipped with a warning, errors.
import Foundation
import XCTest
@testable import Shared

final class HbaTests: TemporaryFolderCase {
    override class var folderPrefix: String { "hba" }

    private func parse(_ text: String, file: String = "hba.conf") throws -> HbaRules {
        try HbaRules.parse(text: text, file: file)
    }

    private func parseError(_ text: String, file: String = "hba.conf", _ line: UInt = #line) -> ConfigError? {
        do {
            let r = try HbaRules.parse(text: text, file: file)
            XCTFail("expected an error, got \(r.rules.count) rules", line: line)
            return nil
        } catch {
            return error
        }
    }

    private func v4(_ s: String) -> HbaPeer {
        var a = in_addr()
        XCTAssertEqual(inet_pton(AF_INET, s, &a), 1, s)
        return .ipv4(UInt32(bigEndian: a.s_addr))
    }

    private func v6(_ s: String) -> HbaPeer {
        var a = in6_addr()
        XCTAssertEqual(inet_pton(AF_INET6, s, &a), 1, s)
        return HbaPeer(ipv6Bytes: withUnsafeBytes(of: &a) { [UInt8]($0) })
    }

    /// The method chosen for a connection, "reject" when no line matches (as PgBouncer reports it).
    private func method(_ rules: HbaRules, _ db: String, _ user: String, _ peer: HbaPeer, tls: Bool = false,
                        replication: ReplicationMode = .none) -> String {
        rules.match(peer: peer, tls: tls, database: db, user: user, replication: replication)?.method.rawValue ?? "reject"
    }

    // MARK: The PgBouncer-style table

    /// One file covering every connection type, name lists, quoting, masks, IPv6 and `all`; each
    /// expectation is what PgBouncer's own hba evaluation gives for the same file.
    private let table = """
        # METHOD: trust, reject, md5, password, peer, cert, scram-sha-256
        # odd whitespace must not matter
         \t \t
        \t\t# indented comment

        local   dbp        all                      peer
        local   all        userp                    password
        local   dbz        userz                    trust
        local   dbs        users                    scram-sha-256
        local   all        all                      md5

        hostssl   all  all  10.0.0.0/8               cert
        hostnossl all  all  11.0.0.0/8               md5
        host      all  all  127.0.0.0  255.255.255.0 password

        host   db1   all    0.0.0.0/0      md5
        host   all   user1  15.0.0.0/8     md5

        host   tmp1,all   user1,user2 , user3            16.0.0.0/8  md5
        host   tmp2,all   u1,u2,u3,u4,u5,u6,u7,u8,u9,u10,u11,u2  17.0.0.0/8  md5
        host   d1,d2,d3,d4,d5,d6,d7,d8,d9,d10,d11  t18user  18.0.0.0/8  trust # comment

        host   "all"      "all"    19.0.0.0/8  cert
        host   "q1""q2"   "a , b"  19.0.0.0/8  cert

        host   mdb   muser  199.199.199.199/32  cert
        host   mdb2  muser  128.0.0.0/9   trust
        host   mdb2  muser  128.0.0.0/8   md5
        host   mdb2  muser  128.0.0.0/7   cert
        host   mdb2  muser  128.0.0.0/1   password

        host   mdb   muser  ff11::0/16  md5
        host   mdb   muser  ff20::/12   md5
        host   mdb   muser  ::1/128     trust

        host   mdb3  muser  all  scram-sha-256
        host   mdb4  muser  all  reject

        host   replication       admin   ::1/128  trust
        host   db2,replication   admin2  ::1/128  trust
        host   sameuser          all     20.0.0.0/8  md5
        """

    func testTableMatchesLikePgBouncer() throws {
        let r = try parse(table)
        XCTAssertEqual(r.rules.count, 28)
        let cases: [(String, String, String, HbaPeer, Bool)] = [
            // local
            ("md5", "db", "user", .unix, false),
            ("peer", "dbp", "user", .unix, false),
            ("password", "db", "userp", .unix, false),
            ("trust", "dbz", "userz", .unix, false),
            ("scram-sha-256", "dbs", "users", .unix, false),
            // hostssl / hostnossl
            ("cert", "db", "user", v4("10.1.1.1"), true),
            ("reject", "db", "user", v4("10.1.1.1"), false),
            ("reject", "db", "user", v4("13.1.1.1"), true),
            ("reject", "db", "user", v4("11.1.1.1"), true),
            ("md5", "db", "user", v4("11.1.1.1"), false),
            // address + separate mask
            ("password", "db", "user", v4("127.0.0.2"), true),
            ("password", "db", "user", v4("127.0.0.3"), false),
            ("reject", "db", "user", v4("127.0.1.4"), false),
            // database filter
            ("reject", "db1x", "user", v4("127.0.1.4"), false),
            ("md5", "db1", "user", v4("127.0.1.4"), false),
            // user filter
            ("md5", "db1z", "user1", v4("15.0.0.1"), false),
            ("reject", "db1z", "user2", v4("15.0.0.1"), false),
            // lists with blanks around commas
            ("reject", "db2", "user", v4("16.0.0.1"), false),
            ("md5", "db2", "user1", v4("16.0.0.1"), false),
            ("md5", "db2", "user2", v4("16.0.0.1"), false),
            ("md5", "db2", "user3", v4("16.0.0.1"), false),
            ("reject", "db2", "user4", v4("16.0.0.1"), false),
            ("md5", "db2", "u11", v4("17.0.0.1"), false),
            ("md5", "db2", "u1", v4("17.0.0.1"), false),
            ("reject", "d1", "user", v4("18.0.0.2"), false),
            ("trust", "d1", "t18user", v4("18.0.0.2"), false),
            ("trust", "d11", "t18user", v4("18.0.0.2"), false),
            // quoting: "all" is a name, "" is a quote, commas inside quotes are text
            ("reject", "db", "t19user", v4("19.0.0.2"), false),
            ("cert", "all", "all", v4("19.0.0.2"), false),
            ("cert", "q1\"q2", "a , b", v4("19.0.0.2"), false),
            // masks
            ("cert", "mdb", "muser", v4("199.199.199.199"), false),
            ("reject", "mdb", "muser", v4("199.199.199.198"), false),
            ("reject", "mdb", "muser", v4("199.199.199.200"), false),
            ("trust", "mdb2", "muser", v4("128.1.1.1"), false),
            ("md5", "mdb2", "muser", v4("128.200.1.1"), false),
            ("cert", "mdb2", "muser", v4("129.1.1.1"), false),
            ("password", "mdb2", "muser", v4("254.1.1.1"), false),
            ("reject", "mdb2", "muser", v4("1.1.1.1"), false),
            // IPv6
            ("md5", "mdb", "muser", v6("ff11:2::1"), false),
            ("md5", "mdb", "muser", v6("ff22:3::1"), false),
            ("trust", "mdb", "muser", v6("::1"), false),
            ("reject", "mdb", "muser", v6("::2"), false),
            // "all" addresses, both families
            ("scram-sha-256", "mdb3", "muser", v4("1.2.3.4"), false),
            ("scram-sha-256", "mdb3", "muser", v6("face::1"), false),
            ("reject", "mdb4", "muser", v4("1.2.3.4"), false),
            ("reject", "mdb4", "muser", v6("face::1"), false),
            // the replication keyword matches physical replication connections only (see below)
            ("reject", "db", "admin", v6("::1"), false),
            ("reject", "replication", "admin", v6("::1"), false),
            ("trust", "db2", "admin2", v6("::1"), false),
            ("reject", "replication", "admin2", v6("::1"), false),
            // sameuser
            ("md5", "alice", "alice", v4("20.1.2.3"), false),
            ("reject", "bob", "alice", v4("20.1.2.3"), false),
        ]
        for (expected, db, user, peer, tls) in cases {
            XCTAssertEqual(method(r, db, user, peer, tls: tls), expected, "db=\(db) user=\(user) peer=\(peer) tls=\(tls)")
        }
    }

    /// As PgBouncer's hba_eval (and PostgreSQL): a physical replication connection matches only lines
    /// whose database field says `replication`, whatever database it names; `all` is not one of them.
    /// A logical one (`replication=database`) is matched by its database name, like any connection.
    func testReplicationKeywordMatchesPhysicalReplicationOnly() throws {
        let r = try parse("""
            host   replication   repl    127.0.0.1/32  trust
            host   app           repl    127.0.0.1/32  md5
            host   db2,replication  other  127.0.0.1/32  password
            host   all           all     127.0.0.1/32  scram-sha-256
            """)
        let peer = v4("127.0.0.1")
        XCTAssertEqual(method(r, "app", "repl", peer, replication: .physical), "trust")
        XCTAssertEqual(method(r, "replication", "repl", peer, replication: .physical), "trust")
        XCTAssertEqual(method(r, "app", "repl", peer, replication: .logical), "md5")
        XCTAssertEqual(method(r, "app", "repl", peer), "md5")
        XCTAssertEqual(method(r, "replication", "repl", peer), "scram-sha-256", "the keyword is no database name")
        XCTAssertEqual(method(r, "x", "other", peer, replication: .physical), "password")
        XCTAssertEqual(method(r, "x", "nobody", peer, replication: .physical), "reject", "all does not match physical")
        XCTAssertEqual(method(r, "db2", "other", peer, replication: .logical), "password")
    }

    func testFirstMatchingLineWinsAndCarriesItsLocation() throws {
        let r = try parse("""
            host all alice 127.0.0.1/32 reject
            host all all   127.0.0.0/8  md5
            host all all   0.0.0.0/0    scram-sha-256
            """, file: "/etc/pgswift/hba.conf")
        let alice = r.match(peer: v4("127.0.0.1"), tls: false, database: "app", user: "alice")
        XCTAssertEqual(alice?.method, .reject)
        XCTAssertEqual(alice?.line, 1)
        XCTAssertEqual(alice?.file, "/etc/pgswift/hba.conf")
        XCTAssertEqual(r.match(peer: v4("127.0.0.2"), tls: false, database: "app", user: "alice")?.line, 2)
        XCTAssertEqual(r.match(peer: v4("10.0.0.1"), tls: false, database: "app", user: "alice")?.line, 3)
        XCTAssertNil(r.match(peer: .unix, tls: false, database: "app", user: "alice"), "no local line")
    }

    func testLocalLinesOnlyMatchUnixSockets() throws {
        let r = try parse("local all all trust\n")
        XCTAssertEqual(method(r, "db", "u", .unix), "trust")
        XCTAssertEqual(method(r, "db", "u", v4("127.0.0.1")), "reject")
        XCTAssertEqual(method(r, "db", "u", v6("::1")), "reject")
        let h = try parse("host all all all trust\n")
        XCTAssertEqual(method(h, "db", "u", .unix), "reject", "host lines never match a Unix socket")
    }

    func testIPv4LinesMatchV4MappedIPv6Clients() throws {
        let r = try parse("host all all 192.168.1.0/24 md5\nhost all all ::ffff:0:0/96 trust\n")
        XCTAssertEqual(method(r, "db", "u", v6("::ffff:192.168.1.7")), "md5")
        XCTAssertEqual(method(r, "db", "u", v6("::ffff:10.0.0.1")), "trust")
        XCTAssertEqual(method(r, "db", "u", v4("10.0.0.1")), "reject", "an IPv6 line does not match an IPv4 client")
    }

    func testHostBitsPastTheMaskAreIgnored() throws {
        let r = try parse("host all all 10.1.2.3/8 md5\nhost all all fe80::1/10 trust\n")
        XCTAssertEqual(method(r, "db", "u", v4("10.200.0.1")), "md5")
        XCTAssertEqual(method(r, "db", "u", v6("febf::9")), "trust")
        XCTAssertEqual(r.rules[0].address, .ipv4(address: 0x0A00_0000, mask: 0xFF00_0000))
    }

    func testMaskEdgeLengths() throws {
        let r = try parse("""
            host a all 0.0.0.0/0 trust
            host b all 10.0.0.1/32 trust
            host c all ::/0 trust
            host d all 2001:db8::1/128 trust
            host e all 2001:db8::/64 trust
            host f all 2001:db8::/65 trust
            host g all 2001:db8::  ffff:ffff:ffff:ffff:: trust
            """)
        XCTAssertEqual(method(r, "a", "u", v4("255.255.255.255")), "trust")
        XCTAssertEqual(method(r, "b", "u", v4("10.0.0.1")), "trust")
        XCTAssertEqual(method(r, "b", "u", v4("10.0.0.2")), "reject")
        XCTAssertEqual(method(r, "c", "u", v6("1234::5")), "trust")
        XCTAssertEqual(method(r, "c", "u", v4("1.2.3.4")), "reject", "::/0 covers IPv6 only")
        XCTAssertEqual(method(r, "d", "u", v6("2001:db8::1")), "trust")
        XCTAssertEqual(method(r, "d", "u", v6("2001:db8::2")), "reject")
        XCTAssertEqual(method(r, "e", "u", v6("2001:db8::ffff:1")), "trust")
        XCTAssertEqual(method(r, "e", "u", v6("2001:db9::1")), "reject")
        XCTAssertEqual(method(r, "f", "u", v6("2001:db8::7fff:0:0:1")), "trust")
        XCTAssertEqual(method(r, "f", "u", v6("2001:db8:0:0:8000::1")), "reject")
        XCTAssertEqual(method(r, "g", "u", v6("2001:db8::abcd")), "trust")
        XCTAssertEqual(method(r, "g", "u", v6("2001:db8:1::abcd")), "reject")
    }

    func testEveryMethodParses() throws {
        let r = try parse("""
            host all all all trust
            host all all all reject
            host all all all md5
            host all all all password
            host all all all scram-sha-256
            hostssl all all all cert
            local all all peer
            """)
        XCTAssertEqual(r.rules.map(\.method), [.trust, .reject, .md5, .password, .scramSHA256, .cert, .peer])
        XCTAssertEqual(r.rules.map(\.type), [.host, .host, .host, .host, .host, .hostssl, .local])
        XCTAssertNil(r.rules[6].address)
    }

    func testCRLFAndMissingFinalNewline() throws {
        let r = try parse("host all all all md5\r\nlocal all all trust")
        XCTAssertEqual(r.rules.count, 2)
        XCTAssertEqual(r.rules[1].line, 2)
        XCTAssertEqual(try parse("").rules.count, 0)
        XCTAssertEqual(try parse("\n\n# only comments\n").rules.count, 0)
    }

    // MARK: @file includes

    func testAtFileIncludesNamesRelativeToTheHbaFile() throws {
        try write("users.txt", "alice, bob\n# a comment\ncarol   dave # trailing\n\"eve smith\"\n")
        try FileManager.default.createDirectory(atPath: tempDir + "/sub", withIntermediateDirectories: true)
        try write("sub/dbs.txt", "app1\n@more.txt\n")
        try write("sub/more.txt", "app2\n")
        let hba = try write("hba.conf", "host @sub/dbs.txt @users.txt,zed 127.0.0.1/32 md5\n")
        let r = try HbaRules.load(path: hba)
        XCTAssertEqual(r.rules[0].users.names, ["alice", "bob", "carol", "dave", "eve smith", "zed"])
        XCTAssertEqual(r.rules[0].databases.names, ["app1", "app2"], "nested @file resolves against the including file")
        XCTAssertEqual(method(r, "app2", "eve smith", v4("127.0.0.1")), "md5")
        XCTAssertEqual(method(r, "app3", "alice", v4("127.0.0.1")), "reject")
    }

    func testAtFileKeywordsAndErrorsInsideIt() throws {
        try write("everyone.txt", "all\n")
        let hba = try write("hba.conf", "host all @everyone.txt 127.0.0.1/32 trust\n")
        XCTAssertTrue(try HbaRules.load(path: hba).rules[0].users.all)

        let bad = try write("bad.txt", "ok\n\"unterminated\n")
        _ = bad
        try write("hba2.conf", "host all @bad.txt all trust\n")
        do {
            _ = try HbaRules.load(path: tempDir + "/hba2.conf")
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(error.file, tempDir + "/bad.txt")
            XCTAssertEqual(error.line, 2)
        }
        try write("hba3.conf", "\nhost all @missing.txt all trust\n")
        do {
            _ = try HbaRules.load(path: tempDir + "/hba3.conf")
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(error.file, tempDir + "/hba3.conf")
            XCTAssertEqual(error.line, 2)
            XCTAssertTrue(error.message.contains("missing.txt"), error.message)
        }
        try write("loop.txt", "@loop.txt\n")
        try write("hba4.conf", "host all @loop.txt all trust\n")
        XCTAssertThrowsError(try HbaRules.load(path: tempDir + "/hba4.conf")) {
            XCTAssertTrue(String(describing: $0).contains("more than 10 deep"), "\($0)")
        }
    }

    // MARK: Errors name file and line

    func testErrorsNameFileAndLine() throws {
        let cases: [(String, String)] = [
            ("hosts all all all trust", "unknown connection type \"hosts\""),
            ("hostgssenc all all all trust", "not supported"),
            ("include other.conf", "not supported"),
            ("host all all all", "missing authentication method"),
            ("host all all", "missing address"),
            ("host all", "missing user name"),
            ("local", "missing database"),
            ("host all +admins all md5", "group names (+admins) are not supported"),
            ("host samerole all all md5", "\"samerole\" is not supported"),
            ("host samegroup all all md5", "\"samegroup\" is not supported"),
            ("host all all example.com md5", "host names and domain suffixes are not supported"),
            ("host all all .example.com md5", "invalid IP address"),
            ("host all all samehost md5", "\"samehost\" is not supported"),
            ("host all all samenet md5", "\"samenet\" is not supported"),
            ("host all all 10.0.0.0/33 md5", "too long for an IPv4 address"),
            ("host all all ::1/129 md5", "too long for an IPv6 address"),
            ("host all all 10.0.0.0/x md5", "invalid CIDR mask length"),
            ("host all all 10.0.0.0/-1 md5", "invalid CIDR mask length"),
            ("host all all 10.0.0.0 md5", "invalid IP mask \"md5\""),
            ("host all all 10.0.0.0 ffff:: md5", "do not match in family"),
            ("host all all fe80::1%eth0/64 md5", "zone ids are not supported"),
            ("host all all \"10.0.0.0/8\" md5", "quoted address"),
            ("host all all all md55", "unknown authentication method \"md55\""),
            ("host all all all crypt", "unknown authentication method \"crypt\""),
            ("host all all all \"gss\"", "unknown authentication method \"gss\""),
            ("host all all all \"md5\"", "unknown authentication method"),
            ("host all all all MD5", "unknown authentication method \"MD5\""),
            ("host all all all peer", "peer authentication is only supported on local lines"),
            ("local all all cert", "cert authentication is only supported on host"),
            ("host all all all gss\"x", "unexpected quote inside a word"),
            ("host all all 10.0.0.0/8, md5", "unexpected comma where authentication method belongs"),
            ("host db1,,db2 all all md5", "missing database after a comma"),
            ("host all u1,", "missing user name after a comma"),
            ("host ,db all all md5", "unexpected comma where database belongs"),
            ("host \"db all all md5", "unterminated quoted string"),
            ("host \"db\"x all all md5", "right after a closing quote"),
            ("host d\"b\" all all md5", "unexpected quote inside a word"),
            ("host db1,\"x all all md5", "unterminated quoted string"),
        ]
        for (text, fragment) in cases {
            let file = "/etc/pgswift/hba.conf"
            guard let e = parseError("# header\n\n" + text + "\nhost all all all trust\n", file: file) else { continue }
            XCTAssertEqual(e.file, file, text)
            XCTAssertEqual(e.line, 3, text)
            XCTAssertTrue(e.message.contains(fragment), "\(text): \(e.message)")
            XCTAssertTrue(e.description.hasPrefix("/etc/pgswift/hba.conf:3: "), e.description)
        }
    }

    /// A line whose method or option pgswift does not support is handled as by a PgBouncer without that
    /// feature, with a warning naming file and line, and the rest of the file stays in force.
    func testUnsupportedMethodsAndOptionsSkipTheLineWithAWarning() throws {
        let file = "/etc/pgswift/hba.conf"
        let r = try parse("""
            # methods PgBouncer does not know either: skipped
            host all alice 10.0.0.0/8 gss include_realm=0 krb_realm="EXAMPLE, COM"
            host all alice 10.0.0.0/8 ident
            local all alice pam pamservice=postgresql
            host all alice 10.0.0.0/8 sspi
            host all alice 10.0.0.0/8 radius radiusservers="a,b" radiussecrets=s
            host all alice 10.0.0.0/8 bsd
            host all alice 10.0.0.0/8 oauth issuer=x
            # options: skipped (map= names a map of auth_ident_file, and none is set)
            local all alice peer map=admins
            host all alice 10.0.0.0/8 md5 clientcert=verify-full
            host all alice 10.0.0.0/8 scram-sha-256 clientcert="verify-full"
            host all alice 10.0.0.0/8 md5 ,
            # ldap: kept, as a refusal of what it matches (PgBouncer without LDAP refuses those logins)
            host all bob 10.0.0.0/8 ldap ldapserver=ldap.example.com ldapprefix="cn=" ldapsuffix=", dc=example"
            host all all 0.0.0.0/0 md5
            local all all trust
            """, file: file)
        XCTAssertEqual(r.warnings.map(\.line), [2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15])
        XCTAssertTrue(r.warnings.allSatisfy { $0.file == file })
        for (w, method) in zip(r.warnings, ["gss", "ident", "pam", "sspi", "radius", "bsd", "oauth"]) {
            XCTAssertTrue(w.message.contains("authentication method \"\(method)\" is not supported by pgswift; line skipped"),
                          w.message)
        }
        XCTAssertTrue(r.warnings[7].message.contains("ident map \"admins\" is not in an auth_ident_file (none is set); "
                                                     + "line skipped"), r.warnings[7].message)
        XCTAssertTrue(r.warnings[8].message.contains("option \"clientcert=verify-full\" is not supported by pgswift; line skipped"),
                      r.warnings[8].message)
        XCTAssertTrue(r.warnings[9].message.contains("option \"clientcert=\"verify-full\"\" is not supported"),
                      "an option pgswift cannot even read: \(r.warnings[9].message)")
        XCTAssertTrue(r.warnings[10].message.contains("option \",\" is not supported"), r.warnings[10].message)
        XCTAssertTrue(r.warnings[11].message.contains("\"ldap\" is not supported by pgswift; the line refuses"),
                      r.warnings[11].message)
        XCTAssertTrue(r.warnings[11].description.hasPrefix("/etc/pgswift/hba.conf:15: "), r.warnings[11].description)

        XCTAssertEqual(r.rules.map(\.line), [15, 16, 17], "only the ldap line of the unsupported ones is kept")
        // The skipped lines match nothing: their connections go on to the next lines.
        XCTAssertEqual(method(r, "db", "alice", v4("10.1.2.3")), "md5")
        XCTAssertEqual(method(r, "db", "alice", .unix), "trust")
        // The ldap line refuses bob from 10/8 instead of letting the md5 line below take him.
        let bob = r.match(peer: v4("10.1.2.3"), tls: false, database: "db", user: "bob")
        XCTAssertEqual(bob?.method, .reject)
        XCTAssertEqual(bob?.line, 15)
        XCTAssertEqual(method(r, "db", "bob", v4("11.1.2.3")), "md5")
    }

    /// What comes before the method must still be readable on a skipped line; what comes after it need not.
    func testSkippedLinesStillNeedAReadableStart() throws {
        XCTAssertEqual(parseError("host all all 10.0.0.0/33 gss\n")?.message.contains("too long"), true)
        XCTAssertEqual(parseError("host all +admins all pam\n")?.message.contains("group names"), true)
        XCTAssertEqual(parseError("host \"all all all ldap\n")?.message, "unterminated quoted string")
        XCTAssertEqual(try parse("host all all all pam \"unterminated\n").warnings.count, 1)
        XCTAssertEqual(try parse("host all all all ldap x=\"unterminated\n").rules.first?.method, .reject)
    }

    func testKeywordsAreCaseSensitiveAndQuotedKeywordsAreNames() throws {
        let r = try parse("host ALL \"sameuser\" all md5\nhost \"replication\" all all trust\n")
        XCTAssertEqual(r.rules[0].databases.names, ["ALL"])
        XCTAssertFalse(r.rules[0].databases.all)
        XCTAssertEqual(r.rules[0].users.names, ["sameuser"])
        XCTAssertEqual(method(r, "ALL", "sameuser", v4("1.1.1.1")), "md5")
        XCTAssertEqual(method(r, "all", "sameuser", v4("1.1.1.1")), "reject")
        XCTAssertEqual(method(r, "replication", "x", v4("1.1.1.1")), "trust", "a quoted keyword is a plain name")
        XCTAssertEqual(try parse("host all sameuser all md5\n").rules[0].users.names, ["sameuser"],
                       "sameuser is a keyword in the database field only")
    }

    // MARK: Through the config file

    func testConfigLoadsHbaFileRelativeToTheConfig() throws {
        try write("userlist.txt", "\"u\" \"p\"\n")
        try write("hba.conf", "host all all 127.0.0.1/32 md5\n")
        let ini = try write("pgswift.ini", """
            [pgbouncer]
            auth_type = hba
            auth_file = userlist.txt
            auth_hba_file = hba.conf
            """)
        let c = try Config.load(path: ini)
        XCTAssertEqual(c.authHbaFile, tempDir + "/hba.conf")
        XCTAssertEqual(c.hba?.rules.count, 1)
        XCTAssertEqual(c.hba?.rules.first?.file, tempDir + "/hba.conf")
        XCTAssertEqual(Config.isImplemented(key: "auth_hba_file"), true)
        XCTAssertEqual(c.settings().first { $0.key == "auth_hba_file" }?.value, tempDir + "/hba.conf")
    }

    func testConfigCarriesTheHbaWarnings() throws {
        try write("userlist.txt", "\"u\" \"p\"\n")
        try write("hba.conf", "host all all 10.0.0.0/8 gss\nhost all all 127.0.0.1/32 md5\n")
        let ini = try write("w.ini", "[pgbouncer]\nauth_type = hba\nauth_file = userlist.txt\nauth_hba_file = hba.conf\n")
        let c = try Config.load(path: ini)
        XCTAssertEqual(c.hba?.rules.map(\.line), [2])
        let w = c.warnings.filter { $0.file == tempDir + "/hba.conf" }
        XCTAssertEqual(w.map(\.line), [1], "\(c.warnings)")
        XCTAssertTrue(w.first?.message.contains("\"gss\" is not supported by pgswift; line skipped") ?? false, "\(w)")
    }

    func testConfigHbaErrors() throws {
        let noFile = try write("a.ini", "[pgbouncer]\nauth_type = hba\n")
        XCTAssertThrowsError(try Config.load(path: noFile)) {
            let e = $0 as? ConfigError
            XCTAssertEqual(e?.line, 2)
            XCTAssertTrue(e?.message.contains("needs auth_hba_file") ?? false, "\($0)")
        }
        let missing = try write("b.ini", "[pgbouncer]\nauth_type = hba\nauth_hba_file = nope.conf\n")
        XCTAssertThrowsError(try Config.load(path: missing)) {
            XCTAssertTrue(String(describing: $0).contains("could not read auth_hba_file"), "\($0)")
        }
        try write("bad.conf", "host all all all md5\nhost all all all bogus\n")
        let bad = try write("c.ini", "[pgbouncer]\nauth_type = hba\nauth_hba_file = bad.conf\n")
        XCTAssertThrowsError(try Config.load(path: bad)) {
            XCTAssertEqual(($0 as? ConfigError)?.file, tempDir + "/bad.conf")
            XCTAssertEqual(($0 as? ConfigError)?.line, 2)
        }
        // Not hba: the file is not read at all.
        let other = try write("d.ini", "[pgbouncer]\nauth_type = trust\nauth_file = u.txt\nauth_hba_file = bad.conf\n")
        try write("u.txt", "")
        XCTAssertNil(try Config.load(path: other).hba)
    }

    func testAuthQueryCacheTTLSetting() throws {
        XCTAssertEqual(Config().authQueryCacheTTL, 60)
        let c = try Config.parse(text: "[pgswift]\nauth_query_cache_ttl = 2.5\n", file: "x.ini")
        XCTAssertEqual(c.authQueryCacheTTL, 2.5)
        XCTAssertThrowsError(try Config.parse(text: "[pgswift]\nauth_query_cache_ttl = -1\n", file: "x.ini"))
    }
}
