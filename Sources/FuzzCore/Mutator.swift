// Mutators: structured ones keep every message well framed (contents change), framing ones break the
// stream (lying or huge lengths, unknown types, truncation) and make the driver hang up after sending.

/// One generated input: the bytes to send and whether they break the framing (then the driver sends
/// nothing after them and half-closes; otherwise it appends Sync and its canary query).
public struct FuzzInput: Sendable {
    public var bytes: [UInt8]
    public var breaksFraming: Bool
    /// Seed name and mutation steps, for the replay printout.
    public var steps: [String]
}

public struct Mutator: Sendable {
    public let phase: FuzzPhase
    public let seeds: [Seed]
    /// Share (percent) of post-auth inputs that get a framing-breaking mutation.
    public var framingPercent: Int
    /// Of those, the share applied to the first message (before a server is linked, as a rule).
    public var framingAtStartPercent = 75
    let strings: [[UInt8]]

    public init(phase: FuzzPhase, names: FuzzNames = FuzzNames(), framingPercent: Int? = nil) {
        self.phase = phase
        seeds = phase == .preAuth ? Corpus.preAuth(names) : Corpus.postAuth(names)
        self.framingPercent = framingPercent ?? (phase == .preAuth ? 35 : 2)
        let words = ["", names.trustUser, names.md5User, names.scramUser, "nosuchuser", "pgbouncer", "pgswift",
                     names.database, "template1", "user", "database", "options", "replication", "application_name",
                     "_pq_.x", "client_encoding", "SQL_ASCII", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "n,,", "md5",
                     "select 1", "$1", "$99999", "'", "\"", "\\", ";", "%s%n", "begin", "commit", "rollback", "PGSWIFT_1",
                     "fz1", names.table, "-c statement_timeout=1", String(repeating: "u", count: 64),
                     String(repeating: "w", count: 1_000)]
        strings = words.map { Array($0.utf8) } + [[0xc3, 0x28], [0xff, 0xfe], [0xf0, 0x9f, 0x98, 0x80], [0x80]]
    }

    /// Input `index` of the run seeded `seed`: a pure function of (seed, phase, index).
    public func input(seed: UInt64, index: UInt64) -> FuzzInput {
        var rng = FuzzRandom.forInput(seed: seed, phase: phase, index: index)
        var seedIndex = rng.below(seeds.count)
        // COPY FROM STDIN seeds at a quarter of the rate: a large message mutated in after them makes
        // PostgreSQL drop the session ("protocol synchronization was lost"), which costs a backend.
        if seeds[seedIndex].name.hasPrefix("copy-in") && !rng.chance(25) { seedIndex = rng.below(seeds.count) }
        var msgs = seeds[seedIndex].messages
        var steps = [seeds[seedIndex].name]
        // One input in ten is a seed as is (the paths a valid client takes stay covered).
        if !rng.chance(10) {
            let n = 1 + rng.below(3)
            for _ in 0..<n { steps.append(structured(&msgs, &rng)) }
        }
        var bytes = Enc.serialize(msgs)
        var breaks = false
        if rng.chance(framingPercent) && !msgs.isEmpty {
            let first = rng.chance(framingAtStartPercent)
            steps.append(framing(&bytes, msgs, atStart: first, &rng))
            breaks = true
        }
        return FuzzInput(bytes: bytes, breaksFraming: breaks, steps: steps)
    }

    // MARK: structured (well framed)

