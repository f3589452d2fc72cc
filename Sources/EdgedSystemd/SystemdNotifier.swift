// sd_notify and sd_watchdog_enabled from libsystemd: READY/STATUS/STOPPING/WATCHDOG for Type=notify units.

import CSystemd
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why libsystemd refused: what was asked and the errno text.
public struct SystemdError: Error, Sendable, CustomStringConvertible {
    /// What failed, e.g. "sd_notify to /run/systemd/notify".
    public var operation: String
    public var errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// Tells the service manager about the daemon's state (`Type=notify` units): ready, status text, stopping,
/// watchdog keep-alives.
///
/// libsystemd reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the process environment. Without
/// `NOTIFY_SOCKET` (not started by systemd, or `NotifyAccess=none`) every call is a no-op, so the daemon can call it
/// unconditionally.
public struct SystemdNotifier: Sendable {
    /// `$NOTIFY_SOCKET` when the notifier was made, nil when notifications are off.
    public let socketPath: String?
    /// How often systemd expects `WATCHDOG=1` (`WatchdogSec=`), from sd_watchdog_enabled(3): nil when the watchdog
    /// is off or meant for another process (`WATCHDOG_PID` names a different pid).
    public let watchdogInterval: Duration?

    public init() {
        socketPath = environmentValue("NOTIFY_SOCKET").flatMap { $0.isEmpty ? nil : $0 }
        var usec: UInt64 = 0
        let enabled = sd_watchdog_enabled(0, &usec)
        watchdogInterval = enabled > 0 && usec > 0 ? .microseconds(Int64(clamping: usec)) : nil
    }

    /// Whether notifications go anywhere.
    public var isEnabled: Bool { socketPath != nil }

    /// Sends raw assignments ("READY=1", "STATUS=…"), one per line, in one datagram. No-op when disabled.
    /// - Throws: `SystemdError` naming the socket when the datagram cannot be sent.
    public func notify(_ assignments: [String]) throws(SystemdError) {
        let result = sd_notify(0, assignments.joined(separator: "\n"))
        if result < 0 {
            throw SystemdError(operation: "sd_notify to \(socketPath ?? "$NOTIFY_SOCKET")", errno: -result)
        }
    }

    /// Startup finished: systemd now considers the unit started. `status` is shown by `systemctl status`.
    public func ready(status: String? = nil) throws(SystemdError) {
        try notify(["READY=1"] + (status.map { ["STATUS=\(SystemdNotifier.oneLine($0))"] } ?? []))
    }

    /// A free-form one-line status for `systemctl status`.
    public func status(_ text: String) throws(SystemdError) {
        try notify(["STATUS=\(SystemdNotifier.oneLine(text))"])
    }

    /// Shutdown has begun.
    public func stopping(status: String? = nil) throws(SystemdError) {
        try notify(["STOPPING=1"] + (status.map { ["STATUS=\(SystemdNotifier.oneLine($0))"] } ?? []))
    }

    /// The watchdog keep-alive.
    public func watchdog() throws(SystemdError) {
        try notify(["WATCHDOG=1"])
    }

    /// The daemon's main pid changed (e.g. after re-exec).
    public func mainPID(_ pid: Int32) throws(SystemdError) {
        try notify(["MAINPID=\(pid)"])
    }

    /// Status texts are single lines: a newline would start a new assignment.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}

/// Reads one variable of the process environment.
func environmentValue(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }
}
