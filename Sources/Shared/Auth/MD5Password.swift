// PostgreSQL's md5 password scheme and the exact authentication error texts PostgreSQL sends to clients.

public enum MD5Password {
    /// Salt length of AuthenticationMD5Password.
    public static let saltLength = 4

    /// The stored form: "md5" + md5(password + user).
    public static func hash(user: String, password: String) -> String {
        "md5" + Crypto.md5Hex(Array(password.utf8) + Array(user.utf8))
    }

    /// What a client sends for AuthenticationMD5Password: "md5" + md5(<32 hex of storedHash> + salt).
    public static func response(storedHash: String, salt: [UInt8]) -> String {
        let hexPart = storedHash.hasPrefix("md5") ? Array(storedHash.utf8.dropFirst(3)) : Array(storedHash.utf8)
        return "md5" + Crypto.md5Hex(hexPart + salt)
    }

    public static func response(user: String, password: String, salt: [UInt8]) -> String {
        response(storedHash: hash(user: user, password: password), salt: salt)
    }

    /// Constant-time comparison of the client's response with the expected one.
    public static func verify(clientResponse: String, storedHash: String, salt: [UInt8]) -> Bool {
        let expected = response(storedHash: storedHash, salt: salt)
        return Crypto.constantTimeEqual(Array(clientResponse.utf8), Array(expected.utf8))
    }

    /// "md5" followed by exactly 32 lowercase hex digits (PostgreSQL's test; uppercase counts as plain text).
    public static func isMD5Hash(_ s: String) -> Bool {
        let u = s.utf8
        guard u.count == 35, u.starts(with: "md5".utf8) else { return false }
        return u.dropFirst(3).allSatisfy { ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) }
    }
}

/// Client-visible authentication errors, worded exactly as PostgreSQL words them.
public enum PostgresAuthMessages {
    /// SQLSTATE invalid_password.
    public static let invalidPasswordSQLState = "28P01"
    /// SQLSTATE invalid_authorization_specification.
    public static let invalidAuthorizationSQLState = "28000"

    public static func passwordFailed(user: String) -> String {
        "password authentication failed for user \"\(user)\""
    }

    /// PgBouncer's words for any failed SCRAM exchange (a wrong proof, an unknown user's mock
    /// exchange, a malformed message), which pgswift sends too: tools written for PgBouncer look for it.
    public static let saslFailed = "SASL authentication failed"
    /// PgBouncer's words for a SASLInitialResponse naming a mechanism that was not offered.
    public static let invalidSASLMechanism = "client selected an invalid SASL authentication mechanism"
}
