// LISTEN/NOTIFY relay bookkeeping (listen_mode = relay): which client listens to what, with
// PostgreSQL's transaction semantics, and which channels each pool's listening connection must hold.
// A pure value: events in, answers out; the worker (ListenRelay.swift) does the I/O.
import Shared
import Glibc

/// A statement that changes what a session listens to.
enum ListenOp: Equatable {
    case listen(String)
    case unlisten(String)
    /// `UNLISTEN *`.
    case unlistenAll
    /// `DISCARD ALL` (also an UNLISTEN *; its own tag).
    case discardAll
}

/// A LISTEN-family statement a client sent, not yet answered by its CommandComplete.
struct PredictedListenOp: Equatable {
    var op: ListenOp
    /// ReadyForQuery answers the client awaits before the one that ends this statement's query.
    var readiesBefore: Int32
}

/// One client's listening state.
struct ListenClientState {
    var pool: Int32
    /// Committed subscriptions.
    var subscribed: Set<String> = []
    /// Sent, their CommandComplete not seen yet (in order).
    var predicted: [PredictedListenOp] = []
    /// Executed (tag seen) in the transaction still open.
    var uncommitted: [ListenOp] = []
    /// Executed, then a ROLLBACK tag came: gone at ReadyForQuery 'I', kept at 'T'/'E' (ROLLBACK TO).
    var rolledBack: [ListenOp] = []
    /// An ErrorResponse came since the last ReadyForQuery.
    var failed = false
    /// Channels of a LISTEN held until the listening connection holds them.
    var wants: Set<String> = []
    /// Notifications (whole NotificationResponse messages) for channels only a LISTEN not yet
    /// committed wants: delivered if it commits, dropped if not.
    var tentative: [(channel: String, message: [UInt8])] = []
    /// Messages due to the client at its next message boundary (notifications, pgswift's warnings).
    var outbox: [UInt8] = []
    /// listen_mode = pin: a LISTEN ran that pgswift could not attribute; the link stays to the end.
    var pinnedForGood = false

    init(pool: Int32) { self.pool = pool }

    /// Something is in flight that a server's answer (tag, error, ReadyForQuery) decides.
    var pending: Bool { !predicted.isEmpty || !uncommitted.isEmpty || !rolledBack.isEmpty }

    /// Nothing left: the record can go.
    var empty: Bool {
        subscribed.isEmpty && !pending && wants.isEmpty && tentative.isEmpty && outbox.isEmpty && !pinnedForGood
    }

    /// Channels this client needs the listening connection to hold.
    func channelsWanted(into set: inout Set<String>) {
        set.formUnion(subscribed)
        set.formUnion(wants)
        for p in predicted { if case .listen(let c) = p.op { set.insert(c) } }
        for o in uncommitted { if case .listen(let c) = o { set.insert(c) } }
        for o in rolledBack { if case .listen(let c) = o { set.insert(c) } }
    }

    /// A LISTEN for `channel` is predicted or executed but not committed.
    func listensTentatively(_ channel: String) -> Bool {
        for p in predicted where p.op == .listen(channel) { return true }
        for o in uncommitted where o == .listen(channel) { return true }
        for o in rolledBack where o == .listen(channel) { return true }
        return wants.contains(channel)
    }

    // MARK: Server answers on the client's link

    /// What a CommandComplete tag means here.
    enum TagEffect: Equatable {
        case none
        /// The head prediction ran.
        case confirmed
        /// A LISTEN-family statement ran that no prediction names (its channel is unknown).
        case unpredicted
    }

    /// A CommandComplete for the client's query: `LISTEN`, `UNLISTEN`, `DISCARD ALL` confirm the head
    /// prediction; `COMMIT` commits; `ROLLBACK` (or ROLLBACK TO SAVEPOINT: the same tag) sets aside.
    mutating func tag(_ t: ListenTag) -> TagEffect {
        switch t {
        case .commit:
            apply(uncommitted)
            uncommitted.removeAll()
            return .none
        case .rollback:
            rolledBack.append(contentsOf: uncommitted)
            uncommitted.removeAll()
            return .none
        case .other:
            return .none
        case .listen, .unlisten, .discardAll:
            // Predictions of this query whose statement never ran (their kind does not match) go.
            while let head = predicted.first, head.readiesBefore == 0 {
                predicted.removeFirst()
                if t.matches(head.op) {
                    uncommitted.append(head.op)
                    return .confirmed
                }
            }
            return .unpredicted
        }
    }

