// auth_hba_file: pg_hba.conf lines as PgBouncer supports them, parsed into rules, and the first-match lookup.
import Glibc

/// The rules of an `auth_hba_file`, in file order. A line naming an authentication method or an option
/// pgswift does not support is handled as a PgBouncer without that feature handles it, with a warning
/// naming file and line: skipped (gss, ident, pam..., options other than `map=`), or, for `ldap`, kept
/// as a line that refuses the connections it matches. Any other line pgswift cannot read or honour
/// exactly (a syntax error, an unknown word, `+group`, host names...) is an error naming file and line:
/// PgBouncer skips those too, but skipping a mistyped rule can open access, so pgswift refuses the
/// whole file and, on reload, keeps the rules it had.
public struct HbaRules: Sendable, Equatable {
    public enum ConnectionType: String, Sendable {
        case local, host, hostssl, hostnossl
    }

    /// The methods an hba line may name (PgBouncer's set, without ldap/gss/pam).
    public enum Method: String, Sendable, CaseIterable {
        case trust, reject, md5, password, cert, peer
        case scramSHA256 = "scram-sha-256"
    }

    /// A database or user field: keywords plus literal names.
    public struct Names: Sendable, Equatable {
        public var all = false
        /// Database field only: the database named like the user.
        public var sameUser = false
        /// Database field only: physical replication connections, which match only lines that name it
        /// (and nothing else matches them); a logical one (`replication=database`) matches by its
        /// database name like any client, as in PostgreSQL and PgBouncer.
        public var replication = false
        public var names: Set<String> = []

        public init() {}

        func matches(_ name: String, pair: String) -> Bool {
            if all { return true }
            if sameUser && name == pair { return true }
            return names.contains(name)
        }
    }

    /// The address field of a host line. Addresses are kept masked; host bits written past the mask
    /// are ignored, as PostgreSQL does.
    public enum Address: Sendable, Equatable {
        case all
        case ipv4(address: UInt32, mask: UInt32)
        case ipv6(high: UInt64, low: UInt64, maskHigh: UInt64, maskLow: UInt64)
    }

    public struct Rule: Sendable, Equatable {
        public var type: ConnectionType
        public var databases: Names
        public var users: Names
        /// nil for `local` lines.
        public var address: Address?
        public var method: Method
        public var file: String
        public var line: Int
        /// `map=` on a peer or cert line: the `auth_ident_file` map that says which system user may log
        /// in as which user (nil: the system user name must equal the user name).
        public var identMap: IdentMap? = nil
    }

    public var rules: [Rule]
    public var file: String
    /// Lines skipped or turned into refusals, as said above (`Config.loadHbaRules` adds them to the
    /// config's warnings, which the supervisor logs).
    public var warnings: [ConfigWarning]

    public init(rules: [Rule] = [], file: String = "", warnings: [ConfigWarning] = []) {
        self.rules = rules
        self.file = file
        self.warnings = warnings
    }

    // MARK: Matching

    /// The first rule for this connection, or nil (PgBouncer then refuses the login). A physical
    /// replication connection's database field must say `replication`; any other connection's must
    /// name its database (or `all`, `sameuser`), where `replication` matches nothing.
    public func match(peer: HbaPeer, tls: Bool, database: String, user: String,
                      replication: ReplicationMode = .none) -> Rule? {
        for rule in rules {
            switch peer {
            case .unix:
                if rule.type != .local { continue }
            case .ipv4, .ipv6:
                switch rule.type {
                case .local: continue
                case .hostssl: if !tls { continue }
                case .hostnossl: if tls { continue }
                case .host: break
                }
                guard let address = rule.address, peer.matches(address) else { continue }
            }
            let databaseMatches = replication == .physical ? rule.databases.replication
                : rule.databases.matches(database, pair: user)
            guard databaseMatches, rule.users.matches(user, pair: database) else { continue }
            return rule
        }
        return nil
    }

    // MARK: Loading

