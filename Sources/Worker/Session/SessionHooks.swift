// Where the data path calls the carried session state (SessionState.swift): a Query or Parse that may
// touch session state (a first-word check, `SQLSessionCandidate`, before any lexing), the server's
// CommandComplete tags, errors and ReadyForQuery while something is in flight, and the link.
import Shared

extension Worker {
    /// The classifier for session statements (the deny list plays no part here).
    static let sessionClassifier = SQLClassifier()

    /// scanClient: a whole Query or Parse on a transaction/statement-mode link, before it is forwarded.
    /// Cheap unless the text is a candidate. May be called again for the same message (idempotent).
    /// False when SQL prepared statements must be replayed before it and `first` is false (client bytes
    /// before it are not forwarded yet): forward those, then call again. Out of line, as `listenScan`.
    @inline(never)
    func sessionClientMessage(_ ci: Int32, _ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer, first: Bool) -> Bool {
        var text = body
        var statement: UnsafeRawBufferPointer? = nil
        if type == FrontendType.parse {
            // Statement name, then the query text (both NUL-terminated; the check stops at the NUL).
            guard let nul = body.firstIndex(of: 0) else { return true }
            statement = UnsafeRawBufferPointer(rebasing: body[..<nul])
            // A new statement of a name replaces the one whose session ops were remembered.
            if servers[si].sessionExtended { sessionExtendedMessage(ci, si, type, body) }
            text = UnsafeRawBufferPointer(rebasing: body[(nul &+ 1)...])
        } else if type != FrontendType.query {
            // Bind or Execute while a statement or the unnamed portal carries session ops.
            sessionExtendedMessage(ci, si, type, body)
            return true
        }
        if !SQLSessionCandidate.check(text) { return true }
        // A candidate: now the text is cut at its NUL for the lexer.
        if let nul = text.firstIndex(of: 0) { text = UnsafeRawBufferPointer(rebasing: text[..<nul]) }
        return sessionStatement(ci, si, query: type == FrontendType.query, statement: statement, text, first: first)
    }

    /// The extended protocol's statement → unnamed portal → Execute, for a SET (or RESET, DISCARD...)
    /// sent that way, as drivers do: unnamed (psycopg 3, JDBC) or named (JDBC from its
    /// prepareThreshold on, executed again and again). Its ops join those matched to tags when it is
    /// executed in a batch that began with nothing in flight. Anything else (a named portal, a
    /// pipeline) keeps the old reset-on-tag rule.
    @inline(never)
    private func sessionExtendedMessage(_ ci: Int32, _ si: Int32, _ type: UInt8, _ body: UnsafeRawBufferPointer) {
        guard let info = clients[ci].info else { return }
        switch type {
        case FrontendType.parse:
            guard let nul = body.firstIndex(of: 0) else { return }
            if nul == 0 {
                info.session.unnamedStatement = nil
                info.session.unnamedPortal = nil
            } else if !info.session.namedStatements.isEmpty {
                info.session.namedStatements[String(decoding: body[..<nul], as: UTF8.self)] = nil
                noteClientSettings(ci, info)
            }
        case FrontendType.bind:
            // Portal name, statement name.
            guard let p = body.firstIndex(of: 0) else { return }
            if p == 0 {
                let rest = UnsafeRawBufferPointer(rebasing: body[1...])
                guard let s = rest.firstIndex(of: 0) else { return }
                if s == 0 {
                    info.session.unnamedPortal = info.session.unnamedStatement
                } else {
                    info.session.unnamedPortal = info.session.namedStatements.isEmpty ? nil
                        : info.session.namedStatements[String(decoding: rest[..<s], as: UTF8.self)]
                }
            }
        case FrontendType.execute:
            guard body.first == 0, let plan = info.session.unnamedPortal else { return }
            info.session.unnamedPortal = nil  // run once: another Execute of it keeps the old rule
            if servers[si].pendingSyncs == 0 && info.session.extendedBatchQuiet {
                info.session.ops.append(contentsOf: plan.ops)
                servers[si].sessionPending = true
            }
        default:
            break
        }
        servers[si].sessionExtended = info.session.extendedPlans
    }

