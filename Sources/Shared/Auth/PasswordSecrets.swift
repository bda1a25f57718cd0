// Stored password forms (plain, md5, SCRAM secret), SCRAM key derivation and the per-worker key caches.

/// An authentication failure. `reason` is for the log only: clients get PostgreSQL's generic text
/// (see `PostgresAuthMessages`) so that they learn nothing about why the attempt failed.
public struct AuthFailure: Error, CustomStringConvertible, Sendable, Equatable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public init(reason: String) { self.reason = reason }
    public var description: String { "authentication failed: \(reason)" }
}

/// A SCRAM-SHA-256 secret in PostgreSQL's `pg_authid.rolpassword` form.
public struct ScramSecret: Sendable, Equatable, CustomStringConvertible {
    public static let prefix = "SCRAM-SHA-256$"
    /// PostgreSQL's defaults for newly set passwords (scram_iterations, salt length).
    public static let defaultIterations = 4096
    public static let defaultSaltLength = 16

    public var iterations: Int
    public var salt: [UInt8]
    public var storedKey: [UInt8] {
        didSet { storedKeyHMAC = Crypto.hmacSHA256Prepare(key: storedKey) }
    }
    public var serverKey: [UInt8] {
        didSet { serverKeyHMAC = Crypto.hmacSHA256Prepare(key: serverKey) }
    }
    /// The two keys prepared for HMAC once per secret (secrets are cached per user), not per login.
    public private(set) var storedKeyHMAC: [UInt32]
    public private(set) var serverKeyHMAC: [UInt32]

    public init(iterations: Int, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8]) {
        self.iterations = iterations
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
        storedKeyHMAC = Crypto.hmacSHA256Prepare(key: storedKey)
        serverKeyHMAC = Crypto.hmacSHA256Prepare(key: serverKey)
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    public static func parse(_ s: String) -> ScramSecret? {
        guard s.hasPrefix(prefix) else { return nil }
        let body = s.utf8.dropFirst(prefix.utf8.count)
        let halves = body.split(separator: UInt8(ascii: "$"), omittingEmptySubsequences: false)
        guard halves.count == 2 else { return nil }
        let params = halves[0].split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        let keys = halves[1].split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard params.count == 2, keys.count == 2,
              let iterations = ScramText.parsePositiveInt(params[0]),
              let salt = Base64.decode(bytes: params[1]), !salt.isEmpty,
              let storedKey = Base64.decode(bytes: keys[0]), storedKey.count == Crypto.sha256Length,
              let serverKey = Base64.decode(bytes: keys[1]), serverKey.count == Crypto.sha256Length
        else { return nil }
        return ScramSecret(iterations: iterations, salt: salt, storedKey: storedKey, serverKey: serverKey)
    }

    /// What PostgreSQL stores for `password` (one PBKDF2: a few milliseconds at 4096 iterations).
    public static func derive(password: String, salt: [UInt8], iterations: Int) -> ScramSecret {
        let k = ScramKeys.derive(password: password, salt: salt, iterations: iterations)
        return ScramSecret(iterations: iterations, salt: salt, storedKey: k.storedKey, serverKey: k.serverKey)
    }

    /// A secret for a user that does not exist, so that the exchange runs to the end and fails like a
    /// wrong password (as PostgreSQL does) instead of revealing that the user is unknown. The salt is
    /// stable per (processKey, user); the keys are all zero, which no proof can match.
    /// `iterations` is scram_iterations, as for plain-text passwords, so neither stands out.
    public static func mock(user: String, processKey: [UInt8], iterations: Int = defaultIterations) -> ScramSecret {
        let salt = MockAuthKey.salt(user: user, key: processKey)
        let zero = [UInt8](repeating: 0, count: Crypto.sha256Length)
        return ScramSecret(iterations: iterations, salt: salt, storedKey: zero, serverKey: zero)
    }

    public var description: String {
        "\(Self.prefix)\(iterations):\(Base64.encode(salt))$\(Base64.encode(storedKey)):\(Base64.encode(serverKey))"
    }

    /// Which SCRAM secret pgswift-as-server uses for a userlist entry; nil for an md5 entry, which cannot
    /// do SCRAM (the caller falls back to md5 authentication, as PgBouncer does).
    public static func scramSecretForClientAuth(entry: PasswordSecret, user: String, cache: ScramKeyCache,
                                                saltCache: ClientScramSecrets) -> ScramSecret? {
        ClientScramSecrets.scramSecretForClientAuth(entry: entry, user: user, cache: cache, saltCache: saltCache)
    }
}

/// A userlist / auth_query password entry, classified the way PostgreSQL classifies rolpassword.
public enum PasswordSecret: Sendable, Equatable {
    case plain(String)
    case md5(String)  // "md5" + 32 lowercase hex digits
    case scram(ScramSecret)

    public init(parsing raw: String) {
        if MD5Password.isMD5Hash(raw) {
            self = .md5(raw)
        } else if raw.hasPrefix(ScramSecret.prefix), let s = ScramSecret.parse(raw) {
            self = .scram(s)
        } else {
            self = .plain(raw)
        }
    }
}

