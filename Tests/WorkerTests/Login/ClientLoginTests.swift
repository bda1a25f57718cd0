// Client login through a real worker loop (ClientLogin.swift): startup packets, refusals, SSL/GSS
// requests, authentication order. No PostgreSQL: the server side is scripted (Support/).
import XCTest
@testable import Worker
import Shared

final class ClientLoginTests: WorkerHarnessCase {
    func testTrustLoginGetsWelcomeParametersKeyAndReady() throws {
        try start()
        let c = h.login()
        // login() read up to ReadyForQuery; check the whole sequence on a second client.
        _ = c
        let d = h.connect()
        d.send(FE.startup(user: "u", database: "db", [("application_name", "mine")]))
        let msgs = h.readUntilReady(d)
        XCTAssertEqual(msgs.map { $0.char }.first, "R")
        XCTAssertEqual(msgs.first?.body, [0, 0, 0, 0], "AuthenticationOk")
        let params = Dictionary(msgs.filter { $0.char == "S" }.map { ($0.strings[0], $0.strings[1]) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(params["server_version"], "16.4", "the pool's welcome set comes from the server")
        XCTAssertEqual(params["application_name"], "mine", "a tracked parameter echoes the client's own value")
        XCTAssertEqual(msgs.filter { $0.char == "K" }.count, 1)
        XCTAssertEqual(msgs.last?.status, "I")
        XCTAssertEqual(h.servers.count, 1, "one server login serves both clients' welcome")
        XCTAssertEqual(h.servers[0].startup?["user"], "u")
        XCTAssertEqual(h.servers[0].startup?["database"], "db")
    }

    func testStartupLengthBelowEightIsRefused() throws {
        try start()
        let c = h.connect()
        c.send([0, 0, 0, 4, 0, 3, 0, 0])
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.count, 1, "\(msgs)")
        XCTAssertEqual(msgs.first?.sqlState, SQLState.protocolViolation)
        XCTAssertEqual(msgs.first?.error?.severity, "FATAL")
        XCTAssertTrue(h.servers.isEmpty)
    }

    func testStartupLengthAboveTheLimitIsRefusedBeforeItArrives() throws {
        try start()
        let c = h.connect()
        c.send(TestWire.int32(Int32(Wire.maxStartupPacketLength + 1)) + TestWire.int32(Wire.protocolVersion3))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.protocolViolation], "\(msgs)")
        XCTAssertTrue(msgs.first?.error?.message.contains("startup packet") ?? false, "\(msgs)")
    }

    func testUnknownDatabaseIsToldOnlyAfterAuthentication() throws {
        try start(["auth_type": "plain"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "nosuch"))
        let ask = h.read(c, 1)
        XCTAssertEqual(ask.first?.char, "R")
        XCTAssertEqual(ask.first?.body, [0, 0, 0, 3], "a cleartext password request, as for a known database")
        c.send(FE.password("pw"))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.invalidCatalogName], "\(msgs)")
        XCTAssertTrue(h.servers.isEmpty, "no server connection for an unknown database")
    }

    func testWrongPasswordForAnUnknownDatabaseDoesNotRevealIt() throws {
        try start(["auth_type": "plain"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "nosuch"))
        _ = h.read(c, 1)
        c.send(FE.password("wrong"))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.invalidPassword], "\(msgs)")
    }

    func testPlainPasswordLogin() throws {
        try start(["auth_type": "plain"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.read(c, 1).first?.body, [0, 0, 0, 3])
        c.send(FE.password("pw"))
        let msgs = h.readUntilReady(c)
        XCTAssertEqual(msgs.first?.body, [0, 0, 0, 0], "\(msgs)")
        XCTAssertEqual(msgs.last?.status, "I")
    }

    func testSSLRequestIsAnsweredNWithoutTLSAndLoginGoesOn() throws {
        try start()
        let c = h.connect(tcp: true)
        c.send(FE.sslRequest)
        var answer: [UInt8]? = nil
        h.waitUntil("the SSL answer") { answer = c.reader.take(1); return answer != nil }
        XCTAssertEqual(answer, [UInt8(ascii: "N")])
        c.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
    }

    func testGSSEncRequestIsAnsweredN() throws {
        try start()
        let c = h.connect()
        c.send(FE.gssEncRequest)
        var answer: [UInt8]? = nil
        h.waitUntil("the GSS answer") { answer = c.reader.take(1); return answer != nil }
        XCTAssertEqual(answer, [UInt8(ascii: "N")])
        c.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
    }

    func testTrustLetsInOnlyUsersOfTheAuthFile() throws {
        try start()
        let c = h.connect()
        c.send(FE.startup(user: "stranger", database: "db"))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.protocolViolation], "\(msgs)")
        XCTAssertEqual(msgs.first?.error?.message, "\"trust\" authentication failed")
        XCTAssertTrue(h.servers.isEmpty)
    }

    func testUnsupportedStartupParameterIsRefused() throws {
        try start()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", [("work_mem", "1GB")]))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.protocolViolation], "\(msgs)")
        XCTAssertTrue(msgs.first?.error?.message.contains("work_mem") ?? false)
    }

    func testIgnoredStartupParameterIsAccepted() throws {
        try start(["ignore_startup_parameters": "extra_float_digits"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", [("extra_float_digits", "3")]))
        XCTAssertEqual(h.readUntilReady(c).last?.status, "I")
    }

    // MARK: The options startup parameter (PgBouncer 1.20+)

    /// `-c name=value` and `--name=value` in options are startup parameters of their own: tracked
    /// ones are SET on the client's server at link, as if sent alone.
    func testOptionsPairsFollowTheClientLikeStartupParameters() throws {
        try start()
        let a = h.login([("options", "-c search_path=x --application_name=opt\\ app")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s, 2).map { $0.firstString },
                       ["SET application_name='opt app';SET search_path='x';", "select 1"])
    }

    /// An untracked name, or anything but pairs, refuses the client with PgBouncer's FATAL 08P01.
    func testOptionsWithAnUnknownNameOrAnotherSwitchAreRefused() throws {
        try start()
        for (options, message) in [
            ("-c enable_seqscan=off", "unsupported startup parameter in options: enable_seqscan"),
            ("-d", StartupOptions.unsupportedMessage),
            ("-c timezone", StartupOptions.unsupportedMessage),
        ] {
            let c = h.connect()
            c.send(FE.startup(user: "u", database: "db", [("options", options)]))
            let msgs = h.readUntilClosed(c)
            XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.protocolViolation], "\(options): \(msgs)")
            XCTAssertEqual(msgs.first?.error?.message, message, options)
        }
    }

    /// ignore_startup_parameters drops a listed name found in options; listing `options` drops every
    /// unknown name in it, but the syntax is still checked and tracked names still apply.
    func testIgnoredNamesInOptionsAreDropped() throws {
        try start(["ignore_startup_parameters": "extra_float_digits"])
        XCTAssertEqual(h.readUntilReady(sendStartup(("options", "-c extra_float_digits=3"))).last?.status, "I")
        try start(["ignore_startup_parameters": "options"])
        let a = h.login([("options", "-c enable_seqscan=off -c TimeZone=Europe/Paris")])
        let s = try XCTUnwrap(h.waitServers(1))
        a.send(FE.query("select 1"))
        XCTAssertEqual(h.next(s)?.firstString, "SET TimeZone='Europe/Paris';")
        let bad = h.readUntilClosed(sendStartup(("options", "-d")))
        XCTAssertEqual(bad.first?.error?.message, StartupOptions.unsupportedMessage, "\(bad)")
    }

    private func sendStartup(_ param: (String, String)) -> Peer {
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", [param]))
        return c
    }

    func testStartupWithoutUserIsRefused() throws {
        try start()
        let c = h.connect()
        c.send(TestWire.encode { Frontend.startupMessage(into: &$0, parameters: [("database", "db")]) })
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.invalidAuthorizationSpecification], "\(msgs)")
    }

    func testNewerProtocolMinorIsNegotiatedDownToZero() throws {
        try start()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db", [("_pq_.made_up", "x")], minor: 2))
        let msgs = h.readUntilReady(c)
        let v = msgs.first { $0.char == "v" }
        XCTAssertNotNil(v, "NegotiateProtocolVersion expected: \(msgs)")
        if let v {
            XCTAssertEqual(TestWire.readInt32(v.body, 0), Wire.protocolVersion3, "newest minor 0")
            XCTAssertEqual(TestWire.readInt32(v.body, 4), 1, "one unrecognised option")
            XCTAssertEqual(TestWire.cString(v.body, from: 8).0, "_pq_.made_up")
        }
        XCTAssertEqual(msgs.last?.status, "I")
    }

    func testUnsupportedMajorProtocolIsRefused() throws {
        try start()
        let c = h.connect()
        c.send(TestWire.encode { Frontend.startupMessage(into: &$0, parameters: [("user", "u")], protocolVersion: 4 << 16) })
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.featureNotSupported], "\(msgs)")
    }

    func testTerminateDuringAuthenticationClosesQuietly() throws {
        try start(["auth_type": "plain"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.read(c, 1).first?.char, "R")
        c.send(FE.terminate)
        XCTAssertEqual(h.readUntilClosed(c), [])
    }

    func testPasswordMessageLargerThanTheBufferIsRefusedAtOnce() throws {
        try start(["auth_type": "plain"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        _ = h.read(c, 1)
        // Only the header: pgswift must not wait for 40 KB it could never buffer.
        c.send([UInt8(ascii: "p")] + TestWire.int32(40_000))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.protocolViolation], "\(msgs)")
    }

    /// What only a login needs (the SCRAM exchange, the secret, the database entry) is held while the
    /// client logs in and dropped once it has: a logged-in idle client carries none of it (the bench's
    /// idle scenario counts these bytes once per connection).
    func testLoginStateIsHeldDuringLoginAndDroppedAfter() throws {
        try start(["auth_type": "scram-sha-256"])
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let ask = h.read(c, 1)
        XCTAssertEqual(ask.first?.char, "R")
        XCTAssertEqual(ask.first.map { Array($0.body.prefix(4)) }, [0, 0, 0, 10], "AuthenticationSASL")
        let worker = h.worker
        let ci = try XCTUnwrap(worker.clients.indices.first { worker.clients[$0].state == .auth })
        let login = try XCTUnwrap(worker.clients[ci].info?.login, "a client logging in holds its login state")
        guard case .scram = login.auth else { return XCTFail("a SCRAM exchange in progress, not \(login.auth)") }
        XCTAssertNotNil(login.entry)
        XCTAssertNotNil(login.secret)

        var scram = ScramClientExchange(credential: .password("pw"), cache: nil)
        c.send(TestWire.encode { Frontend.saslInitialResponse(into: &$0, mechanism: "SCRAM-SHA-256", data: scram.clientFirstMessage()) })
        let serverFirst = try XCTUnwrap(h.read(c, 1).first)
        XCTAssertEqual(Array(serverFirst.body.prefix(4)), [0, 0, 0, 11], "AuthenticationSASLContinue")
        let final = try scram.receiveServerFirst(Array(serverFirst.body.dropFirst(4))).get()
        c.send(TestWire.encode { Frontend.saslResponse(into: &$0, data: final) })
        let msgs = h.readUntilReady(c)
        XCTAssertEqual(msgs.first.map { Array($0.body.prefix(4)) }, [0, 0, 0, 12], "AuthenticationSASLFinal: \(msgs)")
        XCTAssertEqual(msgs.last?.status, "I")
        XCTAssertEqual(worker.clients[ci].state, .idle)
        XCTAssertNotNil(worker.clients[ci].info, "the session details stay")
        XCTAssertNil(worker.clients[ci].info?.login, "the login state went with the login")
    }

    /// As PgBouncer: the client over max_client_conn is refused once its startup packet came (not at
    /// accept, where a TLS-asking client would read the error as the answer to its SSLRequest), and a
    /// login that goes away before that holds no place: the count stays exact.
    func testMaxClientConnRefusesTheNextClientAfterItsStartupPacket() throws {
        let a = try startFull()
        let quiet = h.connect()
        h.settle(turns: 5)
        quiet.close()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.tooManyConnections], "\(msgs)")
        XCTAssertEqual(msgs.first?.error?.message, "no more connections allowed (max_client_conn)")
        // One of the two leaves: exactly one place is free again.
        a.send(FE.terminate)
        h.waitUntil("the first client to leave") { h.worker.clients.used == 1 }
        h.login()
        assertNextClientRefused()
    }

    /// A place freed between the accept and the startup packet (with several workers: a client that
    /// left on another worker just before this one connected) is the late client's: it logs in, and
    /// the count stays exact.
    func testAPlaceFreedBeforeTheStartupPacketLetsTheClientIn() throws {
        let a = try startFull()
        let c = h.connect()
        h.settle(turns: 5)
        a.send(FE.terminate)
        h.waitUntil("the first client to leave") { h.worker.clients.used == 2 }
        c.send(FE.startup(user: "u", database: "db"))
        let msgs = h.readUntilReady(c)
        XCTAssertEqual(msgs.last?.status, "I", "\(msgs)")
        assertNextClientRefused()
    }

    /// The last place is freed by another worker just after this client's startup packet (its client
    /// closed as this one connected, PgBouncer's test_max_client_conn): one janitor tick later the
    /// client is let in rather than refused.
    func testAPlaceFreedOnAnotherWorkerJustAfterTheStartupPacketLetsTheClientIn() throws {
        let counter = try startFullWithAnotherWorkersClient()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db"))
        waitForAKeptStartupPacket()
        counter.release(slot: 2)
        let msgs = h.readUntilReady(c)
        XCTAssertEqual(msgs.last?.status, "I", "\(msgs)")
        assertNextClientRefused()
    }

    /// While its startup packet is kept for a tick, what the client sent behind it waits unread: a Query
    /// pipelined behind the packet starts no second login and is not lost; it runs once the client is in.
    func testAQueryPipelinedBehindAKeptStartupPacketRunsOnceTheClientIsIn() throws {
        let counter = try startFullWithAnotherWorkersClient()
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db") + FE.query("select 42"))
        waitForAKeptStartupPacket()
        counter.release(slot: 2)
        let login = h.readUntilReady(c)
        XCTAssertEqual(login.filter { $0.char == "E" }, [], "\(login)")
        XCTAssertEqual(login.last?.status, "I", "\(login)")
        let s = try XCTUnwrap(h.waitServers(1))
        h.answerQuery(s, expect: "select 42", value: "42")
        let answer = h.readUntilReady(c)
        XCTAssertEqual(answer.last?.status, "I", "\(answer)")
        XCTAssertTrue(answer.contains { $0.char == "D" }, "the row reached the client: \(answer)")
    }

    /// Refused after its tick, such a client gets one FATAL 53300 and is closed, whatever followed its
    /// packet (a second startup packet, bytes that are no message at all): none of it was read.
    func testAKeptStartupPacketThatIsRefusedGetsOneErrorWhateverFollowedIt() throws {
        _ = try startFullWithAnotherWorkersClient()
        let servers = h.servers.count
        let c = h.connect()
        c.send(FE.startup(user: "u", database: "db") + FE.startup(user: "v", database: "db")
               + [UInt8](repeating: 0xFF, count: 3000))
        let msgs = h.readUntilClosed(c)
        XCTAssertEqual(msgs.map { $0.sqlState }, [SQLState.tooManyConnections], "\(msgs)")
        h.settle()
        XCTAssertEqual(h.servers.count, servers, "no server was opened for it")
    }

    /// max_client_conn = 2, counted across workers in a shared counter: one client logged in here,
    /// the other place held by "another worker's" client (slot 2, freed with `release(slot: 2)`).
    private func startFullWithAnotherWorkersClient() throws -> ClientCounter {
        try start(["max_client_conn": "2"])
        let counter = try ClientCounter.create()
        addTeardownBlock { Posix.close(counter.fd) }
        h.worker.limits.counter = counter
        h.worker.limits.counterWord = 1
        h.login()
        counter.acquireUnchecked(slot: 2)
        return counter
    }

    private func waitForAKeptStartupPacket() {
        let w = h.worker
        h.waitUntil("the startup packet kept for a tick") {
            (0..<Int32(w.clients.capacity)).contains { w.clients[$0].info?.login?.deferredStartup != nil }
        }
    }

    /// max_client_conn = 2 with both places taken by logged-in clients: the first of them.
    private func startFull() throws -> Peer {
        try start(["max_client_conn": "2"])
        let first = h.login()
        h.login()
        return first
    }

    /// A new client is refused with 53300 once its startup packet came: no place is free.
    private func assertNextClientRefused(file: StaticString = #filePath, line: UInt = #line) {
        let d = h.connect()
        d.send(FE.startup(user: "u", database: "db"))
        XCTAssertEqual(h.readUntilClosed(d).map { $0.sqlState }, [SQLState.tooManyConnections], file: file, line: line)
    }
}

