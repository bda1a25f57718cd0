// Logging in to PostgreSQL as a client: a pure state machine (no I/O) the worker's server logins and
// the supervisor's health checks both drive.
//
// The caller sends the StartupMessage, decodes each 'R' / 'E' message, feeds it here and performs the
// returned action (write a PasswordMessage, SASLInitialResponse or SASLResponse; go on reading; close
// with the failure). What follows AuthenticationOk (ParameterStatus, BackendKeyData, ReadyForQuery)
// stays with the caller. As in PgBouncer, the server leads: a password or SASL request is answered
// whatever came before it, and AuthenticationOk is taken whenever it comes; only the SCRAM steps need
// the exchange they continue.

/// The password a login request asked for, as it appears in "server asked for ..." texts.
public enum BackendLoginMethod: String, Sendable, Equatable {
    case cleartext
    case md5
    case scram = "SCRAM"
}

/// Why a login to PostgreSQL failed. `errorFields` is the worker's wording (what clients waiting on the
/// pool receive); the health check words its log lines from the same cases.
public enum BackendLoginFailure: Error, Sendable, Equatable {
    /// The secret cannot answer the request (e.g. an MD5 hash for a cleartext request, or no secret).
    case noPassword(user: String, method: BackendLoginMethod)
    /// The secret is of a kind that cannot answer this method: a SCRAM secret for MD5, an MD5 hash
    /// for SCRAM (PgBouncer's "wrong password type").
    case wrongPasswordType(method: BackendLoginMethod)
    /// AuthenticationSASL without SCRAM-SHA-256 among the mechanisms (e.g. only -PLUS).
    case noSupportedSASLMechanism(offered: [String])
    /// The secret is a SCRAM secret and no client has yet given its ClientKey (passthrough).
    case scramClientKeyMissing
    /// The SCRAM exchange itself failed (bad server-first, wrong signature, server "e=" error...).
    case scram(reason: String)
    case unexpectedSASLContinue
    case unexpectedSASLFinal
    /// Kerberos, SCM credentials, GSSAPI, SSPI or an unknown code.
    case unsupportedMethod(code: Int32)
    /// The server sent ErrorResponse during the login.
    case server(ErrorFields)

    public var errorFields: ErrorFields {
        switch self {
        case .noPassword(let user, let method):
            return Self.fatal(SQLState.invalidPassword,
                              "no usable password for user \"\(user)\" (server asked for \(method.rawValue))")
        case .noSupportedSASLMechanism:
            return Self.fatal(SQLState.featureNotSupported, "server offers no supported SASL mechanism")
        case .wrongPasswordType, .scramClientKeyMissing:
            // PgBouncer's words (kill_pool_logins without a SQLSTATE: 08P01); `logDetail` says why.
            return Self.fatal(SQLState.protocolViolation, "server login failed: wrong password type")
        case .scram(let reason):
            return Self.fatal(SQLState.invalidPassword, "SCRAM: \(reason)")
        case .unexpectedSASLContinue:
            return Self.fatal(SQLState.protocolViolation, "unexpected SASL continue")
        case .unexpectedSASLFinal:
            return Self.fatal(SQLState.protocolViolation, "unexpected SASL final")
        case .unsupportedMethod:
            return Self.fatal(SQLState.featureNotSupported, "server asked for an unsupported authentication method")
        case .server(let fields):
            return fields
        }
    }

    /// PgBouncer's log line for a failure pgswift decides on its own, where its `errorFields` are
    /// PgBouncer's short words for clients (nil: `errorFields` say it all).
    public var logDetail: String? {
        switch self {
        case .wrongPasswordType(let method):
            return "cannot do \(method == .scram ? "SCRAM" : "MD5") authentication: wrong password type"
        case .scramClientKeyMissing:
            return "cannot do SCRAM authentication: password is SCRAM secret but client authentication did not provide SCRAM keys"
        default:
            return nil
        }
    }

    private static func fatal(_ code: String, _ message: String) -> ErrorFields {
        ErrorFields(severity: "FATAL", code: code, message: message)
    }
}

public struct BackendLoginMachine {
    public enum State {
        /// StartupMessage sent, nothing answered yet.
        case waitingForAuthRequest
        /// PasswordMessage (cleartext or md5) sent.
        case passwordSent
        /// SASLInitialResponse sent (the exchange then waits for server-first) or SASLResponse sent
        /// (it waits for server-final).
        case saslExchange(ScramClientExchange)
        /// server-final verified: only AuthenticationOk (or an error) is expected.
        case waitingForAuthOk
        case authenticated
        case failed(BackendLoginFailure)
    }

    public enum Action: Equatable {
        /// A PasswordMessage with this text (the password, or "md5" + hex).
        case sendPassword(String)
        case sendSASLInitialResponse(mechanism: String, data: [UInt8])
        case sendSASLResponse([UInt8])
        /// Nothing to send: read the next message.
        case wait
        /// AuthenticationOk: the caller goes on with ParameterStatus... until ReadyForQuery.
        case authenticated
        /// Close the connection; the machine is now `.failed`.
        case fail(BackendLoginFailure)
    }

