// A reload that changes the server-side TLS settings (TLS.swift `reloadTLS`), through a real loop.
import XCTest
@testable import Worker
import Shared

final class TLSReloadTests: WorkerHarnessCase {
    /// The worker's configuration replaced by the harness's with `lines` added to [pgbouncer], then
    /// reloadTLS, as `reload` does after reading the file.
    private func reloadTLS(adding lines: [String]) throws {
        let text = h.configText.replacingOccurrences(of: "\n[pgswift]\n", with: "\n" + lines.joined(separator: "\n") + "\n[pgswift]\n")
        h.worker.config = try Config.parse(text: text, file: "harness.ini")
        h.worker.reloadTLS()
    }

    /// As PgBouncer's RELOAD (test_ssl.py test_servers_disconnect_when_changing_tls_config): changed
    /// server TLS settings close the servers made with the old ones, an idle one at once ("database
    /// configuration changed") and one in use when released ("close_needed"); the client in a
    /// transaction keeps its server until then, and the pool's next client gets a new server.
    func testChangedServerTLSSettingsCloseOldServers() throws {
        try start(["log_disconnections": "1", "default_pool_size": "2"])
        h.captureLog()
        let a = h.login(), b = h.login()
        b.send(FE.query("begin"))
        let sb = try XCTUnwrap(h.waitServers(1))
        h.answerQuery(sb, expect: "begin", status: "T")
        h.readUntilReady(b)
        a.send(FE.query("select 1"))
        let sa = try XCTUnwrap(h.waitServers(2))
        h.answerQuery(sa, expect: "select 1")
        h.readUntilReady(a)  // sa is idle in the pool again

        try reloadTLS(adding: ["server_tls_protocols = tlsv1.2"])
        h.waitClosed(sa)
        XCTAssertEqual(h.logLines(containing: "db/u@", "closing because: database configuration changed").count, 1,
                       "\(h.logLines(containing: "closing because"))")
        h.settle()
        XCTAssertFalse(sb.closed, "the server of a client inside a transaction is closed when released")
        h.roundTrip(b, sb, "commit")
        h.waitClosed(sb)
        XCTAssertEqual(h.logLines(containing: "db/u@", "closing because: close_needed").count, 1)
        XCTAssertFalse(a.eof)
        XCTAssertFalse(b.eof)
        a.send(FE.query("select 2"))
        let s3 = try XCTUnwrap(h.waitServers(3), "a new server for the next transaction")
        h.answerQuery(s3, expect: "select 2")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "I")
    }

    /// A reload with the same server TLS settings, or with TLS to servers off before and after, keeps
    /// every server (test_servers_no_disconnect_on_reload_with_no_tls_change).
    func testUnchangedOrDisabledServerTLSKeepsServers() throws {
        try start(["log_disconnections": "1", "server_tls_sslmode": "disable"])
        h.captureLog()
        let a = h.login()
        let s = try XCTUnwrap(h.waitServers(1))
        h.roundTrip(a, s, "select 1")
        try reloadTLS(adding: ["server_tls_sslmode = disable"])
        try reloadTLS(adding: ["server_tls_sslmode = disable", "server_tls_protocols = tlsv1.2"])
        h.settle()
        XCTAssertFalse(s.closed)
        h.roundTrip(a, s, "select 2")
        XCTAssertTrue(h.logLines(containing: "closing because").isEmpty, "\(h.logLines(containing: "closing because"))")
    }

    /// A pool whose login was refused with the old settings tries again at once with the new ones
    /// (test_ssl.py test_server_ssl_set_disable: pg_hba.conf refuses SSL, then server_tls_sslmode =
    /// disable): the next client is not given the cached error, and gets in.
    func testChangedServerTLSSettingsForgetAFailedLogin() throws {
        try start(["server_login_retry": "60"])
        var refuse = true
        h.onStartup = { s in
            if refuse {
                s.send(BE.error("28000", "no pg_hba.conf entry for host", severity: "FATAL"))
            } else {
                s.answerLogin(welcome: self.h.welcome)
            }
        }
        let a = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilClosed(a).first?.error?.message, "no pg_hba.conf entry for host")
        refuse = false
        try reloadTLS(adding: ["server_tls_sslmode = disable"])
        let b = h.connect()
        b.send(FE.startup(user: "u", database: "db"))
        let got = h.readUntilReady(b)
        XCTAssertEqual(got.last?.status, "I", "\(got)")
        XCTAssertEqual(h.servers.count, 2, "a new login at once, within server_login_retry")
    }

    /// A host this worker avoids after a failed connect (`noteConnectFailure`) is usable again once the
    /// server TLS settings change (test_ssl.py test_server_ssl_verify: connects to `localhost` failed
    /// their certificate check under the wrong CA file; after the right one is SET, a database with
    /// `host=localhost,127.0.0.1` must not send every connection to 127.0.0.1, which fails verify-full,
    /// until the backoff of `localhost` runs out).
    func testChangedServerTLSSettingsForgetHostsAvoidedAfterFailedConnects() throws {
        try start(["server_login_retry": "60"])
        h.onStartup = { s in s.close() }
        let a = h.connect()
        a.send(FE.startup(user: "u", database: "db"))
        let entry = try XCTUnwrap(h.worker.config.database(named: "db"))
        let key = "127.0.0.1:\(h.backendPort)"
        XCTAssertTrue(h.worker.hostUsable(key, entry))
        h.waitUntil("the failed connect to make the worker avoid the host") { !self.h.worker.hostUsable(key, entry) }
        try reloadTLS(adding: ["server_tls_protocols = tlsv1.2"])
        XCTAssertTrue(h.worker.hostUsable(key, entry), "the avoidance is forgotten with the old settings")
    }
}