/// ClientKey / ServerKey / StoredKey derived from a password (RFC 5802 section 3).
public struct ScramKeys: Sendable, Equatable {
    public var clientKey: [UInt8]
    public var serverKey: [UInt8]
    public var storedKey: [UInt8]

    public static func derive(password: String, salt: [UInt8], iterations: Int) -> ScramKeys {
        let salted = Crypto.pbkdf2SHA256(password: ScramText.preparePassword(password), salt: salt,
                                         iterations: iterations)
        return fromSaltedPassword(salted)
    }

    public static func fromSaltedPassword(_ salted: [UInt8]) -> ScramKeys {
        let clientKey = Crypto.hmacSHA256(key: salted, data: ScramText.clientKeyLabel)
        let serverKey = Crypto.hmacSHA256(key: salted, data: ScramText.serverKeyLabel)
        return ScramKeys(clientKey: clientKey, serverKey: serverKey, storedKey: Crypto.sha256(clientKey))
    }
}

/// Bounded cache of derived SCRAM keys so PBKDF2 runs once per (password, salt, iterations), not once per
/// server login. Used from one thread only (the worker's loop): not Sendable, no locking.
public final class ScramKeyCache {
    private struct Key: Hashable {
        var password: String
        var salt: [UInt8]
        var iterations: Int
    }

    public let capacity: Int
    public private(set) var misses: Int = 0
    public private(set) var hits: Int = 0
    private var entries: [Key: ScramKeys] = [:]
    // Insertion order as a ring, so the oldest entry is evicted in O(1) when full.
    private var order: [Key?]
    private var next = 0

    public init(capacity: Int = 1024) {
        precondition(capacity >= 1, "ScramKeyCache capacity must be at least 1")
        self.capacity = capacity
        self.order = Array(repeating: nil, count: capacity)
    }

    public var count: Int { entries.count }

    public func keys(password: String, salt: [UInt8],
                     iterations: Int) -> (clientKey: [UInt8], serverKey: [UInt8], storedKey: [UInt8]) {
        let k = scramKeys(password: password, salt: salt, iterations: iterations)
        return (k.clientKey, k.serverKey, k.storedKey)
    }

    public func scramKeys(password: String, salt: [UInt8], iterations: Int) -> ScramKeys {
        let key = Key(password: password, salt: salt, iterations: iterations)
        if let hit = entries[key] {
            hits += 1
            return hit
        }
        misses += 1
        let derived = ScramKeys.derive(password: password, salt: salt, iterations: iterations)
        if let old = order[next] { entries[old] = nil }
        order[next] = key
        next = next + 1 == capacity ? 0 : next + 1
        entries[key] = derived
        return derived
    }

    public func removeAll() {
        entries.removeAll()
        order = Array(repeating: nil, count: capacity)
        next = 0
    }
}

/// SCRAM secrets for users whose userlist entry is a plain password: one salt per user (derived from the
/// mock key when given, else random) for the life of the process, so the keys are derived once and reused for every client login. Not Sendable: one per
/// worker loop.
public final class ClientScramSecrets {
    private struct Entry {
        var password: String
        var secret: ScramSecret
    }

    public let iterations: Int
    /// When set, a user's salt is `MockAuthKey.salt(user:key:)`: the same in every worker and the same
    /// as an unknown name would get, so a plain-password user cannot be told from one (nil: random).
    public let saltKey: [UInt8]?
    private var entries: [String: Entry] = [:]

    /// `iterations`: scram_iterations (PgBouncer's count for the secrets it builds from plain text).
    public init(saltKey: [UInt8]? = nil, iterations: Int = ScramSecret.defaultIterations) {
        precondition(iterations >= 1)
        self.iterations = iterations
        self.saltKey = saltKey
    }

    public func secret(for user: String, password: String) -> ScramSecret {
        secret(for: user, password: password, keyCache: nil)
    }

    /// Same, deriving through `keyCache` when given. A changed password (userlist reload) re-derives
    /// with the user's existing salt.
    public func secret(for user: String, password: String, keyCache: ScramKeyCache?) -> ScramSecret {
        if let e = entries[user], e.password == password { return e.secret }
        let salt = entries[user]?.secret.salt
            ?? saltKey.map { MockAuthKey.salt(user: user, key: $0) } ?? Crypto.randomBytes(ScramSecret.defaultSaltLength)
        let keys = keyCache?.scramKeys(password: password, salt: salt, iterations: iterations)
            ?? ScramKeys.derive(password: password, salt: salt, iterations: iterations)
        let secret = ScramSecret(iterations: iterations, salt: salt, storedKey: keys.storedKey,
                                 serverKey: keys.serverKey)
        entries[user] = Entry(password: password, secret: secret)
        return secret
    }

    public func forget(user: String) { entries[user] = nil }

    /// Which SCRAM secret pgswift-as-server uses for a userlist entry; nil for an md5 entry, which cannot
    /// do SCRAM (the caller falls back to md5 authentication, as PgBouncer does).
    public static func scramSecretForClientAuth(entry: PasswordSecret, user: String, cache: ScramKeyCache,
                                                saltCache: ClientScramSecrets) -> ScramSecret? {
        switch entry {
        case .scram(let s): return s
        case .plain(let p): return saltCache.secret(for: user, password: p, keyCache: cache)
        case .md5: return nil
        }
    }
}