/// A database with a forced user=: one pool, whoever logs in (PgBouncer's get_pool with the forced
/// credentials), so its pool_size bounds all its clients together.
final class ForcedUserPoolTests: WorkerHarnessCase {
    func testClientsOfAForcedUserDatabaseShareOnePool() throws {
        try start(databaseOptions: "user=realuser pool_size=1")
        let a = h.login(user: "u")
        let b = h.login(user: "v")
        let worker = h.worker
        let used = worker.pools.indices.filter { worker.pools[$0].database == "db" }
        XCTAssertEqual(used.count, 1, "one pool for both client users")
        XCTAssertEqual(used.first.map { h.worker.pools[$0].user }, "realuser")
        XCTAssertEqual(used.first.map { h.worker.pools[$0].clientCount }, 2)
        a.send(FE.query("begin"))
        let s = try XCTUnwrap(h.waitServers(1))
        _ = h.answerQuery(s, expect: "begin", status: "T")
        XCTAssertEqual(h.readUntilReady(a).last?.status, "T")
        b.send(FE.query("select 1"))
        h.settle()
        XCTAssertEqual(h.servers.count, 1, "pool_size=1 holds for both users together: the second one queues")
        XCTAssertEqual(h.worker.pools[used[0]].waiting.count, 1)
        XCTAssertEqual(h.servers[0].startup?["user"], "realuser")
    }
}