    public static func load(path: String, identMaps: IdentMaps? = nil) throws(ConfigError) -> HbaRules {
        try parse(text: try ConfigFile.readText(path: path, what: "auth_hba_file"), file: path, identMaps: identMaps)
    }

    /// Parses hba text; `@file` names resolve against `file`'s directory; `map=` names a map of
    /// `identMaps` (the parsed `auth_ident_file`; nil: none set).
    public static func parse(text: String, file: String, identMaps: IdentMaps? = nil) throws(ConfigError) -> HbaRules {
        var rules = HbaRules(file: file)
        // No byte order mark is skipped here (PgBouncer's hba reader does not either).
        for (lineNo, rawLine) in ConfigLines(text, skippingByteOrderMark: false) {
            let (tokens, syntaxError) = HbaToken.splitUntilError(rawLine)
            if tokens.isEmpty {
                if let syntaxError { throw ConfigError(file: file, line: lineNo, message: syntaxError.reason) }
                continue
            }
            var p = HbaLineParser(tokens: tokens, file: file, line: lineNo, syntaxError: syntaxError?.reason,
                                  text: Array(rawLine), identMaps: identMaps)
            let parsed = try p.rule()
            if let rule = parsed.rule { rules.rules.append(rule) }
            if let warning = parsed.warning {
                rules.warnings.append(ConfigWarning(file: file, line: lineNo, message: warning))
            }
        }
        return rules
    }
}

/// Where a client connection comes from, as the hba matcher needs it.
public enum HbaPeer: Sendable, Equatable {
    case unix
    case ipv4(UInt32)
    case ipv6(high: UInt64, low: UInt64)

    /// From an accepted socket's peer address; nil for a family hba cannot judge.
    public init?(_ address: SocketAddress) {
        var a = address
        switch address.family {
        case AF_UNIX:
            self = .unix
        case AF_INET:
            let v = withUnsafeBytes(of: &a.storage) { raw in raw.load(as: sockaddr_in.self).sin_addr.s_addr }
            self = .ipv4(UInt32(bigEndian: v))
        case AF_INET6:
            let bytes = withUnsafeBytes(of: &a.storage) { raw -> [UInt8] in
                var sin6 = raw.load(as: sockaddr_in6.self)
                return withUnsafeBytes(of: &sin6.sin6_addr) { [UInt8]($0) }
            }
            self = HbaPeer(ipv6Bytes: bytes)
        default:
            return nil
        }
    }

    /// From the 16 bytes of an IPv6 address (network order).
    public init(ipv6Bytes b: [UInt8]) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(b[i]) }
        for i in 8..<16 { low = low << 8 | UInt64(b[i]) }
        self = .ipv6(high: high, low: low)
    }

    func matches(_ address: HbaRules.Address) -> Bool {
        switch (address, self) {
        case (.all, _):
            return true
        case (.ipv4(let base, let mask), .ipv4(let a)):
            return a & mask == base
        case (.ipv4(let base, let mask), .ipv6(let high, let low)):
            // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; IPv4 lines still apply.
            guard high == 0 && low >> 32 == 0xFFFF else { return false }
            return UInt32(truncatingIfNeeded: low) & mask == base
        case (.ipv6(let bh, let bl, let mh, let ml), .ipv6(let high, let low)):
            return high & mh == bh && low & ml == bl
        default:
            return false
        }
    }
}

// MARK: - Tokens

/// One token of an hba line: a word (quoted or not) or a comma. `#` outside quotes ends the line.
struct HbaToken: Equatable {
    enum Kind: Equatable { case word, comma }
    var kind: Kind
    var text: String
    var quoted: Bool
    /// Offset in the line just past the token.
    var end = 0

    struct SyntaxError: Error { var reason: String }

