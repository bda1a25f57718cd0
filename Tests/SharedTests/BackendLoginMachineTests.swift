// BackendLoginMachine with no network: each method's exchange, refusals, server errors and messages out of order.
import XCTest
@testable import Shared

final class BackendLoginMachineTests: XCTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    private func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
    private let salt: [UInt8] = [1, 2, 3, 4]

    /// An 'R' body as PostgreSQL sends it: the code, then its data.
    private func request(_ code: Int32, _ data: [UInt8] = []) -> AuthenticationRequest? {
        let body = withUnsafeBytes(of: code.bigEndian) { Array($0) } + data
        return body.withUnsafeBytes { AuthenticationRequest.parse($0) }
    }

    private func assertFailed(_ m: BackendLoginMachine, _ expected: BackendLoginFailure,
                              file: StaticString = #filePath, line: UInt = #line) {
        guard case .failed(let f) = m.state else { return XCTFail("state is \(m.state), not failed", file: file, line: line) }
        XCTAssertEqual(f, expected, file: file, line: line)
        XCTAssertTrue(m.isComplete, file: file, line: line)
    }

    /// Runs SASL to the client-final against a real server-side exchange; returns the machine and the server.
    private func saslUpToClientFinal(_ secret: PasswordSecret, serverSecret: ScramSecret, clientKey: [UInt8]? = nil)
        throws -> (BackendLoginMachine, ScramServerExchange, clientFinal: [UInt8]) {
        var m = BackendLoginMachine(user: "alice", secret: secret, scramClientKey: clientKey)
        var server = ScramServerExchange(secret: serverSecret)
        guard case .sendSASLInitialResponse(let mechanism, let clientFirst) =
                m.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])) else {
            throw AuthFailure("no SASLInitialResponse")
        }
        XCTAssertEqual(mechanism, "SCRAM-SHA-256")
        let serverFirst = try server.receiveClientFirst(clientFirst).get()
        guard case .sendSASLResponse(let clientFinal) = m.authenticationRequestReceived(.saslContinue(data: serverFirst)) else {
            throw AuthFailure("no SASLResponse")
        }
        return (m, server, clientFinal)
    }

    // MARK: - Happy paths

    func testTrustIsAuthenticationOkFirst() {
        var m = BackendLoginMachine(user: "alice", secret: nil)
        XCTAssertFalse(m.isComplete)
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .authenticated)
        guard case .authenticated = m.state else { return XCTFail("\(m.state)") }
        XCTAssertTrue(m.isComplete)
    }

    func testCleartextSendsThePlainPassword() {
        var m = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(m.authenticationRequestReceived(.cleartextPassword), .sendPassword("pencil"))
        guard case .passwordSent = m.state else { return XCTFail("\(m.state)") }
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .authenticated)
    }

    func testMD5FromPlainPasswordAndFromStoredHash() {
        // Values from PostgreSQL's scheme computed independently (python hashlib):
        // md5(md5("pencil" + "alice") hex + salt 01020304).
        let expected = "md537cba386e8b90f1e3941a0e792722253"
        var plain = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(plain.authenticationRequestReceived(.md5Password(salt: salt)), .sendPassword(expected))
        var hashed = BackendLoginMachine(user: "alice", secret: .md5("md5ee69efad287c7423caf0b3229d71f567"))
        XCTAssertEqual(hashed.authenticationRequestReceived(.md5Password(salt: salt)), .sendPassword(expected))
        XCTAssertEqual(hashed.authenticationRequestReceived(.ok), .authenticated)
    }

    func testSCRAMWithPasswordAgainstServerExchange() throws {
        let secret = ScramSecret.derive(password: "pencil", salt: Crypto.randomBytes(16), iterations: 4096)
        var (m, server, clientFinal) = try saslUpToClientFinal(.plain("pencil"), serverSecret: secret)
        let serverFinal = try server.receiveClientFinal(clientFinal).get()  // the proof is right
        XCTAssertEqual(m.authenticationRequestReceived(.saslFinal(data: serverFinal)), .wait)
        guard case .waitingForAuthOk = m.state else { return XCTFail("\(m.state)") }
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .authenticated)
        XCTAssertTrue(m.isComplete)
    }

    func testSCRAMPassthroughWithRecoveredClientKey() throws {
        let secret = ScramSecret.derive(password: "s3cret!", salt: Crypto.randomBytes(16), iterations: 4096)
        // A client logs in to pgswift with SCRAM: its proof yields the ClientKey.
        var front = ScramServerExchange(secret: secret)
        var client = ScramClientExchange(credential: .password("s3cret!"), cache: nil)
        let proof = try front.receiveClientFirst(client.clientFirstMessage()).flatMap { client.receiveServerFirst($0) }.get()
        _ = try front.receiveClientFinal(proof).get()
        let clientKey = try XCTUnwrap(front.recoveredClientKey)

        var (m, server, clientFinal) = try saslUpToClientFinal(.scram(secret), serverSecret: secret, clientKey: clientKey)
        let serverFinal = try server.receiveClientFinal(clientFinal).get()
        XCTAssertEqual(m.authenticationRequestReceived(.saslFinal(data: serverFinal)), .wait)
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .authenticated)
    }

    func testSCRAMUsesTheKeyCacheAndTheInjectedNonce() {
        let cache = ScramKeyCache(capacity: 4)
        var m = BackendLoginMachine(user: "alice", secret: .plain("pencil"), keyCache: cache, scramNonce: bytes("abcdef"))
        XCTAssertEqual(m.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"])),
                       .sendSASLInitialResponse(mechanism: "SCRAM-SHA-256", data: bytes("n,,n=,r=abcdef")))
        let serverFirst = bytes("r=abcdefSERVER,s=\(Base64.encode(Array("saltsaltsaltsalt".utf8))),i=4096")
        guard case .sendSASLResponse = m.authenticationRequestReceived(.saslContinue(data: serverFirst)) else {
            return XCTFail("\(m.state)")
        }
        XCTAssertEqual(cache.misses, 1)
    }

    // MARK: - Refusals: the secret cannot answer, or the method is not supported

    func testNoUsablePasswordForEachMethod() {
        var a = BackendLoginMachine(user: "alice", secret: .md5("md5ee69efad287c7423caf0b3229d71f567"))
        XCTAssertEqual(a.authenticationRequestReceived(.cleartextPassword), .fail(.noPassword(user: "alice", method: .cleartext)))
        assertFailed(a, .noPassword(user: "alice", method: .cleartext))

        let scram = ScramSecret.derive(password: "x", salt: [9, 9, 9, 9], iterations: 4096)
        var b = BackendLoginMachine(user: "alice", secret: .scram(scram))
        XCTAssertEqual(b.authenticationRequestReceived(.md5Password(salt: salt)), .fail(.wrongPasswordType(method: .md5)))

        var c = BackendLoginMachine(user: "alice", secret: .md5("md5ee69efad287c7423caf0b3229d71f567"))
        XCTAssertEqual(c.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"])),
                       .fail(.wrongPasswordType(method: .scram)))

        var d = BackendLoginMachine(user: "alice", secret: nil)
        XCTAssertEqual(d.authenticationRequestReceived(.cleartextPassword), .fail(.noPassword(user: "alice", method: .cleartext)))
        var e = BackendLoginMachine(user: "alice", secret: nil)
        XCTAssertEqual(e.authenticationRequestReceived(.md5Password(salt: salt)), .fail(.noPassword(user: "alice", method: .md5)))
        var f = BackendLoginMachine(user: "alice", secret: nil)
        XCTAssertEqual(f.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"])), .fail(.noPassword(user: "alice", method: .scram)))
    }

    func testSCRAMSecretWithoutClientKey() {
        let scram = ScramSecret.derive(password: "x", salt: [9, 9, 9, 9], iterations: 4096)
        var m = BackendLoginMachine(user: "alice", secret: .scram(scram))
        XCTAssertEqual(m.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"])), .fail(.scramClientKeyMissing))
        assertFailed(m, .scramClientKeyMissing)
    }

    func testSASLWithoutSupportedMechanism() {
        // A server that requires channel binding offers only -PLUS; pgswift does not bind the channel.
        var m = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(m.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS"])),
                       .fail(.noSupportedSASLMechanism(offered: ["SCRAM-SHA-256-PLUS"])))
        var n = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(n.authenticationRequestReceived(.sasl(mechanisms: ["OAUTHBEARER"])),
                       .fail(.noSupportedSASLMechanism(offered: ["OAUTHBEARER"])))
    }

    func testUnsupportedMethodsFromTheWire() throws {
        // Kerberos V5 (2), SCM credentials (6), GSS (7), GSS continue (8), SSPI (9), unknown (99).
        for code: Int32 in [2, 6, 7, 8, 9, 99] {
            let req = try XCTUnwrap(request(code), "code \(code)")
            XCTAssertEqual(req, .unsupported(code: code))
            var m = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
            XCTAssertEqual(m.authenticationRequestReceived(req), .fail(.unsupportedMethod(code: code)), "code \(code)")
        }
    }

    func testBadServerSignature() throws {
        let secret = ScramSecret.derive(password: "pencil", salt: Crypto.randomBytes(16), iterations: 4096)
        var (m, _, _) = try saslUpToClientFinal(.plain("pencil"), serverSecret: secret)
        let forged = bytes("v=\(Base64.encode([UInt8](repeating: 7, count: 32)))")
        XCTAssertEqual(m.authenticationRequestReceived(.saslFinal(data: forged)),
                       .fail(.scram(reason: "incorrect server signature")))
        // A login that did not verify the server is not finished by a later AuthenticationOk.
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .wait)
        assertFailed(m, .scram(reason: "incorrect server signature"))
    }

    func testServerFinalError() throws {
        let secret = ScramSecret.derive(password: "pencil", salt: Crypto.randomBytes(16), iterations: 4096)
        var (m, _, _) = try saslUpToClientFinal(.plain("pencil"), serverSecret: secret)
        XCTAssertEqual(m.authenticationRequestReceived(.saslFinal(data: bytes("e=invalid-proof"))),
                       .fail(.scram(reason: "error received from server in SCRAM exchange: invalid-proof")))
    }

    func testWrongPasswordIsRefusedByTheServerNotTheMachine() throws {
        let secret = ScramSecret.derive(password: "pencil", salt: Crypto.randomBytes(16), iterations: 4096)
        var (m, server, clientFinal) = try saslUpToClientFinal(.plain("crayon"), serverSecret: secret)
        XCTAssertThrowsError(try server.receiveClientFinal(clientFinal).get())
        let error = ErrorFields(severity: "FATAL", code: "28P01", message: "password authentication failed for user \"alice\"")
        XCTAssertEqual(m.errorReceived(error), .fail(.server(error)))
        XCTAssertEqual(BackendLoginFailure.server(error).errorFields, error)
    }

    // MARK: - Server errors and messages out of order

    func testErrorResponseMidExchange() {
        var m = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        guard case .sendSASLInitialResponse = m.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"])) else {
            return XCTFail("\(m.state)")
        }
        let error = ErrorFields(severity: "FATAL", code: "53300", message: "sorry, too many clients already")
        XCTAssertEqual(m.errorReceived(error), .fail(.server(error)))
        assertFailed(m, .server(error))
        // Once failed, the machine takes nothing more (the caller closes the connection).
        XCTAssertEqual(m.authenticationRequestReceived(.saslContinue(data: bytes("r=x,s=eA==,i=1"))), .wait)
        XCTAssertEqual(m.errorReceived(error), .wait)
        assertFailed(m, .server(error))
    }

    func testErrorAfterAuthenticationOk() {
        // PostgreSQL checks the database after AuthenticationOk.
        var m = BackendLoginMachine(user: "alice", secret: nil)
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .authenticated)
        let error = ErrorFields(severity: "FATAL", code: "3D000", message: "database \"nope\" does not exist")
        XCTAssertEqual(m.errorReceived(error), .fail(.server(error)))
    }

    func testSASLStepsWithoutTheExchangeTheyContinue() {
        var a = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(a.authenticationRequestReceived(.saslContinue(data: bytes("r=x"))), .fail(.unexpectedSASLContinue))
        var b = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(b.authenticationRequestReceived(.saslFinal(data: bytes("v=x"))), .fail(.unexpectedSASLFinal))
        var c = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        XCTAssertEqual(c.authenticationRequestReceived(.cleartextPassword), .sendPassword("pencil"))
        XCTAssertEqual(c.authenticationRequestReceived(.saslFinal(data: bytes("v=x"))), .fail(.unexpectedSASLFinal))
    }

    func testSASLStepsInTheWrongOrder() throws {
        // server-final before server-first: the exchange refuses it.
        var a = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        _ = a.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        XCTAssertEqual(a.authenticationRequestReceived(.saslFinal(data: bytes("v=x"))),
                       .fail(.scram(reason: "server-final-message received out of order")))

        // A second server-first.
        let secret = ScramSecret.derive(password: "pencil", salt: Crypto.randomBytes(16), iterations: 4096)
        var (b, _, _) = try saslUpToClientFinal(.plain("pencil"), serverSecret: secret)
        XCTAssertEqual(b.authenticationRequestReceived(.saslContinue(data: bytes("r=x,s=eA==,i=1"))),
                       .fail(.scram(reason: "server-first-message received out of order")))

        // Anything SASL after a verified server-final: the exchange is over.
        var (c, server, clientFinal) = try saslUpToClientFinal(.plain("pencil"), serverSecret: secret)
        let serverFinal = try server.receiveClientFinal(clientFinal).get()
        XCTAssertEqual(c.authenticationRequestReceived(.saslFinal(data: serverFinal)), .wait)
        XCTAssertEqual(c.authenticationRequestReceived(.saslFinal(data: serverFinal)), .fail(.unexpectedSASLFinal))
    }

    func testServerLeadsAsInPgBouncer() throws {
        // As PgBouncer (and pgswift before this machine) does, AuthenticationOk is taken whenever it
        // comes and a new request is answered whatever came before: the server decides.
        var m = BackendLoginMachine(user: "alice", secret: .plain("pencil"))
        _ = m.authenticationRequestReceived(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        XCTAssertEqual(m.authenticationRequestReceived(.cleartextPassword), .sendPassword("pencil"))
        XCTAssertEqual(m.authenticationRequestReceived(.ok), .authenticated)
    }

    // MARK: - What the caller writes

    func testActionEncoding() {
        var out = OutBuffer(capacity: 64)
        defer { out.deallocate() }
        XCTAssertTrue(BackendLoginMachine.Action.sendPassword("pencil").encode(into: &out))
        XCTAssertEqual(out.bytes, [UInt8(ascii: "p"), 0, 0, 0, 11] + bytes("pencil") + [0])
        out.clear()
        XCTAssertTrue(BackendLoginMachine.Action.sendSASLInitialResponse(mechanism: "SCRAM-SHA-256", data: bytes("n,,")).encode(into: &out))
        XCTAssertEqual(out.bytes, [UInt8(ascii: "p"), 0, 0, 0, 25] + bytes("SCRAM-SHA-256") + [0, 0, 0, 0, 3] + bytes("n,,"))
        out.clear()
        XCTAssertTrue(BackendLoginMachine.Action.sendSASLResponse(bytes("c=biws")).encode(into: &out))
        XCTAssertEqual(out.bytes, [UInt8(ascii: "p"), 0, 0, 0, 10] + bytes("c=biws"))
        out.clear()
        for quiet: BackendLoginMachine.Action in [.wait, .authenticated, .fail(.unexpectedSASLFinal)] {
            XCTAssertFalse(quiet.encode(into: &out))
            XCTAssertTrue(out.isEmpty)
        }
    }

    // MARK: - The worker's error texts (clients and the e2e tests read them)

    func testErrorFieldsWording() {
        func check(_ f: BackendLoginFailure, _ code: String, _ message: String, line: UInt = #line) {
            XCTAssertEqual(f.errorFields, ErrorFields(severity: "FATAL", code: code, message: message), line: line)
        }
        check(.noPassword(user: "bob", method: .cleartext), "28P01", "no usable password for user \"bob\" (server asked for cleartext)")
        check(.noPassword(user: "bob", method: .md5), "28P01", "no usable password for user \"bob\" (server asked for md5)")
        check(.noPassword(user: "bob", method: .scram), "28P01", "no usable password for user \"bob\" (server asked for SCRAM)")
        check(.noSupportedSASLMechanism(offered: []), "0A000", "server offers no supported SASL mechanism")
        // PgBouncer's words for a secret of the wrong kind (test_auth.py test_scram_server), its reason
        // in the log.
        check(.scramClientKeyMissing, "08P01", "server login failed: wrong password type")
        check(.wrongPasswordType(method: .md5), "08P01", "server login failed: wrong password type")
        check(.wrongPasswordType(method: .scram), "08P01", "server login failed: wrong password type")
        XCTAssertEqual(BackendLoginFailure.scramClientKeyMissing.logDetail,
                       "cannot do SCRAM authentication: password is SCRAM secret but client authentication did not provide SCRAM keys")
        XCTAssertEqual(BackendLoginFailure.wrongPasswordType(method: .scram).logDetail, "cannot do SCRAM authentication: wrong password type")
        XCTAssertEqual(BackendLoginFailure.wrongPasswordType(method: .md5).logDetail, "cannot do MD5 authentication: wrong password type")
        XCTAssertNil(BackendLoginFailure.noPassword(user: "bob", method: .md5).logDetail)
        check(.scram(reason: "incorrect server signature"), "28P01", "SCRAM: incorrect server signature")
        check(.unexpectedSASLContinue, "08P01", "unexpected SASL continue")
        check(.unexpectedSASLFinal, "08P01", "unexpected SASL final")
        check(.unsupportedMethod(code: 7), "0A000", "server asked for an unsupported authentication method")
    }
}
