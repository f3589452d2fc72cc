// A thin SQLite wrapper: one connection, prepared statements with bind/step/column, transactions. Only what
// HubStore needs; every error carries sqlite3_errmsg and the database file's path.

import CSQLite

/// SQLite's SQLITE_TRANSIENT: bind copies the bytes (the Swift buffer does not outlive the call).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// A failed SQLite call: the result code, SQLite's own message and the file it was about.
struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The primary result code (SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_FULL, ...).
    var code: Int32
    var message: String
    var path: String

    var description: String { "\(path): \(message) (SQLite code \(code))" }

    /// The file is not a database or is damaged: the caller may move it aside and start over.
    var isCorruption: Bool { code == SQLITE_CORRUPT || code == SQLITE_NOTADB }
}

/// One SQLite connection. Not thread-safe by itself: HubStore keeps it behind a Mutex.
final class Database {
    let path: String
    private var handle: OpaquePointer?
    private var cache: [String: Statement] = [:]

    /// Opens (creating when missing) the file at `path`.
    init(path: String) throws(SQLiteError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc & 0xff, message: message, path: path)
        }
        handle = db
        sqlite3_extended_result_codes(db, 0)
    }

    deinit { close() }

    /// Finalizes the cached statements and closes the connection (idempotent).
    func close() {
        cache.removeAll()   // each Statement finalizes itself
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    func error(_ rc: Int32) -> SQLiteError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
        return SQLiteError(code: rc & 0xff, message: message, path: path)
    }

    /// Runs one or more statements that return no rows of interest.
    func execute(_ sql: String) throws(SQLiteError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    /// A new statement, owned by the caller.
    func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc) }
        return Statement(stmt, database: self)
    }

    /// A statement prepared once per connection and reused: reset and cleared of bindings on every call.
    func cached(_ sql: String) throws(SQLiteError) -> Statement {
        if let s = cache[sql] {
            s.reset()
            return s
        }
        let s = try prepare(sql)
        cache[sql] = s
        return s
    }

    /// Resets every cached statement. A statement left on a row keeps its read transaction open, and an open read
    /// transaction stops checkpoints from restarting the WAL (which then grows without bound): callers reset
    /// before COMMIT and at the end of each operation.
    func resetStatements() {
        for s in cache.values { s.reset() }
    }

    /// The first column of the first row of a query, as text (PRAGMA results).
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let s = try prepare(sql)
        guard try s.step() else { return nil }
        return s.text(0)
    }

    /// Runs `body` in one transaction (BEGIN IMMEDIATE: takes the write lock up front). Rolls back when it throws.
    func transaction<R>(_ body: () throws -> R) throws -> R {
        try execute("BEGIN IMMEDIATE")
        do {
            let r = try body()
            resetStatements()
            try execute("COMMIT")
            return r
        } catch {
            resetStatements()
            if sqlite3_get_autocommit(handle) == 0 { try? execute("ROLLBACK") }
            throw error
        }
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
}

/// A prepared statement. Bind parameters are 1-based, columns 0-based (SQLite's convention).
final class Statement {
    private let stmt: OpaquePointer
    private unowned let database: Database

    fileprivate init(_ stmt: OpaquePointer, database: Database) {
        self.stmt = stmt
        self.database = database
    }

    deinit { sqlite3_finalize(stmt) }

    func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    private func check(_ rc: Int32) throws(SQLiteError) {
        guard rc == SQLITE_OK else { throw database.error(rc) }
    }

    func bind(_ index: Int32, _ value: String) throws(SQLiteError) {
        try check(sqlite3_bind_text(stmt, index, value, -1, transient))
    }

    func bind(_ index: Int32, _ value: String?) throws(SQLiteError) {
        if let value { try bind(index, value) } else { try check(sqlite3_bind_null(stmt, index)) }
    }

    func bind(_ index: Int32, _ value: Int64) throws(SQLiteError) {
        try check(sqlite3_bind_int64(stmt, index, value))
    }

    func bind(_ index: Int32, _ value: [UInt8]) throws(SQLiteError) {
        let rc = value.withUnsafeBytes { raw in
            // A zero-length blob still binds as a blob (not NULL): SQLite needs a non-nil pointer for that.
            sqlite3_bind_blob(stmt, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(raw.count), transient)
        }
        try check(rc)
    }

    /// Binds every value in order, starting at parameter 1.
    func bind(_ values: String...) throws(SQLiteError) {
        for (i, v) in values.enumerated() { try bind(Int32(i + 1), v) }
    }

    /// Advances: true when a row is available, false when done.
    @discardableResult
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw database.error(rc)
        }
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_NULL }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(stmt, column) }

    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, column) else { return "" }
        let n = Int(sqlite3_column_bytes(stmt, column))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }

    func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }

    func blob(_ column: Int32) -> [UInt8] {
        guard let p = sqlite3_column_blob(stmt, column) else { return [] }
        let n = Int(sqlite3_column_bytes(stmt, column))
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}
