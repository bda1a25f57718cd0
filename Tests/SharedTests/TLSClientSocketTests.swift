// The supervisor's TLS client (health checks) over a non-blocking socketpair against an OpenSSL server
// built from pgswift's own client-facing context: handshake, both directions, certificate checks.
import Foundation
import XCTest
import COpenSSL
@testable import Shared

final class TLSClientSocketTests: TemporaryFolderCase {
    override class var folderPrefix: String { "tlsclient" }

    private var fds: [Int32] = []
    private var serverSSL: OpaquePointer? = nil

    override func setUpWithError() throws {
        try super.setUpWithError()
        // OpenSSL's socket BIO writes with send(2) and no MSG_NOSIGNAL: like the supervisor, which owns
        // these connections, the test process must take EPIPE rather than die of SIGPIPE.
        Signals.ignoreSIGPIPE()
    }

    override func tearDownWithError() throws {
        if let serverSSL { SSL_free(serverSSL) }
        for fd in fds { close(fd) }
        try super.tearDownWithError()
    }

    /// A client over a non-blocking socketpair whose other end an OpenSSL server with `serverCert` holds.
    private func connect(client mode: Config.TLSMode, caFile: String = "", host: String?,
                         serverCert: (cert: String, key: String)) throws -> TLSClientSocket {
        let server = try XCTUnwrap(try TLSContext.acceptingClients(TLSSideSettings(
            mode: .require, keyFile: serverCert.key, certFile: serverCert.cert, prefix: "client")))
        let client = try XCTUnwrap(try TLSContext.connectingServers(TLSSideSettings(mode: mode, caFile: caFile, prefix: "server")))
        var sv: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &sv), 0)
        fds = sv
        let s = try XCTUnwrap(SSL_new(server.ctx))
        serverSSL = s
        XCTAssertEqual(SSL_set_fd(s, sv[0]), 1)
        SSL_set_accept_state(s)
        return try XCTUnwrap(TLSClientSocket(context: client, fd: sv[1], host: host))
    }

    /// Turns both ends until the client's handshake is over; its last step.
    private func handshake(_ c: TLSClientSocket) -> TLSClientSocket.Step {
        var step = TLSClientSocket.Step.wantWrite
        for _ in 0..<200 {
            step = c.handshake()
            _ = SSL_do_handshake(serverSSL)
            if step != .wantRead && step != .wantWrite { break }
        }
        return step
    }

    func testHandshakeThenBothDirections() throws {
        let c = try connect(client: .require, host: nil, serverCert: try selfSignedCertificate("s", cn: "db", subjectAltName: "DNS:db.example"))
        XCTAssertEqual(handshake(c), .done)
        XCTAssertTrue(c.description.hasPrefix("TLSv1."), c.description)
        let hello = Array("SELECT 1".utf8)
        XCTAssertEqual(hello.withUnsafeBytes { c.write($0.baseAddress!, $0.count) }, .success(hello.count))
        var got = [UInt8](repeating: 0, count: 64)
        var n: Int32 = -1
        for _ in 0..<50 where n <= 0 { n = SSL_read(serverSSL, &got, 64) }
        XCTAssertEqual(Array(got[0..<Int(max(n, 0))]), hello)
        let answer = Array("1 row".utf8)
        XCTAssertEqual(SSL_write(serverSSL, answer, Int32(answer.count)), Int32(answer.count))
        var back = [UInt8](repeating: 0, count: 64)
        XCTAssertEqual(c.read(&back, 64), .data(answer.count))
        XCTAssertEqual(Array(back[0..<answer.count]), answer)
        XCTAssertEqual(c.read(&back, 64), .wantMore, "nothing more yet")
        SSL_free(serverSSL)
        serverSSL = nil
        close(fds[0])
        fds.removeFirst()
        // A peer gone without close_notify: OpenSSL 3 calls that an unexpected EOF.
        switch c.read(&back, 64) {
        case .closed: break
        case .failed(let reason): XCTAssertTrue(reason.contains("unexpected eof"), reason)
        case let other: XCTFail("\(other)")
        }
    }

    /// verify-ca checks the chain against server_tls_ca_file; verify-full also the host: a name against
    /// the DNS entries, an address against the IP entries.
    func testCertificateChecksOfTheVerifyModes() throws {
        let cert = try selfSignedCertificate("s", cn: "db", subjectAltName: "DNS:db.example,IP:10.1.2.3")
        let other = try selfSignedCertificate("other", cn: "db", subjectAltName: "DNS:db.example")
        let cases: [(Config.TLSMode, String, String?, Bool)] = [
            (.verifyCA, cert.cert, "anything.example", true),
            (.verifyCA, other.cert, nil, false),
            (.verifyFull, cert.cert, "db.example", true),
            (.verifyFull, cert.cert, "10.1.2.3", true),
            (.verifyFull, cert.cert, "other.example", false),
            (.verifyFull, cert.cert, "10.1.2.4", false),
        ]
        for (mode, ca, host, ok) in cases {
            let c = try connect(client: mode, caFile: ca, host: host, serverCert: cert)
            let step = handshake(c)
            if ok {
                XCTAssertEqual(step, .done, "\(mode) \(host ?? "-")")
            } else if case .failed(let reason) = step {
                XCTAssertTrue(reason.contains("certificate verification"), "\(mode) \(host ?? "-"): \(reason)")
            } else {
                XCTFail("\(mode) \(host ?? "-"): \(step)")
            }
            if let serverSSL { SSL_free(serverSSL) }
            serverSSL = nil
            for fd in fds { close(fd) }
            fds = []
        }
    }
}