    @inline(never)
    private func sessionStatement(_ ci: Int32, _ si: Int32, query: Bool, statement: UnsafeRawBufferPointer?,
                                  _ text: UnsafeRawBufferPointer, first: Bool) -> Bool {
        guard let info = clients[ci].info, let sinfo = servers[si].info else { return true }
        let p = Int(clients[ci].pool)
        let plan = SessionPlanner.plan(text, classifier: Worker.sessionClassifier) { key in
            guard let t = self.tracked.lowered.firstIndex(of: key) else { return .no }
            return self.welcomeValue(p, t) != nil ? .reported : .unreported(t)
        }
        if plan.isEmpty { return true }
        let quiet = servers[si].pendingSyncs == 0 && !servers[si].unsynced
        if query && quiet && !plan.referenced.isEmpty && config.maxPreparedStatements > 0 {
            // The client's statements this text uses and this server lacks are prepared first.
            var replay = ""
            for name in plan.referenced {
                if let sql = info.session.prepared[name], sinfo.sqlPrepared[name] == nil { replay += sql + ";" }
            }
            if !replay.isEmpty {
                if !first { return false }
                log.debug("S-\(servers[si].id): replaying SQL prepared statements of C-\(clients[ci].id): \(replay)")
                for name in plan.referenced where sinfo.sqlPrepared[name] == nil {
                    if let sql = info.session.prepared[name] { sinfo.sqlPrepared[name] = sql }
                }
                sinfo.sqlPreparedOwner = clients[ci].id
                servers[si].sessionCarried = true
                scratch.clear()
                Frontend.query(into: &scratch, sql: replay)
                servers[si].io.out.append(scratch)
                servers[si].internalQueries += 1
            }
        }
        if !plan.pin.isEmpty && config.pinSessionState {
            // Pinned as the statement goes (detection errs toward pinning); a reset when it leaves.
            if UInt8(servers[si].sessionPins) & plan.pin.rawValue != plan.pin.rawValue {
                log.debug("C-\(clients[ci].id): pinned to S-\(servers[si].id) by session state \(plan.pin.rawValue)")
            }
            servers[si].sessionPins |= plan.pin.rawValue
            servers[si].needsReset = true
            servers[si].sessionPending = true
        } else if plan.pin.contains(.setConfig) {
            // Not pinned: no tag tells of a set_config, so its server is reset when released.
            servers[si].needsReset = true
        }
        // Tags are matched to statements only when nothing else is in flight on the link; otherwise
        // the old rule applies (a SET tag resets the server at release).
        if let statement, !plan.ops.isEmpty {
            // Its ops are matched to tags when it is executed (`sessionExtendedMessage`), if the batch
            // it starts began with nothing in flight. A named one is remembered for the client's life
            // (bounded: over `namedPlanLimit` the old rule applies to the rest).
            if statement.isEmpty {
                info.session.unnamedStatement = plan
            } else if info.session.namedStatements.count < ClientSessionState.namedPlanLimit {
                info.session.namedStatements[String(decoding: statement, as: UTF8.self)] = plan
                noteClientSettings(ci, info)
            }
            info.session.extendedBatchQuiet = quiet
            if quiet {
                info.session.preparedLimit = config.maxPreparedStatements
                info.session.errorSeen = false
            }
            servers[si].sessionExtended = info.session.extendedPlans
        }
        guard query && quiet else { return true }
        info.session.preparedLimit = config.maxPreparedStatements
        info.session.sent(plan)
        servers[si].sessionPending = true
        return true
    }

    /// scanServer: a CommandComplete of the client's while something is in flight. True when its tag
    /// was a tracked statement's (no reset needed for it).
    @inline(never)
    func sessionCommandComplete(_ si: Int32, _ body: UnsafeRawBufferPointer) -> Bool {
        let ci = servers[si].client
        guard ci >= 0, let tag = SessionTag.of(body), let info = clients[ci].info else { return false }
        let out = info.session.commandComplete(tag)
        sessionOutcome(ci, si, info, out)
        return out.handled
    }

    /// scanServer: an ErrorResponse of the client's while something is in flight.
    @inline(never)
    func sessionError(_ si: Int32) {
        let ci = servers[si].client
        guard ci >= 0, let info = clients[ci].info else { return }
        info.session.error()
    }

