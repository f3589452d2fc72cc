// A real systemd-journald for tests, on a host without systemd as PID 1: a thread of its own unshares its mount
// namespace (a mount namespace belongs to a thread until it spawns), mounts a fresh tmpfs on /run and binds a temp
// dir at /run/log/journal, and starts /lib/systemd/systemd-journald there. Code run on that thread (and processes it
// spawns) log to that journald through /run/systemd/journal/socket; the journal files land in the temp dir, where
// the test reads them with sd-journal like journalctl does. Nothing outside the thread sees any of it.

import CSystemd
import Foundation
import Testing

let journaldPath = ["/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }

/// Whether these tests can run here: root (mounts, namespaces) and journald installed (package systemd).
let canRunJournald = getuid() == 0 && journaldPath != nil

/// unshare(2); Glibc's module map leaves it out (it needs _GNU_SOURCE).
@_silgen_name("unshare") private func c_unshare(_ flags: Int32) -> Int32
private let CLONE_NEWNS_FLAG: Int32 = 0x0002_0000

private final class Box<T>: @unchecked Sendable {
    var value: Result<T, any Error>?
}

/// Runs `body` on a new thread in a private mount namespace whose /run is an empty tmpfs. Blocks until it returns.
func onPrivateRun<T>(_ body: @escaping () throws -> T) throws -> T {
    let box = Box<T>()
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) let work = body
    let thread = Thread {
        box.value = Result {
            guard c_unshare(CLONE_NEWNS_FLAG) == 0 else { throw JournalTestError("unshare(CLONE_NEWNS): \(String(cString: strerror(errno)))") }
            guard mount("none", "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0 else {
                throw JournalTestError("making / private: \(String(cString: strerror(errno)))")
            }
            guard mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") == 0 else {
                throw JournalTestError("tmpfs on /run: \(String(cString: strerror(errno)))")
            }
            return try work()
        }
        done.signal()
    }
    thread.start()
    done.wait()
    return try box.value!.get()
}

struct JournalTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A journald of its own; `body` runs where it is /run/systemd/journal/socket. Returns body's result and the
/// folder of the journal files (once journald has exited, so every entry is on disk).
func withPrivateJournald<T>(_ body: @escaping () throws -> T) throws -> (T, journalDir: String) {
    var template = Array("/tmp/edged-journal-test-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
    let dir = String(cString: p)
    let result: T = try onPrivateRun {
        for d in ["/run/systemd/journal", "/run/log/journal"] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        guard mount(dir, "/run/log/journal", nil, UInt(MS_BIND), nil) == 0 else {
            throw JournalTestError("bind \(dir): \(String(cString: strerror(errno)))")
        }
        // Never the host's persistent journal.
        if FileManager.default.fileExists(atPath: "/var/log/journal") {
            _ = mount("tmpfs", "/var/log/journal", "tmpfs", 0, nil)
        }
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(journaldPath!), nil]
        defer { argv.forEach { free($0) } }
        let rc = posix_spawn(&pid, journaldPath!, nil, nil, argv, environ)
        guard rc == 0 else { throw JournalTestError("spawning journald: \(String(cString: strerror(rc)))") }
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileManager.default.fileExists(atPath: "/run/systemd/journal/socket") {
            guard ContinuousClock.now < deadline else { throw JournalTestError("journald did not create its socket in 10 s") }
            usleep(20_000)
        }
        return try body()
    }
    let machines = try FileManager.default.contentsOfDirectory(atPath: dir)
    let journalDir = machines.first.map { dir + "/" + $0 } ?? dir
    return (result, journalDir)
}

/// Every entry of the journal files in `dir`, as field dictionaries, oldest first.
func journalEntries(in dir: String) throws -> [[String: String]] {
    var handle: OpaquePointer?
    let rc = sd_journal_open_directory(&handle, dir, 0)
    guard rc >= 0, let handle else { throw JournalTestError("sd_journal_open_directory \(dir): \(String(cString: strerror(-rc)))") }
    defer { sd_journal_close(handle) }
    var entries: [[String: String]] = []
    while sd_journal_next(handle) > 0 {
        var fields: [String: String] = [:]
        var data: UnsafeRawPointer?
        var length = 0
        sd_journal_restart_data(handle)
        while sd_journal_enumerate_data(handle, &data, &length) > 0 {
            let text = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
            if let eq = text.firstIndex(of: "=") {
                fields[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
        }
        entries.append(fields)
    }
    return entries
}
