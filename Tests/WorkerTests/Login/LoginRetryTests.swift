// LoginRetry.swift: PgBouncer's server_login_retry rules as pure functions.
import XCTest
@testable import Worker
import Shared

final class LoginRetryTests: XCTestCase {
    func testNoNewConnectWithinServerLoginRetryOfTheLastOneWhileFailing() {
        let retry: Int64 = 15_000_000_000
        XCTAssertTrue(LoginRetry.pending(failing: true, lastConnectAt: 100, now: 100 + retry - 1, retryNanos: retry))
        XCTAssertFalse(LoginRetry.pending(failing: true, lastConnectAt: 100, now: 100 + retry, retryNanos: retry))
        XCTAssertFalse(LoginRetry.pending(failing: false, lastConnectAt: 100, now: 101, retryNanos: retry),
                       "a pool whose logins work is never held back")
        XCTAssertFalse(LoginRetry.pending(failing: true, lastConnectAt: 100, now: 101, retryNanos: 0),
                       "server_login_retry 0: retry at once")
    }

    func testOnlyTheServersOwnRefusalOrAMissingAnswerIsARefusal() {
        let wrongPassword = ErrorFields(severity: "FATAL", code: SQLState.invalidPassword, message: "password authentication failed")
        XCTAssertTrue(LoginRetry.isRefusal(.server(wrongPassword)))
        XCTAssertTrue(LoginRetry.isRefusal(.server(ErrorFields(severity: "FATAL", code: "3D000", message: "database \"x\" does not exist"))))
        XCTAssertFalse(LoginRetry.isRefusal(.server(ErrorFields(severity: "FATAL", code: SQLState.cannotConnectNow,
                                                                message: "the database system is starting up"))),
                       "57P03 passes: PgBouncer does not kill waiting clients for it")
        XCTAssertTrue(LoginRetry.isRefusal(.noPassword(user: "u", method: .md5)), "pgswift cannot answer: it never will")
        XCTAssertTrue(LoginRetry.isRefusal(.scram(reason: "wrong server signature")))
    }

    func testARefusalFailsWaitingClientsUnlessALoggedInServerIsLeft() {
        XCTAssertTrue(LoginRetry.failsWaitingClients(refusal: true, loggedInServers: 0, welcomeKnown: true))
        XCTAssertTrue(LoginRetry.failsWaitingClients(refusal: true, loggedInServers: 0, welcomeKnown: false))
        XCTAssertFalse(LoginRetry.failsWaitingClients(refusal: true, loggedInServers: 2, welcomeKnown: true))
        XCTAssertTrue(LoginRetry.failsWaitingClients(refusal: true, loggedInServers: 2, welcomeKnown: false),
                      "servers of a pool without welcome parameters do not count (PgBouncer: a dirty pool)")
        XCTAssertFalse(LoginRetry.failsWaitingClients(refusal: false, loggedInServers: 0, welcomeKnown: false),
                       "a connect, TLS or timeout failure leaves them waiting")
    }

    func testTheCachedErrorInPgBouncersWords() {
        let e = LoginRetry.cachedError(ErrorFields(severity: "FATAL", code: SQLState.invalidPassword,
                                                   message: "password authentication failed for user \"u\""))
        XCTAssertEqual(e.code, "08P01")
        XCTAssertEqual(e.severity, "FATAL")
        XCTAssertEqual(e.message, "server login has been failing, cached error: password authentication failed for user \"u\" (server_login_retry)")
    }
}