    /// scanServer: the client's ReadyForQuery while something is in flight.
    @inline(never)
    func sessionReady(_ si: Int32, _ status: UInt8) {
        let ci = servers[si].client
        guard ci >= 0, let info = clients[ci].info else {
            servers[si].sessionPending = false
            return
        }
        let out = info.session.ready(status)
        sessionOutcome(ci, si, info, out)
        servers[si].sessionPending = info.session.inFlight || servers[si].sessionPins != 0
    }

    private func sessionOutcome(_ ci: Int32, _ si: Int32, _ info: ClientInfo, _ out: ClientSessionState.Outcome) {
        if out.needsReset { servers[si].needsReset = true }
        if !out.apply.isEmpty, let sinfo = servers[si].info {
            for op in out.apply {
                info.session.remember(op, server: &sinfo.session)
                switch op {
                case .tracked(let t, let value):
                    rememberTracked(ci, si, info, sinfo, t, value)
                case .trackedReset(let t):
                    rememberTracked(ci, si, info, sinfo, t, nil)
                case .resetAll, .discardAll:
                    // Tracked parameters the server does not report go back to the pool's default.
                    let p = Int(clients[ci].pool)
                    for t in 0..<tracked.names.count where welcomeValue(p, t) == nil {
                        rememberTracked(ci, si, info, sinfo, t, nil)
                    }
                default:
                    break
                }
            }
            servers[si].sessionCarried = !sinfo.session.isEmpty || !sinfo.sqlPrepared.isEmpty
            noteClientSettings(ci, info)
            log.debug("C-\(clients[ci].id): session settings now \(info.session.settings.entries.map(\.set))")
        }
        if !out.prepared.isEmpty, let sinfo = servers[si].info {
            if sinfo.sqlPreparedOwner != clients[ci].id { sinfo.sqlPrepared.removeAll() }
            sinfo.sqlPreparedOwner = clients[ci].id
            for op in out.prepared {
                switch op {
                case .prepare(let name, let sql): sinfo.sqlPrepared[name] = sql
                case .deallocate(let name): sinfo.sqlPrepared[name] = nil
                default: sinfo.sqlPrepared.removeAll()
                }
            }
            servers[si].sessionCarried = !sinfo.session.isEmpty || !sinfo.sqlPrepared.isEmpty
        }
        if !out.unpin.isEmpty && servers[si].sessionPins != 0 {
            servers[si].sessionPins &= ~out.unpin.rawValue
            if servers[si].sessionPins == 0 { log.debug("C-\(clients[ci].id): unpinned from S-\(servers[si].id)") }
        }
    }

    /// A tracked parameter's value set by the client's own SET (or RESET, nil), on both sides: the
    /// fingerprints are recomputed at the next link.
    private func rememberTracked(_ ci: Int32, _ si: Int32, _ info: ClientInfo, _ sinfo: ServerInfo, _ t: Int, _ value: String?) {
        guard t < info.params.values.count, t < sinfo.params.values.count else { return }
        info.params.values[t] = value
        sinfo.params.values[t] = value
        clients[ci].paramsKey = 0
        servers[si].paramsKey = 0
    }

    /// syncParameters: the SETs and RESETs that give the server the client's carried settings, "" when
    /// it has them already. The server's record becomes the client's.
    func carriedSettingsSQL(_ ci: Int32, _ si: Int32) -> String {
        guard let cinfo = clients[ci].info, let sinfo = servers[si].info else { return "" }
        var sql = sinfo.session.transition(to: cinfo.session.settings)
        sinfo.session = cinfo.session.settings
        // Named statements with session ops: this link looks at the client's Bind and Execute.
        if !cinfo.session.namedStatements.isEmpty { servers[si].sessionExtended = true }
        if !sinfo.sqlPrepared.isEmpty {
            // Another client's SQL prepared statements (no client sees another's, and its own names are
            // free), or this client's that it has since deallocated or prepared anew elsewhere.
            let own = sinfo.sqlPreparedOwner == clients[ci].id
            for name in sinfo.sqlPrepared.keys.sorted() where !own || cinfo.session.prepared[name] != sinfo.sqlPrepared[name] {
                sql += "DEALLOCATE \(quotedIdentifier(name));"
                sinfo.sqlPrepared[name] = nil
            }
            sinfo.sqlPreparedOwner = clients[ci].id
        }
        servers[si].sessionCarried = !sinfo.session.isEmpty || !sinfo.sqlPrepared.isEmpty
        return sql
    }

