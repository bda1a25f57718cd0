// Tests of the TLS settings: protocol keywords, and context validation errors at the setting's file:line.
import Foundation
import XCTest
@testable import Shared

final class TLSConfigTests: TemporaryFolderCase {
    override class var folderPrefix: String { "tlsconfig" }

    /// The error `validateTLS` raises for this config text (nil when it passes).
    private func tlsError(_ text: String) throws -> ConfigError? {
        let c = try Config.parse(text: text, file: "test.ini")
        do {
            try c.validateTLS()
            return nil
        } catch {
            return error
        }
    }

    func testProtocolKeywords() throws {
        XCTAssertEqual(try TLSProtocols.parse("secure").allowed, [false, false, true, true])
        XCTAssertEqual(try TLSProtocols.parse("").allowed, [false, false, true, true])
        XCTAssertEqual(try TLSProtocols.parse("all").allowed, [true, true, true, true])
        XCTAssertEqual(try TLSProtocols.parse("legacy").allowed, [true, true, true, true])
        XCTAssertEqual(try TLSProtocols.parse("TLSv1.3").allowed, [false, false, false, true])
        XCTAssertEqual(try TLSProtocols.parse("tlsv1.1, tlsv1.3").allowed, [false, true, false, true])
        XCTAssertEqual(try TLSProtocols.parse("tlsv1.2:tlsv1.3").allowed, [false, false, true, true])
        XCTAssertThrowsError(try TLSProtocols.parse("sslv3"))
        XCTAssertThrowsError(try TLSProtocols.parse("tlsv1.2,bogus"))
        // PgBouncer's (libtls's) "tlsv1" is every TLS 1.x, and "!" removes versions.
        XCTAssertEqual(try TLSProtocols.parse("tlsv1").allowed, [true, true, true, true])
        XCTAssertEqual(try TLSProtocols.parse("secure,!tlsv1.2").allowed, [false, false, false, true])
        XCTAssertEqual(try TLSProtocols.parse("!tlsv1.0, !tlsv1.1").allowed, [false, false, true, true])
        XCTAssertThrowsError(try TLSProtocols.parse("tlsv1.3,!tlsv1.3"))
        XCTAssertThrowsError(try TLSProtocols.parse("!bogus"))
    }

    /// PgBouncer's default/secure/normal/fast keep OpenSSL's default list; "all" must reach OpenSSL
    /// in a form it knows (it refuses a lowercase "all").
    func testCipherShortcuts() {
        XCTAssertEqual(TLSCiphers.openSSLList("HIGH:!aNULL"), "HIGH:!aNULL")
        for keyword in ["", "default", "Secure", "normal", "fast"] {
            XCTAssertNil(TLSCiphers.openSSLList(keyword), keyword)
        }
        XCTAssertEqual(TLSCiphers.openSSLList("all"), "ALL:!aNULL:!eNULL")
    }

    /// PgBouncer's rule for RELOAD (`tls_change_requires_reconnect`): any change of the server-side
    /// settings closes the old servers while TLS to servers is or was on; none while it stays off.
    func testServerChangeNeedsReconnect() {
        let base = TLSSideSettings(mode: .prefer, keyFile: "", certFile: "", caFile: "", protocols: "secure",
                                   ciphers: "default", tls13Ciphers: "", prefix: "server")
        XCTAssertFalse(base.serverChangeNeedsReconnect(to: base))
        var other = base
        other.protocols = "tlsv1.2"
        XCTAssertTrue(base.serverChangeNeedsReconnect(to: other))
        other = base
        other.mode = .require
        XCTAssertTrue(base.serverChangeNeedsReconnect(to: other))
        other.mode = .disable
        XCTAssertTrue(base.serverChangeNeedsReconnect(to: other), "TLS turned off")
        XCTAssertTrue(other.serverChangeNeedsReconnect(to: base), "TLS turned on")
        var off2 = other
        off2.caFile = "/x/ca.crt"
        XCTAssertFalse(other.serverChangeNeedsReconnect(to: off2), "off before and after")
    }

    func testDefaultsValidate() throws {
        XCTAssertNil(try tlsError("[pgbouncer]\n"))
        XCTAssertNil(try tlsError("[pgbouncer]\nclient_tls_sslmode = disable\nserver_tls_sslmode = disable\n"))
    }

    func testMissingFilesAreReportedAtTheirLine() throws {
        let e1 = try XCTUnwrap(try tlsError("[pgbouncer]\nlisten_port = 1\nclient_tls_sslmode = require\n"))
        XCTAssertEqual(e1.line, 3)
        XCTAssertTrue(e1.message.contains("client_tls_key_file"), e1.message)

        let e2 = try XCTUnwrap(try tlsError("""
            [pgbouncer]
            client_tls_sslmode = require
            client_tls_key_file = \(tempDir)/none.key
            client_tls_cert_file = \(tempDir)/none.crt
            """))
        XCTAssertEqual(e2.line, 4, e2.description)
        XCTAssertTrue(e2.message.contains("cannot read"), e2.message)

        let (cert, key) = try selfSignedCertificate("a")
        let e3 = try XCTUnwrap(try tlsError("""
            [pgbouncer]
            client_tls_sslmode = verify-ca
            client_tls_key_file = \(key)
            client_tls_cert_file = \(cert)
            """))
        XCTAssertTrue(e3.message.contains("client_tls_ca_file"), e3.message)
        XCTAssertEqual(e3.line, 2)
    }

