// Tests of auth_ident_file: the map parser, what a map permits, `map=` on auth_hba_file lines, and loading
// both files through Config.
import Foundation
import XCTest
@testable import Shared

final class IdentMapTests: TemporaryFolderCase {
    override class var folderPrefix: String { "ident" }

    /// PgBouncer's own test file (test/pgident.conf), comments and tabs included.
    private let pgbouncerSample = """
        # PostgreSQL User Name Maps
        # =========================

        # MAPNAME       SYSTEM-USERNAME         PG-USERNAME
        test\t\tpgbouncer.acme.org\tsomeuser
        test\t\tpgbouncer.acme.org\tanotheruser
        test2\t\t"bouncer"\t\tall
        test2\t\tpgbouncer.acme.org\t"anotheruser"
        """

    func testMapsGroupLinesByNameInFileOrder() {
        let m = IdentMaps.parse(text: pgbouncerSample, file: "pgident.conf")
        XCTAssertEqual(m.warnings, [])
        XCTAssertEqual(Set(m.maps.keys), ["test", "test2"])
        XCTAssertEqual(m.maps["test"]?.mappings, [
            IdentMap.Mapping(systemUser: "pgbouncer.acme.org", databaseUser: "someuser"),
            IdentMap.Mapping(systemUser: "pgbouncer.acme.org", databaseUser: "anotheruser"),
        ])
        XCTAssertEqual(m.maps["test2"]?.mappings, [
            IdentMap.Mapping(systemUser: "bouncer", databaseUser: nil),
            IdentMap.Mapping(systemUser: "pgbouncer.acme.org", databaseUser: "anotheruser"),
        ])
    }

    /// What PgBouncer's test_client_hba_cert expects of the same maps.
    func testPermitsExactPairsAndAll() throws {
        let m = IdentMaps.parse(text: pgbouncerSample, file: "pgident.conf")
        let test = try XCTUnwrap(m.maps["test"])
        let test2 = try XCTUnwrap(m.maps["test2"])
        XCTAssertTrue(test.permits(systemUser: "pgbouncer.acme.org", databaseUser: "someuser"))
        XCTAssertTrue(test.permits(systemUser: "pgbouncer.acme.org", databaseUser: "anotheruser"))
        XCTAssertFalse(test.permits(systemUser: "pgbouncer.acme.org", databaseUser: "bouncer"))
        XCTAssertFalse(test.permits(systemUser: "bouncer", databaseUser: "someuser"), "the system name must match too")
        XCTAssertTrue(test2.permits(systemUser: "bouncer", databaseUser: "someuser"), "all")
        XCTAssertTrue(test2.permits(systemUser: "bouncer", databaseUser: "anything"), "all")
        XCTAssertFalse(test2.permits(systemUser: "pgbouncer.acme.org", databaseUser: "someuser"))
        XCTAssertTrue(test2.permits(systemUser: "pgbouncer.acme.org", databaseUser: "anotheruser"))
        XCTAssertFalse(test.permits(systemUser: "PGBOUNCER.ACME.ORG", databaseUser: "someuser"), "names are case-sensitive")
        XCTAssertFalse(test.permits(systemUser: "pgbouncer.acme.org", databaseUser: "SomeUser"), "names are case-sensitive")
    }

    /// A line pgswift cannot read is skipped with a warning naming file and line, and the others stay:
    /// a skipped line can only grant less.
    func testUnreadableLinesAreSkippedWithAWarning() {
        let m = IdentMaps.parse(text: """
            ok alice alice_db
            short alice
            long alice bob extra
            "quoted" alice bob
            regex /^(.*)@example\\.com$ \\1
            group alice +admins
            comma alice, bob
            unterminated "alice bob
            include other.conf
            quotedall alice "all"
            ok carol carol_db # a comment
            """, file: "/etc/pgswift/ident.conf")
        XCTAssertEqual(m.warnings.map(\.line), [2, 3, 4, 5, 6, 7, 8, 9])
        XCTAssertTrue(m.warnings.allSatisfy { $0.file == "/etc/pgswift/ident.conf" && $0.message.hasSuffix("; line skipped") },
                      "\(m.warnings)")
        XCTAssertTrue(m.warnings[0].message.contains("expected MAPNAME SYSTEM-USERNAME PG-USERNAME"), m.warnings[0].message)
        XCTAssertTrue(m.warnings[2].message.contains("quoted map name"), m.warnings[2].message)
        XCTAssertTrue(m.warnings[3].message.contains("regular expressions"), m.warnings[3].message)
        XCTAssertTrue(m.warnings[4].message.contains("group names (+admins)"), m.warnings[4].message)
        XCTAssertTrue(m.warnings[6].message.contains("unterminated quoted string"), m.warnings[6].message)
        XCTAssertTrue(m.warnings[7].message.contains("\"include\" is not supported"), m.warnings[7].message)
        XCTAssertEqual(m.maps["ok"]?.mappings.map(\.systemUser), ["alice", "carol"])
        // A quoted "all" is a user named all, as in PgBouncer and PostgreSQL.
        XCTAssertEqual(m.maps["quotedall"]?.mappings, [IdentMap.Mapping(systemUser: "alice", databaseUser: "all")])
        XCTAssertEqual(Set(m.maps.keys), ["ok", "quotedall"])
    }