    /// The tokens of a line, stopping at the first syntax error, which is returned beside them: the
    /// rest of a line that is skipped for its method need not be readable.
    static func splitUntilError(_ line: ArraySlice<UInt8>) -> (tokens: [HbaToken], error: SyntaxError?) {
        var tokens: [HbaToken] = []
        do throws(SyntaxError) {
            try split(line, into: &tokens)
            return (tokens, nil)
        } catch {
            return (tokens, error)
        }
    }

    static func split(_ line: ArraySlice<UInt8>) throws(SyntaxError) -> [HbaToken] {
        var tokens: [HbaToken] = []
        try split(line, into: &tokens)
        return tokens
    }

    private static func split(_ line: ArraySlice<UInt8>, into tokens: inout [HbaToken]) throws(SyntaxError) {
        let b = Array(line)
        var p = 0
        func isSeparator(_ c: UInt8) -> Bool {
            ConfigText.isSpace(c) || c == UInt8(ascii: ",") || c == UInt8(ascii: "#")
        }
        while p < b.count {
            let c = b[p]
            if ConfigText.isSpace(c) { p += 1; continue }
            if c == UInt8(ascii: "#") { break }
            if c == UInt8(ascii: ",") {
                p += 1
                tokens.append(HbaToken(kind: .comma, text: ",", quoted: false, end: p))
                continue
            }
            if c == UInt8(ascii: "\"") {
                guard let value = QuotedText.read(b[...], at: &p, quote: c) else {
                    throw SyntaxError(reason: "unterminated quoted string")
                }
                if p < b.count && !isSeparator(b[p]) {
                    throw SyntaxError(reason: "unexpected text right after a closing quote")
                }
                tokens.append(HbaToken(kind: .word, text: value, quoted: true, end: p))
                continue
            }
            var i = p
            while i < b.count && !isSeparator(b[i]) {
                if b[i] == UInt8(ascii: "\"") { throw SyntaxError(reason: "unexpected quote inside a word") }
                i += 1
            }
            tokens.append(HbaToken(kind: .word, text: String(decoding: b[p..<i], as: UTF8.self), quoted: false, end: i))
            p = i
        }
    }
}

// MARK: - Line parser

struct HbaLineParser {
    let tokens: [HbaToken]
    let file: String
    let line: Int
    /// The syntax error that ended `tokens` early: it is the line's error as soon as a token past it is needed.
    let syntaxError: String?
    /// The line's bytes, for the text after the method of a skipped line.
    let text: [UInt8]
    /// What `map=` may name.
    let identMaps: IdentMaps?
    var p = 0

    init(tokens: [HbaToken], file: String, line: Int, syntaxError: String? = nil, text: [UInt8] = [],
         identMaps: IdentMaps? = nil) {
        self.tokens = tokens
        self.file = file
        self.line = line
        self.syntaxError = syntaxError
        self.text = text
        self.identMaps = identMaps
    }

    func fail(_ message: String) -> ConfigError {
        ConfigError(file: file, line: line, message: message)
    }

    /// The next word (a comma where a word belongs is an error naming `what`).
    mutating func word(_ what: String) throws(ConfigError) -> HbaToken {
        guard p < tokens.count else { throw fail(syntaxError ?? "missing \(what)") }
        let t = tokens[p]
        guard t.kind == .word else { throw fail("unexpected comma where \(what) belongs") }
        p += 1
        return t
    }

    /// What one line gives: a rule, a warning, or both (a line kept as a refusal).
    struct Parsed {
        var rule: HbaRules.Rule?
        var warning: String?
    }

    /// pg_hba.conf methods pgswift cannot do, which PgBouncer does not know either: such a line is
    /// skipped, as PgBouncer skips it.
    static let skippedMethods: Set<String> = ["gss", "sspi", "ident", "radius", "pam", "bsd", "oauth"]