    func testKeyMismatchProtocolsAndCiphers() throws {
        let a = try selfSignedCertificate("a")
        let b = try selfSignedCertificate("b")
        XCTAssertNil(try tlsError("""
            [pgbouncer]
            client_tls_sslmode = verify-full
            client_tls_key_file = \(a.key)
            client_tls_cert_file = \(a.cert)
            client_tls_ca_file = \(b.cert)
            server_tls_sslmode = verify-full
            server_tls_ca_file = \(a.cert)
            """))
        let mismatch = try XCTUnwrap(try tlsError("""
            [pgbouncer]
            client_tls_sslmode = require
            client_tls_cert_file = \(a.cert)
            client_tls_key_file = \(b.key)
            """))
        XCTAssertEqual(mismatch.line, 4)
        XCTAssertTrue(mismatch.message.contains("does not match"), mismatch.message)

        let proto = try XCTUnwrap(try tlsError("[pgbouncer]\nserver_tls_sslmode = require\nserver_tls_protocols = tlsv9\n"))
        XCTAssertEqual(proto.line, 3)
        XCTAssertTrue(proto.message.contains("tlsv9"), proto.message)

        let ciphers = try XCTUnwrap(try tlsError("[pgbouncer]\nserver_tls_ciphers = NOTHING-REAL\n"))
        XCTAssertEqual(ciphers.line, 2)
        XCTAssertNil(try tlsError("[pgbouncer]\nserver_tls_ciphers = all\nclient_tls_ciphers = fast\n"))
        let none = try XCTUnwrap(try tlsError("[pgbouncer]\nserver_tls_protocols = !all\n"))
        XCTAssertEqual(none.line, 2)
        XCTAssertTrue(none.message.contains("no TLS protocol"), none.message)

        let serverKey = try XCTUnwrap(try tlsError("[pgbouncer]\nserver_tls_key_file = \(a.key)\n"))
        XCTAssertTrue(serverKey.message.contains("go together"), serverKey.message)
    }

    /// client_tls_dheparams takes none or auto (any case; `legacy`, in PgBouncer's doc, is refused as
    /// its code does), client_tls_ecdhcurve a curve or group OpenSSL knows, or a list; a bad value is
    /// reported at its line, and only while client TLS is on (PgBouncer's `setup_tls` runs only then).
    func testKeyExchangeValues() throws {
        let (cert, key) = try selfSignedCertificate("kx")
        func clientTLS(_ more: String) -> String {
            "[pgbouncer]\nclient_tls_sslmode = require\nclient_tls_key_file = \(key)\nclient_tls_cert_file = \(cert)\n" + more
        }
        for good in ["client_tls_dheparams = none\n", "client_tls_dheparams = AUTO\n", "client_tls_dheparams =\n", "client_tls_ecdhcurve = secp384r1\n",
                     "client_tls_ecdhcurve = prime256v1\n", "client_tls_ecdhcurve = P-384\n",
                     "client_tls_ecdhcurve = X25519:secp521r1\n", "client_tls_ecdhcurve = none\n"] {
            XCTAssertNil(try tlsError(clientTLS(good)), good)
        }
        let legacy = try XCTUnwrap(try tlsError(clientTLS("listen_port = 1\nclient_tls_dheparams = legacy\n")))
        XCTAssertEqual(legacy.line, 6, legacy.description)
        XCTAssertTrue(legacy.message.contains("client_tls_dheparams") && legacy.message.contains("legacy"), legacy.message)
        let curve = try XCTUnwrap(try tlsError(clientTLS("client_tls_ecdhcurve = secp999r9\n")))
        XCTAssertEqual(curve.line, 5, curve.description)
        XCTAssertTrue(curve.message.contains("secp999r9"), curve.message)
        XCTAssertNil(try tlsError("[pgbouncer]\nclient_tls_dheparams = legacy\nclient_tls_ecdhcurve = secp999r9\n"),
                     "not checked while client TLS is off")
    }

    /// A relative certificate path is taken from the config file's directory (as auth_file is).
    func testRelativePathsResolveAgainstConfigDirectory() throws {
        _ = try selfSignedCertificate("rel")
        let c = try Config.parse(text: "[pgbouncer]\nclient_tls_sslmode = require\nclient_tls_key_file = rel.key\n"
                                 + "client_tls_cert_file = rel.crt\n", file: tempDir + "/pgswift.ini")
        XCTAssertEqual(c.resolvedTLS(\.clientTLS).keyFile, tempDir + "/rel.key")
        XCTAssertEqual(c.clientTLS.keyFile, "rel.key", "kept as written, as SHOW CONFIG shows it")
        XCTAssertNoThrow(try c.validateTLS())
    }
}
