// The fixed seed corpus: valid (and known-bad) message sequences the mutators start from.

/// Who the fuzzer logs in as and where; the corpus names them, so pgswift's config must define them.
public struct FuzzNames: Sendable {
    public var trustUser = "fuzz"
    public var md5User = "fuzz_md5"
    public var scramUser = "fuzz_scram"
    public var database = "fuzzdb"
    /// A table the post-auth seeds read and COPY into: (a int, b text).
    public var table = "fuzz_t"

    public init() {}
}

/// A named seed: its messages and, for the post-auth ones, nothing after them (the driver appends Sync
/// and its canary query).
public struct Seed: Sendable {
    public var name: String
    public var messages: [Message]

    public init(_ name: String, _ messages: [Message]) {
        self.name = name
        self.messages = messages
    }
}

public enum Corpus {
    static func text(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// SCRAM client-first for SASLInitialResponse.
    static func saslInitial(_ mech: String, _ data: String) -> [UInt8] {
        let d = Array(data.utf8)
        return Enc.cstr(mech) + Enc.int32(d.count) + d
    }

    public static func preAuth(_ n: FuzzNames) -> [Seed] {
        let db = n.database
        func st(_ user: String, _ extra: [(String, String)] = [], version: Int = Enc.protocol3) -> Message {
            Enc.startup([("user", user), ("database", db)] + extra, version: version)
        }
        let md5Answer = Enc.password(text("md5" + String(repeating: "0123456789abcdef", count: 2)) + [0])
        let scramFirst = Enc.password(saslInitial("SCRAM-SHA-256", "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"))
        let scramFinal = Enc.password(text("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="))
        return [
            Seed("trust-startup", [st(n.trustUser)]),
            Seed("trust-startup-params", [st(n.trustUser, [("application_name", "fz"), ("client_encoding", "UTF8"),
                                                            ("DateStyle", "ISO, MDY"), ("search_path", "public")])]),
            Seed("trust-startup-then-query", [st(n.trustUser), Enc.query("select 1")]),
            Seed("md5-login", [st(n.md5User), md5Answer]),
            Seed("md5-cleartext", [st(n.md5User), Enc.password(Enc.cstr("wrong"))]),
            Seed("scram-login", [st(n.scramUser), scramFirst, scramFinal]),
            Seed("scram-plus", [st(n.scramUser), Enc.password(saslInitial("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc"))]),
            Seed("unknown-user-md5", [st("nosuchuser"), md5Answer]),
            Seed("unknown-user-scram", [st("nosuchuser"), scramFirst, scramFinal]),
            Seed("unknown-database", [Enc.startup([("user", n.trustUser), ("database", "nosuchdb")])]),
            Seed("admin-db", [Enc.startup([("user", "nosuchuser"), ("database", "pgbouncer")]), md5Answer]),
            Seed("no-database", [Enc.startup([("user", n.trustUser)])]),
            Seed("no-user", [Enc.startup([("database", db)])]),
            Seed("ssl-then-startup", [Enc.sslRequest, st(n.trustUser)]),
            Seed("gss-then-startup", [Enc.gssRequest, st(n.scramUser), scramFirst]),
            Seed("ssl-twice", [Enc.sslRequest, Enc.sslRequest]),
            Seed("cancel", [Enc.cancel(pid: 1 << 20, key: 12345)]),
            Seed("cancel-short", [.untyped(Enc.int32(80_877_102) + Enc.int32(7))]),
            Seed("protocol-3.1", [st(n.trustUser, [("_pq_.unknown", "x")], version: 196_609)]),
            Seed("protocol-2", [st(n.trustUser, version: 131_072)]),
            Seed("protocol-4", [st(n.trustUser, version: 262_144)]),
            Seed("replication", [st(n.trustUser, [("replication", "database")])]),
            Seed("options", [st(n.trustUser, [("options", "-c work_mem=1MB")])]),
            Seed("unknown-param", [st(n.md5User, [(String(repeating: "p", count: 200), "v")]), md5Answer]),
            Seed("empty-packet", [.untyped([])]),
            // Finding (b) of the lost attempt: a password message over 32 KiB, then a half-close (the
            // driver half-closes after every pre-auth input).
            Seed("huge-md5-password", [st(n.md5User), Enc.password([UInt8](repeating: 0x61, count: 33_000) + [0])]),
            Seed("huge-scram-first", [st(n.scramUser),
                                      Enc.password(saslInitial("SCRAM-SHA-256", "n,,n=,r=" + String(repeating: "r", count: 40_000)))]),
            Seed("huge-startup", [st(n.trustUser, [("application_name", String(repeating: "a", count: 9_000))])]),
        ]
    }

    public static func postAuth(_ n: FuzzNames) -> [Seed] {
        let t = n.table
        let e = Enc.self
        let big = String(repeating: "x", count: 32_768 - 12)
        // A seed of simple Query messages only.
        func queries(_ name: String, _ sql: String...) -> Seed { Seed(name, sql.map { e.query($0) }) }
        return [
            queries("query", "select 1"),
            queries("query-table", "select a, b from \(t) where a < 3 order by a"),
            queries("query-multi", "select 1; select 'two'; select null"),
            queries("query-error", "select 1/0"),
            queries("query-empty", ""),
            queries("begin", "begin; select 1"),
            queries("begin-error", "begin", "select nosuchcolumn", "select 1"),
            queries("set", "set application_name = 'fz'; set search_path = public"),
            queries("set-local", "begin; set local work_mem = '2MB'; commit"),
            queries("prepare-sql", "prepare fzp as select $1::int; execute fzp(1); deallocate fzp"),
            queries("discard", "discard all"),
            queries("big-row", "select repeat('x', 70000)"),
            queries("rows", "select g, md5(g::text) from generate_series(1, 50) g"),
            queries("big-query", "select '" + big + "'"),
            queries("listen", "listen fz; notify fz, 'p'; unlisten fz"),
            queries("copy-out", "copy (select g from generate_series(1, 20) g) to stdout"),
            Seed("copy-in", [e.query("copy \(t) (a, b) from stdin"), e.copyData(text("1\tone\n2\ttwo\n")), e.copyDone]),
            Seed("copy-in-fail", [e.query("copy \(t) (a, b) from stdin"), e.copyData(text("3\tthree\n")), e.copyFail("no")]),
            Seed("ext-unnamed", [e.parse("", "select $1::int + 1", [23]), e.bind("", [text("41")]), e.describe("P", ""),
                                 e.execute()]),
            Seed("ext-named", [e.parse("fz1", "select $1::text, $2::int", [25, 23]), e.bind("fz1", [text("a"), text("2")]),
                               e.execute()]),
            Seed("ext-named-reuse", [e.parse("fz2", "select a from \(t) where a = $1"), e.describe("S", "fz2"),
                                     e.bind("fz2", [text("1")], resultFormats: [1]), e.execute(), e.close("S", "fz2")]),
            Seed("ext-binary-params", [e.parse("", "select $1::int4, $2::int8", [23, 20]),
                                       e.bind("", [[0, 0, 0, 7], [0, 0, 0, 0, 0, 0, 0, 9]], paramFormats: [1]), e.execute()]),
            Seed("ext-null-param", [e.parse("", "select $1::text is null"), e.bind("", [nil]), e.execute()]),
            Seed("ext-portal", [e.parse("", "select generate_series(1, 10)"), e.bind(portal: "pz", ""),
                                e.execute("pz", maxRows: 3), e.execute("pz", maxRows: 3), e.close("P", "pz")]),
            Seed("ext-flush", [e.parse("", "select 1"), e.flush, e.bind(""), e.execute(), e.flush]),
            Seed("ext-big-bind", [e.parse("", "select length($1)"), e.bind("", [[UInt8](repeating: 0x62, count: 40_000)]),
                                  e.execute()]),
            Seed("ext-big-named-parse", [e.parse("fzbig", "select '" + big + "'"), e.bind("fzbig"), e.execute()]),
            Seed("ext-dup-parse", [e.parse("fzd", "select 1"), e.parse("fzd", "select 2"), e.bind("fzd"), e.execute()]),
            Seed("unknown-bind", [e.bind("nosuchstmt"), e.execute()]),
            Seed("unknown-describe", [e.describe("S", "nosuchstmt"), e.describe("P", "nosuchportal")]),
            Seed("sync-inside", [e.parse("", "select 1"), e.sync, e.bind(""), e.execute()]),
            Seed("function-call", [e.functionCall(oid: 177, [text("1"), text("2")])]),
            Seed("function-call-big", [e.functionCall(oid: 1622, [text("x"), text("40000")])]),
            Seed("function-call-bad-oid", [e.functionCall(oid: 0, [])]),
            // Issue 14 finding 1: unknown Bind, a Query over 32 KiB, Sync.
            Seed("issue14-1", [e.bind("nosuchstmt"), e.query("select '" + big + "xxxxxxxx'"), e.sync]),
            // Finding (c) of the lost attempt.
            Seed("finding-c", [e.bind("nosuchstmt"), e.execute(), e.sync, e.parse("", "select 1"), e.bind(""), e.execute(),
                               e.query(String(repeating: " ", count: 32_768 - 9) + "select 1"),
                               e.functionCall(oid: 177, [text("1"), text("2")]), e.sync]),
        ]
    }
}