    // MARK: map= in auth_hba_file

    func testMapOptionOnPeerAndCertLinesCarriesTheMap() throws {
        let maps = IdentMaps.parse(text: pgbouncerSample, file: "pgident.conf")
        let r = try HbaRules.parse(text: """
            local   all  all                peer map=test2
            hostssl p0x  all  0.0.0.0/0     cert map=test
            hostssl p0   bouncer 0.0.0.0/0  cert
            """, file: "hba.conf", identMaps: maps)
        XCTAssertEqual(r.warnings, [])
        XCTAssertEqual(r.rules.map(\.identMap?.name), ["test2", "test", nil])
        let cert = r.match(peer: .ipv4(0x7F00_0001), tls: true, database: "p0x", user: "someuser")
        XCTAssertEqual(cert?.method, .cert)
        XCTAssertEqual(cert?.identMap, maps.maps["test"])
        XCTAssertEqual(r.match(peer: .unix, tls: false, database: "db", user: "u")?.identMap?.name, "test2")
    }

    /// As PgBouncer: a map the ident file lacks (or no ident file) skips the line; a map on a method that
    /// reads none keeps the line without it; anything after map= is an unsupported option.
    func testMapOptionsPgswiftCannotHonour() throws {
        let maps = IdentMaps.parse(text: "known alice alice\n", file: "/etc/ident.conf")
        let text = """
            local all a peer map=unknown
            local all b md5 map=known
            local all c peer map=known clientcert=verify-full
            local all d peer "map=known"
            local all e peer map=
            local all all trust
            """
        let r = try HbaRules.parse(text: text, file: "hba.conf", identMaps: maps)
        XCTAssertEqual(r.warnings.map(\.line), [1, 2, 3, 4, 5])
        XCTAssertTrue(r.warnings[0].message.contains("ident map \"unknown\" is not in auth_ident_file /etc/ident.conf; "
                                                     + "line skipped"), r.warnings[0].message)
        XCTAssertTrue(r.warnings[1].message.contains("map=known has no effect with method md5"), r.warnings[1].message)
        XCTAssertTrue(r.warnings[2].message.contains("option \"map=known\" is not supported by pgswift; line skipped"),
                      r.warnings[2].message)
        XCTAssertTrue(r.warnings[3].message.contains("line skipped"), r.warnings[3].message)
        XCTAssertTrue(r.warnings[4].message.contains("ident map \"\" is not in"), r.warnings[4].message)
        XCTAssertEqual(r.rules.map(\.line), [2, 6])
        XCTAssertNil(r.rules[0].identMap, "md5 reads no map")
        XCTAssertEqual(r.match(peer: .unix, tls: false, database: "db", user: "a")?.method, .trust,
                       "a skipped line matches nothing")

        let none = try HbaRules.parse(text: "local all a peer map=known\n", file: "hba.conf")
        XCTAssertEqual(none.rules, [])
        XCTAssertTrue(none.warnings[0].message.contains("not in an auth_ident_file (none is set)"), none.warnings[0].message)
    }

    // MARK: Config

    func testConfigReadsTheIdentFileWithTheHbaFile() throws {
        try write("ident.conf", "peers root postgres\npeers root app\nbroken line\n")
        try write("hba.conf", "local all all peer map=peers\n")
        try write("users.txt", "")
        // Relative names: from the working directory, else (warned) next to the config file.
        let ini = try write("a.ini", """
            [pgbouncer]
            auth_type = hba
            auth_file = users.txt
            auth_hba_file = hba.conf
            auth_ident_file = ident.conf
            """)
        let c = try Config.load(path: ini)
        XCTAssertEqual(c.authIdentFile, tempDir + "/ident.conf")
        XCTAssertEqual(c.hba?.rules.first?.identMap?.mappings.map(\.databaseUser), ["postgres", "app"])
        XCTAssertTrue(c.warnings.contains { $0.file == tempDir + "/ident.conf" && $0.line == 3 }, "\(c.warnings)")
        XCTAssertEqual(c.settings().first { $0.key == "auth_ident_file" }?.value, tempDir + "/ident.conf")
        XCTAssertEqual(c.settings().first { $0.key == "auth_ident_file" }?.implemented, true)

        // An ident file that cannot be read is an error (a reload keeps the running rules).
        let missing = try write("b.ini", "[pgbouncer]\nauth_type = hba\nauth_file = users.txt\nauth_hba_file = hba.conf\n"
                                + "auth_ident_file = nope.conf\n")
        XCTAssertThrowsError(try Config.load(path: missing)) {
            XCTAssertTrue(String(describing: $0).contains("could not read auth_ident_file"), "\($0)")
        }

        // Without auth_type = hba it is not read, and a warning says it does nothing.
        let other = try write("c.ini", "[pgbouncer]\nauth_type = md5\nauth_file = users.txt\nauth_ident_file = nope.conf\n")
        let o = try Config.load(path: other)
        XCTAssertNil(o.hba)
        let w = try XCTUnwrap(o.warnings.first { $0.message.contains("auth_ident_file has no effect unless auth_type = hba") })
        XCTAssertEqual(w.line, 4)
    }
}