    mutating func rule() throws(ConfigError) -> Parsed {
        let typeToken = try word("connection type")
        let type: HbaRules.ConnectionType
        switch (typeToken.quoted, typeToken.text) {
        case (false, "local"): type = .local
        case (false, "host"): type = .host
        case (false, "hostssl"): type = .hostssl
        case (false, "hostnossl"): type = .hostnossl
        case (false, "hostgssenc"), (false, "hostnogssenc"):
            throw fail("connection type \"\(typeToken.text)\" is not supported (pgswift does not do GSSAPI encryption)")
        case (false, "include"), (false, "include_if_exists"), (false, "include_dir"):
            throw fail("\"\(typeToken.text)\" is not supported in auth_hba_file (use @file in the database or user field)")
        default:
            throw fail("unknown connection type \"\(typeToken.text)\" (expected local, host, hostssl or hostnossl)")
        }
        let databases = try names(isDatabase: true)
        let users = try names(isDatabase: false)
        var address: HbaRules.Address? = nil
        if type != .local { address = try parseAddress() }
        let methodToken = try word("authentication method")
        if !methodToken.quoted && Self.skippedMethods.contains(methodToken.text) {
            return Parsed(rule: nil, warning: "authentication method \"\(methodToken.text)\" is not supported by "
                          + "pgswift; line skipped, as PgBouncer skips it (supported: \(Self.supportedMethods))")
        }
        if !methodToken.quoted && methodToken.text == "ldap" {
            // PgBouncer without LDAP support keeps the line and refuses its logins ("ldap is not supported
            // by this build"): the connections it matches must not fall through to a later line.
            return Parsed(rule: HbaRules.Rule(type: type, databases: databases, users: users, address: address,
                                              method: .reject, file: file, line: line),
                          warning: "authentication method \"ldap\" is not supported by pgswift; the line "
                          + "refuses the connections it matches, as in a PgBouncer built without LDAP")
        }
        guard !methodToken.quoted, let method = HbaRules.Method(rawValue: methodToken.text) else {
            throw fail(Self.unsupportedMethodMessage(methodToken.text))
        }
        if method == .peer && type != .local {
            throw fail("peer authentication is only supported on local lines (Unix socket connections)")
        }
        if method == .cert && type == .local {
            throw fail("cert authentication is only supported on host and hostssl lines (it needs TLS)")
        }
        var rule = HbaRules.Rule(type: type, databases: databases, users: users, address: address,
                                 method: method, file: file, line: line)
        // One `map=NAME` may follow the method, as in PgBouncer. Anything else after the method is an
        // option pgswift does not support (readable or not): PgBouncer skips such a line too, as
        // "unsupported parameters", and so it skips a map= its auth_ident_file does not have.
        if p < tokens.count || syntaxError != nil {
            let option = p < tokens.count && tokens[p].kind == .word ? tokens[p].text : rest(after: methodToken)
            guard option.hasPrefix("map="), !tokens[p].quoted, p + 1 == tokens.count, syntaxError == nil else {
                return Parsed(rule: nil, warning: "option \"\(option)\" is not supported by pgswift; line skipped, "
                              + "as PgBouncer skips it")
            }
            let name = String(option.dropFirst(4))
            guard let map = identMaps?.maps[name] else {
                return Parsed(rule: nil, warning: "ident map \"\(name)\" is not in "
                              + (identMaps.map { "auth_ident_file \($0.file)" } ?? "an auth_ident_file (none is set)")
                              + "; line skipped, as PgBouncer skips it")
            }
            guard method == .peer || method == .cert else {
                // PgBouncer keeps such a line and never reads its map (PostgreSQL refuses it).
                return Parsed(rule: rule, warning: "\(option) has no effect with method \(method.rawValue) (only peer "
                              + "and cert use ident maps); the line applies without it, as in PgBouncer")
            }
            rule.identMap = map
        }
        return Parsed(rule: rule, warning: nil)
    }

    static let supportedMethods = "trust, reject, md5, password, scram-sha-256, cert, peer"

    /// The line's text after `token`, trimmed (for a warning).
    func rest(after token: HbaToken) -> String {
        ConfigText.trim(String(decoding: text[min(token.end, text.count)...], as: UTF8.self))
    }