    /// server_reset_query is sent: what it clears is forgotten. DISCARD ALL (the default) clears
    /// settings and SQL prepared statements, RESET ALL the settings, DEALLOCATE ALL the statements; a
    /// reset query that does none of these leaves the records as they are.
    func carriedStateReset(_ si: Int32) {
        guard servers[si].sessionCarried, let info = servers[si].info else { return }
        let q = config.serverResetQuery.uppercased()
        let discard = q.contains("DISCARD ALL")
        if discard || q.contains("RESET ALL") { info.session.removeAll() }
        if discard || q.contains("DEALLOCATE ALL") { info.sqlPrepared.removeAll() }
        servers[si].sessionCarried = !info.session.isEmpty || !info.sqlPrepared.isEmpty
    }

    /// The client ran DISCARD ALL: the server holds no carried setting or statement any more.
    func forgetCarriedSettings(_ si: Int32) {
        servers[si].info?.session.removeAll()
        servers[si].info?.sqlPrepared.removeAll()
        servers[si].sessionCarried = false
    }
}

extension Worker {
    /// The client's DEALLOCATE ALL or DISCARD ALL, however it was sent: no SQL prepared statement is
    /// left on either side; after DISCARD ALL the server holds nothing carried, the client's settings
    /// are its startup ones again, and no pin is left.
    func sessionPreparedWiped(_ si: Int32, discardAll: Bool) {
        let ci = servers[si].client
        servers[si].info?.sqlPrepared.removeAll()
        if ci >= 0, let info = clients[ci].info {
            info.session.prepared.removeAll()
            info.session.namedStatements.removeAll()
            noteClientSettings(ci, info)
        }
        guard discardAll else { return }
        forgetCarriedSettings(si)
        guard ci >= 0, let info = clients[ci].info else { return }
        info.session.settings = info.session.baseline
        noteClientSettings(ci, info)
        info.session.holdCursors.removeAll()
        servers[si].sessionPins = 0
    }
}

/// A name as a quoted SQL identifier (`"` doubled).
func quotedIdentifier(_ name: String) -> String {
    var out = "\""
    for ch in name {
        if ch == "\"" { out += "\"\"" } else { out.append(ch) }
    }
    return out + "\""
}

extension Worker {
    /// A client may move to a successor worker (rolling restart) unless its session state keeps it
    /// on its server (a pin) or cannot travel: named statements with session plans; carried settings
    /// and SQL prepared statements only with `carriedState` (a lone client to a successor that reads
    /// them, `WorkerFeatures.sessionMoves`; a pair's server record of them does not travel). Losing a
    /// search_path silently is worse than staying (until the client leaves or drain_timeout).
    func sessionMovable(_ ci: Int32, carriedState: Bool) -> Bool {
        let si = clients[ci].server
        if si >= 0 && servers[si].sessionPins != 0 { return false }
        guard let info = clients[ci].info else { return true }
        if !info.session.namedStatements.isEmpty { return false }
        return carriedState || (info.session.settings.isEmpty && info.session.prepared.isEmpty)
    }

    /// The client has carried settings to replay at link: a flag in the client's record, kept by
    /// `noteClientSettings`, since reading `ClientInfo.session` (a class's stored property) at every
    /// link would cost a run-time exclusivity check.
    @inline(__always)
    func clientCarries(_ ci: Int32) -> Bool { clients[ci].carriesSettings }

    /// After the client's settings (or its named statements with session ops) changed: whether it now
    /// has any to carry, or plans its Bind and Execute must be looked at for on every link.
    func noteClientSettings(_ ci: Int32, _ info: ClientInfo) {
        clients[ci].carriesSettings = !info.session.settings.isEmpty || !info.session.namedStatements.isEmpty
    }
}
