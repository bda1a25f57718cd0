// The secret behind the SCRAM salts pgswift shows for users it cannot authenticate (unknown names,
// MD5 secrets under SCRAM) and for auth_file users with a plain password.
//
// PostgreSQL derives a mock salt from the user name and a random nonce kept in pg_control, so an
// unknown name gets the same salt at every attempt, like a real user's stored secret. pgswift's
// workers are separate processes: the supervisor puts a random key in its own environment at start
// (unless one is already there), so every worker it spawns, every respawned worker and the image a
// binary upgrade execs inherit the same key. A stop and start draws a new one unless the service sets
// PGSWIFT_MOCK_AUTH_KEY itself (any string; only its SHA-256 is used).
public enum MockAuthKey {
    public static let environmentName = "PGSWIFT_MOCK_AUTH_KEY"

    /// Supervisor, before it spawns anything: draw the key unless the environment already has one.
    public static func ensureInEnvironment() {
        guard Posix.getenv(environmentName) == nil else { return }
        Posix.setenv(environmentName, Crypto.hex(Crypto.randomBytes(32)))
    }

    /// The key this process uses: the inherited one, else (a worker started on its own) a random one.
    public static func current() -> [UInt8] {
        if let v = Posix.getenv(environmentName), !v.isEmpty {
            return Crypto.sha256(Array(v.utf8))
        }
        return Crypto.randomBytes(32)
    }

    /// The salt shown for `user`: stable for a key, different between names, 16 bytes as PostgreSQL's.
    public static func salt(user: String, key: [UInt8]) -> [UInt8] {
        Array(Crypto.hmacSHA256(key: key, data: Array("pgswift mock salt\u{0}".utf8) + Array(user.utf8))
            .prefix(ScramSecret.defaultSaltLength))
    }
}