    static func unsupportedMethodMessage(_ m: String) -> String {
        "unknown authentication method \"\(m)\" (supported: \(supportedMethods))"
    }

    /// A comma-separated list of names and keywords (one field).
    mutating func names(isDatabase: Bool) throws(ConfigError) -> HbaRules.Names {
        let what = isDatabase ? "database" : "user name"
        var result = HbaRules.Names()
        while true {
            let t = try word(what)
            try add(t, to: &result, isDatabase: isDatabase, depth: 0, baseFile: file)
            guard p < tokens.count, tokens[p].kind == .comma else { break }
            p += 1
            guard p < tokens.count, tokens[p].kind == .word else {
                throw fail(p == tokens.count ? syntaxError ?? "missing \(what) after a comma" : "missing \(what) after a comma")
            }
        }
        return result
    }

    func add(_ t: HbaToken, to result: inout HbaRules.Names, isDatabase: Bool, depth: Int,
             baseFile: String) throws(ConfigError) {
        if t.quoted {
            result.names.insert(t.text)
            return
        }
        switch t.text {
        case "all":
            result.all = true
            return
        case "sameuser" where isDatabase:
            result.sameUser = true
            return
        case "replication" where isDatabase:
            result.replication = true
            return
        case "samerole" where isDatabase, "samegroup" where isDatabase:
            throw fail("\"\(t.text)\" is not supported in auth_hba_file (group membership is not known to pgswift)")
        default:
            break
        }
        if t.text.hasPrefix("+") {
            throw fail("group names (\(t.text)) are not supported in auth_hba_file: list the users, or use @file")
        }
        if t.text.hasPrefix("@") {
            try include(String(t.text.dropFirst()), into: &result, isDatabase: isDatabase, depth: depth,
                        baseFile: baseFile)
            return
        }
        result.names.insert(t.text)
    }

    /// `@file`: names separated by commas or blanks, `#` comments, relative to the including file.
    func include(_ name: String, into result: inout HbaRules.Names, isDatabase: Bool, depth: Int,
                 baseFile: String) throws(ConfigError) {
        guard !name.isEmpty else { throw fail("@ without a file name") }
        guard depth < 10 else { throw fail("@\(name): files included more than 10 deep (a loop?)") }
        let path = ConfigFile.resolve(name, relativeTo: ConfigFile.directory(of: baseFile))
        let text: String
        do {
            text = try ConfigFile.readAll(path: path)
        } catch {
            throw fail("could not read @\(name) (\(path)): \(error.reason)")
        }
        for (lineNo, raw) in ConfigLines(text, skippingByteOrderMark: false) {
            let tokens: [HbaToken]
            do {
                tokens = try HbaToken.split(raw)
            } catch {
                throw ConfigError(file: path, line: lineNo, message: error.reason)
            }
            let inner = HbaLineParser(tokens: tokens, file: path, line: lineNo)
            for t in tokens where t.kind == .word {
                try inner.add(t, to: &result, isDatabase: isDatabase, depth: depth + 1, baseFile: path)
            }
        }
    }

