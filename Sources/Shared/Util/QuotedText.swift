// Reading a quoted field where two quotes stand for one (config, userlist, hba, connection strings, admin commands).

enum QuotedText {
    /// The field starting at `p` (on the opening `quote`), unquoted: SQL identifiers, userlist fields,
    /// hba words, connection-string values, admin console names. Leaves `p` after the closing quote;
    /// nil (and `p` unchanged) when the field is not closed before `b` ends.
    static func read(_ b: ArraySlice<UInt8>, at p: inout Int, quote: UInt8) -> String? {
        var out: [UInt8] = []
        var i = p + 1
        while i < b.endIndex {
            if b[i] == quote {
                if i + 1 < b.endIndex && b[i + 1] == quote {
                    out.append(quote)
                    i += 2
                    continue
                }
                p = i + 1
                return String(decoding: out, as: UTF8.self)
            }
            out.append(b[i])
            i += 1
        }
        return nil
    }
}
