// End to end: what a `[databases]` entry sets on its server connections: client_encoding, datestyle,
// timezone and application_name (startup parameters of the servers, the session defaults clients see).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class DatabaseParametersTests: XCTestCase {
    /// One worker, transaction pooling, one server per pool (so two clients share one backend), and a
    /// database `paramdb` (PostgreSQL's `testdb`) with `extra` options. Clients log in as `u_trust`.
    private func start(_ pg: PostgresServer, extra: String, settings: [(String, String)] = []) throws -> Pgswift {
        var s = PgswiftSettings(postgres: pg)
        s.workers = 1
        s.poolMode = "transaction"
        s.defaultPoolSize = 1
        s.databases.append(("paramdb", pg.connectionString(dbname: "testdb", extra: extra)))
        s.settings = settings.map { (key: $0.0, value: $0.1) }
        return try Pgswift.start(s)
    }

    private func connect(_ px: Pgswift, _ parameters: [(String, String)] = []) throws -> WireClient {
        try WireClient.connect(port: px.port, user: "u_trust", database: "paramdb", parameters: parameters)
    }

    private func value(_ c: WireClient, _ sql: String) throws -> String? {
        try c.query(sql).first?.first ?? nil
    }

    /// The entry's client_encoding, datestyle, timezone and application_name are what a client that
    /// sets none of them sees, at login (ParameterStatus) and in SHOW / current_setting. A client that
    /// sends its own client_encoding and TimeZone keeps them on the same backend (pgswift SETs them at
    /// link), and the next default client on that backend is back on the entry's values, as PgBouncer
    /// does (the database's values are the server's startup parameters; the client's own ones are
    /// applied by its parameter tracking).
    func testEntrysSessionDefaultsReachClientsAndAClientsOwnValuesWin() throws {
        let pg = try PostgresServer.shared()
        let px = try start(pg, extra: "client_encoding=LATIN1 datestyle='SQL, DMY' timezone=Europe/Paris application_name=dbapp")
        defer { px.stop() }

        let a = try connect(px)
        defer { a.close() }
        XCTAssertEqual(a.reported["TimeZone"], "Europe/Paris", "\(a.reported)")
        XCTAssertEqual(a.reported["client_encoding"], "LATIN1", "\(a.reported)")
        XCTAssertEqual(a.reported["DateStyle"], "SQL, DMY", "\(a.reported)")
        XCTAssertEqual(a.reported["application_name"], "dbapp", "\(a.reported)")
        XCTAssertEqual(try value(a, "show timezone"), "Europe/Paris")
        XCTAssertEqual(try value(a, "show client_encoding"), "LATIN1")
        XCTAssertEqual(try value(a, "show datestyle"), "SQL, DMY")
        XCTAssertEqual(try value(a, "select current_setting('application_name')"), "dbapp")
        let backend = try value(a, "select pg_backend_pid()")

        let b = try connect(px, [("client_encoding", "UTF8"), ("TimeZone", "UTC")])
        defer { b.close() }
        XCTAssertEqual(b.reported["TimeZone"], "UTC", "the client's own value at login: \(b.reported)")
        XCTAssertEqual(b.reported["client_encoding"], "UTF8", "\(b.reported)")
        XCTAssertEqual(try value(b, "select pg_backend_pid()"), backend, "pool_size 1: the same backend")
        XCTAssertEqual(try value(b, "show timezone"), "UTC")
        XCTAssertEqual(try value(b, "show client_encoding"), "UTF8")
        XCTAssertEqual(try value(b, "show datestyle"), "SQL, DMY", "what the client did not set stays the entry's")

        XCTAssertEqual(try value(a, "select pg_backend_pid()"), backend)
        XCTAssertEqual(try value(a, "show timezone"), "Europe/Paris", "back to the entry's value for a default client")
        XCTAssertEqual(try value(a, "show client_encoding"), "LATIN1")

        let log = px.log()
        XCTAssertFalse(log.contains("not implemented by pgswift yet"), "no warning for these keys: \(log.suffix(2000))")
    }
}
