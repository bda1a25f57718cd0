// Shared SCRAM message syntax helpers (RFC 5802 section 7): attribute reading, nonces, password preparation.

enum ScramText {
    static let clientKeyLabel: [UInt8] = Array("Client Key".utf8)
    static let serverKeyLabel: [UInt8] = Array("Server Key".utf8)
    /// Raw nonce length PostgreSQL uses (base64-encoded to 24 characters).
    static let rawNonceLength = 18
    static let comma = UInt8(ascii: ",")
    static let equals = UInt8(ascii: "=")

    /// RFC 5802 "printable": %x21-2B / %x2D-7E (printable ASCII except ',').
    static func isPrintable(_ c: UInt8) -> Bool { c >= 0x21 && c <= 0x7E && c != comma }

    static func isPrintable<C: Collection>(_ s: C) -> Bool where C.Element == UInt8 {
        s.allSatisfy(isPrintable)
    }

    /// Injected nonces that are already SCRAM-printable are used verbatim (so RFC test vectors with
    /// arbitrary printable nonces can be reproduced); anything else, including the random default, is
    /// base64-encoded, as PostgreSQL does with its 18 random bytes.
    static func makeNonce(_ injected: [UInt8]?) -> [UInt8] {
        if let injected, !injected.isEmpty, isPrintable(injected) { return injected }
        return Base64.encodeBytes(injected ?? Crypto.randomBytes(rawNonceLength))
    }

    /// Decimal digits only, 1...Int32.max (PostgreSQL keeps iteration counts in an int).
    static func parsePositiveInt<C: Collection>(_ s: C) -> Int? where C.Element == UInt8 {
        if s.isEmpty || s.count > 10 { return nil }
        var v = 0
        for c in s {
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        return v >= 1 && v <= Int(Int32.max) ? v : nil
    }

    /// The password as PostgreSQL's SCRAM hashes it: SASLprep'd where PostgreSQL does that
    /// (`SASLprep`), raw otherwise.
    static func preparePassword(_ password: String) -> [UInt8] {
        SASLprep.prepare(Array(password.utf8))
    }

    /// saslname escaping: ',' as "=2C" and '=' as "=3D".
    static func saslName(_ user: String) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(user.utf8.count)
        for c in user.utf8 {
            if c == comma { out += Array("=2C".utf8) } else if c == equals { out += Array("=3D".utf8) } else { out.append(c) }
        }
        return out
    }

    static func sanitize(_ c: UInt8) -> String {
        c >= 0x21 && c <= 0x7E ? "'\(Character(Unicode.Scalar(c)))'" : "0x\(Crypto.hex([c]))"
    }

    static func xor(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        precondition(a.count == b.count)
        var out = a
        for i in 0..<out.count { out[i] ^= b[i] }
        return out
    }

    /// AuthMessage = client-first-message-bare "," server-first-message "," client-final-message-without-proof
    static func authMessage(_ clientFirstBare: [UInt8], _ serverFirst: [UInt8], _ clientFinalWithoutProof: ArraySlice<UInt8>) -> [UInt8] {
        var m = [UInt8]()
        m.reserveCapacity(clientFirstBare.count + serverFirst.count + clientFinalWithoutProof.count + 2)
        m += clientFirstBare
        m.append(comma)
        m += serverFirst
        m.append(comma)
        m += clientFinalWithoutProof
        return m
    }
}

/// Walks the comma-separated `a=value` attributes of one SCRAM message.
struct ScramAttributeReader {
    let bytes: [UInt8]
    private(set) var position: Int

    init(_ bytes: [UInt8], from position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var atEnd: Bool { position >= bytes.count }

    var peek: UInt8? { atEnd ? nil : bytes[position] }

    /// Reads the next attribute, which must be `name`.
    mutating func read(_ name: Character) -> Result<ArraySlice<UInt8>, AuthFailure> {
        let start = position
        switch readAny() {
        case .failure(let f): return .failure(f)
        case .success(let (attr, value)):
            if attr != name.asciiValue! {
                position = start
                return .failure(AuthFailure("malformed SCRAM message: expected attribute '\(name)' but found \(ScramText.sanitize(attr))"))
            }
            return .success(value)
        }
    }

    /// Reads the next `ALPHA "=" value` attribute.
    mutating func readAny() -> Result<(UInt8, ArraySlice<UInt8>), AuthFailure> {
        guard position + 1 < bytes.count else {
            return .failure(AuthFailure("malformed SCRAM message: attribute expected at end of message"))
        }
        let attr = bytes[position]
        let isAlpha = (attr >= UInt8(ascii: "a") && attr <= UInt8(ascii: "z")) || (attr >= UInt8(ascii: "A") && attr <= UInt8(ascii: "Z"))
        guard isAlpha else {
            return .failure(AuthFailure("malformed SCRAM message: attribute expected, found \(ScramText.sanitize(attr))"))
        }
        guard bytes[position + 1] == ScramText.equals else {
            return .failure(AuthFailure("malformed SCRAM message: expected '=' after attribute '\(Character(Unicode.Scalar(attr)))'"))
        }
        let valueStart = position + 2
        var end = valueStart
        while end < bytes.count && bytes[end] != ScramText.comma { end += 1 }
        let value = bytes[valueStart..<end]
        // A trailing comma would leave an empty attribute; the next read reports it.
        position = end < bytes.count ? end + 1 : end
        if end < bytes.count && position == bytes.count {
            return .failure(AuthFailure("malformed SCRAM message: trailing comma"))
        }
        return .success((attr, value))
    }
}
