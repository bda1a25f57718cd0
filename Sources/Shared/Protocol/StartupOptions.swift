// The `options` startup parameter, read as PgBouncer 1.20+ reads it: `-c name=value` and `--name=value`.

/// The settings carried by a client's `options` startup parameter (libpq's `PGOPTIONS`).
///
/// PgBouncer accepts only PostgreSQL's `-c name=value` (the `-c` may be glued to the pair or followed by
/// blanks) and `--name=value`, separated by whitespace; anything else refuses the client. Within a pair
/// a backslash makes the next character literal (`\ ` a space, `\\` a backslash, `\=` an equals sign),
/// and whitespace ends the pair. The name ends at the first `=` of the unescaped pair, so an escaped
/// `=` still separates (PgBouncer unescapes first, then splits). As in PgBouncer, trailing whitespace
/// after the last pair is refused too, and an empty string holds no pairs.
public enum StartupOptions {
    public enum Parsed: Equatable, Sendable {
        case pairs([Pair])
        /// Not only `-c name=value` / `--name=value` pairs: PgBouncer refuses the client.
        case unsupported
    }

    public struct Pair: Equatable, Sendable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// PgBouncer's refusal for anything but pairs (FATAL 08P01).
    public static let unsupportedMessage =
        "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"

    public static func parse(_ options: String) -> Parsed {
        let bytes = Array(options.utf8)
        var pairs: [Pair] = []
        var i = 0
        while i < bytes.count {
            while i < bytes.count && isSpace(bytes[i]) { i += 1 }
            if i + 1 < bytes.count && bytes[i] == UInt8(ascii: "-") && bytes[i + 1] == UInt8(ascii: "c") {
                i += 2
                while i < bytes.count && isSpace(bytes[i]) { i += 1 }
            } else if i + 1 < bytes.count && bytes[i] == UInt8(ascii: "-") && bytes[i + 1] == UInt8(ascii: "-") {
                i += 2
            } else {
                return .unsupported
            }
            // One token, unescaped: a backslash takes the next byte as it is, whitespace ends it.
            var token: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\\") {
                    i += 1
                    if i == bytes.count { break }
                    token.append(bytes[i])
                } else if isSpace(b) {
                    break
                } else {
                    token.append(b)
                }
                i += 1
            }
            guard let eq = token.firstIndex(of: UInt8(ascii: "=")) else { return .unsupported }
            pairs.append(Pair(String(decoding: token[..<eq], as: UTF8.self),
                              String(decoding: token[(eq + 1)...], as: UTF8.self)))
        }
        return .pairs(pairs)
    }

    /// C's isspace in the C locale: space, \t, \n, \v, \f, \r.
    @inline(__always)
    static func isSpace(_ b: UInt8) -> Bool {
        b == 0x20 || (b >= 0x09 && b <= 0x0D)
    }
}