    public private(set) var state = State.waitingForAuthRequest
    private let user: String
    private let secret: PasswordSecret?
    private let scramClientKey: [UInt8]?
    private let keyCache: ScramKeyCache?
    private let scramNonce: [UInt8]?

    /// - user: the user name of the StartupMessage (md5 salts the password with it).
    /// - secret: what the login answers with; a `.scram` secret needs `scramClientKey`.
    /// - scramClientKey: a ClientKey recovered from a client's SCRAM proof for this secret (passthrough).
    /// - keyCache: PBKDF2 results to reuse for a plain password; nil derives each time.
    /// - scramNonce: the client nonce, for tests (see `ScramClientExchange`).
    public init(user: String, secret: PasswordSecret?, scramClientKey: [UInt8]? = nil,
                keyCache: ScramKeyCache? = nil, scramNonce: [UInt8]? = nil) {
        self.user = user
        self.secret = secret
        self.scramClientKey = scramClientKey
        self.keyCache = keyCache
        self.scramNonce = scramNonce
    }

    /// Authenticated or failed: the caller feeds no more authentication events.
    public var isComplete: Bool {
        switch state {
        case .authenticated, .failed: return true
        case .waitingForAuthRequest, .passwordSent, .saslExchange, .waitingForAuthOk: return false
        }
    }

    /// An 'R' message, decoded by the caller.
    public mutating func authenticationRequestReceived(_ request: AuthenticationRequest) -> Action {
        if case .failed = state { return .wait }
        switch request {
        case .ok:
            state = .authenticated
            return .authenticated
        case .cleartextPassword:
            guard case .plain(let password)? = secret else { return fail(.noPassword(user: user, method: .cleartext)) }
            state = .passwordSent
            return .sendPassword(password)
        case .md5Password(let salt):
            let response: String
            switch secret {
            case .plain(let password)?: response = MD5Password.response(user: user, password: password, salt: salt)
            case .md5(let hash)?: response = MD5Password.response(storedHash: hash, salt: salt)
            case .scram?: return fail(.wrongPasswordType(method: .md5))
            case nil: return fail(.noPassword(user: user, method: .md5))
            }
            state = .passwordSent
            return .sendPassword(response)
        case .sasl(let mechanisms):
            return saslRequested(mechanisms)
        case .saslContinue(let data):
            guard case .saslExchange(var exchange) = state else { return fail(.unexpectedSASLContinue) }
            switch exchange.receiveServerFirst(data) {
            case .success(let clientFinal):
                state = .saslExchange(exchange)
                return .sendSASLResponse(clientFinal)
            case .failure(let f):
                return fail(.scram(reason: f.reason))
            }
        case .saslFinal(let data):
            guard case .saslExchange(var exchange) = state else { return fail(.unexpectedSASLFinal) }
            if case .failure(let f) = exchange.receiveServerFinal(data) { return fail(.scram(reason: f.reason)) }
            state = .waitingForAuthOk
            return .wait
        case .unsupported(let code):
            return fail(.unsupportedMethod(code: code))
        }
    }

    /// An ErrorResponse during the login, decoded by the caller.
    public mutating func errorReceived(_ fields: ErrorFields) -> Action {
        if case .failed = state { return .wait }
        return fail(.server(fields))
    }

    private mutating func saslRequested(_ mechanisms: [String]) -> Action {
        guard mechanisms.contains(ScramServerExchange.mechanism) else {
            return fail(.noSupportedSASLMechanism(offered: mechanisms))
        }
        var exchange: ScramClientExchange
        switch secret {
        case .plain(let password)?:
            exchange = ScramClientExchange(credential: .password(password), cache: keyCache, nonceBytes: scramNonce)
        case .scram(let s)?:
            guard let clientKey = scramClientKey else { return fail(.scramClientKeyMissing) }
            exchange = ScramClientExchange(credential: .keys(clientKey: clientKey, serverKey: s.serverKey),
                                           cache: nil, nonceBytes: scramNonce,
                                           expectedParameters: (s.salt, s.iterations))
        case .md5?:
            return fail(.wrongPasswordType(method: .scram))
        case nil:
            return fail(.noPassword(user: user, method: .scram))
        }
        let clientFirst = exchange.clientFirstMessage()
        state = .saslExchange(exchange)
        return .sendSASLInitialResponse(mechanism: ScramServerExchange.mechanism, data: clientFirst)
    }

    private mutating func fail(_ failure: BackendLoginFailure) -> Action {
        state = .failed(failure)
        return .fail(failure)
    }
}

extension BackendLoginMachine.Action {
    /// Appends the message this action sends (PasswordMessage, SASLInitialResponse or SASLResponse);
    /// false for an action that sends nothing (wait, authenticated, fail).
    public func encode(into out: inout OutBuffer) -> Bool {
        switch self {
        case .sendPassword(let text):
            Frontend.passwordMessage(into: &out, password: text)
        case .sendSASLInitialResponse(let mechanism, let data):
            Frontend.saslInitialResponse(into: &out, mechanism: mechanism, data: data)
        case .sendSASLResponse(let data):
            Frontend.saslResponse(into: &out, data: data)
        case .wait, .authenticated, .fail:
            return false
        }
        return true
    }
}
