// SCRAM-SHA-256 server side: pgswift verifying a client's password proof against a stored SCRAM secret.

public struct ScramServerExchange {
    public static let mechanism = "SCRAM-SHA-256"
    public static let mechanismPlus = "SCRAM-SHA-256-PLUS"

    private enum Phase { case awaitingClientFirst, awaitingClientFinal, succeeded, failed }

    public let secret: ScramSecret
    private let injectedNonce: [UInt8]?
    private var phase = Phase.awaitingClientFirst
    private var gs2Header: [UInt8] = []
    private var clientFirstBare: [UInt8] = []
    private var serverFirst: [UInt8] = []
    private var fullNonce: [UInt8] = []
    private var clientKey: [UInt8]?

    /// `nonceBytes`: the server nonce part for tests (SCRAM-printable bytes are used verbatim, others
    /// base64-encoded); by default 18 random bytes, base64-encoded, like PostgreSQL.
    public init(secret: ScramSecret, nonceBytes: [UInt8]? = nil) {
        self.secret = secret
        self.injectedNonce = nonceBytes
    }

    /// ClientKey the client proved it knows (ClientProof XOR ClientSignature); set only after a successful
    /// `receiveClientFinal`. With the secret's ServerKey it lets pgswift log in to PostgreSQL as this user
    /// without knowing the password, provided the server holds the same secret.
    public var recoveredClientKey: [UInt8]? { phase == .succeeded ? clientKey : nil }

    public var isComplete: Bool { phase == .succeeded }

    /// Parses client-first-message and returns server-first-message.
    public mutating func receiveClientFirst(_ data: [UInt8]) -> Result<[UInt8], AuthFailure> {
        guard phase == .awaitingClientFirst else { return fail("client-first-message received out of order") }
        guard let flag = data.first else { return fail("empty SCRAM client-first-message") }
        var i = 1
        switch flag {
        case UInt8(ascii: "n"), UInt8(ascii: "y"):
            // "y": the client could bind but believes we cannot; true, since -PLUS is never advertised.
            break
        case UInt8(ascii: "p"):
            return fail("client requires SCRAM channel binding, but SCRAM-SHA-256-PLUS is not offered")
        default:
            return fail("malformed SCRAM message: unexpected channel-binding flag \(ScramText.sanitize(flag))")
        }
        guard i < data.count, data[i] == ScramText.comma else { return fail("malformed SCRAM message: comma expected after channel-binding flag") }
        i += 1
        if i < data.count && data[i] == UInt8(ascii: "a") {
            return fail("client uses authorization identity, but it is not supported")
        }
        guard i < data.count, data[i] == ScramText.comma else { return fail("malformed SCRAM message: comma expected after gs2 header") }
        i += 1
        let header = Array(data[0..<i])
        if i < data.count && data[i] == UInt8(ascii: "m") {
            return fail("client requires an unsupported SCRAM extension")
        }
        var reader = ScramAttributeReader(data, from: i)
        // The user name is ignored: the user comes from the startup packet (as in PostgreSQL).
        if case .failure(let f) = reader.read("n") { return fail(f.reason) }
        let clientNonce: ArraySlice<UInt8>
        switch reader.read("r") {
        case .failure(let f): return fail(f.reason)
        case .success(let v): clientNonce = v
        }
        guard !clientNonce.isEmpty, ScramText.isPrintable(clientNonce) else {
            return fail("non-printable characters or empty SCRAM client nonce")
        }
        while !reader.atEnd {
            if case .failure(let f) = reader.readAny() { return fail(f.reason) }
        }

        let serverNonce = ScramText.makeNonce(injectedNonce)
        var nonce = Array(clientNonce)
        nonce += serverNonce
        var first = Array("r=".utf8)
        first += nonce
        first += Array(",s=".utf8)
        first += Base64.encodeBytes(secret.salt)
        first += Array(",i=\(secret.iterations)".utf8)

        gs2Header = header
        clientFirstBare = Array(data[i...])
        fullNonce = nonce
        serverFirst = first
        phase = .awaitingClientFinal
        return .success(first)
    }

    /// Verifies client-final-message's proof and returns server-final-message ("v=<ServerSignature>").
    public mutating func receiveClientFinal(_ data: [UInt8]) -> Result<[UInt8], AuthFailure> {
        guard phase == .awaitingClientFinal else { return fail("client-final-message received out of order") }
        var reader = ScramAttributeReader(data)

        switch reader.read("c") {
        case .failure(let f): return fail(f.reason)
        case .success(let v):
            // With no channel binding the cbind-input is exactly the gs2 header from client-first.
            guard let cbind = Base64.decode(bytes: v), cbind == gs2Header else {
                return fail("SCRAM channel binding check failed (c= does not match the gs2 header)")
            }
        }
        switch reader.read("r") {
        case .failure(let f): return fail(f.reason)
        case .success(let v):
            guard v.elementsEqual(fullNonce) else { return fail("SCRAM nonce mismatch in client-final-message") }
        }
        // Optional extensions, then the proof, which must be last.
        var proofAttributeStart = reader.position
        var proofValue: ArraySlice<UInt8>?
        while !reader.atEnd {
            proofAttributeStart = reader.position
            switch reader.readAny() {
            case .failure(let f): return fail(f.reason)
            case .success(let (attr, value)):
                if attr == UInt8(ascii: "p") {
                    guard reader.atEnd else { return fail("malformed SCRAM message: garbage after client proof") }
                    proofValue = value
                }
            }
        }
        guard let proofValue else { return fail("malformed SCRAM message: client proof missing") }
        guard let proof = Base64.decode(bytes: proofValue), proof.count == Crypto.sha256Length else {
            return fail("malformed SCRAM message: invalid client proof")
        }
        // proofAttributeStart points at "p="; the message without proof ends before the comma.
        let withoutProof = data[0..<(proofAttributeStart - 1)]
        let authMessage = ScramText.authMessage(clientFirstBare, serverFirst, withoutProof)

        let clientSignature = Crypto.hmacSHA256(key: secret.storedKey, data: authMessage)
        let key = ScramText.xor(proof, clientSignature)
        guard Crypto.constantTimeEqual(Crypto.sha256(key), secret.storedKey) else {
            return fail("SCRAM client proof does not match the stored secret (wrong password)")
        }
        let serverSignature = Crypto.hmacSHA256(key: secret.serverKey, data: authMessage)
        clientKey = key
        phase = .succeeded
        var final = Array("v=".utf8)
        final += Base64.encodeBytes(serverSignature)
        return .success(final)
    }

    private mutating func fail<T>(_ reason: String) -> Result<T, AuthFailure> {
        phase = .failed
        clientKey = nil
        return .failure(AuthFailure(reason))
    }
}
