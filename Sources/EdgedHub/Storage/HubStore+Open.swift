// Opening the store: private file modes, WAL + synchronous=FULL, the schema, and what happens to a damaged file
// (moved aside, logged, replaced by an empty store: the cache is only a cache).

import CSQLite
import EdgedCore
import Glibc
import Logging

extension HubStore {
    /// Opens the file, or moves a damaged one aside and creates a fresh one.
    static func open(path: String, logger: Logger) throws -> Database {
        try prepareFiles(path)
        do {
            return try openAndCheck(path)
        } catch {
            guard let e = error as? SQLiteError, e.isCorruption else { throw storeError(path, "opening it", error) }
            let aside = "\(path).corrupt-\(Timestamp.now().seconds)"
            if Glibc.rename(path, aside) != 0 {
                let reason = String(cString: strerror(errno))
                throw HubStoreError(kind: .database, path: path, message:
                    "hub store \(path) is damaged (\(e.message)) and cannot be moved aside to \(aside): \(reason); remove it by hand")
            }
            // The WAL belongs to the damaged file: keep it with it; the -shm index is rebuilt from nothing.
            _ = Glibc.rename("\(path)-wal", "\(aside)-wal")
            _ = Glibc.unlink("\(path)-shm")
            logger.error("hub store is damaged; moved aside, starting with an empty cache: the writes it had queued for the API server (pod statuses, Events) are lost",
                         metadata: ["path": "\(path)", "movedTo": "\(aside)", "reason": "\(e.message)"])
            try prepareFiles(path)
            do {
                return try openAndCheck(path)
            } catch {
                throw storeError(path, "creating a fresh store after moving the damaged one aside", error)
            }
        }
    }

    private static func storeError(_ path: String, _ what: String, _ error: any Error) -> HubStoreError {
        if let e = error as? HubStoreError { return e }
        let detail = (error as? SQLiteError).map { "\($0.message) (SQLite code \($0.code))" } ?? "\(error)"
        return HubStoreError(kind: .database, path: path, message:
            "hub store \(path): \(what) failed: \(detail); check the directory exists and is writable and the disk is not full")
    }

    /// Creates the missing parent directories (0700) and the file itself (0600) before SQLite opens it, so the
    /// -wal and -shm files, which SQLite creates with the database file's mode, are private too. An existing
    /// file (and its -wal/-shm) is set to 0600.
    static func prepareFiles(_ path: String) throws {
        try makeDirectories(parent(of: path), path: path)
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw HubStoreError(kind: .database, path: path, message:
                "hub store \(path) cannot be created: \(String(cString: strerror(errno))); check the directory is writable")
        }
        _ = fchmod(fd, 0o600)
        _ = Glibc.close(fd)
        for suffix in ["-wal", "-shm"] { _ = chmod(path + suffix, 0o600) }
    }

    private static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let p = String(path[..<slash])
        return p.isEmpty ? "/" : p
    }

    /// mkdir -p with mode 0700 for the directories it creates (existing ones are left as they are).
    private static func makeDirectories(_ dir: String, path: String) throws {
        var st = stat()
        if stat(dir, &st) == 0 { return }
        try makeDirectories(parent(of: dir), path: path)
        if mkdir(dir, 0o700) != 0, errno != EEXIST {
            throw HubStoreError(kind: .database, path: path, message:
                "hub store \(path): cannot create directory \(dir): \(String(cString: strerror(errno)))")
        }
        _ = chmod(dir, 0o700)
    }

    /// Opens, checks and configures the connection. Throws SQLiteError (isCorruption for a damaged file).
    private static func openAndCheck(_ path: String) throws -> Database {
        let db = try Database(path: path)
        do {
            try db.execute("PRAGMA busy_timeout = 5000")
            // SQLite's own page cache is anonymous memory (default up to 2 MiB per connection); on a gateway of a
            // few dozen MiB, reads of a cold page go to the kernel's page cache instead, which can be reclaimed.
            try db.execute("PRAGMA cache_size = -\(HubStore.pageCacheKiB)")
            // quick_check: O(size) but without the index cross-checks of integrity_check; "ok" or a list of problems.
            let check = try db.prepare("PRAGMA quick_check")
            var problems: [String] = []
            while try check.step(), problems.count < 3 {
                let line = check.text(0)
                if line != "ok" { problems.append(line) }
            }
            if !problems.isEmpty {
                throw SQLiteError(code: SQLITE_CORRUPT, message: "quick_check: " + problems.joined(separator: "; "), path: path)
            }
            let mode = try db.scalarText("PRAGMA journal_mode = WAL")
            guard mode == "wal" else {
                throw SQLiteError(code: SQLITE_CANTOPEN, message: "cannot use WAL mode (journal_mode is \(mode ?? "unknown"))", path: path)
            }
            try db.execute("PRAGMA synchronous = FULL")
            // After a checkpoint the WAL is truncated to this size instead of staying at its high-water mark.
            try db.execute("PRAGMA journal_size_limit = \(8 << 20)")
            try migrate(db)
            return db
        } catch {
            db.close()
            throw error
        }
    }

    /// Creates the schema in a new file; a file with a schema this edged does not know is treated as damaged.
    private static func migrate(_ db: Database) throws {
        let version = Int(try db.scalarText("PRAGMA user_version") ?? "0") ?? 0
        if version == schemaVersion { return }
        guard version == 0 else {
            throw SQLiteError(code: SQLITE_NOTADB, message: "schema version \(version), this edged knows \(schemaVersion)", path: db.path)
        }
        try db.transaction {
            try db.execute("""
                CREATE TABLE objects (
                    component TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                    resource_version TEXT NOT NULL, body BLOB NOT NULL,
                    PRIMARY KEY (component, resource, namespace, name));
                CREATE TABLE list_versions (
                    component TEXT NOT NULL, resource TEXT NOT NULL, scope TEXT NOT NULL,
                    resource_version TEXT NOT NULL, seq INTEGER NOT NULL,
                    PRIMARY KEY (component, resource, scope));
                CREATE TABLE queue (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, component TEXT NOT NULL, method TEXT NOT NULL,
                    path TEXT NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL, coalesce_key TEXT,
                    enqueued_at INTEGER NOT NULL);
                CREATE INDEX queue_coalesce ON queue (coalesce_key) WHERE coalesce_key IS NOT NULL;
                PRAGMA user_version = \(schemaVersion);
                """)
        }
    }
}
