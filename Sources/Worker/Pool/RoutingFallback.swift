// standby_reads_fallback (issue 20): what a read bound for a standby does when no standby is usable —
// the primary (Routing.swift's `.fallback`), a wait in the pool's queue, or an error at once.
import Shared

extension Worker {
    /// The error a refused read gets (standby_reads_fallback=error): 57P03 cannot_connect_now, a transient
    /// condition drivers and applications retry, as PostgreSQL gives it while a server cannot take a
    /// session yet. ERROR, not FATAL: the client stays connected.
    func noStandbyError(_ pi: Int) -> ErrorFields {
        ErrorFields(severity: "ERROR", code: SQLState.cannotConnectNow,
                    message: "no standby is usable for this read of database \"\(pools[pi].database)\"",
                    detail: "Every standby is down, lagging over max_standby_lag or not checked yet, and "
                        + "standby_reads_fallback is error.",
                    hint: "Retry later, or send the statement to the primary with /* pgswift:primary */.")
    }

    /// `routeTransaction`'s refusal of a read (the message is whole: it was classified): consumed, answered
    /// with `noStandbyError`; a simple Query also with ReadyForQuery, an extended-protocol one (Parse or
    /// Bind) skips the client's messages up to its Sync, as PostgreSQL does after an error.
    func refuseRead(_ ci: Int32, _ type: UInt8, total: Int) -> ScanStep {
        let scan = clients[ci].io.input.scan &+ total
        clients[ci].io.input.start = scan
        clients[ci].io.input.scan = scan
        routes.pointee.retryQuery[Int(ci)].removeAll(keepingCapacity: true)
        routes.pointee.want[Int(ci)] = .any
        sendClientError(ci, noStandbyError(Int(clients[ci].pool)), close: false)
        if type == FrontendType.query {
            readyAfterRefusal(ci)
        } else {
            routes.pointee.refusing[Int(ci)] = clients[ci].id
        }
        return clients[ci].state == .idle ? .next : .done(.stop)
    }

    /// A message after a refused extended-protocol read, before its Sync: consumed unseen (one larger than
    /// what is buffered is dropped as it arrives); the Sync ends it with ReadyForQuery.
    func skipRefused(_ ci: Int32, _ type: UInt8, total: Int, avail: Int) -> ScanStep {
        var scan = clients[ci].io.input.scan
        if total > avail {
            clients[ci].io.input.partial = total &- avail
            clients[ci].partialMode = .drop
            scan &+= avail
        } else {
            scan &+= total
        }
        clients[ci].io.input.start = scan
        clients[ci].io.input.scan = scan
        if type == FrontendType.sync {
            routes.pointee.refusing[Int(ci)] = 0
            readyAfterRefusal(ci)
        }
        return clients[ci].state == .idle ? .next : .done(.stop)
    }

    private func readyAfterRefusal(_ ci: Int32) {
        guard clients[ci].state == .idle else { return }
        scratch.clear()
        Backend.readyForQuery(into: &scratch, status: UInt8(ascii: "I"))
        clients[ci].io.out.append(scratch)
        flushClient(ci)
    }

    /// A read waits for a standby and none is usable (standby_reads_fallback=wait): no server of the other
    /// role closes to make room for it.
    @inline(__always)
    func waitsForStandby(_ pi: Int, _ want: RouteTarget) -> Bool {
        want.wantsStandby && !routes.pointee.pools[pi]!.standbyUsable
    }

    /// Every client waiting in pool `pi` is a read waiting for a standby while none is usable: a freed
    /// server closing to make room would only be opened again (to the primary) and closed, over and over.
    func onlyParkedReadsWait(_ pi: Int) -> Bool {
        guard !routes.pointee.pools[pi]!.standbyUsable else { return false }
        var ci = pools[pi].waiting.head
        while ci >= 0 {
            if !wantOf(ci).wantsStandby { return false }
            ci = clients[ci].links.next
        }
        return true
    }

    /// Pool `pi` has no usable standby left (a health report): the reads waiting for one go to the primary
    /// (`primary`), keep waiting (`wait`: query_wait_timeout bounds it), or are refused (`error`: each
    /// leaves the queue and its Query or Parse is scanned again, which now refuses it).
    func standbysGone(_ pi: Int) {
        let fallback = routes.pointee.pools[pi]!.fallback
        if fallback == .wait { return }
        var refused: [Int32] = []
        var ci = pools[pi].waiting.head
        while ci >= 0 {
            if wantOf(ci) == .read {
                if fallback == .primary { routes.pointee.want[Int(ci)] = .fallback } else { refused.append(ci) }
            }
            ci = clients[ci].links.next
        }
        // Collected first: scanning a client may link, queue or fail others.
        let ids = refused.map { clients[$0].id }
        for (ci, id) in zip(refused, ids) where clients[ci].id == id && clients[ci].state == .waitServer && wantOf(ci) == .read {
            setClientState(ci, .idle)
            clientData(ci)
        }
    }
}