    /// Message types PostgreSQL refuses above 10,000 bytes (PQ_SMALL_MESSAGE_LIMIT) with a FATAL; CopyDone
    /// and CopyFail too, inside COPY FROM STDIN.
    static let smallLimit: Set<UInt8> = Set("SHCDEXcf".utf8)
    static let boundary16: [UInt16] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0xfffe]
    static let boundary32: [UInt32] = [0, 1, 3, 4, 5, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x10000,
                                       0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xffff_fffe, 32_768, 1_048_576]

    public func structured(_ msgs: inout [Message], _ rng: inout FuzzRandom) -> String {
        if msgs.isEmpty {
            msgs.append(rng.pick(seeds).messages.first ?? Enc.sync)
            return "refill"
        }
        let i = rng.below(msgs.count)
        switch rng.below(14) {
        case 0:
            guard !msgs[i].payload.isEmpty else { return "flip(empty)" }
            let at = rng.below(msgs[i].payload.count)
            msgs[i].payload[at] ^= UInt8(1 << rng.below(8))
            return "flip(\(i)@\(at))"
        case 1:
            guard !msgs[i].payload.isEmpty else { return "set(empty)" }
            let at = rng.below(msgs[i].payload.count)
            msgs[i].payload[at] = rng.pick([0, 0xff, 0x7f, 0x80, 0x27, 0x24, 0x3b, 0x01])
            return "set(\(i)@\(at))"
        case 2:
            guard msgs[i].payload.count >= 2 else { return "int(short)" }
            let wide = msgs[i].payload.count >= 4 && rng.chance(60)
            let at = rng.below(msgs[i].payload.count - (wide ? 3 : 1))
            if wide {
                let v = rng.pick(Mutator.boundary32)
                msgs[i].payload[at] = UInt8(v >> 24); msgs[i].payload[at + 1] = UInt8((v >> 16) & 0xff)
                msgs[i].payload[at + 2] = UInt8((v >> 8) & 0xff); msgs[i].payload[at + 3] = UInt8(v & 0xff)
            } else {
                let v = rng.pick(Mutator.boundary16)
                msgs[i].payload[at] = UInt8(v >> 8); msgs[i].payload[at + 1] = UInt8(v & 0xff)
            }
            return "int\(wide ? 32 : 16)(\(i)@\(at))"
        case 3:
            let keep = rng.below(msgs[i].payload.count + 1)
            msgs[i].payload.removeLast(msgs[i].payload.count - keep)
            return "cut(\(i) to \(keep))"
        case 4:
            let at = rng.below(msgs[i].payload.count + 1)
            msgs[i].payload.insert(contentsOf: rng.bytes(1 + rng.below(64)), at: at)
            return "grow(\(i)@\(at))"
        case 5:
            guard msgs.count < 24 else { return "dup(full)" }
            msgs.insert(msgs[i], at: rng.below(msgs.count + 1))
            return "dup(\(i))"
        case 6:
            let j = rng.below(msgs.count)
            msgs.swapAt(i, j)
            return "swap(\(i),\(j))"
        case 7:
            msgs.remove(at: i)
            return "drop(\(i))"
        case 8:
            guard msgs.count < 24 else { return "splice(full)" }
            let other = rng.pick(seeds).messages
            guard !other.isEmpty else { return "splice(empty)" }
            msgs.insert(rng.pick(other), at: rng.below(msgs.count + 1))
            return "splice(\(i))"
        case 9:
            // Oversized contents: past the 32 KiB I/O buffer, sometimes well past it. PostgreSQL closes
            // the session on a Sync, Flush, Close, Describe or Execute over 10,000 bytes, which costs a
            // backend: post-auth, those get it one time in ten, the other messages the rest.
            var i = i
            if phase == .postAuth && Mutator.smallLimit.contains(msgs[i].type) && !rng.chance(10) {
                let big = msgs.indices.filter { !Mutator.smallLimit.contains(msgs[$0].type) }
                guard !big.isEmpty else { return "huge(skipped)" }
                i = rng.pick(big)
            }
            let size = 32_768 + rng.below(rng.chance(20) ? 200_000 : 40_000)
            let fill = rng.pick([0x20, 0x78, 0x00, 0x27] as [UInt8])
            // Post-auth, most oversized Parse and Bind messages stay valid (a long query text, a long
            // parameter): pgswift ends the session on a malformed one, which costs a backend when a
            // server is linked. One in ten gets the bytes anywhere, names included.
            if phase == .postAuth && !rng.chance(10) {
                let p = msgs[i].payload
                let zeros = p.indices.filter { p[$0] == 0 }
                if msgs[i].type == UInt8(ascii: "B"), zeros.count >= 2 {
                    let names = Array(p[0...zeros[1]])
                    msgs[i].payload = names + Enc.int16(0) + Enc.int16(1) + Enc.int32(size)
                        + [UInt8](repeating: fill == 0 ? 0x61 : fill, count: size) + Enc.int16(0)
                    return "hugeparam(\(i)+\(size))"
                }
                if msgs[i].type == UInt8(ascii: "P"), zeros.count >= 2 {
                    msgs[i].payload.insert(contentsOf: [UInt8](repeating: 0x20, count: size), at: zeros[1])
                    return "hugetext(\(i)+\(size))"
                }
            }
            let at = msgs[i].payload.isEmpty ? 0 : rng.below(msgs[i].payload.count)
            msgs[i].payload.insert(contentsOf: [UInt8](repeating: fill, count: size), at: at)
            return "huge(\(i)+\(size))"
        case 10:
            guard msgs[i].type != 0 else { return "type(untyped)" }
            msgs[i].type = phase == .preAuth ? rng.pick(Array("pQXSB".utf8)) : rng.pick(Enc.frontendTypes)
            if phase == .postAuth && msgs[i].payload.count > 10_000 && Mutator.smallLimit.contains(msgs[i].type)
                && !rng.chance(10) {
                msgs[i].type = rng.pick(Array("PBQF".utf8))  // see `smallLimit`
            }
            return "type(\(i)=\(Character(UnicodeScalar(msgs[i].type))))"
        case 11:
            // Replace one NUL-terminated string (a name, a query, a parameter) with a dictionary word.
            let p = msgs[i].payload
            var starts = [0]
            for (k, b) in p.enumerated() where b == 0 && k + 1 < p.count { starts.append(k + 1) }
            let s = rng.pick(starts)
            var e = s
            while e < p.count && p[e] != 0 { e += 1 }
            msgs[i].payload.replaceSubrange(s..<e, with: rng.pick(strings))
            return "word(\(i)@\(s))"
        case 12:
            guard msgs.count < 24 else { return "sync(full)" }
            let m = phase == .preAuth ? Enc.password(rng.bytes(rng.below(40))) : rng.pick([Enc.sync, Enc.flush, Enc.sync])
            msgs.insert(m, at: rng.below(msgs.count + 1))
            return "insert(\(Character(UnicodeScalar(m.type))))"
        default:
            // Boundary counts/lengths in a typed message's first integer fields (Bind, FunctionCall,
            // Parse parameter counts; startup's protocol word).
            guard msgs[i].payload.count >= 4 else { return "head(short)" }
            let at = rng.below(min(8, msgs[i].payload.count - 3))
            let v = rng.pick(Mutator.boundary32)
            msgs[i].payload[at] = UInt8(v >> 24); msgs[i].payload[at + 1] = UInt8((v >> 16) & 0xff)
            msgs[i].payload[at + 2] = UInt8((v >> 8) & 0xff); msgs[i].payload[at + 3] = UInt8(v & 0xff)
            return "head(\(i)@\(at))"
        }
    }

    // MARK: framing-breaking

    public func framing(_ bytes: inout [UInt8], _ msgs: [Message], atStart: Bool, _ rng: inout FuzzRandom) -> String {
        let offsets = Enc.offsets(msgs)
        let i = atStart ? 0 : rng.below(msgs.count)
        let start = offsets[i]
        let typed = msgs[i].type != 0
        let lenAt = start + (typed ? 1 : 0)
        let realLen = msgs[i].payload.count + 4
        switch rng.below(5) {
        case 0, 1:
            // A lying length word.
            let v: Int
            switch rng.below(4) {
            case 0: v = Int(rng.pick(Mutator.boundary32))
            case 1: v = max(0, realLen + rng.between(-8, 8))
            case 2: v = realLen + 32_768 + rng.below(65_536)
            default: v = Int(truncatingIfNeeded: rng.next() & 0xffff_ffff)
            }
            let w = Enc.int32(v)
            for k in 0..<4 where lenAt + k < bytes.count { bytes[lenAt + k] = w[k] }
            return "len(\(i)=\(UInt32(truncatingIfNeeded: v)))"
        case 2:
            if typed {
                var t: UInt8
                repeat { t = UInt8(truncatingIfNeeded: rng.next()) } while Enc.frontendTypes.contains(t) || t == 0x70
                bytes[start] = t
                return "badtype(\(i)=\(t))"
            }
            bytes[start] = 0x7f
            return "hugelen(\(i))"
        case 3:
            // Cut inside message i (never exactly at its end).
            let end = start + msgs[i].encodedCount
            let cut = start + rng.below(max(1, end - start - 1)) + (rng.chance(50) ? 0 : 1)
            bytes.removeLast(bytes.count - min(cut, bytes.count))
            return "trunc(\(i)@\(cut))"
        default:
            // Stray bytes where the next header is expected.
            let at = i + 1 < offsets.count ? offsets[i + 1] : bytes.count
            let junk = rng.bytes(1 + rng.below(7))
            bytes.insert(contentsOf: junk, at: at)
            return "junk(after \(i))"
        }
    }
}
