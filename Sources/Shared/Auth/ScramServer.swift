// SCRAM-SHA-256 server side: pgswift verifying a client's password proof against a stored SCRAM secret.

public struct ScramServerExchange {
    public static let mechanism = "SCRAM-SHA-256"
    public static let mechanismPlus = "SCRAM-SHA-256-PLUS"
    /// Random bytes a server nonce is made of (base64-encoded), for callers that supply their own.
    public static let rawNonceLength = ScramText.rawNonceLength

    private enum Phase { case awaitingClientFirst, awaitingClientFinal, succeeded, failed }

    public let secret: ScramSecret
    private let injectedNonce: [UInt8]?
    /// tls-server-end-point data when the client is on TLS: SCRAM-SHA-256-PLUS is then offered.
    private let channelBinding: [UInt8]?
    /// The client chose -PLUS: client-final's c= must carry the binding data.
    private var bound = false
    private var phase = Phase.awaitingClientFirst
    private var gs2Header: [UInt8] = []
    private var clientFirstBare: [UInt8] = []
    private var serverFirst: [UInt8] = []
    private var fullNonce: [UInt8] = []
    private var clientKey: [UInt8]?

    /// `nonceBytes`: the server nonce part for tests (SCRAM-printable bytes are used verbatim, others
    /// base64-encoded); by default 18 random bytes, base64-encoded, like PostgreSQL.
    /// `channelBinding`: the hash of the server certificate (RFC 5929 tls-server-end-point) when the
    /// client is on TLS; -PLUS is then offered and a client that could bind must.
    public init(secret: ScramSecret, nonceBytes: [UInt8]? = nil, channelBinding: [UInt8]? = nil) {
        self.secret = secret
        self.injectedNonce = nonceBytes
        self.channelBinding = channelBinding
    }

    /// Whether SCRAM-SHA-256-PLUS is offered (the client is on TLS).
    public var offersChannelBinding: Bool { channelBinding != nil }

    /// ClientKey the client proved it knows (ClientProof XOR ClientSignature); set only after a successful
    /// `receiveClientFinal`. With the secret's ServerKey it lets pgswift log in to PostgreSQL as this user
    /// without knowing the password, provided the server holds the same secret.
    public var recoveredClientKey: [UInt8]? { phase == .succeeded ? clientKey : nil }

    public var isComplete: Bool { phase == .succeeded }

    /// Parses client-first-message and returns server-first-message.
    /// `mechanism`: the one the client chose in SASLInitialResponse.
    public mutating func receiveClientFirst(_ data: [UInt8], mechanism: String = ScramServerExchange.mechanism)
        -> Result<[UInt8], AuthFailure> {
        guard phase == .awaitingClientFirst else { return fail("client-first-message received out of order") }
        guard let flag = data.first else { return fail("empty SCRAM client-first-message") }
        let plus = mechanism == Self.mechanismPlus
        if plus && channelBinding == nil {
            return fail("SCRAM-SHA-256-PLUS chosen, but channel binding is not offered")
        }
        if plus != (flag == UInt8(ascii: "p")) {
            return fail(plus ? "SCRAM-SHA-256-PLUS chosen, but the client does not bind the channel"
                             : "client requires SCRAM channel binding, but did not choose SCRAM-SHA-256-PLUS")
        }
        var i = 1
        switch flag {
        case UInt8(ascii: "n"):
            break
        case UInt8(ascii: "y"):
            // The client could bind but believes we cannot: when -PLUS was offered, someone removed it.
            if channelBinding != nil {
                return fail("SCRAM channel binding negotiation error: -PLUS was offered, client answered \"y\"")
            }
        case UInt8(ascii: "p"):
            let name = Array("=tls-server-end-point".utf8)
            guard data.count >= 1 + name.count, Array(data[1..<(1 + name.count)]) == name else {
                return fail("unsupported SCRAM channel-binding type (only tls-server-end-point)")
            }
            i += name.count
            bound = true
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
            // cbind-input: the gs2 header from client-first, then the binding data if the client bound.
            var expected = gs2Header
            if bound, let cb = channelBinding { expected += cb }
            guard let cbind = Base64.decode(bytes: v), Crypto.constantTimeEqual(cbind, expected) else {
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

        let clientSignature = Crypto.hmacSHA256(prepared: secret.storedKeyHMAC, data: authMessage)
        let key = ScramText.xor(proof, clientSignature)
        guard Crypto.constantTimeEqual(Crypto.sha256(key), secret.storedKey) else {
            return fail("SCRAM client proof does not match the stored secret (wrong password)")
        }
        let serverSignature = Crypto.hmacSHA256(prepared: secret.serverKeyHMAC, data: authMessage)
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
