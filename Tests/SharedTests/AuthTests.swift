// Tests for the auth primitives: libcrypto wrappers, Base64, SCRAM-SHA-256 both roles, key caches, MD5.
import Foundation
import XCTest
@testable import Shared

final class AuthTests: XCTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    private func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
    private func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    // MARK: - Crypto known vectors

    func testSHA256Vectors() {
        XCTAssertEqual(hex(Crypto.sha256([])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex(Crypto.sha256(bytes("abc"))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testHMACSHA256Vectors() {
        // RFC 4231 test cases 1 and 2.
        XCTAssertEqual(hex(Crypto.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), data: bytes("Hi There"))),
                       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        XCTAssertEqual(hex(Crypto.hmacSHA256(key: bytes("Jefe"), data: bytes("what do ya want for nothing?"))),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Empty key and data must work (no NULL-pointer special cases).
        XCTAssertEqual(hex(Crypto.hmacSHA256(key: [], data: [])),
                       "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
        // RFC 4231 test case 6: a key longer than the block is hashed first.
        XCTAssertEqual(hex(Crypto.hmacSHA256(key: [UInt8](repeating: 0xaa, count: 131),
                                             data: bytes("Test Using Larger Than Block-Size Key - Hash Key First"))),
                       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    func testPreparedHMACMatchesPlainHMAC() {
        let keys: [[UInt8]] = [[], bytes("Jefe"), [UInt8](repeating: 0x0b, count: 32), [UInt8](repeating: 0xaa, count: 131)]
        let datas: [[UInt8]] = [[], bytes("Hi There"), [UInt8](repeating: 0x5a, count: 55),
                                [UInt8](repeating: 0x17, count: 64), [UInt8](repeating: 0x99, count: 300)]
        for k in keys {
            let prepared = Crypto.hmacSHA256Prepare(key: k)
            for d in datas {
                XCTAssertEqual(Crypto.hmacSHA256(prepared: prepared, data: d), Crypto.hmacSHA256(key: k, data: d),
                               "key \(k.count) bytes, data \(d.count) bytes")
            }
        }
        var s = ScramSecret(iterations: 16, salt: [1, 2, 3], storedKey: [UInt8](repeating: 1, count: 32),
                            serverKey: [UInt8](repeating: 2, count: 32))
        s.storedKey = [UInt8](repeating: 3, count: 32)
        XCTAssertEqual(s.storedKeyHMAC, Crypto.hmacSHA256Prepare(key: s.storedKey), "a changed key is prepared again")
    }

    func testPBKDF2Vectors() {
        XCTAssertEqual(hex(Crypto.pbkdf2SHA256(password: bytes("password"), salt: bytes("salt"), iterations: 1)),
                       "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b")
        XCTAssertEqual(hex(Crypto.pbkdf2SHA256(password: bytes("password"), salt: bytes("salt"), iterations: 2)),
                       "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43")
        XCTAssertEqual(hex(Crypto.pbkdf2SHA256(password: bytes("password"), salt: bytes("salt"), iterations: 4096)),
                       "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a")
    }

    func testMD5HexRandomAndCompare() {
        XCTAssertEqual(Crypto.md5Hex([]), "d41d8cd98f00b204e9800998ecf8427e")
        XCTAssertEqual(Crypto.md5Hex(bytes("abc")), "900150983cd24fb0d6963f7d28e17f72")
        let r1 = Crypto.randomBytes(32), r2 = Crypto.randomBytes(32)
        XCTAssertEqual(r1.count, 32)
        XCTAssertNotEqual(r1, r2)
        XCTAssertEqual(Crypto.randomBytes(0), [])
        XCTAssertTrue(Crypto.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(Crypto.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(Crypto.constantTimeEqual([1, 2, 3], [1, 2]))
        XCTAssertTrue(Crypto.constantTimeEqual([], []))
    }

    // MARK: - Base64

    func testBase64() {
        let cases: [(String, String)] = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"),
                                         ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
                                         ("n,,", "biws"), ("y,,", "eSws")]
        for (plain, encoded) in cases {
            XCTAssertEqual(Base64.encode(bytes(plain)), encoded)
            XCTAssertEqual(Base64.decode(encoded), bytes(plain))
        }
        let all = (0...255).map { UInt8($0) }
        XCTAssertEqual(Base64.decode(Base64.encode(all)), all)
        XCTAssertEqual(Base64.encode(all), Data(all).base64EncodedString())
        for bad in ["Zg=", "Zg", "Z===", "=Zg=", "Zg=a", "Zm9v!A==", "Zm 9v", "Zm9vY=g="] {
            XCTAssertNil(Base64.decode(bad), bad)
        }
    }

    // MARK: - SCRAM: RFC 7677 example through both roles

    private let rfcSalt = "W22ZaJ0SNY7soEsUEjb6gQ=="
    private let rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
    private let rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    private var rfcSecret: ScramSecret {
        ScramSecret.derive(password: "pencil", salt: Base64.decode(rfcSalt)!, iterations: 4096)
    }

    func testRFC7677ClientAndServer() throws {
        var client = ScramClientExchange(credential: .password("pencil"), cache: nil,
                                         nonceBytes: bytes(rfcClientNonce), user: "user")
        var server = ScramServerExchange(secret: rfcSecret, nonceBytes: bytes(rfcServerNonce))

        let clientFirst = client.clientFirstMessage()
        XCTAssertEqual(text(clientFirst), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")

        let serverFirst = try server.receiveClientFirst(clientFirst).get()
        XCTAssertEqual(text(serverFirst),
                       "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")

        let clientFinal = try client.receiveServerFirst(serverFirst).get()
        XCTAssertEqual(text(clientFinal),
                       "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        XCTAssertEqual(client.serverSaltAndIterations?.salt, Base64.decode(rfcSalt))
        XCTAssertEqual(client.serverSaltAndIterations?.iterations, 4096)

        let serverFinal = try server.receiveClientFinal(clientFinal).get()
        XCTAssertEqual(text(serverFinal), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        XCTAssertNoThrow(try client.receiveServerFinal(serverFinal).get())
        XCTAssertTrue(client.isComplete)
        XCTAssertTrue(server.isComplete)

        // The recovered ClientKey is HMAC(SaltedPassword, "Client Key").
        let keys = ScramKeys.derive(password: "pencil", salt: Base64.decode(rfcSalt)!, iterations: 4096)
        XCTAssertEqual(server.recoveredClientKey, keys.clientKey)
    }

    func testRFC7677ServerWithLiteralMessages() throws {
        // Drive the server with the RFC's literal client messages, independent of our client.
        var server = ScramServerExchange(secret: rfcSecret, nonceBytes: bytes(rfcServerNonce))
        _ = try server.receiveClientFirst(bytes("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")).get()
        let final = try server.receiveClientFinal(bytes(
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")).get()
        XCTAssertEqual(text(final), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    func testDefaultNoncesAndLibpqStyleClientFirst() throws {
        var client = ScramClientExchange(credential: .password("pencil"), cache: nil)
        let first = text(client.clientFirstMessage())
        XCTAssertTrue(first.hasPrefix("n,,n=,r="))
        XCTAssertEqual(first.count, "n,,n=,r=".count + 24)  // base64 of 18 random bytes
        var server = ScramServerExchange(secret: rfcSecret)
        let serverFirst = text(try server.receiveClientFirst(bytes(first)).get())
        let nonce = serverFirst.split(separator: ",")[0].dropFirst(2)
        XCTAssertEqual(nonce.count, 48)
        let clientFinal = try client.receiveServerFirst(bytes(serverFirst)).get()
        let serverFinal = try server.receiveClientFinal(clientFinal).get()
        XCTAssertNoThrow(try client.receiveServerFinal(serverFinal).get())
    }

    private func runExchange(clientPassword: String, secret: ScramSecret) -> (client: Result<Void, AuthFailure>, server: ScramServerExchange) {
        var client = ScramClientExchange(credential: .password(clientPassword), cache: nil)
        var server = ScramServerExchange(secret: secret)
        let result: Result<Void, AuthFailure> = server.receiveClientFirst(client.clientFirstMessage())
            .flatMap { client.receiveServerFirst($0) }
            .flatMap { server.receiveClientFinal($0) }
            .flatMap { client.receiveServerFinal($0) }
        return (result, server)
    }

    func testWrongPasswordFailsServerExchange() {
        let (result, server) = runExchange(clientPassword: "pencil2", secret: rfcSecret)
        guard case .failure(let f) = result else { return XCTFail("wrong password accepted") }
        XCTAssertTrue(f.reason.contains("proof"), f.reason)
        XCTAssertNil(server.recoveredClientKey)
        XCTAssertFalse(server.isComplete)
    }

    func testMockSecretAlwaysFailsButLooksNormal() throws {
        let a = ScramSecret.mock(user: "ghost", processKey: [1, 2, 3])
        XCTAssertEqual(a, ScramSecret.mock(user: "ghost", processKey: [1, 2, 3]))
        XCTAssertNotEqual(a.salt, ScramSecret.mock(user: "ghost2", processKey: [1, 2, 3]).salt)
        let (result, _) = runExchange(clientPassword: "anything", secret: a)
        XCTAssertThrowsError(try result.get())
    }

    /// Mock salts: 16 bytes, stable per (key, name), different between names and keys; a plain-password
    /// user's salt comes from the same key (so it cannot be told from an unknown name's), and still
    /// verifies its password.
    func testMockSaltsAndKeyedPlainPasswordSalts() throws {
        let key = Crypto.sha256(Array("k".utf8))
        let s = MockAuthKey.salt(user: "ghost", key: key)
        XCTAssertEqual(s.count, ScramSecret.defaultSaltLength)
        XCTAssertEqual(s, MockAuthKey.salt(user: "ghost", key: key))
        XCTAssertNotEqual(s, MockAuthKey.salt(user: "ghost2", key: key))
        XCTAssertNotEqual(s, MockAuthKey.salt(user: "ghost", key: Crypto.sha256(Array("other".utf8))))
        XCTAssertEqual(ScramSecret.mock(user: "ghost", processKey: key).salt, s)
        XCTAssertEqual(ScramSecret.mock(user: "ghost", processKey: key).iterations, 4096)
        let plain = ClientScramSecrets(saltKey: key).secret(for: "alice", password: "pw")
        XCTAssertEqual(plain.salt, MockAuthKey.salt(user: "alice", key: key))
        XCTAssertEqual(plain, ClientScramSecrets(saltKey: key).secret(for: "alice", password: "pw"))
        let (ok, _) = runExchange(clientPassword: "pw", secret: plain)
        XCTAssertNoThrow(try ok.get())
        let (bad, _) = runExchange(clientPassword: "wrong", secret: plain)
        XCTAssertThrowsError(try bad.get())
        // Without a key the salt is random per instance.
        XCTAssertNotEqual(ClientScramSecrets().secret(for: "alice", password: "pw").salt,
                          ClientScramSecrets().secret(for: "alice", password: "pw").salt)
    }

    /// scram_iterations: the count of the secrets built from plain-text passwords (what the client
    /// derives its proof with) and of the mock secrets of unknown users.
    func testScramIterationsOfPlainPasswordAndMockSecrets() throws {
        let key = Crypto.sha256(Array("k".utf8))
        let secrets = ClientScramSecrets(saltKey: key, iterations: 5000)
        let plain = secrets.secret(for: "alice", password: "pw")
        XCTAssertEqual(plain.iterations, 5000)
        XCTAssertEqual(plain, ScramSecret.derive(password: "pw", salt: plain.salt, iterations: 5000))
        XCTAssertNotEqual(plain.storedKey, ScramSecret.derive(password: "pw", salt: plain.salt, iterations: 4096).storedKey)
        let (ok, _) = runExchange(clientPassword: "pw", secret: plain)
        XCTAssertNoThrow(try ok.get())
        XCTAssertEqual(ScramSecret.mock(user: "ghost", processKey: key, iterations: 5000).iterations, 5000)
    }

    func testStartupNamesAreTruncatedForErrors() {
        XCTAssertEqual(StartupMessage.truncatedName("short"), "short")
        XCTAssertEqual(StartupMessage.truncatedName(String(repeating: "a", count: 63)), String(repeating: "a", count: 63))
        XCTAssertEqual(StartupMessage.truncatedName(String(repeating: "a", count: 10_000)), String(repeating: "a", count: 63) + "...")
        // Never cuts a multi-byte character in half.
        let cut = StartupMessage.truncatedName(String(repeating: "é", count: 40))
        XCTAssertEqual(cut, String(repeating: "é", count: 31) + "...")
    }

    func testClientDetectsForgedServerSignatureAndServerError() throws {
        var client = ScramClientExchange(credential: .password("pencil"), cache: nil)
        var server = ScramServerExchange(secret: rfcSecret)
        let final = try client.receiveServerFirst(server.receiveClientFirst(client.clientFirstMessage()).get()).get()
        _ = try server.receiveClientFinal(final).get()
        var forged = client
        let badSig = "v=" + Base64.encode([UInt8](repeating: 7, count: 32))
        XCTAssertThrowsError(try forged.receiveServerFinal(bytes(badSig)).get())
        var errored = client
        guard case .failure(let f) = errored.receiveServerFinal(bytes("e=invalid-proof")) else { return XCTFail() }
        XCTAssertTrue(f.reason.contains("invalid-proof"))
    }

    func testClientRejectsBadServerFirst() {
        func attempt(_ serverFirst: String) -> Result<[UInt8], AuthFailure> {
            var c = ScramClientExchange(credential: .password("x"), cache: nil, nonceBytes: bytes("abc"))
            _ = c.clientFirstMessage()
            return c.receiveServerFirst(bytes(serverFirst))
        }
        XCTAssertNoThrow(try attempt("r=abcdef,s=QUJD,i=1").get())
        XCTAssertThrowsError(try attempt("r=xbcdef,s=QUJD,i=1").get())   // nonce not ours
        XCTAssertThrowsError(try attempt("r=abc,s=QUJD,i=1").get())      // no server part
        XCTAssertThrowsError(try attempt("r=abcdef,s=QUJ,i=1").get())    // bad base64
        XCTAssertThrowsError(try attempt("r=abcdef,s=QUJD,i=0").get())   // iterations < 1
        XCTAssertThrowsError(try attempt("r=abcdef,s=QUJD,i=1x").get())
        XCTAssertThrowsError(try attempt("r=abcdef,s=QUJD").get())
        XCTAssertThrowsError(try attempt("m=ext,r=abcdef,s=QUJD,i=1").get())
        XCTAssertThrowsError(try attempt("r=abcdef,s=QUJD,i=1,").get())
        // Out of order.
        var c = ScramClientExchange(credential: .password("x"), cache: nil)
        XCTAssertThrowsError(try c.receiveServerFirst(bytes("r=abcdef,s=QUJD,i=1")).get())
    }

    // MARK: - SCRAM server: gs2 header and message validation

    private func serverFirst(_ message: String) -> Result<[UInt8], AuthFailure> {
        var s = ScramServerExchange(secret: rfcSecret, nonceBytes: bytes("SRV"))
        return s.receiveClientFirst(bytes(message))
    }

    func testServerGS2HeaderHandling() throws {
        XCTAssertEqual(text(try serverFirst("n,,n=,r=abc").get()), "r=abcSRV,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        XCTAssertNoThrow(try serverFirst("y,,n=,r=abc").get())
        XCTAssertNoThrow(try serverFirst("n,,n=whoever,r=abc,x=ext").get())  // user ignored, extension ignored
        guard case .failure(let plus) = serverFirst("p=tls-server-end-point,,n=,r=abc") else { return XCTFail() }
        XCTAssertTrue(plus.reason.contains("channel binding"))
        XCTAssertThrowsError(try serverFirst("n,a=admin,n=,r=abc").get())
        XCTAssertThrowsError(try serverFirst("n,,m=ext,n=,r=abc").get())
        XCTAssertThrowsError(try serverFirst("x,,n=,r=abc").get())
        XCTAssertThrowsError(try serverFirst("n,,r=abc").get())
        XCTAssertThrowsError(try serverFirst("n,,n=,r=").get())
        XCTAssertThrowsError(try serverFirst("n,,n=,r=a\u{7f}b").get())
        XCTAssertThrowsError(try serverFirst("n").get())
        XCTAssertThrowsError(try serverFirst("").get())
    }

    /// Runs client-first "<gs2>n=,r=abc" then the given client-final against the RFC secret.
    private func serverFinal(gs2: String = "n,,", _ final: (String) -> String) -> Result<[UInt8], AuthFailure> {
        var s = ScramServerExchange(secret: rfcSecret, nonceBytes: bytes("SRV"))
        guard case .success = s.receiveClientFirst(bytes(gs2 + "n=,r=abc")) else { return .failure(AuthFailure("first")) }
        return s.receiveClientFinal(bytes(final("abcSRV")))
    }

    private func proofFor(_ withoutProof: String, gs2: String = "n,,") -> String {
        let keys = ScramKeys.derive(password: "pencil", salt: Base64.decode(rfcSalt)!, iterations: 4096)
        let auth = bytes("n=,r=abc,r=abcSRV,s=\(rfcSalt),i=4096," + withoutProof)
        let sig = Crypto.hmacSHA256(key: keys.storedKey, data: auth)
        return Base64.encode(zip(keys.clientKey, sig).map { $0 ^ $1 })
    }

    func testServerClientFinalValidation() throws {
        // Valid, including an extension before the proof and the "y" flag.
        XCTAssertNoThrow(try serverFinal { n in "c=biws,r=\(n),p=" + self.proofFor("c=biws,r=\(n)") }.get())
        XCTAssertNoThrow(try serverFinal { n in "c=biws,r=\(n),x=1,p=" + self.proofFor("c=biws,r=\(n),x=1") }.get())
        XCTAssertNoThrow(try serverFinal(gs2: "y,,") { n in "c=eSws,r=\(n),p=" + self.proofFor("c=eSws,r=\(n)") }.get())
        // c= must match the gs2 header sent in client-first.
        XCTAssertThrowsError(try serverFinal(gs2: "y,,") { n in "c=biws,r=\(n),p=" + self.proofFor("c=biws,r=\(n)") }.get())
        XCTAssertThrowsError(try serverFinal { n in "c=eSws,r=\(n),p=" + self.proofFor("c=eSws,r=\(n)") }.get())
        // Nonce must be exactly client+server nonce.
        XCTAssertThrowsError(try serverFinal { _ in "c=biws,r=abcSRX,p=" + self.proofFor("c=biws,r=abcSRX") }.get())
        XCTAssertThrowsError(try serverFinal { _ in "c=biws,r=abcSRVx,p=" + self.proofFor("c=biws,r=abcSRVx") }.get())
        // Proof length, presence, position.
        XCTAssertThrowsError(try serverFinal { n in "c=biws,r=\(n),p=" + Base64.encode([1, 2, 3]) }.get())
        XCTAssertThrowsError(try serverFinal { n in "c=biws,r=\(n)" }.get())
        XCTAssertThrowsError(try serverFinal { n in "c=biws,r=\(n),p=" + self.proofFor("c=biws,r=\(n)") + ",x=1" }.get())
        XCTAssertThrowsError(try serverFinal { n in "r=\(n),c=biws,p=" + self.proofFor("r=\(n),c=biws") }.get())
    }

    // MARK: - SCRAM-SHA-256-PLUS (tls-server-end-point)

    private let cbData: [UInt8] = Array(0..<32)

    /// client-first with `gs2` under `mechanism`, then a client-final whose c= is `cbind` (base64 of
    /// gs2 header + binding data for a bound client), against a server offering binding `cbData`.
    private func plusExchange(mechanism: String, gs2: String, cbind: [UInt8], offer: Bool = true) -> Result<[UInt8], AuthFailure> {
        var s = ScramServerExchange(secret: rfcSecret, nonceBytes: bytes("SRV"), channelBinding: offer ? cbData : nil)
        guard case .success = s.receiveClientFirst(bytes(gs2 + "n=,r=abc"), mechanism: mechanism) else {
            return .failure(AuthFailure("client-first rejected"))
        }
        let c = Base64.encode(cbind)
        return s.receiveClientFinal(bytes("c=\(c),r=abcSRV,p=" + proofFor("c=\(c),r=abcSRV")))
    }

    func testChannelBindingAccepted() throws {
        let gs2 = "p=tls-server-end-point,,"
        XCTAssertNoThrow(try plusExchange(mechanism: "SCRAM-SHA-256-PLUS", gs2: gs2, cbind: bytes(gs2) + cbData).get())
        // Plain SCRAM with "n" still works on TLS (channel_binding=disable).
        XCTAssertNoThrow(try plusExchange(mechanism: "SCRAM-SHA-256", gs2: "n,,", cbind: bytes("n,,")).get())
    }

    func testChannelBindingRejected() {
        let gs2 = "p=tls-server-end-point,,"
        // Wrong binding data (another certificate: a man in the middle).
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256-PLUS", gs2: gs2,
                                              cbind: bytes(gs2) + [UInt8](repeating: 9, count: 32)).get())
        // Header alone, no data.
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256-PLUS", gs2: gs2, cbind: bytes(gs2)).get())
        // -PLUS chosen without binding, binding without -PLUS, -PLUS when not offered.
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256-PLUS", gs2: "n,,", cbind: bytes("n,,")).get())
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256", gs2: gs2, cbind: bytes(gs2) + cbData).get())
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256-PLUS", gs2: gs2, cbind: bytes(gs2) + cbData,
                                              offer: false).get())
        // "y" while -PLUS was offered: the offer was stripped on the way (downgrade).
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256", gs2: "y,,", cbind: bytes("y,,")).get())
        // Another binding type.
        XCTAssertThrowsError(try plusExchange(mechanism: "SCRAM-SHA-256-PLUS", gs2: "p=tls-unique,,",
                                              cbind: bytes("p=tls-unique,,") + cbData).get())
    }

    func testServerRejectsOutOfOrderAndReuseAfterFailure() throws {
        var s = ScramServerExchange(secret: rfcSecret)
        XCTAssertThrowsError(try s.receiveClientFinal(bytes("c=biws,r=x,p=AAAA")).get())
        XCTAssertThrowsError(try s.receiveClientFirst(bytes("n,,n=,r=abc")).get())  // failed exchanges stay failed
    }

    // MARK: - Passthrough

    func testPassthroughWithRecoveredClientKey() throws {
        let secret = ScramSecret.derive(password: "s3cret!", salt: Crypto.randomBytes(16), iterations: 4096)
        // 1. A client logs in to pgswift; pgswift recovers its ClientKey.
        let (result, front) = runExchange(clientPassword: "s3cret!", secret: secret)
        XCTAssertNoThrow(try result.get())
        let clientKey = try XCTUnwrap(front.recoveredClientKey)

        // 2. pgswift logs in to "PostgreSQL" (another server exchange with the same secret) with the keys.
        var upstream = ScramClientExchange(credential: .keys(clientKey: clientKey, serverKey: secret.serverKey), cache: nil,
                                           expectedParameters: (secret.salt, secret.iterations))
        var backend = ScramServerExchange(secret: secret)
        let serverFirst = try backend.receiveClientFirst(upstream.clientFirstMessage()).get()
        let clientFinal = try upstream.receiveServerFirst(serverFirst).get()
        XCTAssertEqual(upstream.serverSaltAndIterations?.salt, secret.salt)
        let serverFinal = try backend.receiveClientFinal(clientFinal).get()
        XCTAssertNoThrow(try upstream.receiveServerFinal(serverFinal).get())

        // 3. A server holding a different secret (other salt) is detected before sending a proof.
        let other = ScramSecret.derive(password: "s3cret!", salt: Crypto.randomBytes(16), iterations: 4096)
        var upstream2 = ScramClientExchange(credential: .keys(clientKey: clientKey, serverKey: secret.serverKey), cache: nil,
                                            expectedParameters: (secret.salt, secret.iterations))
        var backend2 = ScramServerExchange(secret: other)
        let sf2 = try backend2.receiveClientFirst(upstream2.clientFirstMessage()).get()
        guard case .failure(let f) = upstream2.receiveServerFirst(sf2) else { return XCTFail("salt mismatch not detected") }
        XCTAssertTrue(f.reason.contains("passthrough"))
    }

    // MARK: - Caches

    func testScramKeyCacheHitMissAndEviction() {
        let cache = ScramKeyCache(capacity: 2)
        let salt = bytes("saltsaltsaltsalt")
        let a = cache.keys(password: "pencil", salt: salt, iterations: 4096)
        XCTAssertEqual(cache.misses, 1)
        let b = cache.keys(password: "pencil", salt: salt, iterations: 4096)
        XCTAssertEqual(cache.misses, 1)  // hit
        XCTAssertEqual(a.clientKey, b.clientKey)
        XCTAssertEqual(a.storedKey, Crypto.sha256(a.clientKey))
        let direct = ScramSecret.derive(password: "pencil", salt: salt, iterations: 4096)
        XCTAssertEqual(a.storedKey, direct.storedKey)
        XCTAssertEqual(a.serverKey, direct.serverKey)

        _ = cache.keys(password: "pencil", salt: salt, iterations: 4097)
        _ = cache.keys(password: "other", salt: salt, iterations: 4096)
        XCTAssertEqual(cache.misses, 3)
        XCTAssertEqual(cache.count, 2)
        _ = cache.keys(password: "pencil", salt: salt, iterations: 4096)  // oldest was evicted
        XCTAssertEqual(cache.misses, 4)
    }

    func testClientExchangeUsesCache() throws {
        let cache = ScramKeyCache()
        for _ in 0..<3 {
            var client = ScramClientExchange(credential: .password("pencil"), cache: cache)
            var server = ScramServerExchange(secret: rfcSecret)
            let sf = try server.receiveClientFirst(client.clientFirstMessage()).get()
            let final = try server.receiveClientFinal(client.receiveServerFirst(sf).get()).get()
            XCTAssertNoThrow(try client.receiveServerFinal(final).get())
        }
        XCTAssertEqual(cache.misses, 1)
    }

    func testClientScramSecretsAndSecretSelection() throws {
        let secrets = ClientScramSecrets()
        let s1 = secrets.secret(for: "bob", password: "pw")
        let s2 = secrets.secret(for: "bob", password: "pw")
        XCTAssertEqual(s1, s2)
        XCTAssertEqual(s1.salt.count, 16)
        XCTAssertEqual(s1.iterations, 4096)
        XCTAssertEqual(s1, ScramSecret.derive(password: "pw", salt: s1.salt, iterations: 4096))
        XCTAssertNotEqual(secrets.secret(for: "alice", password: "pw").salt, s1.salt)
        let changed = secrets.secret(for: "bob", password: "pw2")
        XCTAssertEqual(changed, ScramSecret.derive(password: "pw2", salt: changed.salt, iterations: 4096))

        let cache = ScramKeyCache()
        let fromPlain = ClientScramSecrets.scramSecretForClientAuth(entry: .plain("pw2"), user: "bob", cache: cache,
                                                                    saltCache: secrets)
        XCTAssertEqual(fromPlain, changed)
        let stored = rfcSecret
        XCTAssertEqual(ScramSecret.scramSecretForClientAuth(entry: .scram(stored), user: "bob", cache: cache, saltCache: secrets),
                       stored)
        XCTAssertNil(ClientScramSecrets.scramSecretForClientAuth(entry: .md5(MD5Password.hash(user: "bob", password: "pw")),
                                                                 user: "bob", cache: cache, saltCache: secrets))
        // A plain password authenticates through the selected secret.
        let (result, _) = runExchange(clientPassword: "pw2", secret: try XCTUnwrap(fromPlain))
        XCTAssertNoThrow(try result.get())
    }

    // MARK: - Secrets

    /// Created by PostgreSQL 15 (`CREATE ROLE bob PASSWORD 'pencil'` with password_encryption=scram-sha-256).
    private let postgresSecret =
        "SCRAM-SHA-256$4096:1oo/jq/rhghZPcFNdidu4w==$vEgKbbO0GytsDcKtXLLypGqP3c4saH1Ndc9Fti+Uyvs=:yCh6um1ZuPwoBz9nR5qWSjLD5skozCwT6ZLFESXe1Z8="

    func testScramSecretParsePrintRoundTrip() throws {
        let parsed = try XCTUnwrap(ScramSecret.parse(postgresSecret))
        XCTAssertEqual(parsed.iterations, 4096)
        XCTAssertEqual(parsed.salt.count, 16)
        XCTAssertEqual(parsed.description, postgresSecret)
        XCTAssertEqual(ScramSecret.derive(password: "pencil", salt: parsed.salt, iterations: 4096), parsed)

        let derived = ScramSecret.derive(password: "pencil", salt: Base64.decode(rfcSalt)!, iterations: 4096)
        XCTAssertEqual(derived.description,
                       "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")
        XCTAssertEqual(ScramSecret.parse(derived.description), derived)

        for bad in ["SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
                    "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                    "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLm:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                    "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:x",
                    ""] {
            XCTAssertNil(ScramSecret.parse(bad), bad)
        }
    }

    func testPostgresSecretAuthenticatesThroughBothRoles() throws {
        let secret = try XCTUnwrap(ScramSecret.parse(postgresSecret))
        let (ok, _) = runExchange(clientPassword: "pencil", secret: secret)
        XCTAssertNoThrow(try ok.get())
        let (bad, _) = runExchange(clientPassword: "Pencil", secret: secret)
        XCTAssertThrowsError(try bad.get())
    }

    func testPasswordSecretClassification() {
        let md5 = "md53175bce1d3201d16594cebf9d7eb3f9d"
        XCTAssertEqual(PasswordSecret(parsing: md5), .md5(md5))
        XCTAssertEqual(PasswordSecret(parsing: postgresSecret), .scram(ScramSecret.parse(postgresSecret)!))
        XCTAssertEqual(PasswordSecret(parsing: "pencil"), .plain("pencil"))
        XCTAssertEqual(PasswordSecret(parsing: ""), .plain(""))
        XCTAssertEqual(PasswordSecret(parsing: "md53175BCE1D3201D16594CEBF9D7EB3F9D"), .plain("md53175BCE1D3201D16594CEBF9D7EB3F9D"))
        XCTAssertEqual(PasswordSecret(parsing: "md53175bce1d3201d16594cebf9d7eb3f9"), .plain("md53175bce1d3201d16594cebf9d7eb3f9"))
        XCTAssertEqual(PasswordSecret(parsing: "md53175bce1d3201d16594cebf9d7eb3f9dd"), .plain("md53175bce1d3201d16594cebf9d7eb3f9dd"))
        XCTAssertEqual(PasswordSecret(parsing: "SCRAM-SHA-256$garbage"), .plain("SCRAM-SHA-256$garbage"))
    }

    // MARK: - MD5

    func testMD5Password() {
        XCTAssertEqual(MD5Password.hash(user: "postgres", password: "postgres"), "md53175bce1d3201d16594cebf9d7eb3f9d")
        // Made by PostgreSQL 15: CREATE ROLE md5user PASSWORD 'secret' with password_encryption=md5.
        XCTAssertEqual(MD5Password.hash(user: "md5user", password: "secret"), "md52aea419619857e8a27f0f7aa641db0c6")
        // md5("password" + "user"), computed independently.
        XCTAssertEqual(MD5Password.hash(user: "user", password: "password"), "md54d45974e13472b5a0be3533de4666414")

        let salt: [UInt8] = [1, 2, 3, 4]
        // md5("3175bce1d3201d16594cebf9d7eb3f9d" + 01 02 03 04), computed independently.
        let expected = "md568be9ed08db75f318087ab337aaea044"
        XCTAssertEqual(MD5Password.response(storedHash: "md53175bce1d3201d16594cebf9d7eb3f9d", salt: salt), expected)
        XCTAssertEqual(MD5Password.response(user: "postgres", password: "postgres", salt: salt), expected)
        XCTAssertTrue(MD5Password.verify(clientResponse: expected, storedHash: "md53175bce1d3201d16594cebf9d7eb3f9d", salt: salt))
        XCTAssertFalse(MD5Password.verify(clientResponse: expected, storedHash: "md53175bce1d3201d16594cebf9d7eb3f9d", salt: [1, 2, 3, 5]))
        XCTAssertFalse(MD5Password.verify(clientResponse: "md5", storedHash: "md53175bce1d3201d16594cebf9d7eb3f9d", salt: salt))
    }

    func testMessages() {
        XCTAssertEqual(PostgresAuthMessages.passwordFailed(user: "bob"), "password authentication failed for user \"bob\"")
        XCTAssertEqual(PostgresAuthMessages.invalidPasswordSQLState, "28P01")
        XCTAssertEqual(AuthFailure("x").reason, "x")
        XCTAssertTrue(AuthFailure(reason: "nonce").description.contains("nonce"))
    }
}