    mutating func parseAddress() throws(ConfigError) -> HbaRules.Address {
        let t = try word("address")
        if t.quoted { throw fail("a quoted address (\"\(t.text)\") is not supported: write the address without quotes") }
        let text = t.text
        switch text {
        case "all": return .all
        case "samehost", "samenet":
            throw fail("address \"\(text)\" is not supported in auth_hba_file (write the addresses)")
        default: break
        }
        var host = text
        var bits: Int? = nil
        if let slash = text.firstIndex(of: "/") {
            host = String(text[..<slash])
            let b = String(text[text.index(after: slash)...])
            guard let n = ConfigText.decimal(b), n >= 0, !b.hasPrefix("+"), !b.hasPrefix("-") else {
                throw fail("invalid CIDR mask length \"\(b)\" in \"\(text)\"")
            }
            bits = n
        }
        guard let addr = HbaIP.parse(host) else {
            if host.contains("%") { throw fail("IPv6 zone ids are not supported (\"\(text)\")") }
            throw fail("invalid IP address \"\(host)\" (host names and domain suffixes are not supported in auth_hba_file)")
        }
        var mask: HbaIP
        if let bits {
            guard bits <= addr.bitCount else {
                throw fail("CIDR mask length \(bits) is too long for \(addr.isIPv4 ? "an IPv4" : "an IPv6") address")
            }
            mask = HbaIP.mask(bits: bits, ipv4: addr.isIPv4)
        } else {
            let m = try word("IP mask (or write the address as address/length)")
            guard !m.quoted, let parsed = HbaIP.parse(m.text) else { throw fail("invalid IP mask \"\(m.text)\"") }
            guard parsed.isIPv4 == addr.isIPv4 else {
                throw fail("IP address and mask do not match in family (\(host) \(m.text))")
            }
            mask = parsed
        }
        if addr.isIPv4 {
            return .ipv4(address: UInt32(truncatingIfNeeded: addr.low) & UInt32(truncatingIfNeeded: mask.low),
                         mask: UInt32(truncatingIfNeeded: mask.low))
        }
        return .ipv6(high: addr.high & mask.high, low: addr.low & mask.low, maskHigh: mask.high, maskLow: mask.low)
    }
}

/// A numeric address as two 64-bit halves (IPv4 in the low 32 bits).
struct HbaIP {
    var isIPv4: Bool
    var high: UInt64
    var low: UInt64

    var bitCount: Int { isIPv4 ? 32 : 128 }

    static func parse(_ s: String) -> HbaIP? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 {
            return HbaIP(isIPv4: true, high: 0, low: UInt64(UInt32(bigEndian: v4.s_addr)))
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { [UInt8]($0) }
            guard case .ipv6(let high, let low) = HbaPeer(ipv6Bytes: bytes) else { return nil }
            return HbaIP(isIPv4: false, high: high, low: low)
        }
        return nil
    }

    static func mask(bits: Int, ipv4: Bool) -> HbaIP {
        func ones(_ n: Int) -> UInt64 { n <= 0 ? 0 : (n >= 64 ? UInt64.max : ~(UInt64.max >> UInt64(n))) }
        if ipv4 {
            let m: UInt32 = bits == 0 ? 0 : ~(UInt32.max >> UInt32(bits))
            return HbaIP(isIPv4: true, high: 0, low: UInt64(m))
        }
        return HbaIP(isIPv4: false, high: ones(bits), low: ones(bits - 64))
    }
}

extension Config {
    /// With `auth_type = hba`, reads and parses `auth_ident_file` (when set) and `auth_hba_file` into
    /// `hba`; a missing setting or a bad or unreadable file is an error (so a reload with a broken file
    /// keeps the running configuration). PgBouncer reads `auth_ident_file` only under `auth_type = hba` too.
    public mutating func loadHbaRules() throws(ConfigError) {
        guard authType == .hba else {
            hba = nil
            if authIdentFile != nil {
                let at = location(ofSetting: "auth_ident_file")
                warnings.append(ConfigWarning(file: at?.file ?? configFile, line: at?.line ?? 0,
                                              message: "auth_ident_file has no effect unless auth_type = hba "
                                              + "(its maps serve auth_hba_file's map= options), as in PgBouncer"))
            }
            return
        }
        guard let path = authHbaFile else {
            throw settingError("auth_type hba needs auth_hba_file", at: "auth_type")
        }
        var identMaps: IdentMaps? = nil
        if let identPath = authIdentFile {
            let maps = try IdentMaps.load(path: identPath)
            warnings.append(contentsOf: maps.warnings)
            identMaps = maps
        }
        let rules = try HbaRules.load(path: path, identMaps: identMaps)
        warnings.append(contentsOf: rules.warnings)
        hba = rules
    }
}
