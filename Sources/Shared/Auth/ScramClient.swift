// SCRAM-SHA-256 client side: pgswift logging in to PostgreSQL with a password or with passed-through keys.

public enum ScramClientCredential {
    case password(String)
    /// Passthrough (as PgBouncer does): keys recovered from the client's own SCRAM login. Works only when
    /// the server's salt and iterations equal those of the secret the keys belong to.
    case keys(clientKey: [UInt8], serverKey: [UInt8])
}

public struct ScramClientExchange {
    private enum Phase { case initial, sentClientFirst, sentClientFinal, succeeded, failed }

    private let credential: ScramClientCredential
    private let cache: ScramKeyCache?
    private let injectedNonce: [UInt8]?
    private let userName: [UInt8]
    private let expectedParameters: (salt: [UInt8], iterations: Int)?
    private var phase = Phase.initial
    private var clientNonce: [UInt8] = []
    private var clientFirstBare: [UInt8] = []
    private var salt: [UInt8] = []
    private var iterations = 0
    private var expectedServerSignature: [UInt8] = []

    /// - nonceBytes: client nonce for tests (SCRAM-printable bytes used verbatim, others base64-encoded);
    ///   by default 18 random bytes, base64-encoded, like libpq.
    /// - user: the name sent in client-first; PostgreSQL ignores it and libpq sends it empty.
    /// - expectedParameters: for `.keys`, the secret's salt and iterations; a server announcing others
    ///   fails in `receiveServerFirst` with a clear reason instead of a proof the server rejects.
    public init(credential: ScramClientCredential, cache: ScramKeyCache?, nonceBytes: [UInt8]? = nil,
                user: String = "", expectedParameters: (salt: [UInt8], iterations: Int)? = nil) {
        self.credential = credential
        self.cache = cache
        self.injectedNonce = nonceBytes
        self.userName = ScramText.saslName(user)
        self.expectedParameters = expectedParameters
    }

    /// Salt and iterations the server announced in server-first-message.
    public var serverSaltAndIterations: (salt: [UInt8], iterations: Int)? {
        switch phase {
        case .sentClientFinal, .succeeded: return (salt, iterations)
        case .initial, .sentClientFirst, .failed: return nil
        }
    }

    public var isComplete: Bool { phase == .succeeded }

    /// "n,,n=,r=<nonce>": no channel binding, empty user name (the server takes it from the startup packet).
    public mutating func clientFirstMessage() -> [UInt8] {
        clientNonce = ScramText.makeNonce(injectedNonce)
        var bare = Array("n=".utf8)
        bare += userName
        bare += Array(",r=".utf8)
        bare += clientNonce
        clientFirstBare = bare
        phase = .sentClientFirst
        return Self.gs2Header + bare
    }

    /// Parses server-first-message and returns client-final-message with the proof.
    public mutating func receiveServerFirst(_ data: [UInt8]) -> Result<[UInt8], AuthFailure> {
        guard phase == .sentClientFirst else { return fail("server-first-message received out of order") }
        if data.first == UInt8(ascii: "m") { return fail("server requires an unsupported SCRAM extension") }
        var reader = ScramAttributeReader(data)
        let nonce: ArraySlice<UInt8>
        switch reader.read("r") {
        case .failure(let f): return fail(f.reason)
        case .success(let v): nonce = v
        }
        guard nonce.count > clientNonce.count, nonce.starts(with: clientNonce), ScramText.isPrintable(nonce) else {
            return fail("invalid SCRAM response (nonce mismatch)")
        }
        let saltValue: [UInt8]
        switch reader.read("s") {
        case .failure(let f): return fail(f.reason)
        case .success(let v):
            guard let s = Base64.decode(bytes: v), !s.isEmpty else { return fail("malformed SCRAM message: invalid salt") }
            saltValue = s
        }
        let iterationCount: Int
        switch reader.read("i") {
        case .failure(let f): return fail(f.reason)
        case .success(let v):
            guard let n = ScramText.parsePositiveInt(v) else { return fail("malformed SCRAM message: invalid iteration count") }
            iterationCount = n
        }
        while !reader.atEnd {
            if case .failure(let f) = reader.readAny() { return fail(f.reason) }
        }

        let keys: ScramKeys
        switch credential {
        case .password(let password):
            keys = cache?.scramKeys(password: password, salt: saltValue, iterations: iterationCount)
                ?? ScramKeys.derive(password: password, salt: saltValue, iterations: iterationCount)
        case .keys(let clientKey, let serverKey):
            guard clientKey.count == Crypto.sha256Length, serverKey.count == Crypto.sha256Length else {
                return fail("SCRAM passthrough keys have the wrong length")
            }
            if let expected = expectedParameters,
               expected.iterations != iterationCount || expected.salt != saltValue {
                return fail("server's SCRAM salt/iterations differ from the stored secret's; passthrough impossible")
            }
            keys = ScramKeys(clientKey: clientKey, serverKey: serverKey, storedKey: Crypto.sha256(clientKey))
        }

        var final = Array("c=".utf8)
        final += Base64.encodeBytes(Self.gs2Header)
        final += Array(",r=".utf8)
        final += nonce
        let authMessage = ScramText.authMessage(clientFirstBare, data, final[...])
        let clientSignature = Crypto.hmacSHA256(key: keys.storedKey, data: authMessage)
        let proof = ScramText.xor(keys.clientKey, clientSignature)
        expectedServerSignature = Crypto.hmacSHA256(key: keys.serverKey, data: authMessage)
        final += Array(",p=".utf8)
        final += Base64.encodeBytes(proof)

        salt = saltValue
        iterations = iterationCount
        phase = .sentClientFinal
        return .success(final)
    }

    /// Verifies the server's signature in server-final-message (or reports its "e=" error).
    public mutating func receiveServerFinal(_ data: [UInt8]) -> Result<Void, AuthFailure> {
        guard phase == .sentClientFinal else { return fail("server-final-message received out of order") }
        var reader = ScramAttributeReader(data)
        if reader.peek == UInt8(ascii: "e") {
            if case .success(let v) = reader.read("e") {
                return fail("error received from server in SCRAM exchange: \(String(decoding: v, as: UTF8.self))")
            }
            return fail("malformed SCRAM error from server")
        }
        let signature: [UInt8]
        switch reader.read("v") {
        case .failure(let f): return fail(f.reason)
        case .success(let v):
            guard let s = Base64.decode(bytes: v), s.count == Crypto.sha256Length else {
                return fail("malformed SCRAM message: invalid server signature")
            }
            signature = s
        }
        while !reader.atEnd {
            if case .failure(let f) = reader.readAny() { return fail(f.reason) }
        }
        guard Crypto.constantTimeEqual(signature, expectedServerSignature) else {
            return fail("incorrect server signature")
        }
        phase = .succeeded
        return .success(())
    }

    private static let gs2Header: [UInt8] = Array("n,,".utf8)

    private mutating func fail<T>(_ reason: String) -> Result<T, AuthFailure> {
        phase = .failed
        expectedServerSignature = []
        return .failure(AuthFailure(reason))
    }
}
