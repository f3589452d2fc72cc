// edged's own log from the systemd journal (sd-journal): the recent warnings `edgectl status` shows and
// `edgectl logs --daemon [-f]`.

import CSystemd
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One journal entry of edged (or of systemd about edged.service).
struct DaemonLogEntry: Codable, Equatable {
    /// Wall-clock time, microseconds since the epoch.
    var timeMicroseconds: UInt64
    /// syslog priority 0 (emerg) … 7 (debug).
    var priority: Int
    var message: String
    var pid: Int32?
    /// edged's structured fields, when the entry has them.
    var pod: String?
    var container: String?
    var image: String?
}

/// The edged journal, read with libsystemd's sd-journal.
///
/// Which entries: `SYSLOG_IDENTIFIER=edged` (every line edged logs, natively or through stderr as edged.service's
/// `SyslogIdentifier=`), plus what systemd itself says about `edged.service` (`_PID=1` + `UNIT=edged.service`:
/// started, watchdog timeout, killed) and core dumps of it (`COREDUMP_UNIT=edged.service`), as `journalctl -u edged`.
///
/// `$EDGECTL_JOURNAL_DIR` reads the journal files of one directory instead of this machine's journal: a journal copied
/// off a gateway (`/var/log/journal/<machine-id>`), and the tests.
final class DaemonJournal {
    static let directoryVariable = "EDGECTL_JOURNAL_DIR"
    static let unit = "edged.service"
    static let identifier = "edged"

    private var handle: OpaquePointer?

    /// Why there is no journal to read.
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    /// Opens the journal; throws `Unavailable` when there is none this user can read.
    init() throws(Unavailable) {
        var handle: OpaquePointer?
        let directory = getenv(Self.directoryVariable).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        let result: Int32
        if let directory {
            result = sd_journal_open_directory(&handle, directory, 0)
        } else {
            result = sd_journal_open(&handle, Int32(SD_JOURNAL_LOCAL_ONLY))
        }
        guard result >= 0, let handle else {
            throw Unavailable(description: "cannot open the journal\(directory.map { " in \($0)" } ?? ""): \(String(cString: strerror(-result)))")
        }
        // sd_journal_open succeeds with no files at all (no journald, or files this user may not read). Files of a
        // directory outside /run and /var count as neither runtime nor persistent: their size tells.
        var usage: UInt64 = 0
        let hasFiles = directory != nil
            ? sd_journal_get_usage(handle, &usage) >= 0 && usage > 0
            : sd_journal_has_runtime_files(handle) > 0 || sd_journal_has_persistent_files(handle) > 0
        guard hasFiles else {
            sd_journal_close(handle)
            if let directory {
                throw Unavailable(description: "no journal files in \(directory)")
            }
            throw Unavailable(description: getuid() == 0
                ? "this machine has no systemd journal (/var/log/journal, /run/log/journal)"
                : "no journal this user may read (run as root, or join the systemd-journal group)")
        }
        self.handle = handle
    }

    deinit { sd_journal_close(handle) }

    /// Restricts reading to edged's entries; `maxPriority` keeps only priorities 0…maxPriority.
    private func matchEdged(maxPriority: Int? = nil) {
        sd_journal_flush_matches(handle)
        let priorities = maxPriority.map { Array(0...$0) } ?? []
        func addPriorities() { for p in priorities { add("PRIORITY=\(p)") } }
        add("SYSLOG_IDENTIFIER=\(Self.identifier)")
        addPriorities()
        sd_journal_add_disjunction(handle)
        add("_PID=1")
        add("UNIT=\(Self.unit)")
        addPriorities()
        sd_journal_add_disjunction(handle)
        add("COREDUMP_UNIT=\(Self.unit)")
        addPriorities()
    }

    private func add(_ match: String) {
        _ = match.withCString { sd_journal_add_match(handle, $0, 0) }
    }

    /// The newest `count` entries at warning level or worse (PRIORITY 0…4), newest first.
    func recentWarnings(count: Int = 3) -> [DaemonLogEntry] {
        matchEdged(maxPriority: 4)
        guard sd_journal_seek_tail(handle) >= 0 else { return [] }
        var entries: [DaemonLogEntry] = []
        while entries.count < count, sd_journal_previous(handle) > 0 {
            entries.append(entry())
        }
        return entries
    }

