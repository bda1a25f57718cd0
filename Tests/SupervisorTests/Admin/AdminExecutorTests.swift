// Tests of the admin executor's pure parts: SHOW FDS' listener rows and SHOW USERS' configured users.
import XCTest
import Shared
@testable import Supervisor

final class AdminExecutorTests: XCTestCase {
    /// Each listening socket once: without so_reuseport every slot holds the same descriptors, with it
    /// each slot its own; the Unix socket is `unix` with the listen port, as PgBouncer prints it.
    func testListenerRowsListEachSocketOnce() throws {
        var l = Listeners()
        l.addresses = [try XCTUnwrap(SocketAddress.numeric(host: "127.0.0.1", port: 6432)),
                       try XCTUnwrap(SocketAddress.numeric(host: "::1", port: 6432))]
        l.tcp = [[5, 6], [5, 6]]
        l.unix = 7
        XCTAssertEqual(Supervisor.listenerRows(l, port: 6432), [
            AdminListenerRow(fd: 5, addr: "127.0.0.1", port: 6432),
            AdminListenerRow(fd: 6, addr: "::1", port: 6432),
            AdminListenerRow(fd: 7, addr: "unix", port: 6432),
        ])
        l.tcp = [[5, 6], [8, 9]]  // so_reuseport
        l.unix = -1
        XCTAssertEqual(Supervisor.listenerRows(l, port: 6432).map(\.fd), [5, 6, 8, 9])
        XCTAssertEqual(Supervisor.listenerRows(Listeners(), port: 6432), [])
    }

    /// PgBouncer's SHOW USERS knows auth_file's users, [users], the databases' forced users and its
    /// admin user `pgbouncer` before any of them connects.
    func testConfiguredUsers() throws {
        let c = try Config.parse(text: """
            [databases]
            forced = host=127.0.0.1 user=owner
            plain = host=127.0.0.1
            [users]
            tuned = pool_size=3
            [pgbouncer]
            """, file: "t.ini")
        XCTAssertEqual(Supervisor.configuredUsers(c, authFileUsers: ["alice", "bob", "tuned"]),
                       ["alice", "bob", "tuned", "owner", "pgbouncer"])
        XCTAssertEqual(Supervisor.configuredUsers(Config(), authFileUsers: []), ["pgbouncer"])
    }
}