    /// An ErrorResponse: the transaction (explicit or implicit) will not commit what it ran.
    mutating func error() { failed = true }

    /// ReadyForQuery with `status`. Returns the tentative notifications that are now the client's.
    mutating func ready(_ status: UInt8) -> [[UInt8]] {
        var i = 0
        while i < predicted.count {
            if predicted[i].readiesBefore == 0 {
                predicted.remove(at: i)  // never ran (an error skipped it)
            } else {
                predicted[i].readiesBefore -= 1
                i += 1
            }
        }
        if status == UInt8(ascii: "I") {
            if !failed { apply(uncommitted) }
            uncommitted.removeAll()
            rolledBack.removeAll()
        } else if !rolledBack.isEmpty {
            // ROLLBACK TO SAVEPOINT: the block goes on. What it undid cannot be told from the tag,
            // so it is kept (errs toward listening).
            uncommitted = rolledBack + uncommitted
            rolledBack.removeAll()
        }
        failed = false
        guard status == UInt8(ascii: "I"), !tentative.isEmpty else { return [] }
        // The transaction ended: what it subscribed to is due, what only a later query still wants
        // waits for that one, the rest goes.
        var due: [[UInt8]] = []
        var kept: [(channel: String, message: [UInt8])] = []
        for n in tentative {
            if subscribed.contains(n.channel) {
                due.append(n.message)
            } else if listensTentatively(n.channel) {
                kept.append(n)
            }
        }
        tentative = kept
        return due
    }

    mutating func apply(_ ops: [ListenOp]) {
        for o in ops {
            switch o {
            case .listen(let c): subscribed.insert(c)
            case .unlisten(let c): subscribed.remove(c)
            case .unlistenAll, .discardAll: subscribed.removeAll()
            }
        }
    }

    /// Where a notification on `channel` goes for this client.
    enum Delivery { case now, tentative, none }

    func delivery(_ channel: String) -> Delivery {
        if subscribed.contains(channel) { return .now }
        return listensTentatively(channel) ? .tentative : .none
    }
}

/// The CommandComplete tags the relay reads.
enum ListenTag: Equatable {
    case listen, unlisten, discardAll, commit, rollback, other

    init(_ body: UnsafeRawBufferPointer) {
        if SessionTags.matches(body, "LISTEN") { self = .listen }
        else if SessionTags.matches(body, "UNLISTEN") { self = .unlisten }
        else if SessionTags.matches(body, "DISCARD ALL") { self = .discardAll }
        else if SessionTags.matches(body, "COMMIT") { self = .commit }
        else if SessionTags.matches(body, "ROLLBACK") { self = .rollback }
        else { self = .other }
    }

    func matches(_ op: ListenOp) -> Bool {
        switch (self, op) {
        case (.listen, .listen), (.unlisten, .unlisten), (.unlisten, .unlistenAll), (.discardAll, .discardAll): return true
        default: return false
        }
    }
}

/// A pool's listening server connection: what it holds and what it was told.
struct ListenPoolState {
    /// The listening server (-1: none yet).
    var server: Int32 = -1
    /// Logged in: commands may be sent.
    var ready = false
    /// Channels the server confirmed it listens to.
    var listening: Set<String> = []
    /// Commands sent, their ReadyForQuery not seen yet (in order).
    var inFlight: [ListenOp] = []
    /// Clients whose message is held until a channel is listened to.
    var held: Set<Int32> = []

    /// `channel` is listened to and no UNLISTEN of it is in flight.
    func holds(_ channel: String) -> Bool {
        listening.contains(channel) && !inFlight.contains(.unlisten(channel))
    }