    /// The newest `tail` entries (all when nil), oldest first, then (with `follow`) each new one as it arrives;
    /// `since` (microseconds since the epoch) skips older ones. `emit` gets each entry.
    func read(tail: Int?, since: UInt64?, follow: Bool, emit: (DaemonLogEntry) -> Void) {
        matchEdged()
        // After previous() the cursor is on the oldest entry to print, so that one is read before next() moves on.
        var onFirst = false
        if let tail {
            sd_journal_seek_tail(handle)
            var back = 0
            while back < tail, sd_journal_previous(handle) > 0 { back += 1 }
            onFirst = back > 0
        } else if let since {
            sd_journal_seek_realtime_usec(handle, since)
        } else {
            sd_journal_seek_head(handle)
        }
        func show(_ e: DaemonLogEntry) {
            if let since, e.timeMicroseconds < since { return }
            emit(e)
        }
        while true {
            if onFirst {
                onFirst = false
                show(entry())
            }
            while sd_journal_next(handle) > 0 { show(entry()) }
            guard follow else { return }
            // Wakes on new entries (inotify); the timeout only bounds the wait.
            _ = sd_journal_wait(handle, 1_000_000)
        }
    }

    /// The current entry.
    private func entry() -> DaemonLogEntry {
        var usec: UInt64 = 0
        sd_journal_get_realtime_usec(handle, &usec)
        let message = field("MESSAGE") ?? "(no message)"
        return DaemonLogEntry(timeMicroseconds: usec, priority: field("PRIORITY").flatMap { Int($0) } ?? 6,
                              message: message, pid: field("_PID").flatMap { Int32($0) } ?? field("SYSLOG_PID").flatMap { Int32($0) },
                              pod: field("POD"), container: field("CONTAINER"), image: field("IMAGE"))
    }

    /// A field of the current entry, nil when absent. A field this edgectl cannot read (e.g. compressed: journald
    /// compresses values over 512 bytes, and the static build may have no decompressor) reads as a note saying so.
    private func field(_ name: String) -> String? {
        var data: UnsafeRawPointer?
        var length = 0
        let result = name.withCString { sd_journal_get_data(handle, $0, &data, &length) }
        if result == -ENOENT { return nil }
        if result < 0 {
            // -EPROTONOSUPPORT/-EOPNOTSUPP: compressed with a library this binary does not have.
            return "(this edgectl cannot read this field: \(String(cString: strerror(-result))); use journalctl -u edged)"
        }
        guard let data, length > name.utf8.count else { return nil }
        let bytes = UnsafeRawBufferPointer(start: data, count: length)
        return String(decoding: bytes.dropFirst(name.utf8.count + 1), as: UTF8.self)
    }
}

/// How entries look on a terminal.
enum DaemonLogFormat {
    static let levels = ["emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"]

    static func level(_ priority: Int) -> String {
        levels.indices.contains(priority) ? levels[priority] : String(priority)
    }

    /// `2026-12-06 22:29:57 W edged[1234]: message pod=default/web container=app`, local time; the letter is the
    /// klog-style severity (E for crit and worse too).
    static func line(_ e: DaemonLogEntry) -> String {
        let letter: String
        switch e.priority {
        case ...3: letter = "E"
        case 4: letter = "W"
        case 7...: letter = "D"
        default: letter = "I"
        }
        var text = "\(localTime(e.timeMicroseconds)) \(letter) edged\(e.pid.map { "[\($0)]" } ?? ""): \(e.message)"
        if let pod = e.pod { text += " pod=\(pod)" }
        if let container = e.container { text += " container=\(container)" }
        if let image = e.image { text += " image=\(image)" }
        return text + "\n"
    }

    static func localTime(_ usec: UInt64) -> String {
        var seconds = time_t(usec / 1_000_000)
        var tm = tm()
        localtime_r(&seconds, &tm)
        func pad(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)-\(pad(tm.tm_mon + 1))-\(pad(tm.tm_mday)) \(pad(tm.tm_hour)):\(pad(tm.tm_min)):\(pad(tm.tm_sec))"
    }

    /// Seconds from the entry to now.
    static func ageSeconds(_ e: DaemonLogEntry, now: UInt64 = nowMicroseconds()) -> Int64 {
        now > e.timeMicroseconds ? Int64((now - e.timeMicroseconds) / 1_000_000) : 0
    }

    static func nowMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
