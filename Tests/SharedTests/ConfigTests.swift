// Tests of pgbouncer.ini parsing: defaults, value types, [databases]/[users], %include, errors, warnings.
import Foundation
import XCTest
@testable import Shared

final class ConfigTests: TemporaryFolderCase {
    override class var folderPrefix: String { "config" }

    private func parse(_ text: String, file: String = "test.ini") throws -> Config {
        try Config.parse(text: text, file: file)
    }

    private func parseError(_ text: String, file: String = "test.ini",
                            _ sourceLine: UInt = #line) -> ConfigError? {
        do {
            let c = try Config.parse(text: text, file: file)
            XCTFail("expected an error, got a config with \(c.databases.count) databases", line: sourceLine)
            return nil
        } catch {
            return error
        }
    }

    private func loadError(_ path: String, _ sourceLine: UInt = #line) -> ConfigError? {
        do {
            _ = try Config.load(path: path)
            XCTFail("expected an error loading \(path)", line: sourceLine)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Defaults

    /// PgBouncer's RELOAD closes a database's servers when its connection changed (loader.c's list);
    /// a new password or pool size does not.
    func testDatabaseEntryNeedsReconnect() {
        let old = DatabaseEntry(name: "p1", hosts: ["127.0.0.1"], ports: [5432], dbname: "p1", user: nil, password: "a")
        var e = old
        XCTAssertFalse(e.needsReconnect(from: old))
        e.password = "b"
        e.poolSize = 7
        XCTAssertFalse(e.needsReconnect(from: old), "password and pool size")
        for change: (inout DatabaseEntry) -> Void in [
            { $0.dbname = "p0" }, { $0.hosts = ["127.0.0.2"] }, { $0.ports = [6432] }, { $0.user = "u" },
            { $0.connectQuery = "select 1" }, { $0.authDbname = "authdb" }, { $0.authQuery = "select 2" },
            { $0.loadBalanceHosts = .disable },
        ] {
            var changed = old
            change(&changed)
            XCTAssertTrue(changed.needsReconnect(from: old), "\(changed)")
        }
        var same = old
        same.dbname = nil  // the server database is still "p1"
        XCTAssertFalse(same.needsReconnect(from: old))
    }

    func testDefaultsEqualPgBouncers() throws {
        let c = try parse("[pgbouncer]\n")
        XCTAssertEqual(c.listenAddr, [])
        XCTAssertEqual(c.listenPort, 6432)
        XCTAssertEqual(c.listenBacklog, 128)
        XCTAssertEqual(c.unixSocketDir, "/tmp")
        XCTAssertEqual(c.unixSocketMode, 0o777)
        XCTAssertEqual(c.unixSocketGroup, "")
        XCTAssertEqual(c.authType, .md5)
        XCTAssertNil(c.authFile)
        XCTAssertNil(c.authUser)
        XCTAssertTrue(c.authQuery.hasPrefix("SELECT rolname, CASE WHEN rolvaliduntil < now()"))
        XCTAssertEqual(c.adminUsers, [])
        XCTAssertEqual(c.statsUsers, [])
        XCTAssertEqual(c.poolMode, .session)
        XCTAssertEqual(c.defaultPoolSize, 20)
        XCTAssertEqual(c.minPoolSize, 0)
        XCTAssertEqual(c.reservePoolSize, 0)
        XCTAssertEqual(c.reservePoolTimeout, 5)
        XCTAssertEqual(c.maxClientConn, 100)
        XCTAssertEqual(c.maxDBConnections, 0)
        XCTAssertEqual(c.maxUserConnections, 0)
        XCTAssertEqual(c.serverResetQuery, "DISCARD ALL")
        XCTAssertFalse(c.serverResetQueryAlways)
        XCTAssertEqual(c.serverCheckQuery, "<empty>")
        XCTAssertEqual(c.serverCheckQueryToSend, "")
        XCTAssertEqual(c.serverCheckDelay, 30)
        XCTAssertEqual(c.scramIterations, 4096)
        XCTAssertEqual(c.serverIdleTimeout, 600)
        XCTAssertEqual(c.serverLifetime, 3600)
        XCTAssertEqual(c.serverConnectTimeout, 15)
        XCTAssertEqual(c.serverLoginRetry, 15)
        XCTAssertFalse(c.serverRoundRobin)
        XCTAssertEqual(c.clientLoginTimeout, 60)
        XCTAssertEqual(c.clientIdleTimeout, 0)
        XCTAssertEqual(c.idleTransactionTimeout, 0)
        XCTAssertEqual(c.queryTimeout, 0)
        XCTAssertEqual(c.queryWaitTimeout, 120)
        XCTAssertEqual(c.ignoreStartupParameters, [])
        XCTAssertEqual(c.trackExtraParameters, ["IntervalStyle"])
        XCTAssertEqual(c.maxPreparedStatements, 200)
        XCTAssertEqual(c.maxPacketSize, 2147483647)
        XCTAssertNil(c.logfile)
        XCTAssertNil(c.pidfile)
        XCTAssertTrue(c.logConnections)
        XCTAssertTrue(c.logDisconnections)
        XCTAssertTrue(c.logPoolerErrors)
        XCTAssertEqual(c.verbose, 0)
        XCTAssertEqual(c.statsPeriod, 60)
        XCTAssertFalse(c.applicationNameAddHost)
        XCTAssertFalse(c.soReuseport)
        XCTAssertTrue(c.tcpKeepalive)
        XCTAssertEqual(c.tcpKeepidle, 0)
        XCTAssertEqual(c.tcpKeepintvl, 0)
        XCTAssertEqual(c.tcpKeepcnt, 0)
        XCTAssertEqual(c.tcpUserTimeout, 0)
        XCTAssertEqual(c.dnsMaxTTL, 15)
        XCTAssertEqual(c.dnsNXDomainTTL, 15)
        XCTAssertEqual(c.clientTLS.mode, .disable)
        XCTAssertEqual(c.serverTLS.mode, .prefer)
        XCTAssertEqual(c.clientTLS.protocols, "secure")
        XCTAssertEqual(c.serverTLS.ciphers, "default")
        XCTAssertEqual(c.clientTLS.ecdhCurve, "auto")
        XCTAssertEqual(c.clientTLS.dheParams, "auto")
        // [pgswift]
        XCTAssertEqual(c.workers, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        XCTAssertNil(c.workerBinary)
        XCTAssertEqual(c.metricsListen, "")
        XCTAssertEqual(c.drainTimeout, 300)
        XCTAssertFalse(c.failFast, "off by default, as PgBouncer has no such thing")
        // The rest
        XCTAssertEqual(c.databases, [])
        XCTAssertNil(c.fallbackDatabase)
        XCTAssertTrue(c.users.isEmpty)
        XCTAssertEqual(c.configFile, "test.ini")
        XCTAssertEqual(c.warnings, [])
    }

    /// The table's PgBouncer default strings, parsed and stored, give the property initial values.
    func testKeyTableDefaultsAgreeWithPropertyDefaults() throws {
        for spec in ConfigKeySpec.pgbouncer + ConfigKeySpec.pgswift {
            guard let store = spec.store, let show = spec.show else { continue }
            if spec.name == "workers" { continue }  // depends on the machine
            var c = Config()
            let before = show(c)
            store(&c, try spec.parse(spec.defaultValue))
            XCTAssertEqual(show(c), before, "default of \(spec.name)")
        }
        let names = ConfigKeySpec.pgbouncer.map(\.name)
        XCTAssertEqual(names, names.sorted(), "PgBouncer keys stay in PgBouncer's alphabetical order")
        XCTAssertEqual(Set(names).count, names.count)
    }

    /// `Config.isImplemented` answers from the key table (which keys act is checked by
    /// ConfigReadersTests, through scripts/check-config-readers).
    func testIsImplementedAnswersFromTheKeyTable() {
        XCTAssertEqual(Config.isImplemented(key: "listen_port"), true)
        XCTAssertEqual(Config.isImplemented(key: "FAIL_FAST"), true, "any case")
        XCTAssertEqual(Config.isImplemented(key: "client_tls_sslmode"), true)
        XCTAssertEqual(Config.isImplemented(key: "client_tls_dheparams"), true)
        XCTAssertEqual(Config.isImplemented(key: "reserve_pool_timeout"), true)
        XCTAssertEqual(Config.isImplemented(key: "syslog"), true)
        XCTAssertEqual(Config.isImplemented(key: "disable_pqexec"), false)
        XCTAssertEqual(Config.isImplemented(key: "user"), false)
        XCTAssertNil(Config.isImplemented(key: "no_such_key"))
    }

    // MARK: Value formats

    func testEveryValueType() throws {
        let c = try parse("""
            ; comment
            # another comment
            [PgBouncer]
              Listen_Addr = 127.0.0.1, ::1 ,*
            listen_port=7000
            unix_socket_mode = 0700
            max_packet_size = 0x10000
            default_pool_size = 35
            log_connections = no
            log_disconnections = OFF
            log_pooler_errors = false
            so_reuseport = yes
            server_round_robin = on
            application_name_add_host = TRUE
            server_reset_query_always = 1
            tcp_keepalive = 0
            server_idle_timeout = 0.5
            query_wait_timeout = 15
            server_lifetime = 1e3
            admin_users = alice, bob
            stats_users = carol
            ignore_startup_parameters = extra_float_digits,options,
            track_extra_parameters =
            pool_mode = Transaction
            auth_type = SCRAM-SHA-256
            server_reset_query = DISCARD ALL; -- ; and # are plain text here
            unix_socket_dir =
            logfile = /var/log/pgswift.log
            """)
        XCTAssertEqual(c.listenAddr, ["127.0.0.1", "::1", "*"])
        XCTAssertEqual(c.listenPort, 7000)
        XCTAssertEqual(c.unixSocketMode, 0o700)
        XCTAssertEqual(c.maxPacketSize, 65536)
        XCTAssertEqual(c.defaultPoolSize, 35)
        XCTAssertFalse(c.logConnections)
        XCTAssertFalse(c.logDisconnections)
        XCTAssertFalse(c.logPoolerErrors)
        XCTAssertTrue(c.soReuseport)
        XCTAssertTrue(c.serverRoundRobin)
        XCTAssertTrue(c.applicationNameAddHost)
        XCTAssertTrue(c.serverResetQueryAlways)
        XCTAssertFalse(c.tcpKeepalive)
        XCTAssertEqual(c.serverIdleTimeout, 0.5)
        XCTAssertEqual(c.queryWaitTimeout, 15)
        XCTAssertEqual(c.serverLifetime, 1000)
        XCTAssertEqual(c.adminUsers, ["alice", "bob"])
        XCTAssertEqual(c.statsUsers, ["carol"])
        XCTAssertEqual(c.ignoreStartupParameters, ["extra_float_digits", "options"])
        XCTAssertEqual(c.trackExtraParameters, [])
        XCTAssertEqual(c.poolMode, .transaction)
        XCTAssertEqual(c.authType, .scramSHA256)
        XCTAssertEqual(c.serverResetQuery, "DISCARD ALL; -- ; and # are plain text here")
        XCTAssertEqual(c.unixSocketDir, "")
        XCTAssertEqual(c.logfile, "/var/log/pgswift.log")
        XCTAssertEqual(c.warnings, [])
        XCTAssertEqual(c.location(ofSetting: "LISTEN_PORT"), ConfigLocation(file: "test.ini", line: 5))
    }

    func testAllAuthTypeSpellings() throws {
        for t in AuthType.allCases {
            XCTAssertEqual(try parse("[pgbouncer]\nauth_type = \(t.rawValue)\n").authType, t)
        }
        XCTAssertEqual(AuthType.scramSHA256.rawValue, "scram-sha-256")
        XCTAssertEqual(Set(AuthType.allCases.map(\.rawValue)),
                       ["trust", "any", "plain", "md5", "scram-sha-256", "cert", "hba"])
    }

    /// An auth_type pgswift cannot do is a config error at its line, as PgBouncer refuses a value it was
    /// built without (pam, ldap) or does not have (peer is an hba method only), not a config under
    /// which every login fails.
    func testAuthTypesPgswiftCannotDoAreRefused() throws {
        let cases: [(String, String)] = [
            ("pam", "pgswift does not do PAM authentication"),
            ("ldap", "pgswift does not do LDAP authentication"),
            ("PEER", "peer is a method of auth_hba_file lines, not an auth_type"),
            ("kerberos", "expected one of: trust, any, plain, md5, scram-sha-256, cert, hba"),
        ]
        for (value, reason) in cases {
            let e = parseError("[pgbouncer]\nlisten_port = 1\nauth_type = \(value)\n")
            XCTAssertEqual(e?.line, 3, value)
            XCTAssertTrue(e?.message.hasPrefix("invalid value \"\(value)\" for auth_type: \(reason)") ?? false,
                          "\(value): \(String(describing: e))")
        }
        // The admin console's SET refuses them the same way.
        guard case .invalidValue(key: "auth_type", let reason) = ConfigOverride.check(key: "auth_type", value: "pam") else {
            return XCTFail("SET auth_type = pam must be refused")
        }
        XCTAssertTrue(reason.contains("PAM"), reason)
    }

    func testLaterValueWinsAndCRLFAndBOM() throws {
        let c = try parse("\u{FEFF}[pgbouncer]\r\nlisten_port = 1\r\nlisten_port = 2\r\n")
        XCTAssertEqual(c.listenPort, 2)
        XCTAssertEqual(c.location(ofSetting: "listen_port")?.line, 3)
    }

    func testPgswiftSection() throws {
        let c = try parse("""
            [pgbouncer]
            [pgswift]
            workers = 4
            worker_binary = /usr/libexec/pgswift-worker
            metrics_listen = 127.0.0.1:9127
            drain_timeout = 2.5
            fail_fast = yes
            """)
        XCTAssertEqual(c.workers, 4)
        XCTAssertEqual(c.workerBinary, "/usr/libexec/pgswift-worker")
        XCTAssertEqual(c.metricsListen, "127.0.0.1:9127")
        XCTAssertEqual(c.drainTimeout, 2.5)
        XCTAssertTrue(c.failFast)
        XCTAssertNil(try parse("[pgswift]\nworker_binary =\n").workerBinary)
    }

    func testServerCheckQueryForms() throws {
        XCTAssertNil(try parse("[pgbouncer]\nserver_check_query =\n").serverCheckQueryToSend)
        XCTAssertEqual(try parse("[pgbouncer]\nserver_check_query = select 1\n").serverCheckQueryToSend, "select 1")
    }

    // MARK: [databases]

    func testConnectionStrings() throws {
        let c = try parse("""
            [pgbouncer]
            [databases]
            app = host=db1.example.com port=5433 dbname=app_prod user=app password='it''s secret' pool_size=10
            multi = host='10.0.0.1, 10.0.0.2,10.0.0.3' port=5432,5433,5434 load_balance_hosts=disable
            shared = host=a,b port=6000
            sock = host=/var/run/postgresql dbname=x
            tuned = min_pool_size=2 reserve_pool=3 max_db_connections=50 pool_mode=statement auth_user=authy
            params = client_encoding=UTF8 datestyle='ISO, MDY' timezone=UTC application_name=app connect_query='SELECT 1'
            spaced  =   host = h1   port =  5439
            "weird ""name"" db" = dbname=w
            app2 = reserve_pool_size=4 pool_size=-1
            """)
        XCTAssertEqual(c.databases.map(\.name), ["app", "multi", "shared", "sock", "tuned", "params", "spaced",
                                                 "weird \"name\" db", "app2"])
        let app = try XCTUnwrap(c.database(named: "app"))
        XCTAssertEqual(app, DatabaseEntry(name: "app", hosts: ["db1.example.com"], ports: [5433], dbname: "app_prod",
                                          user: "app", password: "it's secret", poolSize: 10, line: 3,
                                          file: "test.ini"))
        XCTAssertEqual(app.serverDatabaseName, "app_prod")

        let multi = try XCTUnwrap(c.database(named: "multi"))
        XCTAssertEqual(multi.hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        XCTAssertEqual(multi.ports, [5432, 5433, 5434])
        XCTAssertEqual(multi.port(forHostAt: 2), 5434)
        XCTAssertEqual(multi.loadBalanceHosts, .disable)
        XCTAssertEqual(multi.serverDatabaseName, "multi")

        let shared = try XCTUnwrap(c.database(named: "shared"))
        XCTAssertEqual(shared.hosts, ["a", "b"])
        XCTAssertEqual(shared.port(forHostAt: 1), 6000)
        XCTAssertEqual(shared.loadBalanceHosts, .roundRobin)

        let sock = try XCTUnwrap(c.database(named: "sock"))
        XCTAssertTrue(DatabaseEntry.isUnixSocket(sock.hosts[0]))
        XCTAssertFalse(DatabaseEntry.isUnixSocket("db1"))
        XCTAssertEqual(sock.ports, [5432])

        let tuned = try XCTUnwrap(c.database(named: "tuned"))
        XCTAssertEqual(tuned.hosts, [])
        XCTAssertEqual(tuned.minPoolSize, 2)
        XCTAssertEqual(tuned.reservePoolSize, 3)
        XCTAssertEqual(tuned.maxDBConnections, 50)
        XCTAssertEqual(tuned.poolMode, .statement)
        XCTAssertEqual(tuned.authUser, "authy")

        let params = try XCTUnwrap(c.database(named: "params"))
        XCTAssertEqual(params.startupParameters, [
            ConnParam(name: "client_encoding", value: "UTF8"),
            ConnParam(name: "datestyle", value: "ISO, MDY"),
            ConnParam(name: "timezone", value: "UTC"),
            ConnParam(name: "application_name", value: "app"),
        ])
        XCTAssertEqual(params.connectQuery, "SELECT 1")

        let spaced = try XCTUnwrap(c.database(named: "spaced"))
        XCTAssertEqual(spaced.hosts, ["h1"])
        XCTAssertEqual(spaced.ports, [5439])
        XCTAssertEqual(c.database(named: "weird \"name\" db")?.dbname, "w")
        let app2 = try XCTUnwrap(c.database(named: "app2"))
        XCTAssertEqual(app2.reservePoolSize, 4)
        XCTAssertNil(app2.poolSize, "-1 means inherit, as in PgBouncer")
        XCTAssertNil(c.database(named: "APP"), "database names are case-sensitive")
        XCTAssertNil(c.database(named: "missing"))
        XCTAssertNil(c.fallbackDatabase)
    }

    func testFallbackDatabaseAndRedefinition() throws {
        let c = try parse("""
            [databases]
            a = host=one
            * = host=fallback.example.com port=5433
            a = host=two
            """)
        XCTAssertEqual(c.databases.count, 1)
        XCTAssertEqual(c.database(named: "a")?.hosts, ["two"], "a later definition replaces the earlier one")
        XCTAssertEqual(c.database(named: "a")?.line, 4)
        let other = try XCTUnwrap(c.database(named: "reports"))
        XCTAssertEqual(other.name, "reports")
        XCTAssertEqual(other.serverDatabaseName, "reports")
        XCTAssertEqual(other.hosts, ["fallback.example.com"])
        XCTAssertEqual(other.ports, [5433])
        XCTAssertEqual(c.fallbackDatabase?.name, "*")
    }

    /// max_db_client_connections and max_user_client_connections, global, per database and per user:
    /// a positive own value beats the global one, 0 or -1 inherits it (PgBouncer 1.25's
    /// `database_max_client_connections` and `user_client_max_connections`).
    func testClientConnectionLimits() throws {
        let c = try parse("""
            [pgbouncer]
            max_db_client_connections = 10
            max_user_client_connections = 4
            [databases]
            small = host=h max_db_client_connections=2
            zero = host=h max_db_client_connections=0
            unset = host=h max_db_client_connections=-1
            plain = host=h
            [users]
            alice = max_user_client_connections=1
            bob = max_user_client_connections=0
            """)
        XCTAssertEqual(c.warnings, [])
        XCTAssertEqual(c.effectiveMaxDBClientConnections(database: c.database(named: "small")), 2)
        XCTAssertEqual(c.effectiveMaxDBClientConnections(database: c.database(named: "zero")), 10)
        XCTAssertEqual(c.effectiveMaxDBClientConnections(database: c.database(named: "unset")), 10)
        XCTAssertEqual(c.effectiveMaxDBClientConnections(database: c.database(named: "plain")), 10)
        XCTAssertEqual(c.effectiveMaxDBClientConnections(database: nil), 10, "the admin console has the global one")
        XCTAssertEqual(c.effectiveMaxUserClientConnections(user: "alice"), 1)
        XCTAssertEqual(c.effectiveMaxUserClientConnections(user: "bob"), 4)
        XCTAssertEqual(c.effectiveMaxUserClientConnections(user: "carol"), 4)
        let none = try parse("[pgbouncer]\n[databases]\nd = host=h\n")
        XCTAssertEqual(none.effectiveMaxDBClientConnections(database: none.database(named: "d")), 0, "default: unlimited")
        XCTAssertEqual(none.effectiveMaxUserClientConnections(user: "u"), 0)
        XCTAssertEqual(Config.isImplemented(key: "max_db_client_connections"), true)
        XCTAssertEqual(Config.isImplemented(key: "max_user_client_connections"), true)
        XCTAssertThrowsError(try parse("[databases]\nd = host=h max_db_client_connections=many\n"))
        XCTAssertThrowsError(try parse("[pgbouncer]\nmax_user_client_connections = -1\n"))
    }

    /// PgBouncer 1.25's query_wait_timeout: the client's `[users]` value, else its database's, else
    /// the global one; a level set to 0 is off and beats the levels below; -1 is "not set".
    func testQueryWaitTimeoutUserBeatsDatabaseBeatsGlobal() throws {
        let c = try parse("""
            [pgbouncer]
            query_wait_timeout = 120
            [databases]
            fast = host=h query_wait_timeout=2
            off = host=h query_wait_timeout=0
            unset = host=h query_wait_timeout=-1
            plain = host=h
            forced = host=h user=owner query_wait_timeout=7
            [users]
            patient = query_wait_timeout=0
            quick = query_wait_timeout=1.5
            owner = query_wait_timeout=9
            shrug = query_wait_timeout=-1
            """)
        XCTAssertEqual(c.warnings, [])
        func wait(_ db: String, _ user: String) -> Double {
            c.effectiveQueryWaitTimeout(database: c.database(named: db), user: user)
        }
        XCTAssertEqual(wait("plain", "bob"), 120)
        XCTAssertEqual(wait("fast", "bob"), 2, "the database's value beats the global one")
        XCTAssertEqual(wait("off", "bob"), 0, "a database's 0 turns it off")
        XCTAssertEqual(wait("unset", "bob"), 120, "-1 is not set")
        XCTAssertEqual(wait("fast", "quick"), 1.5, "the user's value beats the database's")
        XCTAssertEqual(wait("fast", "patient"), 0, "a user's 0 turns it off over the database's")
        XCTAssertEqual(wait("fast", "shrug"), 2)
        XCTAssertEqual(wait("forced", "bob"), 7, "the login user counts, not the forced user")
        XCTAssertEqual(wait("forced", "quick"), 1.5)
        XCTAssertNil(c.users["shrug"]?.queryWaitTimeout)
        XCTAssertThrowsError(try parse("[databases]\nx = host=h query_wait_timeout=soon\n"))
    }

    /// Keys that act load without a warning ([databases] session defaults, connect_query, a curve);
    /// `client_tls_ecdhcurve = none`, which PgBouncer documents as turning ECDH off and which turns
    /// nothing off with OpenSSL 1.1 and later, warns at its line.
    func testActingKeysDoNotWarnAndAnEcdhCurveOfNoneDoes() throws {
        let c = try parse("""
            [pgbouncer]
            client_tls_ecdhcurve = secp384r1
            client_tls_dheparams = none
            [databases]
            d = host=h connect_query='SELECT 1' client_encoding=UTF8 datestyle=ISO timezone=UTC application_name=a
            """)
        XCTAssertEqual(c.warnings, [])
        XCTAssertEqual(c.clientTLS.ecdhCurve, "secp384r1")
        XCTAssertEqual(c.clientTLS.dheParams, "none")
        XCTAssertEqual(c.database(named: "d")?.connectQuery, "SELECT 1")
        let none = try parse("[pgbouncer]\nlisten_port = 1\nclient_tls_ecdhcurve = None\n")
        XCTAssertEqual(none.warnings.map(\.line), [3])
        XCTAssertTrue(none.warnings.first?.message.contains("does not turn ECDHE off") == true, "\(none.warnings)")
    }

    /// reserve_pool_size and reserve_pool_timeout (PgBouncer 1.25): global, per database (also under
    /// the older name `reserve_pool`) and per user, without a warning; `reserve_pool` in [users] is
    /// an error naming it, as PgBouncer's "unrecognized user parameter". The user's value beats the
    /// database's, which beats the global one; a set 0 is a value, not "inherit".
    func testReservePoolKeysAndWhichValueApplies() throws {
        let c = try parse("""
            [pgbouncer]
            reserve_pool_size = 3
            reserve_pool_timeout = 2.5
            [databases]
            d = host=h reserve_pool=1
            e = host=h reserve_pool_size=2
            z = host=h reserve_pool_size=0
            plain = host=h
            forced = host=h user=u reserve_pool_size=7
            [users]
            u = reserve_pool_size=4 pool_size=5
            """)
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
        XCTAssertEqual(c.reservePoolSize, 3)
        XCTAssertEqual(c.reservePoolTimeout, 2.5)
        XCTAssertEqual(c.users["u"]?.reservePoolSize, 4)
        XCTAssertEqual(c.users["u"]?.poolSize, 5)
        XCTAssertEqual(c.effectiveReservePoolSize(database: c.database(named: "d"), user: "bob"), 1)
        XCTAssertEqual(c.effectiveReservePoolSize(database: c.database(named: "e"), user: "bob"), 2)
        XCTAssertEqual(c.effectiveReservePoolSize(database: c.database(named: "z"), user: "bob"), 0)
        XCTAssertEqual(c.effectiveReservePoolSize(database: c.database(named: "plain"), user: "bob"), 3)
        XCTAssertEqual(c.effectiveReservePoolSize(database: c.database(named: "z"), user: "u"), 4, "user beats database")
        XCTAssertEqual(c.effectiveReservePoolSize(database: c.database(named: "forced"), user: "bob"), 4,
                       "the forced user's entry")
        XCTAssertEqual(Config.isImplemented(key: "reserve_pool_size"), true)
        var off = c
        off.reservePoolTimeout = 0
        XCTAssertEqual(off.effectiveReservePoolSize(database: c.database(named: "e"), user: "u"), 0,
                       "reserve_pool_timeout 0 turns the reserve off")
        let err = parseError("[users]\nu = reserve_pool=2\n")
        XCTAssertEqual(err?.line, 2)
        XCTAssertTrue(err?.message.contains("unrecognized user parameter \"reserve_pool\"") ?? false, "\(String(describing: err))")
        XCTAssertEqual(parseError("[databases]\nd = host=h reserve_pool_size=x\n")?.line, 2)
        XCTAssertEqual(parseError("[pgbouncer]\nreserve_pool_timeout = soon\n")?.line, 2)
    }

    // MARK: [users] and effective settings

    /// PgBouncer 1.25's per-user timeouts and per-database server_lifetime: a positive value beats the
    /// global one, 0 inherits it; the pool user is the database's forced user when it has one.
    func testPerUserAndPerDatabaseTimeouts() throws {
        let c = try parse("""
            [pgbouncer]
            query_timeout = 100
            idle_transaction_timeout = 30
            client_idle_timeout = 50
            server_lifetime = 3600
            [databases]
            short = host=h server_lifetime=20
            plain = host=h
            forced = host=h user=svc
            [users]
            bob = query_timeout=1 transaction_timeout=2 idle_transaction_timeout=3 client_idle_timeout=4.5
            carol = query_timeout=0
            svc = transaction_timeout=9
            """)
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
        XCTAssertEqual(c.transactionTimeout, 0)
        XCTAssertEqual(c.users["bob"], UserEntry(name: "bob", queryTimeout: 1, transactionTimeout: 2,
                                                 idleTransactionTimeout: 3, clientIdleTimeout: 4.5))
        let plain = c.database(named: "plain"), short = c.database(named: "short")
        XCTAssertEqual(c.effectiveTimeouts(database: plain, user: "bob"),
                       PoolTimeouts(seconds: 1, transaction: 2, idleTransaction: 3, clientIdle: 4.5, serverLifetime: 3600, queryWait: 120))
        XCTAssertEqual(c.effectiveTimeouts(database: short, user: "alice"),
                       PoolTimeouts(seconds: 100, transaction: 0, idleTransaction: 30, clientIdle: 50, serverLifetime: 20, queryWait: 120))
        XCTAssertEqual(c.effectiveTimeouts(database: plain, user: "carol").query, 100_000_000_000, "a per-user 0 inherits")
        XCTAssertEqual(c.effectiveTimeouts(database: c.database(named: "forced"), user: "bob").transaction, 9_000_000_000,
                       "the forced user's entry")
        XCTAssertEqual(parseError("[users]\nbob = query_timeout=soon\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nx = host=h server_lifetime=-1\n")?.line, 2)
        XCTAssertEqual(try parse("[pgbouncer]\ntransaction_timeout = 2.5\n").transactionTimeout, 2.5)
    }

    func testUsersSectionAndEffectiveSettings() throws {
        let c = try parse("""
            [pgbouncer]
            pool_mode = session
            default_pool_size = 20
            reserve_pool_size = 1
            max_user_connections = 7
            max_db_connections = 9
            [databases]
            txdb = pool_mode=transaction pool_size=5 max_db_connections=0
            plain = host=h
            forced = user=svc pool_size=3
            [users]
            bob = pool_mode=statement max_user_connections=4 pool_size=2 reserve_pool_size=6
            carol = max_user_connections=0
            svc = pool_mode=transaction
            """)
        XCTAssertEqual(c.users["bob"], UserEntry(name: "bob", poolMode: .statement, maxUserConnections: 4,
                                                 poolSize: 2, reservePoolSize: 6))
        let txdb = c.database(named: "txdb")
        let plain = c.database(named: "plain")
        let forced = c.database(named: "forced")
        XCTAssertEqual(c.effectivePoolMode(database: txdb, user: "alice"), .transaction)
        XCTAssertEqual(c.effectivePoolMode(database: txdb, user: "bob"), .statement, "user beats database")
        XCTAssertEqual(c.effectivePoolMode(database: plain, user: "alice"), .session)
        XCTAssertEqual(c.effectivePoolMode(database: nil, user: "alice"), .session)
        XCTAssertEqual(c.effectivePoolMode(database: forced, user: "bob"), .transaction, "forced user's entry")
        XCTAssertEqual(c.effectivePoolSize(database: txdb, user: "alice"), 5)
        XCTAssertEqual(c.effectivePoolSize(database: txdb, user: "bob"), 2)
        XCTAssertEqual(c.effectivePoolSize(database: plain, user: "alice"), 20)
        XCTAssertEqual(c.effectivePoolSize(database: forced, user: "bob"), 3)
        XCTAssertEqual(c.effectiveReservePoolSize(database: plain, user: "alice"), 1)
        XCTAssertEqual(c.effectiveReservePoolSize(database: plain, user: "bob"), 6)
        XCTAssertEqual(c.effectiveMaxUserConnections(user: "bob"), 4)
        XCTAssertEqual(c.effectiveMaxUserConnections(user: "carol"), 7, "0 inherits")
        XCTAssertEqual(c.effectiveMaxDBConnections(database: txdb), 9, "0 inherits")
        XCTAssertEqual(c.effectiveMinPoolSize(database: txdb), 0)
    }

    // MARK: %include

    func testIncludeRelativeToIncludingFile() throws {
        _ = try write("conf.d/pools.ini", """
            [databases]
            app = host=db port=5432
            %include ../more/users.ini
            """)
        _ = try write("more/users.ini", "[users]\nbob = pool_mode=transaction\n")
        _ = try write("userlist.txt", "\"bob\" \"secret\"\n")
        let main = try write("pgbouncer.ini", """
            [pgbouncer]
            listen_port = 6500
            auth_file = userlist.txt
            %include conf.d/pools.ini
            [pgbouncer]
            default_pool_size = 7
            """)
        let c = try Config.load(path: main)
        XCTAssertEqual(c.listenPort, 6500)
        XCTAssertEqual(c.defaultPoolSize, 7)
        XCTAssertEqual(c.database(named: "app")?.hosts, ["db"])
        XCTAssertEqual(c.database(named: "app")?.file, tempDir + "/conf.d/pools.ini")
        XCTAssertEqual(c.database(named: "app")?.line, 2)
        XCTAssertEqual(c.users["bob"]?.poolMode, .transaction)
        XCTAssertEqual(c.authFile, tempDir + "/userlist.txt", "not in the working directory: found next to the config")
        XCTAssertTrue(c.warnings.contains { $0.message.contains("auth_file \"userlist.txt\" is not in the working directory") },
                      "the fallback is warned about: \(c.warnings)")
        XCTAssertEqual(c.configFile, main)
    }

    /// PgBouncer takes relative file names from the working directory: when the same name exists
    /// there and next to the config, the working directory's wins, made absolute, without a warning.
    func testRelativeNamesAreTakenFromTheWorkingDirectoryFirst() throws {
        let cwd = try XCTUnwrap(FileManager.default.currentDirectoryPath as String?)
        let name = "pgswift-config-test-\(UUID().uuidString).txt"
        let inCWD = cwd + "/" + name
        XCTAssertTrue(FileManager.default.createFile(atPath: inCWD, contents: Data("\"bob\" \"cwd\"\n".utf8)))
        defer { try? FileManager.default.removeItem(atPath: inCWD) }
        _ = try write(name, "\"bob\" \"beside\"\n")
        let main = try write("pgbouncer.ini", "[pgbouncer]\nauth_file = \(name)\n")
        let c = try Config.load(path: main)
        XCTAssertEqual(c.authFile, inCWD)
        XCTAssertFalse(c.warnings.contains { $0.message.contains("working directory") }, "\(c.warnings)")
    }

    func testErrorInsideIncludedFileNamesThatFile() throws {
        let inc = try write("inc.ini", "\n[pgbouncer]\nlisten_port = many\n")
        let main = try write("main.ini", "[pgbouncer]\n%include inc.ini\n")
        let e = try XCTUnwrap(loadError(main))
        XCTAssertEqual(e.file, inc)
        XCTAssertEqual(e.line, 3)
    }

    func testMissingIncludeIsAnErrorAtTheDirective() throws {
        let main = try write("main.ini", "[pgbouncer]\n\n%include nowhere.ini\n")
        let e = try XCTUnwrap(loadError(main))
        XCTAssertEqual(e.file, main)
        XCTAssertEqual(e.line, 3)
        XCTAssertTrue(e.message.contains("nowhere.ini"), e.message)
    }

    func testIncludeDepthLimit() throws {
        let loop = try write("loop.ini", "%include loop.ini\n")
        let e = try XCTUnwrap(loadError(loop))
        XCTAssertEqual(e.file, loop)
        XCTAssertEqual(e.line, 1)
        XCTAssertTrue(e.message.contains("nested too deeply"), e.message)

        // Ten nested includes are fine (chain0 → chain1 → … → chain10), an eleventh is not.
        for i in 1...10 {
            _ = try write("chain\(i).ini", i == 10 ? "[pgbouncer]\nlisten_port = 1234\n" : "%include chain\(i + 1).ini\n")
        }
        XCTAssertEqual(try Config.parse(text: "%include chain1.ini\n", file: tempDir + "/chain0.ini").listenPort, 1234)
        let tooDeep = try write("deeper.ini", "%include chain0.ini\n")
        _ = try write("chain0.ini", "%include chain1.ini\n")
        XCTAssertEqual(loadError(tooDeep)?.file, tempDir + "/chain9.ini")
    }

    func testParseIncludesRelativeToTheGivenFileName() throws {
        _ = try write("part.ini", "[pgbouncer]\nlisten_port = 5555\n")
        let c = try Config.parse(text: "%include part.ini\n", file: tempDir + "/virtual.ini")
        XCTAssertEqual(c.listenPort, 5555)
    }

    // MARK: Errors carry file and line

    func testBadInt() throws {
        let e = try XCTUnwrap(parseError("[pgbouncer]\nlisten_port = 64x32\n"))
        XCTAssertEqual(e, ConfigError(file: "test.ini", line: 2,
                                      message: "invalid value \"64x32\" for listen_port: not an integer"))
        XCTAssertEqual(e.description, "test.ini:2: invalid value \"64x32\" for listen_port: not an integer")
        XCTAssertEqual(parseError("[pgbouncer]\n\nlisten_port = 70000\n")?.line, 3)
        XCTAssertEqual(parseError("[pgbouncer]\ndefault_pool_size = -1\n")?.line, 2)
        XCTAssertEqual(parseError("[pgbouncer]\nunix_socket_mode = 0789\n")?.line, 2)
        XCTAssertEqual(parseError("[pgswift]\nworkers = 0\n")?.line, 2)
    }

    func testBadBool() throws {
        let e = try XCTUnwrap(parseError("[pgbouncer]\nlisten_port = 1\nlog_connections = maybe\n"))
        XCTAssertEqual(e.file, "test.ini")
        XCTAssertEqual(e.line, 3)
        XCTAssertTrue(e.message.contains("log_connections"), e.message)
        XCTAssertTrue(e.message.contains("boolean"), e.message)
    }

    func testBadTime() throws {
        XCTAssertEqual(parseError("[pgbouncer]\nquery_timeout = -1\n")?.line, 2)
        XCTAssertEqual(parseError("[pgbouncer]\nquery_timeout = 5s\n")?.line, 2)
        XCTAssertEqual(parseError("[pgbouncer]\nquery_timeout = nan\n")?.line, 2)
    }

    func testBadEnum() throws {
        let e = try XCTUnwrap(parseError("[pgbouncer]\npool_mode = foo\n"))
        XCTAssertEqual(e.line, 2)
        XCTAssertEqual(e.message, "invalid value \"foo\" for pool_mode: expected one of: session, transaction, statement")
        let a = try XCTUnwrap(parseError("[pgbouncer]\n#\nauth_type = bar\n"))
        XCTAssertEqual(a.line, 3)
        XCTAssertTrue(a.message.contains("auth_type"), a.message)
        XCTAssertEqual(parseError("[pgbouncer]\nserver_tls_sslmode = sometimes\n")?.line, 2)
    }

    func testUnknownKey() throws {
        let e = try XCTUnwrap(parseError("[pgbouncer]\nlisten_port = 1\nlisten_prot = 2\n"))
        XCTAssertEqual(e, ConfigError(file: "test.ini", line: 3,
                                      message: "unknown setting \"listen_prot\" in [pgbouncer]"))
        XCTAssertEqual(parseError("[pgswift]\nworkerz = 1\n")?.line, 2)
        let wrong = try XCTUnwrap(parseError("[pgbouncer]\nworkers = 2\n"))
        XCTAssertTrue(wrong.message.contains("[pgswift]"), wrong.message)
        XCTAssertEqual(parseError("[pgswift]\nlisten_port = 2\n")?.line, 2)
    }

    func testUnknownSection() throws {
        let e = try XCTUnwrap(parseError("[pgbouncer]\n[pgbouncre]\n"))
        XCTAssertEqual(e.line, 2)
        XCTAssertTrue(e.message.hasPrefix("unknown section [pgbouncre]"), e.message)
    }

    func testSyntaxErrors() throws {
        XCTAssertEqual(parseError("[pgbouncer\n")?.line, 1)
        XCTAssertEqual(parseError("[pgbouncer]\nlisten_port 6432\n")?.line, 2)
        XCTAssertEqual(parseError("[pgbouncer]\n\n= 3\n")?.line, 3)
        XCTAssertEqual(parseError("[pgbouncer] junk\n")?.line, 1)
        XCTAssertEqual(parseError("[databases]\n\"unterminated = host=x\n")?.line, 2)
        XCTAssertEqual(parseError("listen_port = 1\n")?.line, 1, "key before any section")
        XCTAssertEqual(parseError("[pgbouncer]\n%inclde x\n")?.line, 2)
        XCTAssertEqual(parseError("[pgbouncer]\n%include\n")?.line, 2)
        XCTAssertNoThrow(try parse("[pgbouncer] ; trailing comment is fine\n"))
    }

    func testBadConnectionStrings() throws {
        let unknown = try XCTUnwrap(parseError("[databases]\nok = host=x\nbad = host=x colour=blue\n"))
        XCTAssertEqual(unknown, ConfigError(file: "test.ini", line: 3,
                                            message: "database \"bad\": unrecognized connection parameter \"colour\""))
        let port = try XCTUnwrap(parseError("[databases]\nbad = host=x port=abc\n"))
        XCTAssertEqual(port.line, 2)
        XCTAssertTrue(port.message.contains("invalid port"), port.message)
        XCTAssertEqual(parseError("[databases]\nbad = port=0\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = host=a,b,c port=1,2\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = host=a,,c\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = host=a, b\n")?.line, 2, "spaces in a list need quotes")
        let mode = try XCTUnwrap(parseError("[databases]\n\nbad = pool_mode=sometimes\n"))
        XCTAssertEqual(mode.line, 3)
        XCTAssertTrue(mode.message.contains("pool_mode"), mode.message)
        XCTAssertEqual(parseError("[databases]\nbad = password='open\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = password=\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = host\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = pool_size=ten\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\nbad = load_balance_hosts=random\n")?.line, 2)
        XCTAssertEqual(parseError("[databases]\npgbouncer = host=x\n")?.line, 2)
        XCTAssertEqual(parseError("[users]\nbob = pool_mode=x\n")?.line, 2)
        XCTAssertEqual(parseError("[users]\nbob = colour=blue\n")?.line, 2)
    }

    // MARK: Warnings

    func testNotImplementedKeysWarnInsteadOfFailing() throws {
        let c = try parse("""
            [pgbouncer]
            disable_pqexec = 1
            user = postgres
            """)
        XCTAssertEqual(c.warnings.map(\.line), [2, 3])
        XCTAssertEqual(c.warnings[0].message, "disable_pqexec is not implemented by pgswift yet; ignored")
        XCTAssertEqual(c.warnings[0].description, "test.ini:2: disable_pqexec is not implemented by pgswift yet; ignored")
        XCTAssertTrue(c.warnings[1].message.hasPrefix("user is not implemented by pgswift yet"))
        XCTAssertEqual(c.ignoredSettings["disable_pqexec"], "1")
        XCTAssertEqual(c.ignoredSettings["user"], "postgres")
        XCTAssertEqual(Config.isImplemented(key: "pkt_buf"), false)
        // Values of ignored keys are still checked.
        XCTAssertEqual(parseError("[pgbouncer]\ndisable_pqexec = sometimes\n")?.line, 2)
    }

    /// peer_id and [peers] (PgBouncer's peering): read as PgBouncer reads them, no warning; a later
    /// line for an id replaces the earlier; pool_size unset means default_pool_size.
    func testPeeringSettings() throws {
        let c = try parse("""
            [pgbouncer]
            peer_id = 2
            default_pool_size = 7
            [peers]
            3 = host=10.0.0.3 port=6433 pool_size=4
            1 = host=/tmp/pgbouncer-1
            2 = host=db2.example.com
            1 = host=/tmp/pgbouncer-one port=5555
            """)
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
        XCTAssertEqual(c.peerID, 2)
        XCTAssertEqual(c.peers, [PeerEntry(id: 1, host: "/tmp/pgbouncer-one", port: 5555),
                                 PeerEntry(id: 2, host: "db2.example.com"),
                                 PeerEntry(id: 3, host: "10.0.0.3", port: 6433, poolSize: 4)])
        XCTAssertEqual(c.peer(id: 1)?.unixSocketPath, "/tmp/pgbouncer-one/.s.PGSQL.5555")
        XCTAssertNil(c.peer(id: 2)?.unixSocketPath)
        XCTAssertEqual(c.poolSize(of: c.peer(id: 2)!), 7)
        XCTAssertEqual(c.poolSize(of: c.peer(id: 3)!), 4)
        XCTAssertNil(c.peer(id: 4))
        XCTAssertEqual(try parse("[pgbouncer]\n").peerID, 0)
        XCTAssertEqual(try parse("[pgbouncer]\npeer_id = 16383\n").peerID, 16383)
    }

    /// Anything PgBouncer would refuse, and what could never forward a cancel, is an error with
    /// file and line.
    func testPeeringSettingsRefused() {
        let cases: [(String, String)] = [
            ("[pgbouncer]\npeer_id = 16384\n", "must be between 0 and 16383"),
            ("[pgbouncer]\npeer_id = -1\n", "must be between 0 and 16383"),
            ("[pgbouncer]\npeer_id = one\n", "not an integer"),
            ("[peers]\n0 = host=a\n", "peer id, a number from 1 to 65535"),
            ("[peers]\n65536 = host=a\n", "peer id, a number from 1 to 65535"),
            ("[peers]\nx = host=a\n", "peer id, a number from 1 to 65535"),
            ("[peers]\n1 = port=6432\n", "host was not provided"),
            ("[peers]\n1 = host=a port=0\n", "invalid port"),
            ("[peers]\n1 = host=a port=http\n", "invalid port"),
            ("[peers]\n1 = host=a pool_size=many\n", "invalid pool_size"),
            ("[peers]\n1 = host=a pool_size=0\n", "pool_size 0"),
            ("[peers]\n1 = host=a dbname=x\n", "unrecognized connection parameter \"dbname\""),
            ("[peers]\n1 = host=@abstract\n", "abstract Unix sockets"),
            ("[peers]\n1 = host=\n", "syntax error"),
        ]
        for (text, expected) in cases {
            guard let e = parseError(text) else {
                XCTFail("accepted: \(text)")
                continue
            }
            XCTAssertEqual(e.line, 2, text)
            XCTAssertTrue(e.message.contains(expected), "\(text): \(e.message)")
        }
    }

    /// syslog, syslog_ident, syslog_facility: PgBouncer's defaults and facility names (in any case),
    /// encoded as syslog(3) does; a name PgBouncer does not know is an error here (PgBouncer silently
    /// uses daemon).
    func testSyslogSettingsAndFacilityNames() throws {
        let d = try parse("[pgbouncer]\n")
        XCTAssertFalse(d.syslog)
        XCTAssertEqual(d.syslogIdent, "pgbouncer")
        XCTAssertEqual(d.syslogFacility, .daemon)
        let c = try parse("[pgbouncer]\nsyslog = 1\nsyslog_ident = pgs-1\nsyslog_facility = LOCAL3\n")
        XCTAssertTrue(c.syslog)
        XCTAssertEqual(c.syslogIdent, "pgs-1")
        XCTAssertEqual(c.syslogFacility, .local3)
        XCTAssertEqual(c.warnings, [])
        let codes: [(String, Int32)] = [("auth", 4 << 3), ("authpriv", 10 << 3), ("daemon", 3 << 3), ("user", 1 << 3),
                                        ("local0", 16 << 3), ("local1", 17 << 3), ("local2", 18 << 3),
                                        ("local3", 19 << 3), ("local4", 20 << 3), ("local5", 21 << 3),
                                        ("local6", 22 << 3), ("local7", 23 << 3)]
        XCTAssertEqual(codes.map { $0.0 }, SyslogFacility.allCases.map(\.rawValue), "PgBouncer's names, in its order")
        for (name, code) in codes {
            XCTAssertEqual(try parse("[pgbouncer]\nsyslog_facility = \(name)\n").syslogFacility.code, code, name)
        }
        let e = try XCTUnwrap(parseError("[pgbouncer]\nsyslog_facility = kern\n"))
        XCTAssertEqual(e.line, 2)
        XCTAssertTrue(e.message.contains("expected one of: auth, authpriv, daemon, user, local0"), e.message)
    }

    func testMissingMainSectionWarns() throws {
        let c = try parse("[databases]\nx = host=y\n")
        XCTAssertEqual(c.warnings, [ConfigWarning(file: "test.ini", line: 0,
                                                  message: "no [pgbouncer] section; using defaults")])
    }

    func testSettingsListing() throws {
        let c = try parse("[pgbouncer]\nlisten_port = 7777\nserver_idle_timeout = 0.25\ndisable_pqexec = 1\n")
        let s = Dictionary(uniqueKeysWithValues: c.settings().map { ($0.key, $0) })
        XCTAssertEqual(s["listen_port"]?.value, "7777")
        XCTAssertEqual(s["listen_port"]?.defaultValue, "6432")
        XCTAssertEqual(s["server_idle_timeout"]?.value, "0.25")
        XCTAssertEqual(s["server_lifetime"]?.value, "3600")
        XCTAssertEqual(s["disable_pqexec"]?.value, "1")
        XCTAssertEqual(s["disable_pqexec"]?.implemented, false)
        XCTAssertEqual(s["unix_socket_mode"]?.value, "511")
        XCTAssertEqual(s["workers"]?.value, String(c.workers))
    }

    // MARK: Admin console SET (overrides)

    func testOverridesApplyAfterTheFile() throws {
        let text = "[pgbouncer]\ndefault_pool_size = 7\nquery_wait_timeout = 9\n"
        let c = try Config.parse(text: text, file: "/etc/p.ini", overrides: [
            ConfigOverride(key: "Default_Pool_Size", value: "5"),
            ConfigOverride(key: "client_idle_timeout", value: "1.5"),
            ConfigOverride(key: "pool_mode", value: "TRANSACTION"),
        ])
        XCTAssertEqual(c.defaultPoolSize, 5)
        XCTAssertEqual(c.queryWaitTimeout, 9, "keys not SET keep the file's value")
        XCTAssertEqual(c.clientIdleTimeout, 1.5)
        XCTAssertEqual(c.poolMode, .transaction)
        XCTAssertEqual(c.location(ofSetting: "default_pool_size"), ConfigLocation(file: ConfigOverride.origin, line: 0))
        XCTAssertEqual(c.warnings, [])
        XCTAssertEqual(try Config.parse(text: text, file: "/etc/p.ini").defaultPoolSize, 7)
    }

    func testOverrideOfAnUnimplementedKeyWarnsAsTheFileDoes() throws {
        let c = try Config.parse(text: "[pgbouncer]\n", file: "p.ini",
                                 overrides: [ConfigOverride(key: "sbuf_loopcnt", value: "2")])
        XCTAssertEqual(c.warnings.map(\.description),
                       ["admin console SET:0: sbuf_loopcnt is not implemented by pgswift yet; ignored"])
        XCTAssertEqual(c.settings().first { $0.key == "sbuf_loopcnt" }?.value, "2")
    }

    func testOverrideErrorsAndPaths() throws {
        XCTAssertThrowsError(try Config.parse(text: "", file: "p.ini",
                                              overrides: [ConfigOverride(key: "pool_mode", value: "sometimes")])) { e in
            XCTAssertEqual((e as? ConfigError)?.file, ConfigOverride.origin)
        }
        // auth_file resolves against the config file's directory, as in the file; load checks it exists.
        let users = try write("conf/users.txt", "\"u\" \"p\"\n")
        let main = try write("conf/p.ini", "[pgbouncer]\nauth_type = trust\nauth_file = \(users)\n")
        let c = try Config.load(path: main, overrides: [ConfigOverride(key: "auth_file", value: "users.txt")])
        XCTAssertEqual(c.authFile, tempDir + "/conf/users.txt")
        var failure: ConfigError?
        do throws(ConfigError) {
            _ = try Config.load(path: main, overrides: [ConfigOverride(key: "auth_file", value: "absent.txt")])
        } catch {
            failure = error
        }
        let e = try XCTUnwrap(failure)
        XCTAssertEqual(e.file, ConfigOverride.origin)
        XCTAssertTrue(e.message.contains("absent.txt"), e.message)
    }

    /// As in PgBouncer, a TLS key SET whose set-up fails is kept (the caller says so); in the file it is an error.
    func testTLSOverrideThatCannotBeSetUpIsKeptNotFatal() throws {
        let main = try write("tls.ini", "[pgbouncer]\nauth_type = any\n")
        let c = try Config.load(path: main, overrides: [ConfigOverride(key: "server_tls_key_file", value: "/x.key")])
        XCTAssertEqual(c.serverTLS.keyFile, "/x.key")
        XCTAssertTrue(c.tlsNotApplied?.message.contains("go together") ?? false, "\(String(describing: c.tlsNotApplied))")
        XCTAssertNil(try Config.load(path: main).tlsNotApplied)
        let bad = try write("badtls.ini", "[pgbouncer]\nauth_type = any\nserver_tls_key_file = /x.key\n")
        XCTAssertNotNil(loadError(bad))
        XCTAssertNotNil(loadError(bad), "a non-TLS SET does not excuse the file's TLS error")
        XCTAssertThrowsError(try Config.load(path: bad, overrides: [ConfigOverride(key: "verbose", value: "1")]))
        XCTAssertTrue(ConfigOverride(key: "client_tls13_ciphers", value: "").isTLS)
        XCTAssertFalse(ConfigOverride(key: "default_pool_size", value: "").isTLS)
    }

    func testOverrideCheck() {
        XCTAssertEqual(ConfigOverride.check(key: "DEFAULT_POOL_SIZE", value: "5"),
                       .accepted(ConfigOverride(key: "default_pool_size", value: "5")))
        XCTAssertEqual(ConfigOverride.check(key: "health_check_timeout", value: "2"),
                       .accepted(ConfigOverride(key: "health_check_timeout", value: "2")))
        XCTAssertEqual(ConfigOverride.check(key: "no_such_key", value: "1"), .unknownKey)
        XCTAssertEqual(ConfigOverride.check(key: "listen_port", value: "7000"), .restartOnly(key: "listen_port"))
        XCTAssertEqual(ConfigOverride.check(key: "workers", value: "2"), .restartOnly(key: "workers"))
        XCTAssertEqual(ConfigOverride.check(key: "default_pool_size", value: "five"),
                       .invalidValue(key: "default_pool_size", reason: "not an integer"))
        // Keys pgswift does not implement may be SET, as in PgBouncer (the load warns).
        XCTAssertEqual(ConfigOverride.check(key: "cancel_wait_timeout", value: "2"),
                       .accepted(ConfigOverride(key: "cancel_wait_timeout", value: "2")))
        XCTAssertEqual(ConfigOverride.merging([ConfigOverride(key: "a", value: "1"), ConfigOverride(key: "b", value: "2")],
                                              ConfigOverride(key: "A", value: "3")),
                       [ConfigOverride(key: "a", value: "3"), ConfigOverride(key: "b", value: "2")])
    }

    /// SHOW CONFIG's `changeable` is PgBouncer 1.25's list: every key but its CF_NO_RELOAD ones, and
    /// peer_id, which pgswift keeps until a restart (every cancel key handed out carries it, and its
    /// layout depends on whether it is 0).
    func testChangeableIsPgBouncersList() throws {
        let noReload: Set<String> = ["disable_pqexec", "job_name", "listen_addr", "listen_backlog", "listen_port",
                                     "pidfile", "pkt_buf", "resolv_conf", "so_reuseport", "track_extra_parameters",
                                     "unix_socket_dir", "unix_socket_group", "unix_socket_mode", "user",
                                     "service_name",  // PgBouncer's Windows alias of job_name
                                     "peer_id"]
        let rows = try parse("").settings()
        for r in rows where ConfigKeySpec.pgbouncerByName[r.key] != nil {
            XCTAssertEqual(r.changeable, !noReload.contains(r.key), r.key)
        }
        let pgswift = Dictionary(uniqueKeysWithValues: rows.filter { ConfigKeySpec.pgswiftByName[$0.key] != nil }
            .map { ($0.key, $0.changeable) })
        XCTAssertEqual(pgswift["workers"], false)
        XCTAssertEqual(pgswift["worker_binary"], false)
        XCTAssertEqual(pgswift["metrics_listen"], false)
        XCTAssertEqual(pgswift["drain_timeout"], true)
        for key in ConfigKeySpec.restartOnly {
            XCTAssertNotNil(ConfigKeySpec.named(key), "\(key) is in the key table")
        }
    }

    // MARK: load(path:) file checks

    func testLoadMissingFile() throws {
        let e = try XCTUnwrap(loadError(tempDir + "/absent.ini"))
        XCTAssertEqual(e.file, tempDir + "/absent.ini")
        XCTAssertEqual(e.line, 0)
        XCTAssertTrue(e.message.contains("No such file"), e.message)
    }

    func testLoadMissingAuthFile() throws {
        let main = try write("p.ini", "[pgbouncer]\nauth_type = md5\n\nauth_file = /nonexistent/userlist.txt\n")
        let e = try XCTUnwrap(loadError(main))
        XCTAssertEqual(e.file, main)
        XCTAssertEqual(e.line, 4)
        XCTAssertTrue(e.message.contains("/nonexistent/userlist.txt"), e.message)
    }

    func testAuthFileRequiredByAuthType() throws {
        let md5 = try write("md5.ini", "[pgbouncer]\nauth_type = md5\n")
        let e = try XCTUnwrap(loadError(md5))
        XCTAssertEqual(e.line, 2)
        XCTAssertTrue(e.message.contains("auth_file"), e.message)
        let implicit = try write("implicit.ini", "[pgbouncer]\nlisten_port = 1\n")
        XCTAssertEqual(loadError(implicit)?.line, 0, "the default auth_type md5 needs a user list too")
        XCTAssertNoThrow(try Config.load(path: try write("any.ini", "[pgbouncer]\nauth_type = any\n")))
        XCTAssertNoThrow(try Config.load(path: try write("au.ini", "[pgbouncer]\nauth_user = pgswift\n")))
        XCTAssertNoThrow(try Config.parse(text: "[pgbouncer]\n", file: "x.ini"), "parse does not check files")
    }

    /// pkt_buf has no effect by design: the load warning says why instead of "not yet".
    func testPktBufWarnsThatItHasNoEffect() throws {
        let c = try parse("""
            [pgbouncer]
            pkt_buf = 8192
            """)
        XCTAssertEqual(c.warnings.map(\.line), [2])
        XCTAssertTrue(c.warnings[0].message.hasPrefix("pkt_buf has no effect in pgswift; ignored: pgswift's I/O buffers are 32 KiB"),
                      c.warnings[0].message)
        XCTAssertEqual(c.ignoredSettings["pkt_buf"], "8192")
    }
}
