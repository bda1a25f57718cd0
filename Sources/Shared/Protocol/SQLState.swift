// SQLSTATE codes pgswift puts in the errors it reports itself (PostgreSQL Appendix A).

public enum SQLState {
    public static let successfulCompletion = "00000"
    public static let warning = "01000"

    // Class 08: connection exception
    public static let connectionException = "08000"
    public static let sqlClientUnableToEstablishSQLConnection = "08001"
    public static let connectionDoesNotExist = "08003"
    public static let sqlServerRejectedEstablishmentOfSQLConnection = "08004"
    public static let connectionFailure = "08006"
    public static let protocolViolation = "08P01"

    // Class 0A: feature not supported
    public static let featureNotSupported = "0A000"

    // Class 22: data exception
    public static let invalidParameterValue = "22023"
    public static let invalidTextRepresentation = "22P02"

    // Class 25: invalid transaction state
    public static let invalidTransactionState = "25000"
    public static let activeSQLTransaction = "25001"
    public static let idleInTransactionSessionTimeout = "25P03"

    // Class 26 / 28: statement name, authorization
    public static let invalidSQLStatementName = "26000"
    public static let invalidAuthorizationSpecification = "28000"
    public static let invalidPassword = "28P01"

    // Class 34: cursor
    public static let invalidCursorName = "34000"

    // Class 3D: catalog
    public static let invalidCatalogName = "3D000"

    // Class 42: syntax error or access rule violation
    public static let syntaxError = "42601"
    public static let insufficientPrivilege = "42501"
    public static let undefinedObject = "42704"
    public static let duplicatePreparedStatement = "42P05"

    // Class 53: insufficient resources
    public static let insufficientResources = "53000"
    public static let outOfMemory = "53200"
    public static let tooManyConnections = "53300"
    public static let configurationLimitExceeded = "53400"

    // Class 55: object not in prerequisite state
    public static let objectNotInPrerequisiteState = "55000"

    // Class 57: operator intervention
    public static let queryCanceled = "57014"
    public static let adminShutdown = "57P01"
    public static let crashShutdown = "57P02"
    public static let cannotConnectNow = "57P03"
    public static let databaseDropped = "57P04"
    public static let idleSessionTimeout = "57P05"

    // Class XX: internal error
    /// 54000: a limit of pgswift or PostgreSQL was exceeded.
    public static let programLimitExceeded = "54000"
    public static let internalError = "XX000"
}