    /// The commands that bring the server to `wanted` (none while not ready). Records them in flight.
    mutating func commands(toward wanted: Set<String>) -> [ListenOp] {
        guard ready else { return [] }
        var out: [ListenOp] = []
        for c in wanted.sorted() where !listening.contains(c) && !inFlight.contains(.listen(c)) {
            out.append(.listen(c))
        }
        for c in listening.sorted() where !wanted.contains(c) && !inFlight.contains(.unlisten(c)) {
            out.append(.unlisten(c))
        }
        inFlight.append(contentsOf: out)
        return out
    }

    /// A ReadyForQuery answered the oldest command.
    mutating func commandDone() {
        guard !inFlight.isEmpty else { return }
        switch inFlight.removeFirst() {
        case .listen(let c): listening.insert(c)
        case .unlisten(let c): listening.remove(c)
        default: break
        }
    }

    /// Nothing wanted, nothing in flight: the connection may close.
    func idle(wanted: Set<String>) -> Bool { wanted.isEmpty && inFlight.isEmpty && held.isEmpty }
}

/// The statements of a Query or Parse text that change listening, in order (pgswift's classifier).
enum ListenStatements {
    /// The text's first keyword is LISTEN, UNLISTEN or DISCARD, after blanks and comments: the cheap
    /// test every Query and Parse of a relayed pool passes before any lexing. `.needMore`: the
    /// bytes seen end before the first word does.
    enum Hint { case no, maybe, needMore }

    @inline(__always)
    static func firstKeyword(_ p: UnsafeRawPointer, _ n: Int) -> Hint {
        var i = 0
        while i < n {
            let c = p.load(fromByteOffset: i, as: UInt8.self)
            if c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D || c == 0x0C { i &+= 1; continue }
            if c == UInt8(ascii: "-") || c == UInt8(ascii: "/") { return .maybe }  // a comment first: lex it
            let l = c | 0x20
            if l == UInt8(ascii: "l") { return word(p, i, n, "listen") }
            if l == UInt8(ascii: "u") { return word(p, i, n, "unlisten") }
            if l == UInt8(ascii: "d") { return word(p, i, n, "discard") }
            return .no
        }
        return .needMore
    }

    /// A `;` with something other than blanks, `;` or the terminating NUL after it: the text may hold
    /// more than one statement.
    @inline(__always)
    static func laterStatement(_ p: UnsafeRawPointer, _ n: Int) -> Bool {
        guard let semi = memchr(p, Int32(UInt8(ascii: ";")), n) else { return false }
        var i = UnsafeRawPointer(semi) - p
        while i < n {
            let c = p.load(fromByteOffset: i, as: UInt8.self)
            if c != UInt8(ascii: ";") && c != 0 && !SQLLexer.isWhitespace(c) { return true }
            i &+= 1
        }
        return false
    }

    @inline(__always)
    private static func word(_ p: UnsafeRawPointer, _ at: Int, _ n: Int, _ w: StaticString) -> Hint {
        let wn = w.utf8CodeUnitCount
        let s = w.utf8Start
        var k = 0
        while k < wn {
            if at &+ k >= n { return .needMore }
            if p.load(fromByteOffset: at &+ k, as: UInt8.self) | 0x20 != s[k] { return .no }
            k &+= 1
        }
        if at &+ wn < n, SQLLexer.isIdentContinue(p.load(fromByteOffset: at &+ wn, as: UInt8.self)) { return .no }
        return .maybe
    }

    /// Every statement of `text` that changes listening (a simple Query may hold several).
    static func ops(_ text: UnsafeRawBufferPointer, classifier: SQLClassifier) -> [ListenOp] {
        var out: [ListenOp] = []
        var splitter = SQLStatementSplitter(text, standardConformingStrings: classifier.standardConformingStrings)
        let lx = SQLLexer(text, standardConformingStrings: classifier.standardConformingStrings)
        while let st = splitter.next() {
            let info = classifier.classify(text, range: st.range)
            switch info.kind {
            case .listen:
                if let r = info.name { out.append(.listen(lx.foldedName(r))) }
            case .unlisten:
                if info.flags.contains(.all) { out.append(.unlistenAll) } else if let r = info.name { out.append(.unlisten(lx.foldedName(r))) }
            case .discard:
                if info.discard == .all { out.append(.discardAll) }
            default:
                break
            }
        }
        return out
    }
}
