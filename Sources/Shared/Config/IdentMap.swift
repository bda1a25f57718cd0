// auth_ident_file: pg_ident.conf's user name maps as PgBouncer reads them, for `map=` on peer and cert lines.

/// One map of an `auth_ident_file`: which system user names (a Unix peer's login name, a client
/// certificate's CN) may log in as which database users. Lines are `MAPNAME SYSTEM-USERNAME PG-USERNAME`;
/// `all` (unquoted) as PG-USERNAME allows any database user, as in PgBouncer and PostgreSQL 16.
public struct IdentMap: Sendable, Equatable {
    public struct Mapping: Sendable, Equatable {
        public var systemUser: String
        /// nil: `all`.
        public var databaseUser: String?

        public init(systemUser: String, databaseUser: String?) {
            self.systemUser = systemUser
            self.databaseUser = databaseUser
        }
    }

    public var name: String
    /// In file order.
    public var mappings: [Mapping]

    public init(name: String, mappings: [Mapping]) {
        self.name = name
        self.mappings = mappings
    }

    /// Some line of the map lets `systemUser` log in as `databaseUser` (exact, case-sensitive names).
    public func permits(systemUser: String, databaseUser: String) -> Bool {
        mappings.contains { $0.systemUser == systemUser && ($0.databaseUser == nil || $0.databaseUser == databaseUser) }
    }
}

/// The maps of an `auth_ident_file`, by name. A line pgswift cannot read is skipped with a warning
/// naming file and line, as PgBouncer skips it: a skipped line only ever grants less.
public struct IdentMaps: Sendable, Equatable {
    public var maps: [String: IdentMap]
    public var file: String
    public var warnings: [ConfigWarning]

    public init(maps: [String: IdentMap] = [:], file: String = "", warnings: [ConfigWarning] = []) {
        self.maps = maps
        self.file = file
        self.warnings = warnings
    }

    public static func load(path: String) throws(ConfigError) -> IdentMaps {
        parse(text: try ConfigFile.readText(path: path, what: "auth_ident_file"), file: path)
    }

    public static func parse(text: String, file: String) -> IdentMaps {
        var result = IdentMaps(file: file)
        for (lineNo, raw) in ConfigLines(text, skippingByteOrderMark: false) {
            let (tokens, syntaxError) = HbaToken.splitUntilError(raw)
            if tokens.isEmpty && syntaxError == nil { continue }
            switch mapping(tokens, syntaxError: syntaxError?.reason) {
            case .success(let (name, mapping)):
                result.maps[name, default: IdentMap(name: name, mappings: [])].mappings.append(mapping)
            case .failure(let skip):
                result.warnings.append(ConfigWarning(file: file, line: lineNo, message: skip.reason + "; line skipped"))
            }
        }
        return result
    }

    struct Skip: Error { var reason: String }

    /// One line's map name and mapping. PgBouncer's rules: an unquoted map name, a system user name
    /// (quoted or not), then `all` or a database user name, and nothing more.
    static func mapping(_ tokens: [HbaToken], syntaxError: String?) -> Result<(String, IdentMap.Mapping), Skip> {
        if let syntaxError { return .failure(Skip(reason: syntaxError)) }
        guard tokens.count == 3, tokens.allSatisfy({ $0.kind == .word }) else {
            if tokens.first.map({ !$0.quoted && $0.text.hasPrefix("include") }) == true {
                return .failure(Skip(reason: "\"\(tokens[0].text)\" is not supported in auth_ident_file (nor by PgBouncer)"))
            }
            return .failure(Skip(reason: "expected MAPNAME SYSTEM-USERNAME PG-USERNAME"))
        }
        let (map, system, database) = (tokens[0], tokens[1], tokens[2])
        if map.quoted { return .failure(Skip(reason: "a quoted map name (\"\(map.text)\") is not supported (nor by PgBouncer)")) }
        if !system.quoted && system.text.hasPrefix("/") {
            return .failure(Skip(reason: "regular expressions (\(system.text)) are not supported in auth_ident_file "
                                 + "(PgBouncer does not support them either): list the system user names"))
        }
        if !database.quoted && database.text.hasPrefix("+") {
            return .failure(Skip(reason: "group names (\(database.text)) are not supported in auth_ident_file "
                                 + "(group membership is not known to pgswift)"))
        }
        let all = !database.quoted && database.text == "all"
        return .success((map.text, IdentMap.Mapping(systemUser: system.text, databaseUser: all ? nil : database.text)))
    }
}
