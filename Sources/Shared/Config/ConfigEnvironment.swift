// Configuration from the environment: ${NAME} / ${NAME:-default} in config lines, PGSWIFT_<KEY> overrides.

/// The environment variables a configuration is loaded with.
///
/// Two uses, both for container platforms that configure services through the environment:
/// - `${NAME}` and `${NAME:-default}` anywhere in a config line (the main file and `%include`d ones)
///   are replaced by the variable's value before the line is parsed (`expand`). A variable that is not
///   set and has no default is a config error at the line; so is a reference that is not written
///   right. `$${` stands for a literal `${`; any other `$` is left alone (`$1` in auth_query, `$` in a
///   password), and so are comment lines.
/// - `PGSWIFT_<KEY>` sets the `[pgbouncer]` or `[pgswift]` key `<key>` after the file, as if it were the
///   file's last line for that key (`overrides`); the admin console's SET still goes on top.
///
/// A running process's environment does not change, so RELOAD and SIGHUP see the same values: they
/// re-read the file with them (a `${NAME}` keeps its value; a `PGSWIFT_<KEY>` still beats the file's
/// line). Changing a variable needs a restart. Workers inherit the supervisor's environment, so every
/// process loads the same configuration.
public struct ConfigEnvironment: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public var variables: [String: String]

    public init(_ variables: [String: String] = [:]) {
        self.variables = variables
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        var v: [String: String] = [:]
        for (k, value) in elements { v[k] = value }
        variables = v
    }

    /// This process's environment (what the supervisor and its workers load the configuration with).
    public static func process() -> ConfigEnvironment {
        var v: [String: String] = [:]
        for entry in Posix.environment() {
            guard let eq = entry.utf8.firstIndex(of: UInt8(ascii: "=")) else { continue }
            v[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        return ConfigEnvironment(v)
    }

    /// The prefix of an override variable: `PGSWIFT_DEFAULT_POOL_SIZE` sets `default_pool_size`.
    public static let overridePrefix = "PGSWIFT_"

    /// Variables with the prefix that pgswift uses for itself, not settings: the mock-auth key a service
    /// may set (Shared/Auth/MockAuthKey.swift) and the state a re-executed supervisor reads (Reexec.swift).
    public static let reservedNames: Set<String> = ["PGSWIFT_MOCK_AUTH_KEY", "PGSWIFT_REEXEC"]

    /// The variable that overrides `key`.
    public static func overrideName(forKey key: String) -> String {
        overridePrefix + key.uppercased()
    }

    // MARK: PGSWIFT_<KEY>

    /// One `PGSWIFT_<KEY>` that names a key.
    struct Override {
        var spec: ConfigKeySpec
        var variable: String
        var value: String
    }

    /// The settings the environment overrides, in key order, and a warning for every variable with the
    /// prefix that names no key (a typo must not pass silently; a refusal would stop services whose
    /// environment carries some other tool's `PGSWIFT_` variable).
    func overrides() -> (overrides: [Override], warnings: [ConfigWarning]) {
        var found: [Override] = []
        var warnings: [ConfigWarning] = []
        for (name, value) in variables where name.hasPrefix(Self.overridePrefix) {
            if Self.reservedNames.contains(name) { continue }
            let key = String(name.dropFirst(Self.overridePrefix.count)).lowercased()
            if let spec = ConfigKeySpec.named(key) {
                found.append(Override(spec: spec, variable: name, value: value))
            } else {
                let at = ConfigLocation.environment(name)
                warnings.append(ConfigWarning(file: at.file, line: at.line,
                                              message: "\(name) names no [pgbouncer] or [pgswift] setting; ignored"))
            }
        }
        found.sort { $0.spec.name < $1.spec.name }
        warnings.sort { $0.file < $1.file }
        return (found, warnings)
    }

    // MARK: ${NAME}

    /// `line` with every `${NAME}` and `${NAME:-default}` replaced; nil when it has none (the caller
    /// keeps the bytes it has). Errors name the variable, never a value.
    func expand(_ line: ArraySlice<UInt8>, file: String, line lineNo: Int) throws(ConfigError) -> [UInt8]? {
        let dollar = UInt8(ascii: "$"), open = UInt8(ascii: "{"), close = UInt8(ascii: "}")
        guard line.contains(dollar) else { return nil }
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: file, line: lineNo, message: message)
        }
        var out: [UInt8] = []
        out.reserveCapacity(line.count)
        var changed = false
        var p = line.startIndex
        let end = line.endIndex
        while p < end {
            let b = line[p]
            // `$${` is a literal `${`.
            if b == dollar && p + 2 < end && line[p + 1] == dollar && line[p + 2] == open {
                out += [dollar, open]
                p += 3
                changed = true
                continue
            }
            guard b == dollar && p + 1 < end && line[p + 1] == open else {
                out.append(b)
                p += 1
                continue
            }
            // A reference: ${NAME} or ${NAME:-default}, the default running to the first `}`.
            guard let closing = line[(p + 2)...].firstIndex(of: close) else {
                throw fail("unterminated ${...}: a reference is ${NAME} or ${NAME:-default} (write $${ for a literal ${)")
            }
            let body = line[(p + 2)..<closing]
            var q = body.startIndex
            while q < body.endIndex && Self.isNameByte(body[q], first: q == body.startIndex) { q += 1 }
            let name = String(decoding: body[body.startIndex..<q], as: UTF8.self)
            if name.isEmpty {
                throw fail("${\(String(decoding: body, as: UTF8.self))}: expected a variable name (letters, digits and _, "
                           + "not starting with a digit)")
            }
            let value: String
            if q == body.endIndex {
                guard let v = variables[name] else {
                    throw fail("environment variable \(name) is not set (${\(name)} has no default; "
                               + "write ${\(name):-default} to give one)")
                }
                value = v
            } else if body[q...].starts(with: [UInt8(ascii: ":"), UInt8(ascii: "-")]) {
                let fallback = body[(q + 2)...]
                if zip(fallback, fallback.dropFirst()).contains(where: { $0 == dollar && $1 == open }) {
                    throw fail("${\(name):-...}: a default cannot contain another ${...}")
                }
                if let v = variables[name], !v.isEmpty {
                    value = v
                } else {
                    value = String(decoding: fallback, as: UTF8.self)
                }
            } else {
                throw fail("${\(name)\(String(decoding: body[q...].prefix(2), as: UTF8.self))...}: pgswift knows only "
                           + "${NAME} and ${NAME:-default}")
            }
            out += Array(value.utf8)
            p = closing + 1
            changed = true
        }
        return changed ? out : nil
    }

    @inline(__always) static func isNameByte(_ b: UInt8, first: Bool) -> Bool {
        switch b {
        case 0x41...0x5A, 0x61...0x7A, UInt8(ascii: "_"): return true
        case 0x30...0x39: return !first
        default: return false
        }
    }
}

extension ConfigLocation {
    /// Where a setting from the environment comes from: no file line (`line` -1), the variable's name.
    public static func environment(_ variable: String) -> ConfigLocation {
        ConfigLocation(file: environmentPrefix + variable, line: -1)
    }

    static let environmentPrefix = "environment variable "

    /// The variable a setting came from, when it came from the environment.
    public var environmentVariable: String? {
        guard line == -1, file.hasPrefix(Self.environmentPrefix) else { return nil }
        return String(file.dropFirst(Self.environmentPrefix.count))
    }
}
